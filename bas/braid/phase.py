"""Phase runner: one kind of I/O with N native threads in bounded batches, timed (wall + virtual).

A staged engine (WiscSort's read -> sort -> write, the checkpoint loader's stages) runs each
phase with the whole thread pool on one kind of I/O; run_mixed runs a read phase and a write
phase at once inside device.overlap(), so an emulated device accounts their interference.

    phase = sequential_phase("read", 0, dev.size, threads=4)
    result = run_phase(dev, phase)          # PhaseResult: bytes, seconds, bandwidth, ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bas.device import Device

__all__ = ["MixedResult", "Phase", "PhaseResult", "random_phase", "run_mixed", "run_phase",
           "sequential_phase"]

CHUNK = 1 << 20


@dataclass(frozen=True)
class Phase:
    """What one phase does: requests of one kind, issued `threads` at a time by native code.

    lengths: one int for every request or an array. data (writes): the packed bytes of all
    requests; None writes a filler pattern. out (reads): a writable buffer for the packed bytes
    of all requests (read in place, no copy); None reads into a reused batch buffer. sink
    (reads): called as sink(offsets, lengths, view) with each batch's packed bytes before the
    buffer is reused. persist (writes): persist()
    at the end, inside the timing. Batches move at most batch_bytes (and batch_requests when
    given; otherwise they grow from a few requests per thread). max_seconds: stop after the
    batch that passes this much wall time (the result says how much was done).
    """

    kind: str
    offsets: np.ndarray
    lengths: np.ndarray | int
    threads: int = 1
    data: object = None
    out: object = None
    sink: Callable | None = None
    persist: bool = False
    batch_bytes: int = 64 << 20
    batch_requests: int | None = None
    max_seconds: float | None = None

    def __post_init__(self):
        if self.kind not in ("read", "write"):
            raise ValueError(f"phase kind must be 'read' or 'write', got {self.kind!r}")
        if self.threads < 1 or self.batch_bytes < 1:
            raise ValueError("threads and batch_bytes must be positive")
        object.__setattr__(self, "offsets", np.asarray(self.offsets, dtype=np.uint64))

    @property
    def pattern(self) -> str:
        """'sequential' when the requests form one contiguous run in order, else 'random'."""
        if isinstance(self.lengths, (int, np.integer)):
            ends = self.offsets[:-1] + np.uint64(self.lengths)
        else:
            ends = self.offsets[:-1] + np.asarray(self.lengths, dtype=np.uint64)[:-1]
        return "sequential" if np.array_equal(self.offsets[1:], ends) else "random"


@dataclass(frozen=True)
class PhaseResult:
    """What a phase did: seconds is wall time, virtual_seconds the device clock's (or None)."""

    kind: str
    pattern: str
    threads: int
    bytes: int
    requests: int
    seconds: float
    virtual_seconds: float | None

    @property
    def elapsed(self) -> float:
        """The time that counts: virtual on an emulated device, wall otherwise."""
        return self.seconds if self.virtual_seconds is None else self.virtual_seconds

    @property
    def bandwidth(self) -> float:
        """Useful bytes per second (0 when nothing was timed)."""
        return self.bytes / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class MixedResult:
    """A read phase and a write phase run together; times cover both."""

    read: PhaseResult
    write: PhaseResult
    seconds: float
    virtual_seconds: float | None

    @property
    def elapsed(self) -> float:
        return self.seconds if self.virtual_seconds is None else self.virtual_seconds


def sequential_phase(kind: str, start: int, length: int, *, chunk: int = CHUNK,
                     **options) -> Phase:
    """Contiguous chunks covering [start, start + length) (the last one may be shorter)."""
    offsets = np.arange(start, start + length, chunk, dtype=np.uint64)
    lengths = np.minimum(np.uint64(chunk), np.uint64(start + length) - offsets)
    if length % chunk == 0:
        return Phase(kind, offsets, int(chunk), **options)
    return Phase(kind, offsets, lengths, **options)


def random_phase(kind: str, device_size: int, access_size: int, count: int, *, seed: int = 0,
                 **options) -> Phase:
    """count accesses of access_size at random slots of the device.

    Slots are the next power of two >= access_size, so an access never straddles more
    granules than it must on any power-of-two granularity.
    """
    slot = 1 << max(0, (access_size - 1).bit_length())
    slots = device_size // slot
    if slots < 1:
        raise ValueError(f"a {access_size}-byte access does not fit a {device_size}-byte device")
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, slots, count, dtype=np.uint64) * np.uint64(slot)
    return Phase(kind, offsets, int(access_size), **options)


