"""Zero-copy CPU loads: tensors are views of private (copy-on-write) mappings of the partitions.

Our layout puts every tensor at a 4 KiB-aligned offset of a plain file, so the partitions can
be mapped as they are and the tensors need no copy: a load costs the checksums (which read
every byte once, in parallel, faulting the pages in) and nothing else. Memory is shared with
the page cache until a tensor is written; a write copies that page for this process only
(MAP_PRIVATE), so the file never changes.

The trade-off, against `mmap=False` (anonymous memory the load fills):
- the tensors are backed by the files: if another process truncates a partition while the
  tensors live, touching them raises SIGBUS (ckpt itself never truncates or rewrites a
  published partition: a save writes new files and renames a new directory into place, and
  the old files stay alive for as long as they are mapped);
- pages are the page cache's until written: they count as the file's, are shared between
  processes loading the same checkpoint, and can be dropped and re-read under memory
  pressure (re-read from the file, not re-checked);
- no huge pages, and a first touch of a page not yet resident reads the file;
- the load faults each chunk in under bas's SIGBUS guard before checking it (a partition
  truncated during the load is a CheckpointIOError, verified or not); after the load,
  touching a tensor whose file was truncated is a SIGBUS in the caller's code, as with any
  mapped file.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable

import torch

from bas import prefault
from ckpt.crc import crc32
from ckpt.errors import CheckpointIOError, ChecksumError, PartitionSizeError
from ckpt.format import Index
from ckpt.reader import LoadStats, Progress, chunks_of, run_parallel
from ckpt.safeopen import open_regular
from ckpt.source import at_directory, read_index
from ckpt.torch.tensors import torch_dtype

__all__ = ["load_mapped"]


def load_mapped(path: str | os.PathLike, *, threads: int, verify: bool = True,
                progress: Callable[[int, int], None] | None = None,
                stats: LoadStats | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint at path as a view of a private mapping (see module)."""
    start = time.perf_counter()
    index, maps, name = _map(path)
    flats = [torch.frombuffer(m, dtype=torch.uint8) if m is not None
             else torch.empty(0, dtype=torch.uint8) for m in maps]
    tracker = Progress(progress, index.total_bytes)
    chunks = chunks_of(index)

    def check(c) -> None:
        try:  # fault the chunk in under bas's SIGBUS guard: a shrunk file is an error here
            prefault(maps[c.partition], c.offset, c.length)
        except OSError as exc:
            file = index.partitions[c.partition].file
            raise CheckpointIOError(exc.errno, f"{name}: {file} bytes [{c.offset}, "
                                    f"{c.offset + c.length}) are gone (the file shrank "
                                    f"while mapped)") from exc
        if verify:
            view = memoryview(maps[c.partition])[c.offset:c.offset + c.length]
            try:
                if crc32(view) != c.crc:
                    file = index.partitions[c.partition].file
                    raise ChecksumError(f"{name}: {file} bytes [{c.offset}, "
                                        f"{c.offset + c.length}) fail their CRC-32 "
                                        f"(corrupted)")
            finally:
                view.release()
        tracker.add(c.length)

    read_start = time.perf_counter()
    # every chunk is faulted in by several threads, checked or not: a cold load reads the
    # file in parallel instead of one page fault at a time in the caller's first touch
    used = run_parallel(chunks, check, threads)
    out: dict[str, torch.Tensor] = {}
    for t in index.tensors:
        piece = flats[t.partition][t.offset:t.offset + t.length]
        out[t.name] = piece.view(torch_dtype(t.dtype)).view(t.shape)
    for alias, target in index.aliases.items():
        out[alias] = out[target]
    if stats is not None:
        stats.mapped = True
        stats.verified = verify
        stats.threads = used
        stats.chunks += len(chunks)
        stats.bytes_read += sum(c.length for c in chunks)
        stats.read_seconds += time.perf_counter() - read_start
        stats.seconds = time.perf_counter() - start
    return out


def _map(path) -> tuple[Index, list, str]:
    """(index, one private mapping per partition (None when empty), directory) of one version,
    everything opened relative to the directory's descriptor (never through a link)."""
    def opener(directory: str, dir_fd: int):
        index = read_index(directory, dir_fd=dir_fd)
        return index, [_map_partition(p.file, p.size, dir_fd, directory)
                       for p in index.partitions], directory

    return at_directory(path, opener)


def _map_partition(file: str, size: int, dir_fd: int, directory: str):
    full = os.path.join(directory, file)
    fd = open_regular(file, dir_fd=dir_fd, what=full)
    try:
        actual = os.fstat(fd).st_size
        if actual != size:
            kind = "truncated" if actual < size else "extended"
            raise PartitionSizeError(f"{full}: partition {kind}: {actual} bytes, the index "
                                     f"says {size}")
        if not size:
            return None
        try:
            m = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE,
                          prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:  # ENODEV (a file system without mmap), ENOMEM
            raise CheckpointIOError(exc.errno, f"mapping {full} failed: {exc.strerror} "
                                    f"(load with mmap=False)") from exc
    finally:
        os.close(fd)
    m.madvise(mmap.MADV_WILLNEED)  # start reading ahead what is not cached yet
    return m
