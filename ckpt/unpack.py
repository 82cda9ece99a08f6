"""Write a checkpoint directory from bytes that arrive in load order, published atomically.

The sink side of a tier copy: `ckpt.torch.loader.read_packed(stream, sink=Unpacker(path))` keeps a
local copy of a remote checkpoint while loading it, and `copy_buffer` writes a checkpoint that
is already in memory (promotion to a faster disk tier). The index file is written first, then
every chunk is written by a background thread with pwrite while the caller goes on reading:
the chunk views handed to `chunk` are slices of the loader's final buffer, so they are written
without a copy. Nothing appears at `path` until `commit`: the files are fsynced and the
temporary directory renamed into place (ckpt/atomic.py); `abort` (or any error) removes it,
so an interrupted download never leaves a partial checkpoint behind.
"""

from __future__ import annotations

import errno
import os
import queue
import threading

from bas.namespace import Namespace, local
from ckpt import atomic
from ckpt.errors import CheckpointIOError, NotACheckpointError, PartitionSizeError
from ckpt.format import HEADER_SIZE, INDEX_FILE, MAX_INDEX_BYTES, Index
from ckpt.host import verify
from ckpt.safeopen import open_regular, read_regular
from ckpt.source import index_ok, read_index, resolve_dir

__all__ = ["Unpacker", "copy_buffer", "copy_dir"]

_QUEUE_DEPTH = 64  # chunks waiting for the writer; each is a view, not a copy
_COPY_STEP = 64 << 20  # bytes per copy call
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                            errno.EPERM})
_STOP = None


