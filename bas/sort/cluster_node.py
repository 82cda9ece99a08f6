"""The cluster sort's work on one node: survey and sample its inputs, sort and cut chunks (map),
merge or spill and sort a partition (reduce), publish or discard staged outputs.

Each function runs as a Ray task pinned to its node (bas.sort.cluster submits them) and touches
only that node's files. Nothing here imports Ray except reduce, which fetches its blocks.
A node's records are the records of its input files in the order given, numbered from 0.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from bas._native import io as native_io
from bas._native import sort as native
from bas.namespace import local, publish
from bas.sort import valsort
from bas.sort.cluster_split import cut_points, rank_key

__all__ = ["Shape", "discard", "map_chunk", "publish_partition", "reduce_partition",
           "sample", "survey"]

#: records of one merge output buffer (each is written, then reused)
OUT_BYTES = 4 << 20
STAGING_PREFIX = ".bas-cluster-sort-"


@dataclass(frozen=True)
class Shape:
    """What a record looks like and how the sort may use a node."""

    record_size: int
    key_size: int
    key_offset: int
    threads: int
    budget: int  # bytes of buffers a task may hold (blocks it fetches included)

    @property
    def valsortable(self) -> bool:
        """valsort (gensort records) can check these records."""
        return (self.record_size, self.key_size, self.key_offset) == (valsort.RECORD_SIZE, 10, 0)


def staging_dir(output_dir: str, job: str, part: int) -> str:
    return os.path.join(output_dir, f"{STAGING_PREFIX}{job}.part-{part:05d}")


def scratch_dir(scratch: str, job: str, part: int) -> str:
    return os.path.join(scratch, f"{STAGING_PREFIX}{job}.scratch-{part:05d}")


def output_names(output_dir: str, part: int) -> tuple[str, str]:
    """(partition file, its valsort summary) under output_dir."""
    base = os.path.join(output_dir, f"part-{part:05d}")
    return base + ".dat", base + ".sum"


def _fault(faults: dict | None, point: str) -> None:
    """Test hook: kill this worker process the first time `point` is reached (the marker file
    remembers it across the retry)."""
    marker = (faults or {}).get(point)
    if marker and not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(1)


def _hold(faults: dict | None, part: int) -> None:
    """Test hook: stop before writing partition `part` until the test lets go (or 60 s)."""
    gate = (faults or {}).get(f"hold-{part}")
    if gate:
        with open(gate + ".started", "w"):
            pass
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)


# -- survey and sample -------------------------------------------------------------------

def survey(paths: list[str], shape: Shape, output_dir: str, scratch: str) -> list[int]:
    """The record count of each input; ValueError/OSError for what would fail later."""
    for d, what in ((output_dir, "output"), (scratch, "scratch")):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"{what} directory {d} does not exist")
    counts = []
    for p in paths:
        size = os.stat(p).st_size
        if size % shape.record_size:
            raise ValueError(f"{p}: {size} bytes is not a whole number of "
                             f"{shape.record_size}-byte records")
        counts.append(size // shape.record_size)
    return counts


def sample(paths: list[str], counts: list[int], indexes: np.ndarray, node: int,
           shape: Shape) -> list[bytes]:
    """The rank keys of the node's records at the given sorted indexes (one pread each)."""
    out: list[bytes] = []
    starts = np.cumsum([0] + counts)
    for f, path in enumerate(paths):
        lo, hi = np.searchsorted(indexes, [starts[f], starts[f + 1]])
        if lo == hi:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            for i in indexes[lo:hi].tolist():
                at = (i - int(starts[f])) * shape.record_size + shape.key_offset
                key = os.pread(fd, shape.key_size, at)
                if len(key) != shape.key_size:
                    raise OSError(f"{path}: the file shrank while it was sampled")
                out.append(rank_key(key, node, i))
        finally:
            os.close(fd)
    return out


# -- map -----------------------------------------------------------------------------------

def map_chunk(path: str, first: int, count: int, index: int, node: int, splitters: list[bytes],
              shape: Shape, faults: dict | None = None) -> tuple:
    """Read records [first, first + count) of path (the node's records index, index + 1,
    ...), sort them by (key, index) and cut them at the splitters: (stats, block 0, ...,
    block P-1), every block a sorted run of whole records. stats: records, checksum (None
    unless valsortable) and the records of each block."""
    R, K = shape.record_size, shape.key_size
    records = np.empty(count * R, np.uint8)
    _read_exact(path, first * R, records)
    _fault(faults, "map")
    es = native.entry_size(K)
    entries = np.empty(count * es, np.uint8)
    native.extract_entries(records, count, R, shape.key_offset, K, index, entries, shape.threads)
    tmp = np.empty_like(entries)
    native.sort_entries(entries, count, K, tmp, shape.threads)
    del tmp
    offsets = native.entry_offsets(entries, count, K, R, base=0)
    # the index in each entry is the node's; the gather wants the chunk's record offsets
    offsets -= np.uint64(index * R)
    ordered = np.empty_like(records)
    native_io.mem_gather(records, count * R, offsets, None, R, count * R, ordered, shape.threads)
    checksum = valsort.checksum(records, shape.threads) if shape.valsortable else None
    del records
    cuts = cut_points(entries, count, K, node, splitters)
    stats = {"records": count, "checksum": checksum,
             "parts": [cuts[p + 1] - cuts[p] for p in range(len(cuts) - 1)]}
    return (stats, *(ordered[cuts[p] * R:cuts[p + 1] * R] for p in range(len(cuts) - 1)))


def _read_exact(path: str, offset: int, out: np.ndarray) -> None:
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        view = memoryview(out)
        got = 0
        while got < len(view):
            step = f.readinto(view[got:])
            if not step:
                raise OSError(f"{path}: the file shrank while it was read")
            got += step


