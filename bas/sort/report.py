"""What a sort did: phases with times and thread counts, bytes per device, memory, the choice."""

from __future__ import annotations

import json
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

__all__ = ["Phase", "SortReport", "Tracker"]


@dataclass
class Phase:
    """One staged phase: a single kind of work with one thread count."""

    name: str  # e.g. "read-keys", "sort", "write-runs", "merge", "gather", "write-output"
    kind: str  # "read", "write", "cpu" or "mixed" (piped/rsw overlap reads and writes)
    threads: int
    seconds: float = 0.0
    virtual_seconds: float | None = None  # from emulated devices' clocks (account mode)
    bytes: int = 0
    calls: int = 0


@dataclass
class SortReport:
    """Returned by bas.sort.sort and printed (as JSON) by the CLI."""

    algorithm: str
    reason: str
    schedule: str
    records: int
    record_size: int
    key_size: int
    key_offset: int
    memory_budget: int
    threads: dict = field(default_factory=dict)  # {"read": r, "write": w, "sort": s}
    memory: dict = field(default_factory=dict)  # the MemoryInfo the plan rested on
    phases: list[Phase] = field(default_factory=list)
    bytes_read: dict = field(default_factory=dict)  # device URL -> bytes
    bytes_written: dict = field(default_factory=dict)
    runs: int = 0
    merge_passes: int = 0
    peak_memory: int = 0  # bytes of buffers the engine held at once
    peak_rss: int = 0  # the process's peak resident set (includes the interpreter)
    seconds: float = 0.0
    virtual_seconds: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def phase_seconds(self, name: str) -> float:
        return sum(p.seconds for p in self.phases if p.name == name)

    def summary(self) -> str:
        lines = [f"{self.algorithm} ({self.schedule}): {self.reason}",
                 f"{self.records} records of {self.record_size} B in {self.seconds:.3f} s"
                 + (f" ({self.virtual_seconds:.3f} s modelled)" if self.virtual_seconds
                    is not None else "")]
        for p in self.phases:
            virt = "" if p.virtual_seconds is None else f" virt {p.virtual_seconds:8.4f} s"
            lines.append(f"  {p.name:14} {p.kind:6} threads {p.threads:3} {p.seconds:8.4f} s"
                         f"{virt} {p.bytes / 1e6:10.1f} MB")
        lines.append(f"  read {sum(self.bytes_read.values()) / 1e6:.1f} MB, written "
                     f"{sum(self.bytes_written.values()) / 1e6:.1f} MB, runs {self.runs}, "
                     f"merge passes {self.merge_passes}, peak buffers "
                     f"{self.peak_memory / 2**20:.1f} MiB")
        return "\n".join(lines)


class Tracker:
    """Counts bytes per device and buffer memory, and times phases (wall and virtual)."""

    def __init__(self, report: SortReport, devices: list):
        self.report = report
        self._devices = devices  # devices whose virtual clocks make up the modelled time
        self._lock = threading.Lock()
        self._memory = 0
        self._start = time.perf_counter()
        self._clock0 = self._clock()

    def _clock(self) -> float | None:
        """Modelled seconds so far: each emulated medium's clock counted once."""
        clocks = {id(d.clock_domain): d.clock for d in self._devices if d.clock is not None}
        return sum(clocks.values()) if clocks else None

    def add_device(self, device) -> None:
        with self._lock:
            if device in self._devices:
                return
            known = {id(d.clock_domain) for d in self._devices}
            self._devices.append(device)
            if device.clock is not None and id(device.clock_domain) not in known:
                self._clock0 = (self._clock0 or 0.0) + device.clock

    def read(self, device, nbytes: int) -> None:
        with self._lock:
            table = self.report.bytes_read
            table[device.url] = table.get(device.url, 0) + nbytes

    def wrote(self, device, nbytes: int) -> None:
        with self._lock:
            table = self.report.bytes_written
            table[device.url] = table.get(device.url, 0) + nbytes

    def hold(self, nbytes: int) -> None:
        with self._lock:
            self._memory += nbytes
            self.report.peak_memory = max(self.report.peak_memory, self._memory)

    def release(self, nbytes: int) -> None:
        with self._lock:
            self._memory -= nbytes

    @contextmanager
    def phase(self, name: str, kind: str, threads: int, nbytes: int = 0):
        """Time a phase; calls with the same name accumulate into one Phase."""
        clock0 = self._clock()
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        clock1 = self._clock()
        with self._lock:
            p = next((q for q in self.report.phases if q.name == name), None)
            if p is None:
                p = Phase(name, kind, threads)
                self.report.phases.append(p)
            p.seconds += seconds
            p.bytes += nbytes
            p.calls += 1
            if clock0 is not None and clock1 is not None:
                p.virtual_seconds = (p.virtual_seconds or 0.0) + clock1 - clock0

    def finish(self) -> SortReport:
        self.report.seconds = time.perf_counter() - self._start
        clock = self._clock()
        if clock is not None and self._clock0 is not None:
            self.report.virtual_seconds = clock - self._clock0
        self.report.peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self.report
