"""Bindings of native/bas_io.h: gather/scatter over mapped memory and file descriptors, CRC-32.

Every wrapper checks its arguments (types, sizes, bounds against the given buffers) before it
calls C and checks the C status after. Callers (the device backends) check device bounds;
this module checks buffer bounds. A region is a buffer object, never an integer address.
"""

from __future__ import annotations

import errno
import os

import numpy as np

from bas._native import (
    MAX_THREADS,
    check_count,
    check_fit,
    check_status,
    check_threads,
    ffi,
    lib,
)

__all__ = [
    "MAX_THREADS",
    "MAX_TOTAL",
    "address_of",
    "as_requests",
    "crc32",
    "fd_gather",
    "fd_scatter",
    "mem_gather",
    "mem_scatter",
    "prefault",
    "request_total",
]


def address_of(buf) -> int:
    """The address of a buffer's first byte (for alignment checks)."""
    with ffi.from_buffer(buf) as p:
        return int(ffi.cast("uintptr_t", p))


def as_requests(offsets, lengths) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """Normalise (offsets, lengths) to (uint64 offsets, uint64 lengths or None, uniform, total).

    lengths may be one int (every piece that long) or a sequence as long as offsets.
    Raises ValueError for negative values, mismatched shapes or non-integers.
    """
    raw = np.asarray(offsets)
    if raw.ndim != 1:
        raise ValueError(f"offsets must be one-dimensional, got shape {raw.shape}")
    if raw.size and raw.dtype.kind not in "iu":
        raise ValueError(f"offsets must be integers, got dtype {raw.dtype}")
    if raw.size and raw.dtype.kind == "i" and raw.min() < 0:
        raise ValueError("offsets must not be negative")
    offs = np.ascontiguousarray(raw, dtype=np.uint64)
    if isinstance(lengths, (int, np.integer)):
        uniform = int(lengths)
        if uniform < 0:
            raise ValueError(f"length must not be negative, got {uniform}")
        return offs, None, uniform, request_total(None, uniform, offs.size)
    lraw = np.asarray(lengths)
    if lraw.shape != raw.shape:
        raise ValueError(f"lengths shape {lraw.shape} does not match offsets shape {raw.shape}")
    if lraw.size and lraw.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers, got dtype {lraw.dtype}")
    if lraw.size and lraw.dtype.kind == "i" and lraw.min() < 0:
        raise ValueError("lengths must not be negative")
    lens = np.ascontiguousarray(lraw, dtype=np.uint64)
    return offs, lens, 0, request_total(lens, 0, offs.size)


#: the most bytes one vectored call may move (C adds lengths in 64 bits)
MAX_TOTAL = (1 << 63) - 1


def request_total(lens: np.ndarray | None, uniform: int, n: int) -> int:
    """Bytes the requests move, computed here (never trusted from a caller), without wrapping."""
    if lens is None:
        total = uniform * n
    elif not lens.size:
        total = 0
    elif int(lens.max()) <= MAX_TOTAL // lens.size:  # no uint64 wrap-around possible
        total = int(lens.sum(dtype=np.uint64))
    else:
        total = MAX_TOTAL + 1
    if total > MAX_TOTAL:
        raise ValueError(f"the requests move more than {MAX_TOTAL} bytes")
    return total


def _checked_total(offs: np.ndarray, lens, uniform: int, claimed: int) -> int:
    """The requests' true byte count; a caller's figure that disagrees is refused."""
    if lens is not None and (lens.dtype != np.uint64 or lens.shape != offs.shape
                             or not lens.flags.c_contiguous):
        raise ValueError("lengths must be a contiguous uint64 array shaped like offsets")
    if offs.dtype != np.uint64 or offs.ndim != 1 or not offs.flags.c_contiguous:
        raise ValueError("offsets must be a contiguous one-dimensional uint64 array")
    if lens is None and (not isinstance(uniform, (int, np.integer)) or uniform < 0):
        raise ValueError(f"uniform length must be a non-negative int, got {uniform!r}")
    total = request_total(lens, int(uniform), offs.size)
    if total != claimed:
        raise ValueError(f"requests move {total} bytes, not the {claimed} given")
    return total


def _lens_ptr(lens: np.ndarray | None):
    """The lengths for C: NULL for uniform requests."""
    return ffi.NULL if lens is None else ffi.from_buffer("uint64_t[]", lens)


def _effective_uniform(lens: np.ndarray | None, uniform: int, n: int) -> tuple[int, int]:
    """(uniform_len, n) for C: zero-length uniform requests are no requests at all."""
    if lens is None and uniform == 0:
        return 0, 0
    return uniform, n


def mem_gather(base, base_len: int, offs, lens, uniform, total, out, threads=1) -> None:
    """Copy pieces [offs[i], offs[i]+len_i) of the region at base into out, packed."""
    total = _checked_total(offs, lens, uniform, total)
    check_fit(len(memoryview(out).cast("B")), total, "out")
    _check_region(offs, lens, uniform, min(base_len, _region_len(base)))
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with _pointer(base) as b, ffi.from_buffer(out, require_writable=True) as o:
        rc = lib.bas_mem_gather(b, ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens),
                                uniform, n, o, check_threads(threads))
    check_status(rc, "memory gather")


def mem_scatter(base, base_len: int, offs, lens, uniform, total, src, threads=1) -> None:
    """Copy the packed pieces of src into [offs[i], offs[i]+len_i) of the region at base."""
    total = _checked_total(offs, lens, uniform, total)
    check_fit(len(memoryview(src).cast("B")), total, "data")
    _check_region(offs, lens, uniform, min(base_len, _region_len(base)))
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with _pointer(base, writable=True) as b, ffi.from_buffer(src) as s:
        rc = lib.bas_mem_scatter(b, ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens),
                                 uniform, n, s, check_threads(threads))
    check_status(rc, "memory scatter")


