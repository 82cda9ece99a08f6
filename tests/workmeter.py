"""Measuring the work an operation does instead of its time: bytes read, reads, memory mapped.

Tests bound work by the size of their input ("a hostile file costs no more than reading it
twice"), which holds on any machine under any load, where a wall-clock limit either flakes or
is set so loose that it catches nothing. Linux only (/proc/self/io).
"""

from __future__ import annotations

import mmap
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Work", "metered"]


@dataclass
class Work:
    bytes_read: int = 0  # bytes every read system call of the process returned (rchar)
    read_calls: int = 0  # read system calls (syscr): read, pread, readv, ... from any thread
    mapped: int = 0  # bytes of anonymous memory mapped (host buffers, pool slabs)
    largest_map: int = 0
    heap_peak: int = 0  # peak bytes of Python and numpy heap allocations (tracemalloc)


def _proc_io() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {key: int(value) for key, value in (line.split(": ") for line in f)}


@contextmanager
def metered(heap: bool = True) -> Iterator[Work]:
    """Count the work done inside the block (the whole process: keep other threads idle).

    heap=False leaves heap_peak at 0 and skips tracemalloc, which doubles the cost of
    allocation-heavy code.
    """
    work = Work()
    original = mmap.mmap

    class CountingMap(original):
        def __new__(cls, fileno, length, *args, **kwargs):
            if fileno == -1:
                work.mapped += length
                work.largest_map = max(work.largest_map, length)
            return original.__new__(cls, fileno, length, *args, **kwargs)

    tracing = tracemalloc.is_tracing()
    if heap and not tracing:
        tracemalloc.start()
    if heap:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    mmap.mmap = CountingMap
    before = _proc_io()
    try:
        yield work
    finally:
        after = _proc_io()
        mmap.mmap = original
        if heap:
            work.heap_peak = tracemalloc.get_traced_memory()[1] - base
            if not tracing:
                tracemalloc.stop()
        work.bytes_read = after["rchar"] - before["rchar"]
        work.read_calls = after["syscr"] - before["syscr"]
