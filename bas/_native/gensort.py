"""Bindings of native/bas_gensort.h: gensort 1.5 records and valsort's checks, on threads.

Record numbers and checksums are 128-bit; C takes them as (hi, lo) halves, these wrappers
take and return Python ints. Parts travel as dicts with the fields of
bas.sort.valsort.Summary. Every wrapper checks its arguments before it calls C and checks
the C status after.
"""

from __future__ import annotations

import numpy as np

from bas._native import check_status, check_threads, ffi, lib

__all__ = ["GENSORT_RECORD", "gensort_generate", "valsort_combine", "valsort_scan"]

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
    threads = check_threads(threads)
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
    check_status(rc, "gensort")
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
    threads = check_threads(threads)
    out = ffi.new("struct bas_valsort_part *")
    with ffi.from_buffer(buf) as p:
        n = _whole_records(len(p), "buffer")
        rc = lib.bas_valsort_scan(p, n, threads, out)
    check_status(rc, "valsort")
    return _part_to_dict(out)


def valsort_combine(acc: dict, nxt: dict) -> dict:
    """The part made of run acc directly followed by run nxt."""
    c = _part_from_dict(acc)
    rc = lib.bas_valsort_combine(c, _part_from_dict(nxt))
    check_status(rc, "valsort combine")
    return _part_to_dict(c)
