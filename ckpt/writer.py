"""Streaming, crash-safe checkpoint writer (framework-neutral: it takes bytes, not tensors).

Tensors are appended one at a time in load order; each one's bytes may arrive in pieces, so
no caller ever needs two full copies of a model in memory. Every write is checked (short
writes are retried, errors raised with the file named), every file and the directory are
fsynced, and the directory is published atomically (ckpt/atomic.py).
"""

from __future__ import annotations

import operator
import os

from bas.namespace import Namespace, local
from ckpt import atomic, validate
from ckpt.crc import crc32
from ckpt.errors import (
    CheckpointError,
    CheckpointIOError,
    LengthMismatchError,
    SchemaError,
    UnsupportedDtypeError,
)
from ckpt.format import (
    BLOCK,
    DEFAULT_ALIGNMENT,
    DEFAULT_CHUNK_SIZE,
    DTYPES,
    INDEX_FILE,
    Index,
    Partition,
    TensorEntry,
    align_up,
    partition_file_name,
)
from ckpt.source import index_ok

__all__ = ["DEFAULT_PARTITION_SIZE", "Writer"]

DEFAULT_PARTITION_SIZE = 2 << 30
_ZEROS = bytes(1 << 16)


class _PartitionFile:
    """One partition being written: position, running chunk checksums, checked writes."""

    def __init__(self, directory: str, name: str, chunk_size: int, ns: Namespace):
        self.name = name
        self._ns = ns
        self.path = os.path.join(directory, name)
        self.pos = 0
        self._chunk_size = chunk_size
        self._fill = 0  # bytes of the current chunk already checksummed
        self._crc = 0
        self.crcs: list[int] = []
        try:
            self._fd = ns.create(self.path, mode=0o644)
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"creating {self.path} failed: "
                                    f"{exc.strerror}") from exc

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        self._checksum(view)
        done = 0
        while done < view.nbytes:
            try:
                n = os.write(self._fd, view[done:])
            except OSError as exc:
                raise CheckpointIOError(exc.errno, f"writing {self.path} at byte "
                                        f"{self.pos + done} failed: {exc.strerror}") from exc
            if n <= 0:
                raise CheckpointIOError(0, f"writing {self.path}: the OS wrote nothing")
            done += n
        self.pos += view.nbytes

    def pad_to(self, end: int) -> None:
        while self.pos < end:
            self.write(memoryview(_ZEROS)[:min(len(_ZEROS), end - self.pos)])

    def finish(self) -> Partition:
        """Pad the tail to a whole block, fsync and close; the partition's index entry."""
        self.pad_to(align_up(self.pos, BLOCK))
        if self._fill:
            self.crcs.append(self._crc)
            self._fill = self._crc = 0
        try:
            atomic.fsync_fd(self._fd, self.path, self._ns)
        finally:
            self.close()
        return Partition(self.name, self.pos, tuple(self.crcs))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _checksum(self, view: memoryview) -> None:
        pos = 0
        while pos < view.nbytes:
            take = min(view.nbytes - pos, self._chunk_size - self._fill)
            self._crc = crc32(view[pos:pos + take], self._crc)
            self._fill += take
            pos += take
            if self._fill == self._chunk_size:
                self.crcs.append(self._crc)
                self._fill = self._crc = 0