def run_phase(device: Device, phase: Phase) -> PhaseResult:
    """Run one phase on device and time it."""
    return _run(device, phase, use_clock=True)


def run_mixed(device: Device, read: Phase, write: Phase) -> MixedResult:
    """Run a read phase and a write phase concurrently (two Python threads, each driving its
    own native threads) inside device.overlap()."""
    if read.kind != "read" or write.kind != "write":
        raise ValueError("run_mixed takes a read phase and a write phase")
    results: dict[str, PhaseResult] = {}
    errors: list[BaseException] = []

    def work(phase: Phase) -> None:
        try:
            results[phase.kind] = _run(device, phase, use_clock=False)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    clock0 = device.clock
    wall0 = time.perf_counter()
    with device.overlap():
        workers = [threading.Thread(target=work, args=(p,)) for p in (read, write)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    wall = time.perf_counter() - wall0
    if errors:
        raise errors[0]
    clock1 = device.clock
    virtual = None if clock0 is None or clock1 is None else clock1 - clock0
    return MixedResult(results["read"], results["write"], wall, virtual)


def _run(device: Device, phase: Phase, *, use_clock: bool) -> PhaseResult:
    offsets = phase.offsets
    uniform = isinstance(phase.lengths, (int, np.integer))
    lengths = None if uniform else np.asarray(phase.lengths, dtype=np.uint64)
    ends = (np.arange(1, offsets.size + 1, dtype=np.uint64) * np.uint64(phase.lengths)
            if uniform else np.cumsum(lengths, dtype=np.uint64))
    total = int(ends[-1]) if offsets.size else 0
    into = None if phase.out is None else memoryview(phase.out).cast("B")
    if into is not None and into.nbytes < total:
        raise ValueError(f"phase out holds {into.nbytes} bytes, the reads need {total}")
    buffer = _buffer(min(total, phase.batch_bytes), device.alignment, phase)
    clock0 = device.clock if use_clock else None
    start = time.perf_counter()
    done = moved = 0
    step = phase.batch_requests or max(16, 4 * phase.threads)
    while done < offsets.size:
        base = int(ends[done - 1]) if done else 0
        # the most requests that fit in the buffer, at least one
        fit = int(np.searchsorted(ends, np.uint64(base + buffer.nbytes), side="right")) - done
        stop = done + max(1, min(step, fit))
        nbytes = int(ends[stop - 1]) - base
        batch_lengths = phase.lengths if uniform else lengths[done:stop]
        view = buffer[:nbytes] if nbytes <= buffer.nbytes else _buffer(nbytes, device.alignment,
                                                                         phase)
        if into is not None:
            view = into[base:base + nbytes]
        if phase.kind == "read":
            device.read_many(offsets[done:stop], batch_lengths, view, threads=phase.threads)
            if phase.sink is not None:
                phase.sink(offsets[done:stop], batch_lengths, view)
        else:
            src = view if phase.data is None else memoryview(phase.data).cast("B")[
                base:base + nbytes]
            device.write_many(offsets[done:stop], batch_lengths, src, threads=phase.threads)
        done, moved = stop, moved + nbytes
        if phase.batch_requests is None:
            step *= 2
        if phase.max_seconds is not None and time.perf_counter() - start > phase.max_seconds:
            break
    if phase.kind == "write" and phase.persist:
        device.persist()
    wall = time.perf_counter() - start
    virtual = None
    if clock0 is not None:
        virtual = device.clock - clock0
    return PhaseResult(phase.kind, phase.pattern, phase.threads, moved, done, wall, virtual)


def _buffer(nbytes: int, alignment: int, phase: Phase) -> np.ndarray:
    """A reusable batch buffer, aligned for O_DIRECT devices; filler bytes for writes."""
    if phase.out is not None or phase.data is not None:
        nbytes = 0  # the caller's buffer is used instead
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    skip = (-raw.ctypes.data) % alignment
    buf = raw[skip:skip + nbytes]
    if phase.kind == "write" and phase.data is None:
        buf[:] = np.resize(np.arange(251, dtype=np.uint8), nbytes)
    else:
        buf.fill(0)  # fault the pages in now, not inside the timed batches
    return buf
