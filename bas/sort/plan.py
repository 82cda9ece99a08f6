"""Choosing the algorithm and thread counts for a sort, from sizes, capabilities and profiles."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bas._native import sort as native
from bas.memory import MemoryInfo, memory_info, size_text

__all__ = ["Plan", "make_plan"]

ALGORITHMS = ("auto", "kv", "kv-external", "mergesort")
#: bytes of records one gather batch (and one output write) moves
GATHER_BYTES = 32 << 20
#: the most of the available memory a budget may take (the interpreter and the page cache
#: need the rest; a budget past the cgroup's limit gets the sort killed)
BUDGET_SHARE = 0.9
#: a cut never goes below this (or the budget asked for): a reading that low is more likely
#: off than the memory is gone, and a sort refused for it helps no one
BUDGET_FLOOR = 64 << 20
#: share of the memory left beside the sort's buffers that the input can count on keeping in
#: the page cache: the input-sized output streams through the same cache while records are
#: gathered, and trusting a cache that fails costs far more (a device read per record) than
#: distrusting one that holds (one more sequential pass)
PAGE_CACHE_SHARE = 0.5
#: bytes a block device reads for one random record read that misses the page cache
PAGE_BYTES = 4096
#: bytes/s of copying cached pages, sequentially and as 100-byte gathers: the price of cached
#: input bytes (the profile prices the rest). Measured on 2 cores: the keys of a cached 1 GB
#: input in 0.13-0.35 s, its gather in 0.31-0.56 s (docs/BENCHMARKS.md, sort phases).
DRAM_READ_BPS = 4e9
DRAM_GATHER_BPS = 2e9


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
    memory: MemoryInfo | None = None  # the memory facts the plan rests on


def _profile_threads(profile, kind: str, default: int, pattern: str = "sequential",
                     access_size: int | None = None) -> int:
    if profile is None:
        return default
    try:
        return max(1, int(profile.best_threads(kind, pattern, access_size)))
    except (AttributeError, KeyError, ValueError):
        return default


def _page_cached(device) -> bool:
    """Whether the device's reads go through the kernel's page cache (a buffered file):
    not byte-addressable media, not O_DIRECT, not an emulated device (its model prices
    every read)."""
    return not (device.byte_addressable or device.direct_io or device.preset is not None)


def _fit_budget(budget: int, memory: MemoryInfo) -> tuple[int, str]:
    """The budget, cut to what the process can really have (a cgroup kills past its limit)."""
    room = max(int(BUDGET_SHARE * memory.available), BUDGET_FLOOR)
    if budget <= room:
        return budget, ""
    return room, (f"the {size_text(budget)} budget exceeds {BUDGET_SHARE:.0%} of the "
                  f"{size_text(memory.available)} available, so buffers get {size_text(room)}; ")


def _gather_hits(size: int, held: int, memory: MemoryInfo) -> tuple[float, str]:
    """The share of random record reads the page cache will serve, and why.

    Reading the keys streams the whole input through the page cache, so what matters is not
    what is cached now but whether the input fits in its share of the memory left beside the
    sort's own buffers; one that does not fit is cached only in part while records are
    gathered.
    """
    room = int(PAGE_CACHE_SHARE * max(0, memory.available - held))
    hits = 1.0 if size <= room else room / size
    return hits, (f"memory: {memory.describe()}; beside the sort's {size_text(held)}, "
                  f"{PAGE_CACHE_SHARE:.0%} of what is left (the output passes through the page "
                  f"cache too) holds {min(1.0, room / max(1, size)):.0%} of the "
                  f"{size_text(size)} input")


def _random_reads_cheap(device, record_size: int, hits: float | None, facts: str
                        ) -> tuple[bool, str]:
    """Whether gathering records by random reads pays, and why (BRAID's R), before any
    profile is consulted."""
    if device.byte_addressable:
        return True, "the input is byte-addressable, so random record reads are cheap"
    if device.direct_io:
        return False, ("the input bypasses the page cache (O_DIRECT): every random record "
                       f"read costs a {device.granularity}-byte block")
    if hits is None:
        return False, (f"every random record read costs the device a {device.granularity}"
                       "-byte access")
    # a miss reads a whole page: kv loses once the amplified misses outweigh the extra
    # sequential pass over the data that merge sort makes
    amplification = max(1.0, PAGE_BYTES / record_size)
    miss = 1.0 - hits
    if miss * amplification <= 1.0:
        return True, (facts + f", so {hits:.0%} of random record reads hit memory")
    return False, (facts + f", so {miss:.0%} of random record reads go to the device, each "
                   f"a {PAGE_BYTES}-byte page for a {record_size}-byte record")


def make_plan(device, n: int, record_size: int, key_size: int, budget: int,
              threads: int | dict | None, algorithm: str, profile,
              schedule: str = "staged", memory: MemoryInfo | None = None) -> Plan:
    """Pick the algorithm and sizes; raises ValueError when the budget cannot work.

    memory: the memory facts to plan with; None reads them from this process (cgroup
    limits, MemAvailable, and the residency of the device's file when it is page-cached).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    paged = _page_cached(device)
    if memory is None:
        memory = memory_info(getattr(device, "path", None) if paged else None)
    budget, why_budget = _fit_budget(budget, memory)
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
    size = n * record_size
    # a gather batch takes at most an eighth of the budget, so small budgets still work
    gather = max(1, min(n, GATHER_BYTES // record_size, budget // (8 * record_size)))
    # staging for reading records or keys: an eighth of the budget, shared by the threads
    # that each hold one at a time (rsw: every sort thread)
    staging = max(1, budget // (8 * (max(1, sort_t) if schedule == "rsw" else 1)))
    # what a key/value sort holds at most (three gather buffers), for the page cache's share
    held = min(budget, 2 * n * es + 3 * gather * record_size + staging)
    hits, facts = _gather_hits(size, held, memory) if paged else (None, "")
    cheap, why_cheap = _random_reads_cheap(device, record_size, hits, facts)
    # kv in memory: entries + radix scratch + two gather buffers (one being written), a
    # third to stage address-ordered reads, and the staging
    gathers = (2 if cheap else 3) * gather * record_size
    kv_need = 2 * n * es + gathers + staging
    gather_t = (_profile_threads(profile, "read", read_t, "random", record_size)
                if threads is None else read_t)
    if profile is not None and algorithm == "auto" and record_size > es:
        cached = (memory.input_cached_fraction or 0.0) if paged else None
        kv_s, merge_s = _modelled_seconds(profile, device, n, record_size, es, kv_need <= budget,
                                          n * (2 * es + 2 * record_size) <= budget,
                                          read_t, write_t, gather_t, cached, hits)
        cheap = kv_s < merge_s
        why_cheap = (facts + "; " if facts else "") + (
            f"the profile ({getattr(profile, 'device', 'profile')}) models key/value "
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
        reason = f"algorithm={algorithm} was asked for" + (f"; {facts}" if facts else "")
    reason = why_budget + reason
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
                min(16 << 20, staging), memory)


def _modelled_seconds(profile, device, n: int, record_size: int, es: int, kv_in_memory: bool,
                      merge_in_memory: bool, read_t: int, write_t: int, gather_t: int,
                      cached: float | None, hits: float | None) -> tuple[float, float]:
    """(key/value separation, merge sort) seconds the profile predicts for this input.

    cached/hits: for a page-cached input, the share cached now and the share of random
    record reads the page cache will serve; cached bytes cost DRAM copies, the rest the
    device's sequential or random reads. None elsewhere: every read reaches the device.
    """
    data = n * record_size
    seq_read = profile.seconds("read", data, "sequential", read_t)
    seq_write = profile.seconds("write", data, "sequential", write_t)
    first = seq_read
    if cached is not None:  # the first pass reads whole pages, keys or records alike
        first = keys = cached * data / DRAM_READ_BPS + (1 - cached) * seq_read
    elif record_size >= 2 * device.granularity:  # strided key reads skip whole media units
        keys = profile.seconds("read", n * device.granularity, "random", read_t,
                               device.granularity)
    else:
        keys = seq_read
    gather = profile.seconds("read", data, "random", gather_t, record_size)
    if hits is not None:
        gather = hits * data / DRAM_GATHER_BPS + (1 - hits) * gather
    runs = 0.0 if kv_in_memory else (profile.seconds("write", n * es, "sequential", write_t)
                                     + profile.seconds("read", n * es, "sequential", read_t))
    kv = keys + gather + seq_write + runs
    merge = first + seq_write + (0.0 if merge_in_memory else seq_read + seq_write)
    return kv, merge
