"""External passes: forming sorted runs (of entries or of records) and merging them, in as many
passes as the memory budget's fan-in needs. Runs live on scratch devices, never in the output."""

from __future__ import annotations

import queue
import threading
from collections import deque
from contextlib import ExitStack

import numpy as np

from bas._native import io as native_io
from bas._native import sort as native
from bas.device import Device
from bas.sort.passes import (
    Job,
    SeqWriter,
    _emit_sorted_entries,
    _read_entries,
    _seq_read,
    _seq_write,
    _sort_entries,
    parallel_chunks,
)

__all__ = ["form_entry_runs", "form_record_runs", "kv_external", "merge_entry_runs",
           "merge_record_runs", "mergesort"]

#: smallest run buffer, in items, that a merge may use (below it: too many tiny reads)
MIN_RUN_ITEMS = 16
MAX_RUN_BUFFER = 1 << 20

Run = tuple[int, int]  # (byte offset on the runs device, items)


# -- run formation -----------------------------------------------------------------------

def _chunks(job: Job, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(chunk, job.n - s)) for s in range(0, job.n, chunk)]


def form_entry_runs(job: Job) -> tuple[Device, list[Run]]:
    """Sorted runs of (key, index) entries for chunks of plan.chunk_records records."""
    E = job.entry_size
    dev = job.scratch(job.n * E)

    def one(chunk, slot, threads):
        start, m = chunk
        entries = job.buffer(m * E)
        _read_entries(job, start, m, entries, threads)
        _sort_entries(job, entries, m, threads)
        _seq_write(job, dev, start * E, entries, threads)
        job.free(entries)
        job.tick("form-runs", start + m, job.n)

    _form(job, _chunks(job, job.plan.chunk_records), one, dev, E,
          read=lambda c, buf, t: _read_entries(job, c[0], c[1], buf, t))
    return dev, [(start * E, m) for start, m in _chunks(job, job.plan.chunk_records)]


def form_record_runs(job: Job) -> tuple[Device, list[Run]]:
    """Sorted runs of whole records (classic merge sort), chunk_records records each."""
    R, E = job.record_size, job.entry_size
    dev = job.scratch(job.n * R) if job.n > job.plan.chunk_records else None

    def sort_chunk(records: np.ndarray, start: int, m: int, threads: int) -> np.ndarray:
        entries = job.buffer(m * E)
        native.extract_entries(records, m, R, job.key_offset, job.key_size, 0, entries, threads)
        _sort_entries(job, entries, m, threads)
        offsets = native.entry_offsets(entries, m, job.key_size, R)
        job.free(entries)
        ordered = job.buffer(m * R)
        native_io.mem_gather(records, m * R, offsets, None, R, m * R, ordered, threads)
        return ordered

    if dev is None:  # everything fits one chunk: sort in memory, write the output once
        records = job.buffer(job.n * R)
        with job.track.phase("read", "read", job.plan.read_threads, job.n * R):
            _seq_read(job, job.src, 0, records, job.plan.read_threads)
        with job.track.phase("sort", "cpu", job.plan.sort_threads, job.n * R):
            ordered = sort_chunk(records, 0, job.n, job.plan.sort_threads)
        job.free(records)
        with job.track.phase("write-output", "write", job.plan.write_threads, job.n * R):
            _seq_write(job, job.dst, 0, ordered, job.plan.write_threads)
        job.free(ordered)
        job.tick("write-output", job.n, job.n)
        return None, []

    def one(chunk, slot, threads):
        start, m = chunk
        records = job.buffer(m * R)
        _seq_read(job, job.src, start * R, records, threads)
        ordered = sort_chunk(records, start, m, threads)
        job.free(records)
        _seq_write(job, dev, start * R, ordered, threads)
        job.free(ordered)
        job.tick("form-runs", start + m, job.n)

    _form(job, _chunks(job, job.plan.chunk_records), one, dev, R, read=None)
    return dev, [(start * R, m) for start, m in _chunks(job, job.plan.chunk_records)]


