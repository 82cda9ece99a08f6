"""The one module that imports the compiled core extension and wraps each C function.

Private to bas: the public surface is the Device contract (and `bas.crc32`). Every wrapper
checks its arguments (types, sizes, bounds against the given buffers) before it calls C, and
takes memory only as buffer objects, never as integer addresses, so misuse raises a Python
error instead of touching memory it should not. Every C status is checked. Callers (the
device backends) check device bounds; this module checks buffer bounds.
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
    "prefault",
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
    total = _checked_total(offs, lens, uniform, total)
    _check_fit(len(memoryview(out).cast("B")), total, "out")
    _check_region(offs, lens, uniform, min(base_len, _region_len(base)))
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with _pointer(base) as b, ffi.from_buffer(out, require_writable=True) as o:
        rc = lib.bas_mem_gather(b, ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens),
                                uniform, n, o, _check_threads(threads))
    if rc:
        _raise_errno(rc, "memory gather")


def mem_scatter(base, base_len: int, offs, lens, uniform, total, src, threads=1) -> None:
    """Copy the packed pieces of src into [offs[i], offs[i]+len_i) of the region at base."""
    total = _checked_total(offs, lens, uniform, total)
    _check_fit(len(memoryview(src).cast("B")), total, "data")
    _check_region(offs, lens, uniform, min(base_len, _region_len(base)))
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with _pointer(base, writable=True) as b, ffi.from_buffer(src) as s:
        rc = lib.bas_mem_scatter(b, ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens),
                                 uniform, n, s, _check_threads(threads))
    if rc:
        _raise_errno(rc, "memory scatter")


def fd_gather(fd, fd_direct, align, direct_limit, offs, lens, uniform, total, out,
              threads=1, cache_first: bool = False) -> int:
    """pread the pieces into out, packed; see bas_io.h for the O_DIRECT split.

    cache_first: take what the page cache holds before reading through fd_direct. Returns
    the bytes served from the page cache that way (0 without cache_first).
    """
    _check_fd_args(fd, fd_direct, align)
    total = _checked_total(offs, lens, uniform, total)
    _check_fit(len(memoryview(out).cast("B")), total, "out")
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    cached = ffi.new("uint64_t *")
    with ffi.from_buffer(out, require_writable=True) as o:
        args = (fd, fd_direct, align, direct_limit, ffi.from_buffer("uint64_t[]", offs),
                _lens_ptr(lens), uniform, n, o, _check_threads(threads))
        rc = (lib.bas_fd_gather_cached(*args, cached) if cache_first
              else lib.bas_fd_gather(*args))
    if rc:
        _raise_errno(rc, "file read")
    return int(cached[0])


def fd_scatter(fd, fd_direct, align, direct_limit, offs, lens, uniform, total, src,
               threads=1) -> None:
    """pwrite the packed pieces of src; see bas_io.h for the O_DIRECT split."""
    _check_fd_args(fd, fd_direct, align)
    total = _checked_total(offs, lens, uniform, total)
    _check_fit(len(memoryview(src).cast("B")), total, "data")
    uniform, n = _effective_uniform(lens, uniform, offs.size)
    with ffi.from_buffer(src) as s:
        rc = lib.bas_fd_scatter(fd, fd_direct, align, direct_limit,
                                ffi.from_buffer("uint64_t[]", offs), _lens_ptr(lens), uniform,
                                n, s, _check_threads(threads))
    if rc:
        _raise_errno(rc, "file write")


def prefault(buf, offset: int = 0, length: int | None = None, threads: int = 1) -> None:
    """Fault in the pages of [offset, offset+length) of a (mapped) buffer by reading one
    byte of each, under the SIGBUS guard: a file that shrank under its mapping raises
    OSError(EIO) here instead of killing the process at the next touch."""
    total = memoryview(buf).nbytes
    length = total - offset if length is None else length
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


# ---------------------------------------------------------------------------------------------
# gensort / valsort kernels (native/bas_gensort.h). Record numbers and checksums are 128-bit;
# C takes them as (hi, lo) halves, these wrappers take and return Python ints. Parts travel as
# dicts with the fields of bas.sort.valsort.Summary.

__all__ += ["GENSORT_RECORD", "gensort_generate", "valsort_combine", "valsort_scan"]

GENSORT_RECORD: int = lib.bas_gensort_record_size()
_U64 = (1 << 64) - 1
_PART_COUNTS = ("records", "duplicates", "unordered")


def _whole_records(nbytes: int, what: str) -> int:
    if nbytes % GENSORT_RECORD:
        raise ValueError(f"{what} holds {nbytes} bytes, not a whole number of "
                         f"{GENSORT_RECORD}-byte records")
    return nbytes // GENSORT_RECORD


def gensort_generate(buf, start: int, ascii: bool = False, skew: bool = False, threads: int = 1,
                     checksum: bool = True) -> int | None:
    """Fill buf with records start, start + 1, ...; return their checksum if asked for.

    buf must be writable and hold a whole number of records; record numbers stop below 2**128.
    """
    if not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start must be a non-negative int, got {start!r}")
    start = int(start)
    threads = _check_threads(threads)
    hi = ffi.new("uint64_t *") if checksum else ffi.NULL
    lo = ffi.new("uint64_t *") if checksum else ffi.NULL
    with ffi.from_buffer(buf, require_writable=True) as p:
        n = _whole_records(len(p), "buffer")
        if start + n > 1 << 128:
            raise ValueError(f"records [{start}, {start + n}) pass the last record number 2**128-1")
        if n == 0:
            return 0 if checksum else None  # start may be 2**128 here, past what C takes
        rc = lib.bas_gensort_generate(p, start >> 64, start & _U64, n, bool(ascii), bool(skew),
                                      threads, hi, lo)
    if rc:
        _raise_errno(rc, "gensort")
    return (hi[0] << 64 | lo[0]) if checksum else None


def _part_to_dict(c) -> dict:
    return {
        "records": int(c.records),
        "checksum": int(c.checksum_hi) << 64 | int(c.checksum_lo),
        "duplicates": int(c.duplicates),
        "unordered": int(c.unordered),
        "first_unordered": int(c.first_unordered) if c.unordered else None,
        "first_record": bytes(ffi.buffer(c.first)),
        "last_record": bytes(ffi.buffer(c.last)),
    }


def _part_from_dict(d: dict):
    c = ffi.new("struct bas_valsort_part *")
    for name in _PART_COUNTS:
        value = d[name]
        if not 0 <= value <= _U64:
            raise ValueError(f"{name} {value} does not fit 64 bits")
        setattr(c, name, value)
    first_unordered = d["first_unordered"] or 0
    checksum = d["checksum"]
    if not 0 <= first_unordered <= _U64 or not 0 <= checksum < 1 << 128:
        raise ValueError("first_unordered or checksum out of range")
    c.first_unordered = first_unordered
    c.checksum_hi, c.checksum_lo = checksum >> 64, checksum & _U64
    for name, field in (("first_record", c.first), ("last_record", c.last)):
        if len(d[name]) != GENSORT_RECORD:
            raise ValueError(f"{name} must be {GENSORT_RECORD} bytes, got {len(d[name])}")
        ffi.memmove(field, d[name], GENSORT_RECORD)
    return c


def valsort_scan(buf, threads: int = 1) -> dict:
    """Validate the records in buf (a whole number of them) as one run; see valsort_combine."""
    threads = _check_threads(threads)
    out = ffi.new("struct bas_valsort_part *")
    with ffi.from_buffer(buf) as p:
        n = _whole_records(len(p), "buffer")
        rc = lib.bas_valsort_scan(p, n, threads, out)
    if rc:
        _raise_errno(rc, "valsort")
    return _part_to_dict(out)


def valsort_combine(acc: dict, nxt: dict) -> dict:
    """The part made of run acc directly followed by run nxt."""
    c = _part_from_dict(acc)
    rc = lib.bas_valsort_combine(c, _part_from_dict(nxt))
    if rc:
        _raise_errno(rc, "valsort combine")
    return _part_to_dict(c)


# -- sort kernels (bas_sort.h) ---------------------------------------------------------------

INDEX_BYTES: int = lib.bas_index_bytes()
MAX_ENTRY_SIZE: int = lib.bas_max_entry_size()


def _buffer_len(buf) -> int:
    return memoryview(buf).nbytes


def entry_size(key_size: int) -> int:
    """Bytes of one (key, record index) entry."""
    if not 1 <= key_size <= MAX_ENTRY_SIZE - INDEX_BYTES:
        raise ValueError(f"key_size must be 1..{MAX_ENTRY_SIZE - INDEX_BYTES}, got {key_size}")
    return key_size + INDEX_BYTES


def extract_entries(records, n: int, record_size: int, key_offset: int, key_size: int,
                    first_index: int, entries, threads: int = 1) -> None:
    """Build n entries (key bytes + big-endian index) from n back-to-back records."""
    es = entry_size(key_size)
    if record_size < 1 or key_offset < 0 or key_offset + key_size > record_size:
        raise ValueError(f"key [{key_offset}, {key_offset + key_size}) does not fit a "
                         f"{record_size}-byte record")
    if n < 0 or first_index < 0 or first_index + n > 1 << (8 * INDEX_BYTES):
        raise ValueError(f"record indexes must stay below 2^{8 * INDEX_BYTES}")
    _check_fit(_buffer_len(records), n * record_size, "records")
    _check_fit(_buffer_len(entries), n * es, "entries")
    with ffi.from_buffer(records) as r, ffi.from_buffer(entries, require_writable=True) as e:
        rc = lib.bas_extract_entries(r, n, record_size, key_offset, key_size, first_index, e,
                                     _check_threads(threads))
    if rc:
        _raise_errno(rc, "extract entries")


def entries_from_keys(keys, n: int, key_size: int, first_index: int, entries,
                      threads: int = 1) -> None:
    """Build n entries from n packed keys."""
    extract_entries(keys, n, key_size, 0, key_size, first_index, entries, threads)


def sort_entries(entries, n: int, key_size: int, tmp, threads: int = 1) -> None:
    """Radix-sort n entries in place (memcmp order of key then index); tmp: same size."""
    es = entry_size(key_size)
    _check_fit(_buffer_len(entries), n * es, "entries")
    _check_fit(_buffer_len(tmp), n * es, "tmp")
    with ffi.from_buffer(entries, require_writable=True) as e, \
            ffi.from_buffer(tmp, require_writable=True) as t:
        rc = lib.bas_sort_entries(e, n, es, t, _check_threads(threads))
    if rc:
        _raise_errno(rc, "sort entries")


def entry_offsets(entries, n: int, key_size: int, record_size: int, base: int = 0) -> np.ndarray:
    """The byte offsets (index * record_size + base) of n entries' records, as uint64."""
    es = entry_size(key_size)
    _check_fit(_buffer_len(entries), n * es, "entries")
    out = np.empty(n, dtype=np.uint64)
    with ffi.from_buffer(entries) as e:
        rc = lib.bas_entry_offsets(e, n, es, record_size, base,
                                   ffi.from_buffer("uint64_t[]", out))
    if rc:
        _raise_errno(rc, "entry offsets")
    return out