class Unpacker:
    """A checkpoint being written at path from its index and chunks; commit() publishes it.

    Not thread-safe: one producer calls begin, chunk (in any order) and commit or abort.
    ns: the bas.namespace.Namespace names go through (the local file system by default).
    """

    def __init__(self, path: str | os.PathLike, *, wait: bool = True,
                 ns: Namespace | None = None):
        self.path = os.path.abspath(os.fspath(path))
        self._ns = ns = local(ns)
        self._lock = atomic.lock(self.path, wait, ns)  # one saver per path, recovery to publish
        try:
            atomic.recover(self.path, index_ok, ns)  # leftovers of an earlier crash
            self.tmp, self._token = atomic.temp_dir(self.path, ns)
        except BaseException:
            self._lock.release()
            raise
        self.index: Index | None = None
        self._fds: list[int] = []
        self._written = 0
        self._queue: queue.Queue = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._done = False

    def begin(self, index_bytes: bytes, index: Index) -> None:
        """Write the index file and create the partition files at their final sizes."""
        self.index = index
        _write_file(os.path.join(self.tmp, INDEX_FILE), index_bytes, self._ns)
        for p in index.partitions:
            full = os.path.join(self.tmp, p.file)
            try:
                fd = self._ns.create(full, mode=0o644)
            except OSError as exc:
                raise CheckpointIOError(exc.errno, f"creating {full} failed: "
                                        f"{exc.strerror}") from exc
            self._fds.append(fd)
            try:
                os.ftruncate(fd, p.size)
            except OSError as exc:
                raise CheckpointIOError(exc.errno, f"sizing {full} failed: "
                                        f"{exc.strerror}") from exc
        self._thread = threading.Thread(target=self._writer, name="ckpt-unpack", daemon=True)
        self._thread.start()

    def chunk(self, partition: int, offset: int, view) -> None:
        """Queue view (bytes of partition at offset) for writing; it must stay unchanged."""
        if self._error is not None:
            raise self._error
        self._queue.put((partition, offset, memoryview(view).cast("B")))

    def commit(self) -> None:
        """Wait for the writer, check that every byte arrived, fsync and publish at path."""
        if self.index is None:
            raise CheckpointIOError(0, f"{self.path}: nothing to commit (no index received)")
        self._finish_writer()
        if self._error is not None:
            self.abort()
            raise self._error
        want = self.index.total_bytes
        if self._written != want:
            self.abort()
            raise PartitionSizeError(f"{self.path}: {self._written} of {want} bytes arrived")
        try:
            for fd, p in zip(self._fds, self.index.partitions, strict=True):
                atomic.fsync_fd(fd, f"{self.tmp}/{p.file}", self._ns)
            self._close_files()
            atomic.commit_dir(self.tmp, self.path, self._token, self._ns)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._lock.release()

    def abort(self) -> None:
        """Stop writing and remove the temporary directory (idempotent)."""
        if self._done:
            return
        self._done = True
        try:
            self._finish_writer()
            self._close_files()
            _discard(self.tmp, self._ns)
        finally:
            self._lock.release()

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is not None or not self._done:
            self.abort()

    def _writer(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._error is not None:
                continue  # drain, so that chunk() never blocks on a dead writer
            partition, offset, view = item
            try:
                _pwrite_all(self._fds[partition], view, offset,
                            f"{self.tmp}/{self.index.partitions[partition].file}")
                self._written += view.nbytes
            except BaseException as exc:  # noqa: B036 - handed to the producer
                self._error = exc

    def _finish_writer(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _close_files(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def copy_buffer(index: Index, index_bytes: bytes, buf, path: str | os.PathLike, *,
                ns: Namespace | None = None) -> None:
    """Write a checkpoint held in memory (index + all partitions back to back) at path."""
    with Unpacker(path, ns=ns) as out:
        out.begin(index_bytes, index)
        view = memoryview(buf).cast("B")
        for i, base in enumerate(index.partition_bases()):
            size = index.partitions[i].size
            step = index.chunk_size
            for off in range(0, size, step):
                out.chunk(i, off, view[base + off:base + min(off + step, size)])
        out.commit()


def copy_dir(src: str | os.PathLike, path: str | os.PathLike, *,
             ns: Namespace | None = None) -> None:
    """Copy the checkpoint directory src to path: every chunk verified, published atomically.

    The files of src are opened relative to its directory, never through a link and never
    blocking (ckpt/safeopen.py), and only the bytes its index names are copied: a partition
    replaced by a link, a FIFO or a device is a MissingPartitionError, not a hang or an
    endless copy.
    """
    src_dir = resolve_dir(src)
    path = os.path.abspath(os.fspath(path))
    ns = local(ns)
    try:
        src_fd = os.open(src_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise CheckpointIOError(exc.errno, f"opening {src_dir} failed: {exc.strerror}") from exc
    try:
        index = read_index(src_dir, dir_fd=src_fd)  # the typed errors of a bad index
        index_bytes = read_regular(INDEX_FILE, HEADER_SIZE + MAX_INDEX_BYTES, dir_fd=src_fd,
                                   what=f"{src_dir}/{INDEX_FILE}", missing=NotACheckpointError)
        with atomic.lock(path, ns=ns):  # one saver per path, from recovery to publish
            atomic.recover(path, index_ok, ns)
            tmp, token = atomic.temp_dir(path, ns)
            try:
                _write_file(os.path.join(tmp, INDEX_FILE), index_bytes, ns)
                for p in index.partitions:
                    _copy_partition(p.file, p.size, src_fd, src_dir, tmp, ns)
                verify(tmp)  # also catches an index that changed between its two reads
                atomic.commit_dir(tmp, path, token, ns)
            except BaseException:
                _discard(tmp, ns)
                raise
    finally:
        os.close(src_fd)


def _copy_partition(name: str, size: int, src_fd: int, src_dir: str, tmp: str,
                    ns: Namespace) -> None:
    """Copy exactly size bytes of the regular file name in src_fd's directory into tmp."""
    what = f"{src_dir}/{name}"
    fd_in = open_regular(name, dir_fd=src_fd, what=what)
    try:
        have = os.fstat(fd_in).st_size
        if have != size:
            raise PartitionSizeError(f"{what}: {have} bytes, the index says {size}")
        target = os.path.join(tmp, name)
        try:
            fd_out = ns.create(target, mode=0o644)
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"creating {target} failed: "
                                    f"{exc.strerror}") from exc
        try:
            _copy_bytes(fd_in, fd_out, size, what)
            atomic.fsync_fd(fd_out, target, ns)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_bytes(fd_in: int, fd_out: int, size: int, what: str) -> None:
    """Copy bytes [0, size) in the kernel where it can (copy_file_range), else through memory."""
    done, in_kernel = 0, hasattr(os, "copy_file_range")
    while done < size:
        step = min(size - done, _COPY_STEP)
        try:
            if in_kernel:
                n = os.copy_file_range(fd_in, fd_out, step, done, done)
            else:
                data = os.pread(fd_in, step, done)
                _pwrite_all(fd_out, memoryview(data), done, what)
                n = len(data)
        except CheckpointIOError:
            raise
        except OSError as exc:
            if in_kernel and exc.errno in _NO_COPY_RANGE:
                in_kernel = False  # across file systems, or not supported here
                continue
            raise CheckpointIOError(exc.errno, f"copying {what} at byte {done} failed: "
                                    f"{exc.strerror}") from exc
        if n <= 0:
            raise PartitionSizeError(f"{what}: ends after {done} of its {size} bytes")
        done += n


def _pwrite_all(fd: int, view: memoryview, offset: int, what: str) -> None:
    done = 0
    while done < view.nbytes:
        try:
            n = os.pwrite(fd, view[done:], offset + done)
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"writing {what} at byte {offset + done} "
                                    f"failed: {exc.strerror}") from exc
        if n <= 0:
            raise CheckpointIOError(0, f"writing {what}: the OS wrote nothing")
        done += n


def _write_file(path: str, data: bytes, ns: Namespace) -> None:
    try:
        fd = ns.create(path, mode=0o644)
    except OSError as exc:
        raise CheckpointIOError(exc.errno, f"creating {path} failed: {exc.strerror}") from exc
    try:
        _pwrite_all(fd, memoryview(data), 0, path)
        atomic.fsync_fd(fd, path, ns)
    finally:
        os.close(fd)


def _discard(tmp: str, ns: Namespace) -> None:
    """Remove a copy that will not be published; best effort, as the error that stopped it
    is the one to report (recover deletes what is left before the next save)."""
    try:
        ns.remove_tree(tmp)
    except OSError:
        pass
