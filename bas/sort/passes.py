"""The sort's passes: read keys, sort entries, form and merge runs, gather and write records.

Every pass is a sequence of phases of one I/O kind (staged); "piped" overlaps a reader or
gatherer with a writer thread through a two-slot queue, and "rsw" gives each thread whole
chunks to read, sort and write by itself (the paper's comparison schedules).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from bas._native import io as native_io
from bas._native import sort as native
from bas.braid.phase import run_phase, sequential_phase
from bas.device import Device
from bas.sort.plan import Plan
from bas.sort.report import Tracker

__all__ = ["Job", "kv_in_memory"]

#: bytes per sequential read or write request (large enough for full device bandwidth)
IO_PIECE = 1 << 20
#: keys per batch when gathering keys from a byte-addressable input
KEY_BATCH = 1 << 20
#: bytes each run gets for its read buffer while merging
RUN_BUFFER = 1 << 20


@dataclass
class Job:
    src: Device
    dst: Device
    n: int
    record_size: int
    key_size: int
    key_offset: int
    plan: Plan
    schedule: str
    track: Tracker
    make_scratch: Callable
    progress: Callable | None = None
    _cleanups: list = field(default_factory=list)

    @property
    def entry_size(self) -> int:
        return self.key_size + native.INDEX_BYTES

    def buffer(self, nbytes: int) -> np.ndarray:
        self.track.hold(nbytes)
        return np.empty(nbytes, dtype=np.uint8)

    def free(self, buf: np.ndarray) -> None:
        self.track.release(buf.nbytes)

    def tick(self, name: str, done: int, total: int) -> None:
        """Report progress. Called between batches, where no lock or device call is in
        flight, so the callback may raise to stop the sort (the CLI does on SIGTERM)."""
        if self.progress is not None:
            self.progress(name, done, total)

    def scratch(self, size: int) -> Device:
        device, cleanup = self.make_scratch(size)
        self._cleanups.append((device, cleanup))
        self.track.add_device(device)
        return device

    def drop_scratch(self, device: Device) -> None:
        for i, (dev, cleanup) in enumerate(self._cleanups):
            if dev is device:
                del self._cleanups[i]
                if not dev.closed:
                    dev.close()
                if cleanup:
                    cleanup()
                return

    def overlap(self, *devices: Device):
        """A context where these devices' reads and writes count as concurrent (emulation)."""
        stack = ExitStack()
        seen = set()
        for dev in devices:
            if dev is not None and id(dev.clock_domain) not in seen:
                seen.add(id(dev.clock_domain))
                stack.enter_context(dev.overlap())
        return stack

    def cleanup(self) -> None:
        while self._cleanups:
            self.drop_scratch(self._cleanups[-1][0])


# -- sequential I/O helpers --------------------------------------------------------------