def fd_gather(fd, fd_direct, align, direct_limit, offs, lens, uniform, total, out,
              threads=1, cache_first: bool = False) -> int:
    """pread the pieces into out, packed; see bas_io.h for the O_DIRECT split.

    cache_first: take what the page cache holds before reading through fd_direct. Returns
    the bytes served from the page cache that way (0 without cache_first).
    """
    _check_fd_args(fd, fd_direct, align, direct_limit)
    total = _checked_total(offs, lens, uniform, total)
    check_fit(len(memoryview(out).cast("B")), total, "out")
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    cached = ffi.new("uint64_t *")
    with ffi.from_buffer(out, require_writable=True) as o:
        args = (fd, fd_direct, align, direct_limit, ffi.from_buffer("uint64_t[]", offs),
                _lens_ptr(lens), uniform, n, o, check_threads(threads))
        rc = (lib.bas_fd_gather_cached(*args, cached) if cache_first
              else lib.bas_fd_gather(*args))
    check_status(rc, "file read")
    return int(cached[0])


def fd_scatter(fd, fd_direct, align, direct_limit, offs, lens, uniform, total, src,
               threads=1) -> None:
    """pwrite the packed pieces of src; see bas_io.h for the O_DIRECT split."""
    _check_fd_args(fd, fd_direct, align, direct_limit)
    total = _checked_total(offs, lens, uniform, total)
    check_fit(len(memoryview(src).cast("B")), total, "data")
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with ffi.from_buffer(src) as s:
        rc = lib.bas_fd_scatter(fd, fd_direct, align, direct_limit,
                                ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens), uniform,
                                n, s, check_threads(threads))
    check_status(rc, "file write")


def prefault(buf, offset: int = 0, length: int | None = None, threads: int = 1) -> None:
    """Fault in the pages of [offset, offset+length) of a (mapped) buffer by reading one
    byte of each, under the SIGBUS guard: a file that shrank under its mapping raises
    OSError(EIO) here instead of killing the process at the next touch."""
    total = memoryview(buf).nbytes
    offset = check_count(offset, "offset")
    length = total - offset if length is None else check_count(length, "length")
    if offset < 0 or length < 0 or offset + length > total:
        raise ValueError(f"[{offset}, {offset + length}) is outside the buffer of {total}")
    if not length:
        return
    page = os.sysconf("SC_PAGE_SIZE")
    first = offset - offset % page
    offs = np.arange(first, offset + length, page, dtype=np.uint64)
    offs[0] = offset  # the first byte asked for, on the first page
    scratch = np.empty(offs.size, dtype=np.uint8)
    mem_gather(buf, total, offs, None, 1, int(offs.size), scratch, threads)


def crc32(data, crc: int = 0) -> int:
    """zlib CRC-32 of a buffer (GIL released), continuing from crc."""
    if isinstance(crc, bool) or not isinstance(crc, (int, np.integer)):
        raise TypeError(f"crc must be an int, got {crc!r}")
    with ffi.from_buffer(data) as p:
        return int(lib.bas_crc32(crc & 0xFFFFFFFF, p, len(p)))


class _pointer:
    """A C pointer to a region given as a buffer object (an int address is refused)."""

    def __init__(self, base, writable: bool = False):
        if isinstance(base, (int, np.integer)):
            raise TypeError("a region must be a buffer object (bytearray, mmap, numpy array, "
                            "a pool's region), not an integer address")
        self._base = base
        self._writable = writable
        self._handle = None

    def __enter__(self):
        self._handle = ffi.from_buffer(self._base, require_writable=self._writable)
        return self._handle

    def __exit__(self, *exc):
        if self._handle is not None:
            ffi.release(self._handle)


def _region_len(base) -> int:
    """Bytes of the region buffer itself: a caller's length never reaches past it."""
    if isinstance(base, (int, np.integer)):
        raise TypeError("a region must be a buffer object (bytearray, mmap, numpy array, "
                        "a pool's region), not an integer address")
    return memoryview(base).nbytes


def _check_region(offs: np.ndarray, lens, uniform: int, base_len: int) -> None:
    """Every request lies inside a region of base_len bytes."""
    if offs.size == 0:
        return
    if lens is None:
        if uniform > base_len or int(offs.max()) > base_len - uniform:
            raise ValueError(f"a request reaches past the region of {base_len} bytes")
        return
    if int(lens.max()) > base_len or bool(np.any(offs > np.uint64(base_len) - lens)):
        raise ValueError(f"a request reaches past the region of {base_len} bytes")


def _check_fd_args(fd: int, fd_direct: int, align: int, direct_limit: int) -> None:
    """The descriptors, O_DIRECT alignment and split point of an fd gather or scatter."""
    for value, what in ((fd, "file descriptor"), (fd_direct, "O_DIRECT file descriptor")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{what} must be an int, got {value!r}")
    check_count(align, "O_DIRECT alignment")
    check_count(direct_limit, "direct_limit")
    if fd < 0:
        raise ValueError(f"bad file descriptor {fd}")
    if fd_direct >= 0 and (align <= 0 or align & (align - 1)):
        raise ValueError(f"O_DIRECT alignment must be a power of two, got {align}")
    if fd_direct < -1:
        raise OSError(errno.EBADF, "bad O_DIRECT file descriptor")
