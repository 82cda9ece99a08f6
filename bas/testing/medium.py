"""Media for durability tests: a backend's own storage, read and power-cut without any Device.

A device object can pass every read-back check while nothing it wrote is durable (a no-op
persist reads back fine from the page cache). A Medium is the conformance kit's back door: it
reads the bytes where the backend keeps them (`raw_read`) and simulates a power cut on them
(`power_cut`: whatever the backend did not make durable is lost), so durability is judged on
the storage, not on what the device, or a fault wrapper's bookkeeping, says.

Use a medium as a context manager around the device's whole life (FileMedium watches syncs
from the start); call raw_read and power_cut only while no device has the storage open.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["FileMedium", "Medium", "PmemMedium"]


class Medium:
    """Where a persistent backend keeps its bytes. Subclasses implement raw_read, power_cut."""

    def __enter__(self) -> Medium:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def raw_read(self, offset: int, length: int) -> bytes:
        """The stored bytes at [offset, offset + length) of the device's address space."""
        raise NotImplementedError

    def power_cut(self) -> None:
        """Lose every byte the backend did not make durable (as a power loss would)."""
        raise NotImplementedError


class FileMedium(Medium):
    """A regular file as its disk holds it: the bytes as of the last fsync/fdatasync of it.

    While entered, os.fsync and os.fdatasync are wrapped: a sync of any descriptor of this
    file snapshots the file, and power_cut() writes the last snapshot back. A file never
    synced loses everything; one that existed before entering starts out durable. A backend
    that made a file durable by other means (O_SYNC, msync, a native call) would not be seen
    and would fail, loudly, rather than pass.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._durable: bytes | None = None
        self._saved: dict[str, object] = {}

    def __enter__(self) -> FileMedium:
        if os.path.exists(self.path):  # what was there before counts as durable
            self._durable = self._read_all()
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)
            self._saved[name] = real
            setattr(os, name, self._watching(real))
        return self

    def __exit__(self, *exc) -> None:
        for name, real in self._saved.items():
            setattr(os, name, real)
        self._saved.clear()

    def _watching(self, real):
        def sync(fd):
            real(fd)
            try:
                held = os.fstat(fd if isinstance(fd, int) else fd.fileno())
                here = os.stat(self.path)
            except OSError:
                return
            if (held.st_dev, held.st_ino) == (here.st_dev, here.st_ino):
                self._durable = self._read_all()
        return sync

    def _read_all(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def raw_read(self, offset: int, length: int) -> bytes:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def power_cut(self) -> None:
        image = self._durable or b""
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, len(image))
            os.pwrite(fd, image, 0)
        finally:
            os.close(fd)


class PmemMedium(Medium):
    """A bas pmem:// pool file, read through libpmemobj directly (no PmemDevice).

    A chunk still marked pending in the pool's chunk table holds stores that persist() never
    settled: power_cut() overwrites such chunks with the complement of their bytes (neither
    old nor new: real PMem may keep any mix of cache lines) and flushes them.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def _open(self):
        from bas._native import pmem as _pmemobj
        from bas.backends.pmem import LAYOUT

        pool = _pmemobj.Pool.open(self.path, LAYOUT)
        try:
            info = pool.attach()
        except BaseException:
            pool.close()
            raise
        return pool, info

    def raw_read(self, offset: int, length: int) -> bytes:
        pool, info = self._open()
        try:
            if offset < 0 or offset + length > info.region_size:
                raise ValueError(f"{self.path}: [{offset}, {offset + length}) is outside the "
                                 f"region of {info.region_size} bytes")
            return bytes(pool.region()[offset:offset + length])
        finally:
            pool.close()

    def power_cut(self) -> None:
        pool, info = self._open()
        try:
            pending = np.flatnonzero(pool.read_table()["pending"])
            region = np.frombuffer(pool.region(), np.uint8)
            offs, lens = [], []
            for chunk in pending.tolist():
                start = chunk * info.chunk_size
                length = min(info.chunk_size, info.region_size - start)
                pool.copy_in(start, region[start:start + length] ^ np.uint8(0xFF))
                offs.append(start)
                lens.append(length)
            if offs:
                pool.persist(np.array(offs, np.uint64), np.array(lens, np.uint64))
            del region  # no view of the mapping may outlive close
        finally:
            pool.close()
