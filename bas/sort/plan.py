"""Choosing the algorithm and thread counts for a sort, from sizes, capabilities and profiles."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bas import _native as native

__all__ = ["Plan", "make_plan"]

ALGORITHMS = ("auto", "kv", "kv-external", "mergesort")
#: bytes of records one gather batch (and one output write) moves
GATHER_BYTES = 32 << 20
#: fraction of physical memory the page cache can be trusted to hold for a buffered input
PAGE_CACHE_SHARE = 0.5


@dataclass
class Plan:
    algorithm: str  # "kv" (index in memory), "kv-external" (entry runs) or "mergesort"
    reason: str
    read_threads: int
    write_threads: int
    sort_threads: int
    chunk_records: int  # records per run (external algorithms) or all of them (kv)
    gather_records: int  # records per gather batch
    budget: int  # bytes of buffers the engine may hold
    random_reads_cheap: bool  # gather records in entry order (no address sort)
    strided_keys: bool  # read only the keys (the stride skips whole media units)
    gather_threads: int  # threads for random record reads
    staging_bytes: int = 16 << 20  # most bytes one thread stages records or keys in


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def _profile_threads(profile, kind: str, default: int, pattern: str = "sequential",
                     access_size: int | None = None) -> int:
    if profile is None:
        return default
    try:
        return max(1, int(profile.best_threads(kind, pattern, access_size)))
    except (AttributeError, KeyError, ValueError):
        return default


def _random_reads_cheap(device, size: int) -> tuple[bool, str]:
    """Whether gathering records by random reads pays, and why (BRAID's R)."""
    if device.byte_addressable:
        return True, "the input is byte-addressable, so random record reads are cheap"
    if device.direct_io:
        return False, ("the input bypasses the page cache (O_DIRECT): every random record "
                       f"read costs a {device.granularity}-byte block")
    if size <= PAGE_CACHE_SHARE * _physical_memory():
        return True, "the buffered input fits in the page cache, so random reads hit memory"
    return False, "the buffered input is larger than the page cache can hold"


def make_plan(device, n: int, record_size: int, key_size: int, budget: int,
              threads: int | dict | None, algorithm: str, profile,
              schedule: str = "staged") -> Plan:
    """Pick the algorithm and sizes; raises ValueError when the budget cannot work."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    cpus = os.cpu_count() or 1
    if isinstance(threads, dict):
        read_t = threads.get("read", cpus)
        write_t = threads.get("write", cpus)
        sort_t = threads.get("sort", cpus)
    elif threads is not None:
        read_t = write_t = sort_t = int(threads)
    else:
        read_t = _profile_threads(profile, "read", cpus)
        write_t = _profile_threads(profile, "write", cpus)
        sort_t = cpus
    es = native.entry_size(key_size)
    # a gather batch takes at most an eighth of the budget, so small budgets still work
    gather = max(1, min(n, GATHER_BYTES // record_size, budget // (8 * record_size)))
    # kv in memory: entries + radix scratch + two gather buffers (one being written)
    # staging for reading records or keys: an eighth of the budget, shared by the threads
    # that each hold one at a time (rsw: every sort thread)
    staging = max(1, budget // (8 * (max(1, sort_t) if schedule == "rsw" else 1)))
    cheap, why_cheap = _random_reads_cheap(device, n * record_size)
    # two gather buffers (one being written), a third to stage address-ordered reads
    gathers = (2 if cheap else 3) * gather * record_size
    kv_need = 2 * n * es + gathers + staging
    gather_t = (_profile_threads(profile, "read", read_t, "random", record_size)
                if threads is None else read_t)
    if profile is not None and algorithm == "auto" and record_size > es:
        kv_s, merge_s = _modelled_seconds(profile, device, n, record_size, es, kv_need <= budget,
                                          n * (2 * es + 2 * record_size) <= budget,
                                          read_t, write_t, gather_t)
        cheap = kv_s < merge_s
        why_cheap = (f"the profile ({getattr(profile, 'device', 'profile')}) models key/value "
                     f"separation at {kv_s:.3g} s and merge sort at {merge_s:.3g} s")
    if algorithm == "auto":
        if record_size <= es:
            algorithm = "mergesort"
            reason = (f"a {record_size}-byte record is no bigger than its {es}-byte entry: "
                      "key/value separation would move more bytes than it saves")
        elif not cheap:
            algorithm = "mergesort"
            reason = why_cheap + "; sequential runs of whole records cost less"
        elif kv_need <= budget:
            algorithm = "kv"
            reason = why_cheap + "; the key index fits the memory budget, so each record " \
                                 "is read and written once"
        else:
            algorithm = "kv-external"
            reason = why_cheap + "; the key index exceeds the memory budget, so sorted runs " \
                                 "of entries (never values) are merged"
    else:
        reason = f"algorithm={algorithm} was asked for"
    if algorithm == "kv" and kv_need > budget:
        raise ValueError(f"algorithm=kv needs {kv_need} bytes for {n} entries but the memory "
                         f"budget is {budget}; use kv-external or a larger budget")
    item = record_size if algorithm == "mergesort" else es
    # a run chunk holds its items twice (data + radix scratch) plus, for mergesort, the
    # records twice (read + permuted) and their entries
    per_record = 2 * es + (2 * record_size if algorithm == "mergesort" else 0)
    reserve = (gathers + staging) if algorithm != "mergesort" else 0
    chunk = n if algorithm == "kv" else (budget - reserve) // per_record
    if algorithm != "kv" and chunk < 2:
        raise ValueError(f"memory budget {budget} is too small to form runs of {item}-byte "
                         f"items (need at least {reserve + 2 * per_record} bytes)")
    if schedule == "piped" and algorithm != "kv":
        chunk //= 3  # a chunk each being read, sorted and written, plus one queued
    if schedule == "rsw" and algorithm != "kv":
        chunk //= max(1, sort_t)  # every thread holds a chunk of its own
    return Plan(algorithm, reason, max(1, read_t), max(1, write_t), max(1, sort_t),
                max(1, min(n, chunk)), gather, budget, cheap,
                cheap and record_size >= 2 * device.granularity, gather_t,
                min(16 << 20, staging))


def _modelled_seconds(profile, device, n: int, record_size: int, es: int, kv_in_memory: bool,
                      merge_in_memory: bool, read_t: int, write_t: int, gather_t: int
                      ) -> tuple[float, float]:
    """(key/value separation, merge sort) seconds the profile predicts for this input."""
    data = n * record_size
    seq_read = profile.seconds("read", data, "sequential", read_t)
    seq_write = profile.seconds("write", data, "sequential", write_t)
    if record_size >= 2 * device.granularity:  # strided key reads skip whole media units
        keys = profile.seconds("read", n * device.granularity, "random", read_t,
                               device.granularity)
    else:
        keys = seq_read
    gather = profile.seconds("read", data, "random", gather_t, record_size)
    runs = 0.0 if kv_in_memory else (profile.seconds("write", n * es, "sequential", write_t)
                                     + profile.seconds("read", n * es, "sequential", read_t))
    kv = keys + gather + seq_write + runs
    merge = seq_read + seq_write if merge_in_memory else 2 * (seq_read + seq_write)
    return kv, merge
