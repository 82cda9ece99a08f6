"""The Device contract: one byte-addressed storage device, whatever the backend.

Like leveldb's Env, one base class holds the whole contract. Public methods check arguments
and state, add context to errors and count calls in flight; a backend implements only the
private primitives below. Callers branch on capability properties, never on isinstance.

Primitives a backend implements (all receive already-checked arguments):
  _size() -> int                       bytes addressable, fixed for the device's life
  _read_into(offset, view)             fill the writable byte memoryview from offset
  _write(offset, view)                 store the byte memoryview at offset (not yet durable)
  _persist()                           make every completed write durable
  _close()                             release resources; called once
and may override, for native multi-threaded vectored I/O:
  _read_many(req, out, threads) / _write_many(req, data, threads)   (req: Requests)

Thread safety: every public method may be called from several threads at once. Writes to
overlapping ranges that race leave unspecified bytes (some interleaving). close() waits for
calls in flight and then refuses new ones with DeviceClosedError.

Durability: a write is durable once a later persist() returns (on a persistent device); a crash
before that may lose or tear it. Non-persistent devices (DRAM) accept persist() as a no-op.
"""

from __future__ import annotations

import operator
import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from bas._native import io as native
from bas.errors import (
    AlignmentError,
    DeviceClosedError,
    DeviceError,
    DeviceIOError,
    OutOfBoundsError,
    ReadOnlyError,
)

__all__ = ["Capabilities", "Device", "Requests"]


@dataclass(frozen=True)
class Capabilities:
    """What a device is, for callers that branch on it (never on isinstance)."""

    persistent: bool = False
    byte_addressable: bool = False
    is_pmem: bool = False
    media_is_pmem: bool = False
    direct_io: bool = False
    granularity: int = 1
    alignment: int = 1


@dataclass(frozen=True)
class Requests:
    """Checked vectored requests: piece i is [offsets[i], offsets[i] + length_i)."""

    offsets: np.ndarray  # uint64
    lengths: np.ndarray | None  # uint64, or None when every piece is `uniform` long
    uniform: int
    total: int  # bytes moved

    def __len__(self) -> int:
        return int(self.offsets.size)

    def length_array(self) -> np.ndarray:
        if self.lengths is not None:
            return self.lengths
        return np.full(self.offsets.size, self.uniform, dtype=np.uint64)