def _form(job: Job, chunks, one, dev: Device, item: int, read) -> None:
    """Run `one` over the chunks under the job's schedule."""
    if job.schedule == "rsw":
        # every thread reads, sorts and writes its own chunks: reads and writes interleave
        threads = job.plan.sort_threads
        with job.track.phase("read-sort-write", "mixed", threads, job.n * item), \
                job.overlap(job.src, dev):
            parallel_chunks(job, chunks, lambda c, slot: one(c, slot, 1))
        return
    if job.schedule == "piped" and read is not None:
        _form_piped(job, chunks, dev, item, read)
        return
    for chunk in chunks:
        start, m = chunk
        with job.track.phase("form-runs", "mixed" if job.schedule == "piped" else "read",
                             job.plan.read_threads, m * item):
            one(chunk, 0, job.plan.read_threads)


def _form_piped(job: Job, chunks, dev: Device, item: int, read) -> None:
    """Reader thread -> sorter (this thread) -> writer thread, one chunk in each stage.

    Whatever stage fails, the others stop: the reader checks `stop` between chunks and the
    queue is drained so it never blocks, and both threads are joined before the error rises.
    """
    filled: queue.Queue = queue.Queue(maxsize=1)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                buf = job.buffer(chunk[1] * item)
                read(chunk, buf, job.plan.read_threads)
                filled.put((chunk, buf))
        except BaseException as exc:
            errors.append(exc)
        finally:
            filled.put(None)

    writer = SeqWriter(job, True, dev, phase="write-runs", after=job.free)
    with job.track.phase("form-runs", "mixed", job.plan.read_threads, job.n * item), \
            job.overlap(job.src, dev):
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            while (got := filled.get()) is not None:
                (start, m), buf = got
                _sort_entries(job, buf, m, job.plan.sort_threads)
                writer.write(buf)
                job.tick("form-runs", start + m, job.n)
        finally:
            stop.set()
            while t.is_alive() or not filled.empty():  # unblock a reader waiting to put
                try:
                    filled.get(timeout=0.05)
                except queue.Empty:
                    pass
            t.join()
            writer.close()
    if errors:
        raise errors[0]


# -- merging -------------------------------------------------------------------------------

def _fan_in(job: Job, item: int, available: int) -> int:
    """Runs one merge may take at once with `available` bytes of run buffers."""
    max_runs = available // (MIN_RUN_ITEMS * item)
    if max_runs < 2:
        raise ValueError(f"memory budget {job.plan.budget} is too small for a 2-way merge of "
                         f"{item}-byte items (it needs {2 * MIN_RUN_ITEMS * item} bytes of run "
                         f"buffers beyond the output buffers)")
    return max_runs


