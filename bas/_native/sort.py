"""Bindings of native/bas_sort.h: key/index entries, the parallel radix sort, k-way merge.

An entry is key_size key bytes and INDEX_BYTES of big-endian record index. Every wrapper
checks its arguments (sizes against the given buffers) before it calls C and checks the C
status after.
"""

from __future__ import annotations

import numpy as np

from bas._native import buffer_len, check_count, check_fit, check_status, check_threads, ffi, lib

__all__ = [
    "INDEX_BYTES",
    "MAX_ENTRY_SIZE",
    "Merger",
    "entries_from_keys",
    "entry_offsets",
    "entry_size",
    "extract_entries",
    "sort_entries",
]

INDEX_BYTES: int = lib.bas_index_bytes()
MAX_ENTRY_SIZE: int = lib.bas_max_entry_size()


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
    check_fit(buffer_len(records), n * record_size, "records")
    check_fit(buffer_len(entries), n * es, "entries")
    with ffi.from_buffer(records) as r, ffi.from_buffer(entries, require_writable=True) as e:
        rc = lib.bas_extract_entries(r, n, record_size, key_offset, key_size, first_index, e,
                                     check_threads(threads))
    check_status(rc, "extract entries")


def entries_from_keys(keys, n: int, key_size: int, first_index: int, entries,
                      threads: int = 1) -> None:
    """Build n entries from n packed keys."""
    extract_entries(keys, n, key_size, 0, key_size, first_index, entries, threads)


def sort_entries(entries, n: int, key_size: int, tmp, threads: int = 1) -> None:
    """Radix-sort n entries in place (memcmp order of key then index); tmp: same size."""
    n = check_count(n, "n")
    es = entry_size(key_size)
    check_fit(buffer_len(entries), n * es, "entries")
    check_fit(buffer_len(tmp), n * es, "tmp")
    with ffi.from_buffer(entries, require_writable=True) as e, \
            ffi.from_buffer(tmp, require_writable=True) as t:
        rc = lib.bas_sort_entries(e, n, es, t, check_threads(threads))
    check_status(rc, "sort entries")


def entry_offsets(entries, n: int, key_size: int, record_size: int, base: int = 0) -> np.ndarray:
    """The byte offsets (index * record_size + base) of n entries' records, as uint64."""
    n = check_count(n, "n")
    record_size = check_count(record_size, "record_size")
    base = check_count(base, "base")
    es = entry_size(key_size)
    check_fit(buffer_len(entries), n * es, "entries")
    out = np.empty(n, dtype=np.uint64)
    with ffi.from_buffer(entries) as e:
        rc = lib.bas_entry_offsets(e, n, es, record_size, base,
                                   ffi.from_buffer("uint64_t[]", out))
    check_status(rc, "entry offsets")
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
        """Give run r a buffer of count items; exhausted: the run has none beyond them."""
        if not 0 <= r < self.k:
            raise ValueError(f"run {r} out of range")
        count = check_count(count, "count")
        if buf.dtype != np.uint8 or not buf.flags.c_contiguous or buf.size < count * self.item:
            raise ValueError("run buffer must be a contiguous uint8 array of count items")
        self._bufs[r] = buf
        self._counts[r] = count
        self.pos[r] = 0
        self._exhausted[r] = 1 if exhausted else 0

    def merge(self, out: np.ndarray) -> tuple[int, int | None]:
        """Merge into out until it is full or a run needs a refill: (items, run or None)."""
        cap = out.size // self.item
        if out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError("out must be a contiguous uint8 array")
        if (self.pos.dtype != np.uint64 or self.pos.shape != (self.k,)
                or not self.pos.flags.c_contiguous):
            raise ValueError(f"pos must be a contiguous uint64 array of {self.k} run positions")
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
        check_status(rc, "merge")
        return int(out_n[0]), (None if refill[0] < 0 else int(refill[0]))
