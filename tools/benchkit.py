"""The benchmark harness core: a workload registry, one JSON line per run, cold-cache eviction.

Like leveldb's db_bench: named workloads, each run printed as one JSON object with the workload,
the device URL, sizes, times, bytes read and written, is_pmem and the commit. Peers are workloads
of the same harness so they run side by side in one invocation; `summarize` prints medians and
ratios against a chosen baseline.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["WORKLOADS", "Context", "evict", "summarize", "workload"]


@dataclass
class Context:
    """What every workload receives: where to put data and how big to make it."""

    device: str  # a device URL, or a directory for file-based workloads
    size: int  # bytes of data the workload moves
    threads: int
    workdir: str
    cold: bool  # evict the page cache before each measured run
    repeat: int = 5  # measured runs
    memory: int | None = None  # memory budget for sort workloads


#: name -> (group, function(ctx) -> iterator of result dicts, one per run)
WORKLOADS: dict[str, tuple[str, Callable[[Context], Iterator[dict]]]] = {}


def workload(name: str, group: str):
    """Register a workload function under `name` (peers are registered the same way)."""

    def register(fn):
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} registered twice")
        WORKLOADS[name] = (group, fn)
        return fn

    return register


def evict(path: str) -> None:
    """Drop a file's pages from the page cache (after syncing them) for a cold run."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=os.path.dirname(__file__))
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], capture_output=True,
                               text=True, cwd=os.path.dirname(__file__)).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Timer:
    """Wall-clock seconds of a with-block (perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def emit(record: dict, stream=sys.stdout) -> None:
    seconds = record.get("seconds")
    moved = record.get("bytes")
    if seconds and moved:
        record.setdefault("mb_per_s", round(moved / seconds / 1e6, 1))
    record.setdefault("commit", commit())
    stream.write(json.dumps(record, sort_keys=True) + "\n")
    stream.flush()


def summarize(records: list[dict], baseline: str | None = None, stream=sys.stderr) -> None:
    """Median seconds and MB/s per (workload, device), and speed-up over the baseline workload.

    The ratio is baseline median seconds / this median seconds over the same bytes (>1 = faster).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["workload"], r.get("device", "")), []).append(r)
    base = [r["seconds"] for r in records if r["workload"] == baseline]
    base_median = statistics.median(base) if base else None
    stream.write(f"{'workload':28} {'device':44} {'runs':>4} {'median s':>10} {'MB/s':>9}"
                 f" {'vs ' + (baseline or '-'):>14}\n")
    for (name, dev), rs in sorted(groups.items()):
        sec = statistics.median(r["seconds"] for r in rs)
        mbs = statistics.median(r.get("mb_per_s", 0) for r in rs)
        ratio = f"{base_median / sec:.2f}x" if base_median and sec else "-"
        stream.write(f"{name:28} {dev[:44]:44} {len(rs):4d} {sec:10.4f} {mbs:9.1f} {ratio:>14}\n")