class Writer:
    """Write a checkpoint directory at `path`; visible only after commit() (or a clean `with`).

    Holds the path's save lock from creation to commit/abort: a second Writer of the same path
    waits for it (wait=False: SaveInProgressError at once). ns: the bas.namespace.Namespace
    that every name is created, published and removed through (the local file system).

        with Writer(path) as w:
            w.add("w", "float32", (2, 3), data)   # data: bytes-like, or an iterable of them
            w.alias("w_tied", "w")
    """

    def __init__(self, path: str | os.PathLike, *, alignment: int = DEFAULT_ALIGNMENT,
                 chunk_size: int = DEFAULT_CHUNK_SIZE,
                 partition_size: int = DEFAULT_PARTITION_SIZE,
                 metadata: dict[str, str] | None = None, wait: bool = True,
                 ns: Namespace | None = None):
        self.path = os.path.abspath(os.fspath(path))
        self._ns = local(ns)
        self._config = Index(alignment, chunk_size, metadata=dict(metadata or {}))
        self._config.validate(self.path)  # checks alignment and chunk size early
        if partition_size < BLOCK:
            raise ValueError(f"partition_size must be at least {BLOCK}, got {partition_size}")
        self._partition_size = partition_size
        self._tensors: list[TensorEntry] = []
        self._names: set[str] = set()
        self._aliases: dict[str, str] = {}
        self._parts: list[Partition] = []
        self._current: _PartitionFile | None = None
        self.index: Index | None = None  # set by commit()
        # one saver per path from recovery to publish; wait=False: SaveInProgressError
        self._lock = atomic.lock(self.path, wait, self._ns)
        try:
            atomic.recover(self.path, index_ok, self._ns)
            if os.path.lexists(self.path) and not os.path.isfile(os.path.join(self.path,
                                                                              INDEX_FILE)):
                raise CheckpointError(f"{self.path} exists and is not a checkpoint: refusing "
                                      f"to replace it")
            self._tmp, self._token = atomic.temp_dir(self.path, self._ns)
        except BaseException:
            self._lock.release()
            raise
        self._state = "open"

    @property
    def bytes_written(self) -> int:
        done = sum(p.size for p in self._parts)
        return done + (self._current.pos if self._current else 0)

    def add(self, name: str, dtype: str, shape, data) -> None:
        """Append one tensor's bytes (C order). data: a buffer or an iterable of buffers."""
        self._check_open()
        try:
            if any(isinstance(d, bool) for d in shape):
                raise TypeError("a bool is not a dimension")
            shape = tuple(operator.index(d) for d in shape)
        except TypeError:
            raise SchemaError(f"{name!r}: shape {shape!r} is not a sequence of integers") from None
        if dtype not in DTYPES:
            raise UnsupportedDtypeError(f"{name!r}: dtype {dtype!r} is not in the format")
        # the reader's own rules, before a byte is written (length is checked below)
        validate.check_entry(TensorEntry(name, dtype, shape, 0, 0, 0), self.path)
        self._claim(name)
        nbytes = DTYPES[dtype]
        for d in shape:
            nbytes *= d
        part = self._partition_for(nbytes)
        offset = align_up(part.pos, self._config.alignment)
        part.pad_to(offset)
        pieces = [data] if _is_buffer(data) else data
        for piece in pieces:
            part.write(piece)
            if part.pos - offset > nbytes:
                break
        if part.pos - offset != nbytes:
            self.abort()
            raise LengthMismatchError(f"{name!r}: got {part.pos - offset} bytes, {dtype} x "
                                      f"{list(shape)} needs {nbytes}")
        self._tensors.append(TensorEntry(name, dtype, shape, len(self._parts), offset, nbytes))

    def alias(self, name: str, target: str) -> None:
        """Make `name` load as the same tensor as the stored tensor `target` (tied weights)."""
        self._check_open()
        if target not in self._names or target in self._aliases:
            raise SchemaError(f"alias {name!r}: target {target!r} is not a stored tensor")
        self._claim(name)
        self._aliases[name] = target

    def commit(self) -> Index:
        """Finish every file, write the index, fsync, publish atomically; the final index."""
        self._check_open()
        try:
            if self._current is not None:
                self._parts.append(self._current.finish())
                self._current = None
            c = self._config
            index = Index(c.alignment, c.chunk_size, tuple(self._parts), tuple(self._tensors),
                          dict(self._aliases), dict(c.metadata))
            data = index.encode()  # runs the validator
            Index.decode(data, self.path)  # the reader's own gate, on the very bytes to publish
            part = _PartitionFile(self._tmp, INDEX_FILE, c.chunk_size, self._ns)  # checked
            part.write(data)
            atomic.fsync_fd(part._fd, part.path, self._ns)
            part.close()
            atomic.commit_dir(self._tmp, self.path, self._token, self._ns)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self.index = index
        self._lock.release()
        return index

    def abort(self) -> None:
        """Drop everything written so far; the old checkpoint (if any) stays untouched."""
        if self._state != "open":
            return
        self._state = "aborted"
        try:
            if self._current is not None:
                self._current.close()
            if os.path.isdir(self._tmp):
                atomic._remove_tree(self._tmp, self._ns)
        finally:
            self._lock.release()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _claim(self, name: str) -> None:
        if not isinstance(name, str) or not name or name in self._names:
            self.abort()
            raise SchemaError(f"tensor name {name!r} is empty, not a string or used twice")
        self._names.add(name)

    def _partition_for(self, nbytes: int) -> _PartitionFile:
        part = self._current
        if part is not None and part.pos and (
                align_up(part.pos, self._config.alignment) + nbytes > self._partition_size):
            self._parts.append(part.finish())
            part = None
        if part is None:
            name = partition_file_name(len(self._parts))
            part = self._current = _PartitionFile(self._tmp, name, self._config.chunk_size,
                                                  self._ns)
        return part

    def _check_open(self) -> None:
        if self._state != "open":
            raise CheckpointError(f"{self.path}: writer already {self._state}")


def _is_buffer(data) -> bool:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return True
    try:
        memoryview(data)
    except TypeError:
        return False
    return True

