"""Private bindings of the native kernels: one module per C area, over two extensions.

This package imports the core extension `bas._bas_native` once (here, and nowhere else) and
holds what every area's wrappers share: the thread cap from C, the argument checks that recur
and the C status -> exception mapping. Each area has exactly one binding module that wraps
every function of its header with argument checks before the call and a status check after:

    bas._native.io       native/bas_io.h       gather/scatter over memory and files, CRC-32
    bas._native.sort     native/bas_sort.h     key/index entries, radix sort, k-way merge
    bas._native.gensort  native/bas_gensort.h  gensort records and valsort checks
    bas._native.pmem     native/bas_pmem.h     libpmemobj pools (its own, optional extension
                                               `bas._bas_pmem`, imported only there)

Wrappers take memory only as buffer objects, never as integer addresses, so misuse raises a
Python error instead of touching memory it should not. The public surface is the Device
contract and `bas.crc32`, `bas.prefault`, `bas.MAX_THREADS`.
"""

from __future__ import annotations

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
    "buffer_len",
    "check_count",
    "check_fit",
    "check_status",
    "check_threads",
    "ffi",
    "lib",
    "raise_errno",
]

#: the most worker threads one native call starts (BAS_MAX_THREADS, native/bas_threads.h)
MAX_THREADS: int = lib.bas_max_threads()


def raise_errno(rc: int, what: str) -> None:
    """Raise OSError for a C status rc (a negative errno)."""
    code = -rc
    raise OSError(code, f"{what}: {os.strerror(code)}")


def check_status(rc: int, what: str) -> None:
    """A C status: 0 passes, a negative errno raises OSError (raise_errno)."""
    if rc:
        raise_errno(rc, what)


def check_threads(threads: int) -> int:
    """A positive thread count, capped at MAX_THREADS."""
    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return min(int(threads), MAX_THREADS)


def check_count(value, what: str) -> int:
    """A non-negative int (a count, size or offset that C takes as uint64)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative int, got {value!r}")
    value = int(value)
    if value >= 1 << 64:
        raise ValueError(f"{what} {value} does not fit 64 bits")
    return value


def check_fit(buf_len: int, total: int, what: str) -> None:
    """A buffer of buf_len bytes must hold total bytes."""
    if buf_len < total:
        raise ValueError(f"{what} holds {buf_len} bytes but the requests move {total}")


def buffer_len(buf) -> int:
    """Bytes of a buffer object."""
    return memoryview(buf).nbytes
