"""bas.sort.sort: WiscSort on any device: open, check, plan, run the passes, publish the output.

The output appears complete or not at all: a path output is written under a temporary name in
its directory, persisted, renamed and the directory synced; runs live in scratch devices that
are removed whatever happens.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile

from bas import open_device
from bas.device import Device
from bas.errors import DeviceIOError
from bas.memory import MemoryInfo
from bas.namespace import Namespace, local, publish
from bas.registry import DeviceURL, parse_size
from bas.sort.passes import Job, kv_in_memory
from bas.sort.plan import make_plan
from bas.sort.report import SortReport, Tracker
from bas.sort.runs import kv_external, mergesort

_ALGORITHMS = {"kv": kv_in_memory, "kv-external": kv_external, "mergesort": mergesort}

__all__ = ["SCHEDULES", "sort"]

SCHEDULES = ("staged", "piped", "rsw")


def sort(input, output, *, record_size: int = 100, key_size: int = 10, key_offset: int = 0,
         memory_budget: int | str = "1G", threads: int | dict | None = None,
         algorithm: str = "auto", schedule: str = "staged", profile=None, scratch=None,
         progress=None, memory: MemoryInfo | None = None,
         ns: Namespace | None = None) -> SortReport:
    """Sort fixed-size records by the bytes [key_offset, key_offset + key_size) (memcmp order).

    input/output: a Device, a device URL or a path. A path output is created atomically.
    memory_budget: bytes (or "512M") for the engine's buffers (key index, runs being formed,
      merge, gather and write buffers); not the page cache, not the interpreter. A budget
      past 90 % of the memory available (cgroup limits count) is cut to that.
    threads: one int for every phase, a dict {"read", "write", "sort"}, or None for the
      profile's best read/write counts (the CPU count without a profile).
    algorithm: "auto", "kv" (key index in memory), "kv-external" (runs of entries),
      "mergesort" (runs of whole records).
    schedule: "staged" (one kind of I/O at a time), "piped" (reader, sorter and writer run
      concurrently) or "rsw" (each thread reads, sorts and writes its own chunks).
    profile: a bas.braid.profile.Profile (measured or preset) to size thread pools from.
    scratch: a directory for runs, or a callable(size) -> Device (e.g. emulated devices).
    progress: callable(phase_name, done, total).
    memory: the memory facts to plan with (bas.memory.MemoryInfo); None reads this process's
      cgroup limits, available memory and the input's page-cache residency.
    ns: the bas.namespace.Namespace a path output is published through (the local one).
    Returns a SortReport. Raises ValueError for bad arguments, DeviceIOError for I/O errors.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    budget = parse_size(memory_budget)
    _check_shape(record_size, key_size, key_offset)
    src, own_src = _open_input(input)
    publish = None
    dst, own_dst = None, False
    try:
        if src.size % record_size:
            raise ValueError(f"{src.url}: input holds {src.size} bytes, not a whole number of "
                             f"{record_size}-byte records ({src.size % record_size} left over)")
        n = src.size // record_size
        if profile is None and src.preset is not None:
            from bas.braid.profile import Profile

            profile = Profile.from_preset(src.preset)
        plan = make_plan(src, n, record_size, key_size, budget, threads, algorithm, profile,
                         schedule, memory)
        dst, publish, own_dst = _open_output(output, src, local(ns))
        report = SortReport(plan.algorithm, plan.reason, schedule, n, record_size, key_size,
                            key_offset, plan.budget,
                            threads={"read": plan.read_threads, "write": plan.write_threads,
                                     "gather": plan.gather_threads,
                                     "sort": plan.sort_threads},
                            memory=plan.memory.to_dict() if plan.memory else {})
        tracker = Tracker(report, [src] + ([dst] if dst is not src else []))
        job = Job(src, dst, n, record_size, key_size, key_offset, plan, schedule, tracker,
                  _scratch_factory(scratch, output), progress)
        _run_algorithm(job)
        if n:
            dst.persist()
        if publish is not None:
            publish()
            publish = None
        return tracker.finish()
    finally:
        if publish is not None:  # failed before publishing: leave no partial output
            publish.abort()
        if own_dst and not dst.closed:
            dst.close()
        if own_src:
            src.close()


