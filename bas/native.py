"""The one module that imports the compiled core extension and wraps each C function.

Every wrapper checks its arguments (types, sizes, bounds against the given buffers) before it
calls C, so misuse raises a Python error instead of touching memory it should not. Callers
(the device backends) check device bounds; this module checks buffer bounds.
"""

from __future__ import annotations

import errno
import os

import numpy as np

try:
    from bas._bas_native import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "bas native extension is not built: run 'make setup' (or 'pip install -e .')"
    ) from exc

__all__ = [
    "MAX_THREADS",
    "address_of",
    "as_requests",
    "crc32",
    "fd_gather",
    "fd_scatter",
    "mem_gather",
    "mem_scatter",
]

MAX_THREADS: int = lib.bas_max_threads()


def _raise_errno(rc: int, what: str) -> None:
    code = -rc
    raise OSError(code, f"{what}: {os.strerror(code)}")


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
        return offs, None, uniform, uniform * offs.size
    lraw = np.asarray(lengths)
    if lraw.shape != raw.shape:
        raise ValueError(f"lengths shape {lraw.shape} does not match offsets shape {raw.shape}")
    if lraw.size and lraw.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers, got dtype {lraw.dtype}")
    if lraw.size and lraw.dtype.kind == "i" and lraw.min() < 0:
        raise ValueError("lengths must not be negative")
    lens = np.ascontiguousarray(lraw, dtype=np.uint64)
    return offs, lens, 0, int(lens.sum(dtype=np.uint64)) if lens.size else 0


def _check_threads(threads: int) -> int:
    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return min(int(threads), MAX_THREADS)


def _lens_ptr(lens: np.ndarray | None):
    return ffi.NULL if lens is None else ffi.from_buffer("uint64_t[]", lens)


def _check_fit(buf_len: int, total: int, what: str) -> None:
    if buf_len < total:
        raise ValueError(f"{what} holds {buf_len} bytes but the requests move {total}")


def _effective_uniform(lens: np.ndarray | None, uniform: int, n: int) -> tuple[int, int]:
    """(uniform_len, n) for C: zero-length uniform requests are no requests at all."""
    if lens is None and uniform == 0:
        return 0, 0
    return uniform, n


def mem_gather(base, base_len: int, offs, lens, uniform, total, out, threads=1) -> None:
    """Copy pieces [offs[i], offs[i]+len_i) of the region at base into out, packed."""
    _check_fit(len(memoryview(out).cast("B")), total, "out")
    _check_region(offs, lens, uniform, base_len)
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with _pointer(base) as b, ffi.from_buffer(out, require_writable=True) as o:
        rc = lib.bas_mem_gather(b, ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens),
                                uniform, n, o, _check_threads(threads))
    if rc:
        _raise_errno(rc, "memory gather")


def mem_scatter(base, base_len: int, offs, lens, uniform, total, src, threads=1) -> None:
    """Copy the packed pieces of src into [offs[i], offs[i]+len_i) of the region at base."""
    _check_fit(len(memoryview(src).cast("B")), total, "data")
    _check_region(offs, lens, uniform, base_len)
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with _pointer(base, writable=True) as b, ffi.from_buffer(src) as s:
        rc = lib.bas_mem_scatter(b, ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens),
                                 uniform, n, s, _check_threads(threads))
    if rc:
        _raise_errno(rc, "memory scatter")


def fd_gather(fd, fd_direct, align, direct_limit, offs, lens, uniform, total, out,
              threads=1) -> None:
    """pread the pieces into out, packed; see bas_io.h for the O_DIRECT split."""
    _check_fd_args(fd, fd_direct, align)
    _check_fit(len(memoryview(out).cast("B")), total, "out")
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with ffi.from_buffer(out, require_writable=True) as o:
        rc = lib.bas_fd_gather(fd, fd_direct, align, direct_limit,
                               ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens), uniform,
                               n, o, _check_threads(threads))
    if rc:
        _raise_errno(rc, "file read")


def fd_scatter(fd, fd_direct, align, direct_limit, offs, lens, uniform, total, src,
               threads=1) -> None:
    """pwrite the packed pieces of src; see bas_io.h for the O_DIRECT split."""
    _check_fd_args(fd, fd_direct, align)
    _check_fit(len(memoryview(src).cast("B")), total, "data")
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with ffi.from_buffer(src) as s:
        rc = lib.bas_fd_scatter(fd, fd_direct, align, direct_limit,
                                ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens), uniform,
                                n, s, _check_threads(threads))
    if rc:
        _raise_errno(rc, "file write")


def crc32(data, crc: int = 0) -> int:
    """zlib CRC-32 of a buffer (GIL released), continuing from crc."""
    with ffi.from_buffer(data) as p:
        return int(lib.bas_crc32(crc & 0xFFFFFFFF, p, len(p)))


class _pointer:
    """A C pointer to a region given as a buffer object or as (address, owner) int address."""

    def __init__(self, base, writable: bool = False):
        self._base = base
        self._writable = writable
        self._handle = None

    def __enter__(self):
        if isinstance(self._base, int):
            return ffi.cast("uint8_t *", self._base)
        self._handle = ffi.from_buffer(self._base, require_writable=self._writable)
        return self._handle

    def __exit__(self, *exc):
        if self._handle is not None:
            ffi.release(self._handle)


def _check_region(offs: np.ndarray, lens, uniform: int, base_len: int) -> None:
    if offs.size == 0:
        return
    if lens is None:
        if uniform > base_len or int(offs.max()) > base_len - uniform:
            raise ValueError(f"a request reaches past the region of {base_len} bytes")
        return
    if int(lens.max()) > base_len or bool(np.any(offs > np.uint64(base_len) - lens)):
        raise ValueError(f"a request reaches past the region of {base_len} bytes")


def _check_fd_args(fd: int, fd_direct: int, align: int) -> None:
    if fd < 0:
        raise ValueError(f"bad file descriptor {fd}")
    if fd_direct >= 0 and (align <= 0 or align & (align - 1)):
        raise ValueError(f"O_DIRECT alignment must be a power of two, got {align}")
    if fd_direct < -1:
        raise OSError(errno.EBADF, "bad O_DIRECT file descriptor")