class Device(ABC):
    """A byte-addressed device of fixed size. Open one with `bas.open_device(url)`.

    A backend subclasses Device, implements the abstract primitives (and open_url), and is
    found through bas.registry (one line there, or register_device for third parties).
    """

    scheme: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in Capabilities.__dataclass_fields__:
            if name in vars(cls) and not isinstance(vars(cls)[name], property):
                raise TypeError(f"{cls.__name__}.{name}: declare capabilities with "
                                f"super().__init__(url, caps=Capabilities({name}=...)), not "
                                f"as a class attribute (wrappers would not see it)")

    def __init__(self, url: str, *, read_only: bool = False,
                 caps: Capabilities | None = None):
        self.url = url
        self.read_only = read_only
        self._caps = caps or Capabilities()
        self._state = threading.Condition(threading.Lock())
        self._inflight = 0
        self._closed = False

    # -- capabilities: read-only, fixed when the device is opened -----------------------

    @property
    def capabilities(self) -> Capabilities:
        """Everything below, in one value (wrappers start from their inner device's)."""
        return self._caps

    @property
    def persistent(self) -> bool:
        """Survives power loss once persist() returns."""
        return self._caps.persistent

    @property
    def byte_addressable(self) -> bool:
        """Loads and stores of single bytes are native (no block read-modify-write below)."""
        return self._caps.byte_addressable

    @property
    def is_pmem(self) -> bool:
        """Backed by persistent memory through PMDK (a pmemobj pool)."""
        return self._caps.is_pmem

    @property
    def media_is_pmem(self) -> bool:
        """The media really is persistent memory (pmem_is_pmem): persists are cache flushes,
        not msync; false for a pool on an ordinary file system (report it beside figures)."""
        return self._caps.media_is_pmem

    @property
    def direct_io(self) -> bool:
        """I/O bypasses the page cache (O_DIRECT)."""
        return self._caps.direct_io

    @property
    def granularity(self) -> int:
        """Bytes the media moves for the smallest access (Optane 256, a flash page 4096)."""
        return self._caps.granularity

    @property
    def alignment(self) -> int:
        """Requests must be multiples of this (and buffers aligned to it); 1 = anything."""
        return self._caps.alignment

    # -- public API ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes addressable: valid offsets are [0, size)."""
        return self._size()

    @property
    def closed(self) -> bool:
        """close() was called: every later call raises DeviceClosedError."""
        return self._closed

    @property
    def clock(self) -> float | None:
        """Virtual seconds spent so far by an emulated device's cost model; None on real time."""
        return None

    @property
    def clock_domain(self) -> object:
        """What the clock belongs to: emulated devices on one medium share it (sum it once)."""
        return self

    @property
    def preset(self) -> str | None:
        """The cost-model preset an emulated device follows (None on real devices)."""
        return None

    def overlap(self):
        """Context in which concurrent reads and writes count as overlapping (emulation only)."""
        return nullcontext(self)

    def read_into(self, offset: int, out) -> int:
        """Fill the writable buffer `out` with the bytes at [offset, offset + len(out)).

        Success: out holds the bytes; returns len(out). Raises OutOfBoundsError (range, or a
        non-integer offset), AlignmentError (alignment > 1 and offset, length or out's
        address not a multiple), DeviceClosedError, DeviceIOError (errno kept). out stays
        the caller's. Thread-safe.
        """
        view = _byte_view(out, writable=True)
        offset = self._check_range(offset, view.nbytes, "read")
        self._check_aligned(offset, view.nbytes, view, "read")
        with self._op("read", offset, view.nbytes):
            if view.nbytes:
                self._read_into(offset, view)
        return view.nbytes

    def read(self, offset: int, length: int) -> bytes:
        """The bytes at [offset, offset + length): a new bytes object the caller owns.

        Raises as read_into. Thread-safe.
        """
        length = _as_int(length, f"{self.url}: read length")
        if length < 0:
            raise OutOfBoundsError(f"{self.url}: length must be a non-negative int, got "
                                   f"{length!r}")
        buf = self._aligned_buffer(length)
        self.read_into(offset, buf)
        return bytes(buf)

    def write(self, offset: int, data) -> None:
        """Store `data` (any bytes-like object) at offset.

        Success: a later read sees the bytes; they are durable once a later persist()
        returns (persistent devices). Raises ReadOnlyError, OutOfBoundsError,
        AlignmentError, DeviceClosedError, DeviceIOError (then the range holds some mix of
        old and new bytes). data is not kept. Thread-safe; racing writes to the same bytes
        leave some interleaving.
        """
        view = _byte_view(data, writable=False)
        self._check_writable("write")
        offset = self._check_range(offset, view.nbytes, "write")
        self._check_aligned(offset, view.nbytes, view, "write")
        with self._op("write", offset, view.nbytes):
            if view.nbytes:
                self._write(offset, view)

    def persist(self) -> None:
        """Make every write that returned before this call durable (a no-op on DRAM).

        Raises ReadOnlyError, DeviceClosedError, DeviceIOError (then nothing is known about
        the writes since the last successful persist). Thread-safe.
        """
        self._check_writable("persist")
        with self._op("persist", 0, 0):
            self._persist()

    def read_many(self, offsets, lengths, out=None, *, threads: int = 1):
        """Gather pieces into one buffer, packed back to back in request order.

        offsets: sequence of ints; lengths: one int for all pieces, or one per piece.
        out: a writable buffer of at least the total length. threads: native worker threads
        (the GIL is released while they run). Returns out; when out is None, a new numpy
        uint8 array of the total length (aligned to `alignment`), which the caller owns.
        Raises OutOfBoundsError (a piece out of range, bad offsets or lengths, out too
        small), AlignmentError, DeviceClosedError, DeviceIOError. Thread-safe.
        """
        req = self._requests(offsets, lengths, "read")
        if out is None:
            out = self._aligned_buffer(req.total)
        view = _byte_view(out, writable=True)
        if view.nbytes < req.total:
            raise OutOfBoundsError(f"{self.url}: out holds {view.nbytes} bytes, the reads "
                                   f"need {req.total}")
        self._check_aligned_requests(req, view, "read")
        with self._op("read_many", int(req.offsets[0]) if len(req) else 0, req.total):
            if req.total:
                self._read_many(req, view, _threads(threads))
        return out

    def write_many(self, offsets, lengths, data, *, threads: int = 1) -> None:
        """Scatter the packed pieces of `data` to the given offsets (see read_many).

        Success and durability as write. Raises ReadOnlyError, OutOfBoundsError,
        AlignmentError, DeviceClosedError, DeviceIOError (then any piece may hold a mix of
        old and new bytes). data is not kept. Thread-safe.
        """
        self._check_writable("write")
        req = self._requests(offsets, lengths, "write")
        view = _byte_view(data, writable=False)
        if view.nbytes < req.total:
            raise OutOfBoundsError(f"{self.url}: data holds {view.nbytes} bytes, the writes "
                                   f"need {req.total}")
        self._check_aligned_requests(req, view, "write")
        with self._op("write_many", int(req.offsets[0]) if len(req) else 0, req.total):
            if req.total:
                self._write_many(req, view, _threads(threads))

    def drop_caches(self) -> None:
        """Drop this device's data from operating-system caches, for cold measurements.

        Persists nothing: call persist() first when unpersisted writes matter. A no-op on
        devices without such a cache (DRAM, O_DIRECT files, emulators without one).
        """
        with self._op("drop_caches", 0, 0):
            self._drop_caches()

    def close(self) -> None:
        """Release the device after calls in flight finish. A second close() raises."""
        with self._state:
            if self._closed:
                raise DeviceClosedError(f"{self.url}: device closed twice")
            self._closed = True
            while self._inflight:
                self._state.wait()
        self._close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        if not self._closed:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"size={self._size()}"
        return f"<{type(self).__name__} {self.url} {state}>"

    # -- default vectored I/O: one primitive call per piece -----------------------------

    def _read_many(self, req: Requests, out: memoryview, threads: int) -> None:
        pos = 0
        for off, length in zip(req.offsets.tolist(), req.length_array().tolist(), strict=True):
            self._read_into(off, out[pos:pos + length])
            pos += length

    def _write_many(self, req: Requests, data: memoryview, threads: int) -> None:
        pos = 0
        for off, length in zip(req.offsets.tolist(), req.length_array().tolist(), strict=True):
            self._write(off, data[pos:pos + length])
            pos += length

    # -- primitives: what a backend implements (arguments already checked) --------------

    @abstractmethod
    def _size(self) -> int:
        """Bytes addressable, fixed for the device's life."""

    @abstractmethod
    def _read_into(self, offset: int, view: memoryview) -> None:
        """Fill the writable byte view with the bytes at offset (in bounds, aligned)."""

    @abstractmethod
    def _write(self, offset: int, view: memoryview) -> None:
        """Store the byte view at offset; durable only after a later _persist()."""

    @abstractmethod
    def _persist(self) -> None:
        """Make every write that has returned durable (a no-op on a volatile device)."""

    @abstractmethod
    def _close(self) -> None:
        """Release the backend's resources; called once, with no call in flight."""

    @classmethod
    def open_url(cls, url) -> Device:
        """The device a parsed URL names (bas.registry.DeviceURL): take every option with
        url.take_*, call url.finish() so unknown options are refused, then construct.

        open_device calls this for the URL's scheme (bas.registry.BACKENDS or
        register_device). Raises InvalidURLError for a bad URL; a backend that is not opened
        by URL (a wrapper built in code) keeps this default, which refuses.
        """
        from bas.errors import InvalidURLError

        raise InvalidURLError(f"{url.text}: {cls.__name__} is not opened by URL")

    def _drop_caches(self) -> None:  # noqa: B027 - optional: most devices cache nothing
        """Nothing cached by default."""

    # -- checks shared by the public methods -------------------------------------------

    def _aligned_buffer(self, length: int) -> np.ndarray:
        """A fresh zeroed uint8 array that meets this device's alignment."""
        if self.alignment <= 1:
            return np.zeros(length, dtype=np.uint8)
        raw = np.zeros(length + self.alignment, dtype=np.uint8)
        skip = (-native.address_of(raw)) % self.alignment
        return raw[skip:skip + length]

    @contextmanager
    def _op(self, what: str, offset: int, length: int):
        with self._state:
            if self._closed:
                raise DeviceClosedError(f"{self.url}: {what} on a closed device")
            self._inflight += 1
        try:
            yield
        except DeviceError:
            raise
        except OSError as exc:
            raise DeviceIOError(exc.errno, f"{self.url}: {what} of {length} bytes at offset "
                                f"{offset} failed: {exc.strerror or exc}") from exc
        finally:
            with self._state:
                self._inflight -= 1
                if not self._inflight:
                    self._state.notify_all()

    def _check_writable(self, what: str) -> None:
        if self._closed:
            raise DeviceClosedError(f"{self.url}: {what} on a closed device")
        if self.read_only:
            raise ReadOnlyError(f"{self.url}: {what} on a device opened read-only")

    def _check_range(self, offset, length: int, what: str) -> int:
        """The offset as a Python int (numpy integers would wrap in the sum), checked."""
        if self._closed:
            raise DeviceClosedError(f"{self.url}: {what} on a closed device")
        offset = _as_int(offset, f"{self.url}: {what} offset")
        size = self._size()
        if offset < 0 or offset + length > size:
            raise OutOfBoundsError(f"{self.url}: {what} of {length} bytes at offset {offset} "
                                   f"is outside the device's {size} bytes")
        return offset

    def _check_aligned(self, offset: int, length: int, view: memoryview, what: str) -> None:
        a = self.alignment
        if a <= 1:
            return
        if offset % a or length % a or (length and native.address_of(view) % a):
            raise AlignmentError(f"{self.url}: {what} of {length} bytes at offset {offset} is "
                                 f"not aligned to {a} bytes (offset, length and buffer address "
                                 f"must be multiples; open with bounce=1 to allow any)")

    def _requests(self, offsets, lengths, what: str) -> Requests:
        if self._closed:
            raise DeviceClosedError(f"{self.url}: {what}_many on a closed device")
        try:
            offs, lens, uniform, total = native.as_requests(offsets, lengths)
        except ValueError as exc:
            raise OutOfBoundsError(f"{self.url}: {what}_many: {exc}") from None
        size = self._size()
        if offs.size:
            longest = uniform if lens is None else int(lens.max())
            if longest > size:
                raise OutOfBoundsError(f"{self.url}: {what}_many piece of {longest} bytes "
                                       f"exceeds the device's {size} bytes")
            ends_ok = offs <= np.uint64(size) - (np.uint64(uniform) if lens is None else lens)
            if not bool(np.all(ends_ok)):
                bad = int(np.argmin(ends_ok))
                raise OutOfBoundsError(f"{self.url}: {what}_many request {bad} at offset "
                                       f"{int(offs[bad])} reaches past the device's {size} "
                                       f"bytes")
        return Requests(offs, lens, uniform, total)

    def _check_aligned_requests(self, req: Requests, view: memoryview, what: str) -> None:
        a = self.alignment
        if a <= 1 or not len(req):
            return
        lens = req.length_array()
        if (bool(np.any(req.offsets % np.uint64(a))) or bool(np.any(lens % np.uint64(a)))
                or native.address_of(view) % a):
            raise AlignmentError(f"{self.url}: {what}_many requests must be aligned to {a} "
                                 f"bytes (offsets, lengths and the buffer address)")


def _byte_view(buf, *, writable: bool) -> memoryview:
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"expected a bytes-like buffer, got {type(buf).__name__}") from None
    if not view.contiguous:
        raise ValueError("buffer must be contiguous")
    if writable and view.readonly:
        raise TypeError("out must be a writable buffer (bytearray, numpy array, mmap, ...)")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _as_int(value, what: str) -> int:
    """operator.index(value) as a Python int; bools and non-integers are OutOfBoundsError."""
    if isinstance(value, (bool, np.bool_)):
        raise OutOfBoundsError(f"{what} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise OutOfBoundsError(f"{what} must be an int, got {value!r}") from None


def _threads(threads: int) -> int:
    if (isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer))
            or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return min(operator.index(threads), native.MAX_THREADS)