def _seq_read(job: Job, dev: Device, offset: int, out: np.ndarray, threads: int) -> None:
    """Read [offset, offset + len(out)) in IO_PIECE requests with the phase runner."""
    run_phase(dev, sequential_phase("read", offset, out.nbytes, chunk=IO_PIECE, out=out,
                                    threads=threads, batch_bytes=max(1, out.nbytes),
                                    batch_requests=max(1, -(-out.nbytes // IO_PIECE))))
    job.track.read(dev, out.nbytes)


def _seq_write(job: Job, dev: Device, offset: int, data: np.ndarray, threads: int) -> None:
    """Write data at offset in IO_PIECE requests with the phase runner."""
    run_phase(dev, sequential_phase("write", offset, data.nbytes, chunk=IO_PIECE, data=data,
                                    threads=threads, batch_bytes=max(1, data.nbytes),
                                    batch_requests=max(1, -(-data.nbytes // IO_PIECE))))
    job.track.wrote(dev, data.nbytes)


# -- entries -----------------------------------------------------------------------------

def _read_entries(job: Job, start: int, count: int, entries: np.ndarray, threads: int,
                  tick: Callable | None = None) -> None:
    """Entries for records [start, start + count): strided key reads where bytes are cheap
    to address (BRAID's B, or a page-cached file read through its mapping), whole records
    read sequentially elsewhere. tick(done) follows each batch."""
    R, K = job.record_size, job.key_size
    if job.plan.strided_keys:
        batch = max(1, min(KEY_BATCH, job.plan.staging_bytes // K))
        keys = job.buffer(min(count, batch) * K)
        for i in range(0, count, batch):
            m = min(batch, count - i)
            offsets = (np.arange(start + i, start + i + m, dtype=np.uint64) * np.uint64(R)
                       + np.uint64(job.key_offset))
            job.src.read_many(offsets, K, keys[:m * K], threads=threads)
            job.track.read(job.src, m * K)
            native.entries_from_keys(keys, m, K, start + i,
                                     entries[i * job.entry_size:], threads)
            if tick is not None:
                tick(i + m)
        job.free(keys)
        return
    chunk = max(1, min(count, job.plan.staging_bytes // R))
    records = job.buffer(chunk * R)
    for i in range(0, count, chunk):
        m = min(chunk, count - i)
        _seq_read(job, job.src, (start + i) * R, records[:m * R], threads)
        native.extract_entries(records, m, R, job.key_offset, K, start + i,
                               entries[i * job.entry_size:], threads)
        if tick is not None:
            tick(i + m)
    job.free(records)


def _sort_entries(job: Job, entries: np.ndarray, count: int, threads: int) -> None:
    tmp = job.buffer(count * job.entry_size)
    native.sort_entries(entries, count, job.key_size, tmp, threads)
    job.free(tmp)


# -- gathering records in entry order and writing them out ------------------------------

def _gather(job: Job, entries: np.ndarray, count: int, out: np.ndarray) -> None:
    offsets = native.entry_offsets(entries, count, job.key_size, job.record_size)
    R = job.record_size
    if job.plan.random_reads_cheap:
        job.src.read_many(offsets, R, out[:count * R], threads=job.plan.gather_threads)
    else:
        # block devices: read each batch in address order, then place records in memory
        order = np.argsort(offsets, kind="stable")
        staging = job.buffer(count * R)
        job.src.read_many(offsets[order], R, staging, threads=job.plan.gather_threads)
        native_io.mem_scatter(out, out.nbytes, order.astype(np.uint64) * np.uint64(R), None,
                              R, count * R, staging, job.plan.sort_threads)
        job.free(staging)
    job.track.read(job.src, count * R)


class SeqWriter:
    """Writes buffers back to back on a device: inline (staged) or on a thread (piped).

    Piped: write() hands the buffer over and returns once the previous write has finished,
    so a producer alternating two buffers never refills one that is still being written.
    after(buffer) runs once a buffer is written (e.g. to free it).
    """

    def __init__(self, job: Job, piped: bool, device: Device | None = None,
                 phase: str = "write-output", after=None):
        self.job, self.pos = job, 0
        self.device = job.dst if device is None else device
        self.phase, self.after = phase, after
        self._queue: queue.Queue | None = queue.Queue() if piped else None
        self._error: BaseException | None = None
        self._thread = None
        if piped:
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    def write(self, data: np.ndarray) -> None:
        offset, self.pos = self.pos, self.pos + data.nbytes
        if self._queue is None:
            self._write(offset, data)
            return
        self._queue.join()
        self._check()
        self._queue.put((offset, data))

    def _write(self, offset: int, data: np.ndarray) -> None:
        job = self.job
        with job.track.phase(self.phase, "write", job.plan.write_threads, data.nbytes):
            _seq_write(job, self.device, offset, data, job.plan.write_threads)
        if self.after is not None:
            self.after(data)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self._write(*item)
            except BaseException as exc:  # handed to the producer in _check
                self._error = exc
            finally:
                self._queue.task_done()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._check()


def _emit_sorted_entries(job: Job, writer: SeqWriter, entries: np.ndarray, count: int,
                         buffers: deque, tick: Callable | None = None) -> None:
    """Gather the records of `count` sorted entries in batches and hand them to the writer.

    buffers rotate across calls, so a piped writer never has its buffer refilled under it.
    tick(done) follows each batch.
    """
    G, E, R = job.plan.gather_records, job.entry_size, job.record_size
    for i in range(0, count, G):
        m = min(G, count - i)
        out = buffers[0]
        buffers.rotate(1)
        with job.track.phase("gather", "read", job.plan.gather_threads, m * R):
            _gather(job, entries[i * E:(i + m) * E], m, out)
        writer.write(out[:m * R])
        if tick is not None:
            tick(i + m)


# -- the algorithms ----------------------------------------------------------------------

def kv_in_memory(job: Job) -> None:
    """Key index in memory: read keys, sort entries, gather and write each record once."""
    n, E = job.n, job.entry_size
    entries = job.buffer(n * E)
    with job.track.phase("read-keys", "read", job.plan.read_threads):
        _read_entries(job, 0, n, entries, job.plan.read_threads,
                      lambda done: job.tick("read-keys", done, n))
    with job.track.phase("sort", "cpu", job.plan.sort_threads, n * E):
        _sort_entries(job, entries, n, job.plan.sort_threads)
    _write_from_entries(job, entries, n)
    job.free(entries)


def _write_from_entries(job: Job, entries: np.ndarray, n: int) -> None:
    piped = job.schedule != "staged"
    buffers = deque(job.buffer(job.plan.gather_records * job.record_size)
                    for _ in range(2 if piped else 1))
    writer = SeqWriter(job, piped)
    with job.overlap(job.src, job.dst) if piped else ExitStack():
        try:
            _emit_sorted_entries(job, writer, entries, n, buffers,
                                 lambda done: job.tick("write-output", done, n))
        finally:
            writer.close()
    for b in buffers:
        job.free(b)


def parallel_chunks(job: Job, chunks: list, work: Callable) -> None:
    """Run work(chunk, thread_slot) over chunks on plan.sort_threads threads (rsw)."""
    with ThreadPoolExecutor(max_workers=job.plan.sort_threads) as pool:
        list(pool.map(lambda ic: work(ic[1], ic[0] % job.plan.sort_threads),
                      enumerate(chunks)))
