"""file:// -- a regular file through pread/pwrite, optionally O_DIRECT, fdatasync to persist."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import threading

import numpy as np

from bas._native import io as native
from bas.device import Capabilities, Device, Requests
from bas.errors import DeviceIOError, InvalidURLError, UnsupportedError
from bas.namespace import local
from bas.registry import DeviceURL

__all__ = ["FileDevice"]

# O_DIRECT needs offsets, lengths and buffers aligned to the logical block size; 4096 covers
# every common device (512e and 4Kn) without asking the kernel.
DIRECT_ALIGN = 4096
# gathers whose pieces average below this go through the mapping; bigger ones through pread,
# which lets the kernel read ahead in large requests
MAP_PIECE_LIMIT = 64 << 10


class FileDevice(Device):
    """A file of fixed size.

    URL: file:///path[?size=1G][&create=1][&direct=1][&bounce=1][&preallocate=1][&read_only=1]
      size        grow or create the file to this size (never shrinks: a smaller size is an error)
      create      create the file when missing (default: when size is given)
      direct      O_DIRECT: bypass the page cache (EINVAL on file systems without it)
      bounce      with direct: unaligned requests go through aligned bounce buffers (default 1);
                  bounce=0 makes unaligned requests an AlignmentError instead
      preallocate reserve blocks with posix_fallocate when creating or growing (default 1)
      map         buffered files only: serve small-piece gathers from a shared read mapping
                  of the page cache (a memcpy instead of a pread system call per piece;
                  default 1). Writes always use pwrite, so persist stays fdatasync. A file
                  truncated by someone else under the mapping gives DeviceIOError, not SIGBUS.
      nofollow    refuse a symbolic link as the last path component, and anything but a
                  regular file (for files inside directories that others can change)
      cache_first with direct: reads first take what the page cache already holds (asked with
                  mincore, then a memcpy) and read only the rest with O_DIRECT, so a cached
                  file is not read from the disk again; `cached_bytes` counts what came
                  from the cache

    The path is opened once, never blocking (a FIFO is refused, not waited on); the O_DIRECT
    descriptor is reopened from that descriptor, so both always name the same file.
    """

    scheme = "file"

    def __init__(self, path: str, *, size: int | None = None, create: bool | None = None,
                 direct: bool = False, bounce: bool = True, preallocate: bool = True,
                 read_only: bool = False, map: bool = True, nofollow: bool = False,
                 cache_first: bool = False, url: str | None = None):
        super().__init__(url or f"file://{path}", read_only=read_only, caps=Capabilities(
            persistent=True, direct_io=direct, granularity=DIRECT_ALIGN if direct else 1,
            alignment=DIRECT_ALIGN if direct and not bounce else 1))
        self.path = path
        self._rmw_lock = threading.Lock()
        self._cache_first = cache_first and direct
        self.cached_bytes = 0  # bytes read from the page cache by cache_first
        create = size is not None if create is None else create
        exists = os.path.exists(path)
        if not exists and not create:
            raise FileNotFoundError(errno.ENOENT, f"{self.url}: no such file (give ?size= to "
                                    f"create it)", path)
        if not exists and size is None:
            raise InvalidURLError(f"{self.url}: creating a file device needs ?size=")
        if read_only and (not exists or size is not None):
            raise InvalidURLError(f"{self.url}: read_only cannot create or resize a file")
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        self._fd = _open_checked(path, flags | (0 if exists else os.O_CREAT), nofollow,
                                 self.url)
        self._fd_direct = -1
        try:
            self._len = self._set_size(size, preallocate, created=not exists)
            if direct:
                self._fd_direct = _open_direct(self._fd, path, flags, self.url)
            # O_DIRECT users asked to bypass the page cache: never read it through a mapping
            self._map = (mmap.mmap(self._fd, self._len, mmap.MAP_SHARED, mmap.PROT_READ)
                         if map and not direct and self._len else None)
            self._advice = mmap.MADV_NORMAL
        except BaseException:
            os.close(self._fd)
            if self._fd_direct >= 0:
                os.close(self._fd_direct)
            if not exists:  # leave no half-made file behind
                os.unlink(path)
            raise
        if not exists:
            _fsync_dir(path)

    @classmethod
    def open_url(cls, url: DeviceURL) -> FileDevice:
        if url.host not in ("", "localhost"):
            raise InvalidURLError(f"{url.text}: file:// takes a local path (file:///path)")
        if not url.path:
            raise InvalidURLError(f"{url.text}: file:// needs a path")
        options = dict(
            size=url.take_size("size"),
            create=url.take_bool("create") if "create" in url.params else None,
            direct=url.take_bool("direct"),
            bounce=url.take_bool("bounce", True),
            preallocate=url.take_bool("preallocate", True),
            read_only=url.take_bool("read_only"),
            map=url.take_bool("map", True),
            nofollow=url.take_bool("nofollow"),
            cache_first=url.take_bool("cache_first"),
        )
        url.finish()
        return cls(url.path, url=url.text, **options)

    def _set_size(self, size: int | None, preallocate: bool, created: bool) -> int:
        current = os.fstat(self._fd).st_size
        if size is None:
            return current
        if size < current:
            raise InvalidURLError(f"{self.url}: file holds {current} bytes, more than size={size}"
                                  f" (a device never shrinks a file)")
        if size > current:
            if preallocate:
                try:
                    os.posix_fallocate(self._fd, current, size - current)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise DeviceIOError(exc.errno, f"{self.url}: preallocating {size} bytes "
                                            f"failed: {exc.strerror}") from exc
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        return size

    def _size(self) -> int:
        return self._len

    def _direct_limit(self) -> int:
        # bytes past the last whole block go through the buffered fd: an aligned O_DIRECT
        # write there would grow the file past the device's size
        return self._len - self._len % DIRECT_ALIGN

    def _io(self, gather: bool, offs, lens, uniform, total, buf, threads: int) -> None:
        if not gather:
            native.fd_scatter(self._fd, self._fd_direct, DIRECT_ALIGN, self._direct_limit(),
                              offs, lens, uniform, total, buf, threads)
            return
        cached = native.fd_gather(self._fd, self._fd_direct, DIRECT_ALIGN, self._direct_limit(),
                                  offs, lens, uniform, total, buf, threads, self._cache_first)
        if cached:
            with self._rmw_lock:  # a counter shared by reader threads
                self.cached_bytes += cached

    def _read_into(self, offset: int, view: memoryview) -> None:
        self._io(True, np.array([offset], np.uint64), None, view.nbytes, view.nbytes, view, 1)

    def _write(self, offset: int, view: memoryview) -> None:
        offs = np.array([offset], np.uint64)
        if self._needs_rmw(offset % DIRECT_ALIGN or view.nbytes % DIRECT_ALIGN):
            with self._rmw_lock:
                self._io(False, offs, None, view.nbytes, view.nbytes, view, 1)
        else:
            self._io(False, offs, None, view.nbytes, view.nbytes, view, 1)

    def _read_many(self, req: Requests, out: memoryview, threads: int) -> None:
        if self._map is not None and req.total < MAP_PIECE_LIMIT * len(req):
            # in-order gathers (strided keys, scans) want the kernel's readahead; a fault in
            # a random gather must not read ahead megabytes (read_ahead_kb) it will not use.
            # The advice is a hint: racing batches of both kinds cost speed, never bytes.
            in_order = len(req) < 2 or bool(np.all(req.offsets[1:] >= req.offsets[:-1]))
            # a random gather that touches most pages anyway is cheaper with readahead too
            dense = len(req) * mmap.PAGESIZE >= self._len // 2
            advice = mmap.MADV_NORMAL if in_order or dense else mmap.MADV_RANDOM
            if advice != self._advice:
                self._map.madvise(advice)
                self._advice = advice
            native.mem_gather(self._map, self._len, req.offsets, req.lengths, req.uniform,
                              req.total, out, threads)
        else:
            self._io(True, req.offsets, req.lengths, req.uniform, req.total, out, threads)

    def _write_many(self, req: Requests, data: memoryview, threads: int) -> None:
        unaligned = bool(np.any(req.offsets % np.uint64(DIRECT_ALIGN))) or bool(
            np.any(req.length_array() % np.uint64(DIRECT_ALIGN)))
        if self._needs_rmw(unaligned):
            # read-modify-write of shared blocks must not race: one thread, under the lock
            with self._rmw_lock:
                self._io(False, req.offsets, req.lengths, req.uniform, req.total, data, 1)
        else:
            self._io(False, req.offsets, req.lengths, req.uniform, req.total, data, threads)

    def _needs_rmw(self, unaligned) -> bool:
        return self._fd_direct >= 0 and bool(unaligned)

    def _persist(self) -> None:
        os.fdatasync(self._fd)

    def _drop_caches(self) -> None:
        if self._map is not None:
            # pages mapped into this process are skipped by FADV_DONTNEED: unmap them first
            self._map.madvise(mmap.MADV_DONTNEED)
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def _close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._fd_direct >= 0:
            os.close(self._fd_direct)
        os.close(self._fd)


def _open_checked(path: str, flags: int, nofollow: bool, url: str) -> int:
    """Open path without blocking on a FIFO; refuse what pread/pwrite cannot serve."""
    flags |= os.O_NONBLOCK | (os.O_NOFOLLOW if nofollow else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if nofollow and exc.errno == errno.ELOOP:
            raise InvalidURLError(f"{url}: is a symbolic link (nofollow=1)") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a writer, opened for writing; a socket
            raise InvalidURLError(f"{url}: not a regular file or block device") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or (not nofollow and (stat.S_ISBLK(mode)
                                                         or stat.S_ISCHR(mode)))):
            raise InvalidURLError(f"{url}: not a regular file"
                                  f"{'' if nofollow else ' or device'}")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_direct(fd: int, path: str, flags: int, url: str) -> int:
    """A second, O_DIRECT descriptor of the file open as fd (through /proc: the same inode;
    without /proc by path, never through a link or blocking, and checked to be that inode)."""
    if not hasattr(os, "O_DIRECT"):
        raise UnsupportedError(f"{url}: this platform has no O_DIRECT")
    at = f"/proc/self/fd/{fd}"
    by_path = not os.path.exists(at)
    extra = os.O_NOFOLLOW | os.O_NONBLOCK if by_path else 0
    try:
        direct = os.open(path if by_path else at, flags | os.O_DIRECT | extra)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise UnsupportedError(f"{url}: the file system does not support O_DIRECT (tmpfs?); "
                                   f"open without direct=1") from exc
        raise
    a, b = os.fstat(fd), os.fstat(direct)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        os.close(direct)
        raise DeviceIOError(errno.ESTALE, f"{url}: the path names another file than the one "
                            f"opened a moment ago (replaced meanwhile)")
    if extra:
        fcntl.fcntl(direct, fcntl.F_SETFL, fcntl.fcntl(direct, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return direct


def _fsync_dir(path: str) -> None:
    """Make the new file's name durable (the device's bytes are its own persist's job)."""
    local().sync_dir(os.path.dirname(os.path.abspath(path)))