def _check_shape(record_size: int, key_size: int, key_offset: int) -> None:
    for name, value in (("record_size", record_size), ("key_size", key_size),
                        ("key_offset", key_offset)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if record_size < 1 or key_size < 1 or key_offset < 0:
        raise ValueError("record_size and key_size must be positive, key_offset >= 0")
    if key_offset + key_size > record_size:
        raise ValueError(f"key [{key_offset}, {key_offset + key_size}) does not fit in a "
                         f"{record_size}-byte record")
    if key_size > 506:
        raise ValueError(f"key_size {key_size} exceeds the 506-byte maximum")


def _open_input(target) -> tuple[Device, bool]:
    if isinstance(target, Device):
        return target, False
    text = os.fspath(target) if isinstance(target, os.PathLike) else target
    if isinstance(text, str) and "://" not in text:
        if not os.path.isfile(text):
            raise FileNotFoundError(f"input {text!r} does not exist or is not a file")
        # a plain path, never pasted into a URL: '%', '#' and '?' are file-name characters
        return open_device(os.path.abspath(text), read_only=True), True
    return open_device(text), True


class _Publisher:
    """Renames a finished temporary output over its final name (or removes it)."""

    def __init__(self, device: Device, tmp_path: str, final_path: str, ns: Namespace):
        self.device, self.tmp_path, self.final_path = device, tmp_path, final_path
        self.ns = ns

    def __call__(self) -> None:
        self.device.close()
        publish(self.tmp_path, self.final_path, ns=self.ns)

    def abort(self) -> None:
        if not self.device.closed:
            self.device.close()
        if os.path.exists(self.tmp_path):
            self.ns.remove(self.tmp_path)


def _open_output(target, src: Device, ns: Namespace):
    """(device, publisher or None, whether the engine opened the device itself)."""
    if isinstance(target, Device):
        if target is src:
            raise ValueError("output is the input device: sort into another device")
        if target.size < src.size:
            raise ValueError(f"output {target.url} holds {target.size} bytes, the input "
                             f"needs {src.size}")
        return target, None, False
    text = os.fspath(target) if isinstance(target, os.PathLike) else target
    options: dict = {}
    if "://" in text:
        url = DeviceURL.parse(text)
        if url.scheme != "file":  # another device: written in place, it cannot be renamed
            dev = open_device(text)
            try:
                return _open_output(dev, src, ns)[0], None, True
            except BaseException:
                dev.close()
                raise
        path, options = url.path, url.params
    else:
        path = text
    path = os.path.abspath(path)
    src_path = getattr(src, "path", None)
    if src_path and os.path.exists(path) and os.path.samefile(path, src_path):
        raise ValueError(f"output {path} is the input file: sort into another path")
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output directory {directory} does not exist")
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.sorting-{secrets.token_hex(4)}")
    if not src.size:
        os.close(ns.create(tmp_path))
        return _EmptyOutput(), _Publisher(_EmptyOutput(), tmp_path, path, ns), False
    try:
        dst = open_device(tmp_path, size=src.size, **options)
    except DeviceIOError as exc:
        if os.path.exists(tmp_path):
            ns.remove(tmp_path)
        raise DeviceIOError(exc.errno, f"cannot create the {src.size}-byte output next to "
                            f"{path}: {exc.strerror}") from exc
    return dst, _Publisher(dst, tmp_path, path, ns), False


class _EmptyOutput(Device):
    """Stands in for the output of an empty input (a zero-byte file device cannot exist)."""

    def __init__(self):
        super().__init__("empty://")

    def _size(self) -> int:
        return 0

    def _read_into(self, offset: int, view: memoryview) -> None:
        pass  # never called: every request to a 0-byte device is empty or out of bounds

    def _write(self, offset: int, view: memoryview) -> None:
        pass  # never called, as above

    def _persist(self) -> None:
        pass

    def _close(self) -> None:
        pass


def _scratch_factory(scratch, output):
    """callable(size) -> (Device, cleanup) for run storage."""
    if callable(scratch):
        return lambda size: (scratch(size), None)
    if scratch is None:
        text = output if isinstance(output, str) else None
        if text and "://" not in text:
            scratch = os.path.dirname(os.path.abspath(text))
        else:
            scratch = tempfile.gettempdir()
    base = os.fspath(scratch)

    def make(size: int):
        directory = tempfile.mkdtemp(prefix=".bas-sort-runs-", dir=base)
        try:
            dev = open_device(os.path.join(directory, "runs"), size=size)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return dev, lambda: shutil.rmtree(directory, ignore_errors=True)

    return make


def _run_algorithm(job: Job) -> None:
    try:
        if job.n:
            _ALGORITHMS[job.plan.algorithm](job)
    finally:
        job.cleanup()