class Merger:
    """k-way loser-tree merge over per-run buffers that the caller refills.

    set_run(r, buf, count, exhausted) gives run r a buffer of count items; merge(out) fills out
    and returns (items written, run to refill or None). Items compare by memcmp of
    [cmp_offset, cmp_offset + cmp_len), ties by run number.
    """

    def __init__(self, k: int, item_size: int, cmp_offset: int, cmp_len: int):
        if k < 1 or item_size < 1 or cmp_offset < 0 or cmp_offset + cmp_len > item_size:
            raise ValueError(f"bad merge shape k={k} item={item_size} "
                             f"cmp=[{cmp_offset}, {cmp_offset + cmp_len})")
        self.k, self.item = k, item_size
        self.cmp_offset, self.cmp_len = cmp_offset, cmp_len
        self._bufs = [np.empty(0, np.uint8)] * k
        self._counts = np.zeros(k, np.uint64)
        self.pos = np.zeros(k, np.uint64)
        self._exhausted = np.ones(k, np.uint8)

    def set_run(self, r: int, buf: np.ndarray, count: int, exhausted: bool) -> None:
        if not 0 <= r < self.k:
            raise ValueError(f"run {r} out of range")
        if buf.dtype != np.uint8 or not buf.flags.c_contiguous or buf.size < count * self.item:
            raise ValueError("run buffer must be a contiguous uint8 array of count items")
        self._bufs[r] = buf
        self._counts[r] = count
        self.pos[r] = 0
        self._exhausted[r] = 1 if exhausted else 0

    def merge(self, out: np.ndarray) -> tuple[int, int | None]:
        cap = out.size // self.item
        if out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError("out must be a contiguous uint8 array")
        handles = [ffi.from_buffer(b) for b in self._bufs]
        try:
            ptrs = ffi.new("const uint8_t *[]", handles)
            out_n = ffi.new("uint64_t *")
            refill = ffi.new("int *")
            rc = lib.bas_merge(self.k, ptrs, ffi.from_buffer("uint64_t[]", self._counts),
                               ffi.from_buffer("uint64_t[]", self.pos),
                               ffi.from_buffer("uint8_t[]", self._exhausted), self.item,
                               self.cmp_offset, self.cmp_len,
                               ffi.from_buffer(out, require_writable=True), cap, out_n, refill)
        finally:
            for h in handles:
                ffi.release(h)
        if rc:
            _raise_errno(rc, "merge")
        return int(out_n[0]), (None if refill[0] < 0 else int(refill[0]))
