"""emu:// -- a wrapper that charges a BRAID cost model to each request (virtual clock or pacing)."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from bas.braid.presets import Preset, get_preset, overlapped_seconds
from bas.device import Device, Requests
from bas.errors import InvalidURLError
from bas.registry import DeviceURL
from bas.wrappers.base import WrapperDevice, inner_from_url

__all__ = ["EmuDevice", "EmuStats", "Medium"]

MODES = ("account", "throttle")


@dataclass(frozen=True)
class EmuStats:
    """Counters of an emulated device; media bytes include granularity amplification."""

    clock: float | None
    reads: int
    writes: int
    bytes_read: int
    bytes_written: int
    media_read: int
    media_written: int


class Medium:
    """The state of one modelled device, shared by every EmuDevice region on it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.clock = 0.0  # account: virtual seconds
        self.depth = 0  # open overlap() sections
        self.lanes = {"read": 0.0, "write": 0.0}  # account: costs inside a section
        self.busy_until = {"read": 0.0, "write": 0.0}  # throttle: pacing per kind
        self.active = {"read": 0, "write": 0}  # throttle: requests in flight per kind


class EmuDevice(WrapperDevice):
    """An emulated device: the inner device stores the bytes, the preset says what they cost.

    URL: emu://PRESET?inner=dram|<percent-encoded device URL>[&size=64M][&mode=account|throttle]
    Python: EmuDevice(inner_device, "optane-1dimm", mode="account")

    mode=account  nothing sleeps; every request advances the virtual `clock` (seconds) by its
                  modelled cost, deterministically. Requests outside an overlap() section count
                  as serial; inside one, reads and writes are summed apart and the section
                  costs overlapped_seconds(reads, writes, interference) when it ends.
    mode=throttle real time: each request is paced (it sleeps) until its modelled cost has
                  passed, queued behind earlier requests of its kind; a request that starts
                  while the other kind is busy is slowed by the interference factor. `clock` is
                  None: time is the wall clock. The inner device must be faster than the model.

    Each batch (one read/write, or one read_many/write_many) is classified by its offsets:
    one contiguous run is sequential, anything else random; threads is the `threads` argument
    (1 for read/write). Capabilities come from the preset (byte_addressable, granularity),
    except what correctness rests on: persistent is true only when both the preset and the
    inner device are (an Optane preset over dram:// loses its data on close), is_pmem only
    when the inner device is PMem and the preset persistent, and alignment and direct_io are
    the inner device's.
    """

    scheme = "emu"

    def __init__(self, inner: Device, model: Preset | str, *, mode: str = "account",
                 url: str | None = None, medium: Medium | None = None):
        preset = model if isinstance(model, Preset) else get_preset(model)
        if mode not in MODES:
            raise InvalidURLError(f"emu:// mode must be one of {MODES}, got {mode!r}")
        super().__init__(inner, url or f"emu://{preset.name}?mode={mode}&inner="
                                       f"{quote(inner.url, safe='')}",
                         caps=dataclasses.replace(
                             inner.capabilities,
                             persistent=preset.persistent and inner.persistent,
                             byte_addressable=preset.byte_addressable,
                             is_pmem=inner.is_pmem and preset.persistent,
                             granularity=preset.granularity))
        self.model = preset
        self.mode = mode
        #: the modelled hardware; siblings (see sibling()) share it, its clock and interference
        self.medium = medium or Medium()
        self._counts = dict.fromkeys(("reads", "writes", "bytes_read", "bytes_written",
                                      "media_read", "media_written"), 0)
        # the virtual clock does not depend on real parallelism: spare the shared cores
        self._inner_threads_cap = (os.cpu_count() or 1) if mode == "account" else None

    @classmethod
    def open_url(cls, url: DeviceURL) -> EmuDevice:
        preset = get_preset(url.host or url.path.strip("/"))
        mode = url.take("mode", "account")
        if mode not in MODES:
            raise InvalidURLError(f"{url.text}: mode must be one of {MODES}, got {mode!r}")
        inner = inner_from_url(url, url.take_size("size"))
        try:
            url.finish()
            return cls(inner, preset, mode=mode, url=url.text)
        except BaseException:
            inner.close()
            raise

    @property
    def clock(self) -> float | None:
        """Virtual seconds charged so far to the medium (account mode); None in throttle mode."""
        return self.medium.clock if self.mode == "account" else None

    @property
    def clock_domain(self) -> object:
        return self.medium

    @property
    def preset(self) -> str | None:
        return self.model.name

    def sibling(self, inner: Device) -> EmuDevice:
        """Another region of the same modelled device: its requests share this one's clock,
        overlap sections and interference (e.g. a sort's input, runs and output on one PMem)."""
        return EmuDevice(inner, self.model, mode=self.mode, medium=self.medium)

    @property
    def stats(self) -> EmuStats:
        """A snapshot of the counters (take two and subtract to measure a phase)."""
        with self.medium.lock:
            return EmuStats(clock=self.clock, **self._counts)

    @contextmanager
    def overlap(self):
        """Reads and writes issued inside (from any threads) overlap and interfere.

        Account mode sums their costs per kind and, when the outermost section ends, advances
        the clock by overlapped_seconds(read, write, interference). Throttle mode sees the
        overlap as it happens, so the section changes nothing there.
        """
        m = self.medium
        with m.lock:
            m.depth += 1
        try:
            yield self
        finally:
            with m.lock:
                m.depth -= 1
                if not m.depth:
                    m.clock += overlapped_seconds(m.lanes["read"], m.lanes["write"],
                                                  self.model.interference)
                    m.lanes = {"read": 0.0, "write": 0.0}

    # -- primitives ---------------------------------------------------------------------

    def _read_into(self, offset: int, view: memoryview) -> None:
        self._run("read", _one(offset), _one(view.nbytes), 1,
                  lambda: self.inner.read_into(offset, view))

    def _write(self, offset: int, view: memoryview) -> None:
        self._run("write", _one(offset), _one(view.nbytes), 1,
                  lambda: self.inner.write(offset, view))

    def _read_many(self, req: Requests, out: memoryview, threads: int) -> None:
        self._run("read", req.offsets, req.length_array(), threads,
                  lambda: self.inner.read_many(req.offsets, _lengths(req), out,
                                               threads=self._inner_threads(threads)))

    def _write_many(self, req: Requests, data: memoryview, threads: int) -> None:
        self._run("write", req.offsets, req.length_array(), threads,
                  lambda: self.inner.write_many(req.offsets, _lengths(req), data,
                                                threads=self._inner_threads(threads)))

    # -- the cost model -----------------------------------------------------------------

    def _inner_threads(self, threads: int) -> int:
        cap = self._inner_threads_cap
        return threads if cap is None else min(threads, cap)

    def _run(self, kind: str, offsets: np.ndarray, lengths: np.ndarray, threads: int,
             io) -> None:
        n, sequential, media, nbytes = batch_shape(offsets, lengths, self.model.granularity)
        seconds = self.model.batch_seconds(kind, sequential, n, media, threads)
        if self.mode == "account":
            io()  # charge only what was moved: a failed request costs nothing
        else:
            self._throttled(kind, seconds, io)
        m = self.medium
        with m.lock:
            self._counts[kind + "s"] += n
            self._counts["bytes_read" if kind == "read" else "bytes_written"] += nbytes
            self._counts["media_read" if kind == "read" else "media_written"] += media
            if self.mode == "account":
                if m.depth:
                    m.lanes[kind] += seconds
                else:
                    m.clock += seconds

    def _throttled(self, kind: str, seconds: float, io) -> None:
        other = "write" if kind == "read" else "read"
        start = time.perf_counter()
        m = self.medium
        with m.lock:
            if m.active[other] or m.busy_until[other] > start:
                seconds /= self.model.interference
            end = max(start, m.busy_until[kind]) + seconds
            m.busy_until[kind] = end
            m.active[kind] += 1
        try:
            io()
        finally:
            with m.lock:
                m.active[kind] -= 1
        delay = end - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def batch_shape(offsets: np.ndarray, lengths: np.ndarray, granularity: int
                ) -> tuple[int, bool, int, int]:
    """(requests, sequential?, media bytes, bytes) of a batch; empty pieces do not count.

    A batch is sequential when its pieces form one contiguous run in order (a single piece
    is); the run then moves its extent rounded out to whole granules once. A random batch
    moves every piece's own rounded-out granules (the media cannot merge them).
    """
    offsets = np.asarray(offsets, dtype=np.uint64)
    lengths = np.asarray(lengths, dtype=np.uint64)
    keep = lengths > 0
    if not bool(keep.all()):
        offsets, lengths = offsets[keep], lengths[keep]
    n = int(offsets.size)
    if not n:
        return 0, True, 0, 0
    ends = offsets + lengths
    nbytes = int(lengths.sum(dtype=np.uint64))
    g = int(granularity)
    if n == 1 or np.array_equal(offsets[1:], ends[:-1]):
        first = int(offsets[0]) // g * g
        return n, True, -(-int(ends[-1]) // g) * g - first, nbytes
    gg = np.uint64(g)
    granules = (ends + gg - np.uint64(1)) // gg - offsets // gg
    return n, False, int(granules.sum(dtype=np.uint64)) * g, nbytes


def _one(value: int) -> np.ndarray:
    return np.array([value], dtype=np.uint64)


def _lengths(req: Requests):
    return req.uniform if req.lengths is None else req.lengths