# -- reduce --------------------------------------------------------------------------------

def reduce_partition(part: int, blocks: list, block_bytes: list[int], output_dir: str,
                     scratch: str, job: str, shape: Shape, profile: str | None = None,
                     faults: dict | None = None) -> dict:
    """Merge partition `part`'s sorted blocks (object refs, in (node, chunk) order) into its
    staged output: in memory when they fit the budget, else spilled to scratch and sorted
    there by WiscSort with the node's device profile. Returns what it did and the output's
    valsort summary (bytes, or None when the records are not valsortable)."""
    import ray

    stage = staging_dir(output_dir, job, part)
    os.makedirs(stage, exist_ok=True)
    data_tmp, _ = output_names(stage, part)
    total = sum(block_bytes)
    started = time.perf_counter()
    _hold(faults, part)
    if total <= shape.budget:
        got = ray.get(blocks)
        _fault(faults, "reduce")
        summary = _merge_to_file(got, data_tmp, shape)
        del got
        result = {"algorithm": "merge-in-memory", "spilled": 0, "sort_written": 0}
    else:
        result = _spill_and_sort(blocks, block_bytes, data_tmp, scratch_dir(scratch, job, part),
                                 shape, profile, faults)
        summary = valsort.validate(data_tmp, shape.threads) if shape.valsortable else None
    size = os.path.getsize(data_tmp)
    if summary is not None:
        _, sum_tmp = output_names(stage, part)
        with open(sum_tmp, "wb") as f:
            f.write(summary.to_bytes())
            f.flush()
            os.fsync(f.fileno())
    return {**result, "part": part, "records": size // shape.record_size, "bytes": size,
            "summary": summary.to_bytes() if summary is not None else None,
            "seconds": time.perf_counter() - started}


def _merge_to_file(blocks: list[np.ndarray], path: str, shape: Shape):
    """k-way merge of sorted record blocks (ties by block: the rank key order) into a new
    synced file; its valsort summary (or None)."""
    R = shape.record_size
    runs = [b for b in blocks if b.size]
    summary = valsort.Summary.empty() if shape.valsortable else None
    if os.path.exists(path):  # a killed attempt's leftover: this one starts over
        os.unlink(path)
    fd = local().create(path)
    try:
        if runs:
            merger = native.Merger(len(runs), R, shape.key_offset, shape.key_size)
            for r, b in enumerate(runs):
                merger.set_run(r, np.ascontiguousarray(b).view(np.uint8), b.size // R, True)
            out = np.empty(max(1, OUT_BYTES // R) * R, np.uint8)
            left = sum(b.size for b in runs) // R
            while left:
                n, _ = merger.merge(out)
                if not n:  # every run was given whole, so only a broken merge stops here
                    raise RuntimeError(f"merge stalled with {left} records left")
                _write_all(fd, out[:n * R])
                if summary is not None:
                    summary = summary.then(valsort.validate(out[:n * R], shape.threads))
                left -= n
        local().sync(fd)
    finally:
        os.close(fd)
    return summary


def _spill_and_sort(blocks: list, block_bytes: list[int], out_path: str, scratch: str,
                    shape: Shape, profile: str | None, faults: dict | None) -> dict:
    """Append the blocks to one scratch file, fetching at most the budget's worth at a time,
    then sort it with WiscSort into out_path (its plan picks key/value separation or merge
    sort from the profile). The blocks were concatenated in rank key order for equal keys, and
    WiscSort is stable, so the output is in rank key order too."""
    import ray

    from bas.sort.engine import sort

    os.makedirs(scratch, exist_ok=True)
    spill = os.path.join(scratch, "blocks")
    try:
        fd = os.open(spill, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            i = 0
            while i < len(blocks):
                j, held = i, 0
                while j < len(blocks) and (j == i or held + block_bytes[j] <= shape.budget):
                    held += block_bytes[j]
                    j += 1
                for b in ray.get(blocks[i:j]):
                    _write_all(fd, b)
                if i == 0:
                    _fault(faults, "reduce")
                i = j
        finally:
            os.close(fd)
        loaded = None
        if profile:
            from bas.braid.profile import Profile

            loaded = Profile.load(profile)
        report = sort(spill, out_path, record_size=shape.record_size, key_size=shape.key_size,
                      key_offset=shape.key_offset, memory_budget=shape.budget,
                      threads=shape.threads, profile=loaded, scratch=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out_bytes = os.path.getsize(out_path)
    return {"algorithm": f"spill+wiscsort-{report.algorithm}", "spilled": sum(block_bytes),
            "sort_written": sum(report.bytes_written.values()) - out_bytes}


def _write_all(fd: int, data: np.ndarray) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


# -- publication ---------------------------------------------------------------------------

def publish_partition(part: int, output_dir: str, job: str) -> list[str]:
    """Rename partition `part`'s staged files to their final names; the names published."""
    stage = staging_dir(output_dir, job, part)
    done = []
    for tmp, final in zip(output_names(stage, part), output_names(output_dir, part),
                          strict=True):
        if os.path.exists(tmp):
            publish(tmp, final)
            done.append(final)
    shutil.rmtree(stage, ignore_errors=True)
    return done


def discard(part: int, output_dir: str, scratch: str, job: str,
            published: list[str] | None = None) -> None:
    """Remove partition `part`'s staged output and scratch (and what was published of it,
    when a publication is rolled back)."""
    for path in published or []:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    shutil.rmtree(staging_dir(output_dir, job, part), ignore_errors=True)
    shutil.rmtree(scratch_dir(scratch, job, part), ignore_errors=True)