def _run_buffer_items(available: int, k: int, item: int) -> int:
    return max(MIN_RUN_ITEMS, min(MAX_RUN_BUFFER // item, available // (k * item)))


def _merge(job: Job, dev: Device, runs: list[Run], item: int, cmp_offset: int, cmp_len: int,
           available: int, out_items: int, out_buffers: int, sink, tick) -> None:
    """Merge `runs` of `dev` and feed sink(buffer, items) in order; tick(done) after each."""
    k = len(runs)
    per_run = _run_buffer_items(available, k, item)
    merger = native.Merger(k, item, cmp_offset, cmp_len)
    bufs = [job.buffer(per_run * item) for _ in runs]
    next_off = [off for off, _ in runs]
    left = [count for _, count in runs]
    threads = job.plan.read_threads

    def refill(r: int) -> None:
        m = min(per_run, left[r])
        with job.track.phase("merge-read", "read", threads, m * item):
            _seq_read(job, dev, next_off[r], bufs[r][:m * item], threads)
        next_off[r] += m * item
        left[r] -= m
        merger.set_run(r, bufs[r], m, left[r] == 0)

    for r in range(k):
        refill(r)
    outs = [job.buffer(out_items * item) for _ in range(out_buffers)]
    total, done, filled, which = sum(c for _, c in runs), 0, 0, 0
    while done < total:
        out = outs[which]
        with job.track.phase("merge", "cpu", 1, 0):
            n, need = merger.merge(out[filled * item:])
        filled += n
        done += n
        if need is not None:
            refill(need)
        if filled and (filled == out_items or done == total):
            sink(out, filled)
            filled, which = 0, (which + 1) % out_buffers
            tick(done)
    for b in bufs + outs:
        job.free(b)


def _merge_passes(job: Job, dev: Device, runs: list[Run], item: int, cmp_offset: int,
                  cmp_len: int, reserve: int) -> tuple[Device, list[Run]]:
    """Merge groups of runs into longer runs until one final merge can take them all."""
    available = job.plan.budget - reserve
    out_items = max(1, min(MAX_RUN_BUFFER // item, available // (4 * item)))
    merge_available = available - out_items * item
    fan_in = _fan_in(job, item, merge_available)
    while len(runs) > fan_in:
        job.track.report.merge_passes += 1
        new_dev = job.scratch(job.n * item)
        new_runs: list[Run] = []
        pos = 0
        for g in range(0, len(runs), fan_in):
            group = runs[g:g + fan_in]
            start = pos

            def sink(buf, m, _dev=new_dev):
                nonlocal pos
                with job.track.phase("write-runs", "write", job.plan.write_threads, m * item):
                    _seq_write(job, _dev, pos, buf[:m * item], job.plan.write_threads)
                pos += m * item

            _merge(job, dev, group, item, cmp_offset, cmp_len, merge_available, out_items, 1,
                   sink, lambda done, _base=start // item: job.tick("merge-pass", _base + done,
                                                                    job.n))
            new_runs.append((start, sum(c for _, c in group)))
        job.drop_scratch(dev)
        dev, runs = new_dev, new_runs
    return dev, runs


def merge_entry_runs(job: Job, dev: Device, runs: list[Run]) -> None:
    """Merge entry runs; the final merge gathers records batch by batch into the output."""
    E, R = job.entry_size, job.record_size
    G = job.plan.gather_records
    piped = job.schedule != "staged"
    # entries of one batch, its gather buffers, and where random reads are dear the staging
    # that reads a batch in address order
    record_buffers = (2 if piped else 1) + (0 if job.plan.random_reads_cheap else 1)
    reserve = G * E + record_buffers * G * R
    job.track.report.runs = len(runs)
    dev, runs = _merge_passes(job, dev, runs, E, 0, E, reserve)
    job.track.report.merge_passes += 1
    gathers = deque(job.buffer(G * R) for _ in range(2 if piped else 1))
    writer = SeqWriter(job, piped)
    with job.overlap(job.src, job.dst, dev) if piped else ExitStack():
        try:
            _merge(job, dev, runs, E, 0, E, job.plan.budget - reserve, G, 1,
                   lambda buf, m: _emit_sorted_entries(job, writer, buf, m, gathers),
                   lambda done: job.tick("write-output", done, job.n))
        finally:
            writer.close()
    for b in gathers:
        job.free(b)


def merge_record_runs(job: Job, dev: Device | None, runs: list[Run]) -> None:
    """Merge record runs (ties by run, so the sort stays stable) straight into the output."""
    if dev is None:
        return
    R = job.record_size
    piped = job.schedule != "staged"
    G = job.plan.gather_records
    reserve = (2 if piped else 1) * G * R
    job.track.report.runs = len(runs)
    dev, runs = _merge_passes(job, dev, runs, R, job.key_offset, job.key_size, reserve)
    job.track.report.merge_passes += 1
    writer = SeqWriter(job, piped)
    with job.overlap(job.dst, dev) if piped else ExitStack():
        try:
            _merge(job, dev, runs, R, job.key_offset, job.key_size, job.plan.budget - reserve,
                   G, 2 if piped else 1, lambda buf, m: writer.write(buf[:m * R]),
                   lambda done: job.tick("write-output", done, job.n))
        finally:
            writer.close()


def kv_external(job: Job) -> None:
    """Runs of sorted entries (never values), merged with a loser tree, records gathered."""
    runs_dev, runs = form_entry_runs(job)
    merge_entry_runs(job, runs_dev, runs)


def mergesort(job: Job) -> None:
    """Classic external merge sort: sorted runs of whole records, then k-way merges."""
    runs_dev, runs = form_record_runs(job)
    merge_record_runs(job, runs_dev, runs)
