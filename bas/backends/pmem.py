"""pmem:// -- a byte region in a PMDK libpmemobj pool, with per-chunk checksums.

On-pool layout (layout name LAYOUT; see docs/DEVICES.md): the root object holds magic, version,
region size, chunk size and the OIDs of the region (one allocation of `size` bytes) and of the
chunk table (CRC-32 and a pending flag per chunk).

Write protocol. The suggested design marked chunks pending at persist() time; that is not
enough: a process killed between write() and persist() leaves its stores in the mapped file
(page cache here, the media on real PMem), and the next open would see CRC mismatches. So a
write first marks its chunks pending in a transaction (only chunks not already dirty, so a
burst of writes to one chunk costs one transaction), then stores with plain memcpy. persist()
flushes the dirty chunks and then, in a second transaction, stores their CRCs and clears the
pending marks. Opening recomputes the CRCs of pending chunks (their bytes may be torn, as the
Device contract allows for unpersisted writes) and verifies every other chunk.
write_atomic() is failure-atomic: snapshot, copy, CRC update and commit in one transaction.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import secrets
import threading
import zlib
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from bas._native import io as native
from bas._native import pmem as pmemobj
from bas.device import Capabilities, Device, Requests, _byte_view
from bas.errors import (
    CorruptionError,
    DeviceBusyError,
    InvalidURLError,
    LayoutError,
    PoolTooSmallError,
)
from bas.namespace import local
from bas.registry import DeviceURL

__all__ = ["LAYOUT", "STEPS", "PmemDevice"]

LAYOUT = "bas-pmem-1"
DEFAULT_CHUNK = 64 << 10
#: write_atomic's kill points, in order: a crash before "commit" leaves all old data
STEPS = ("begin", "add_range", "half_copy", "copy", "checksum", "commit", "end")
# PMDK metadata (lanes, heap headers) measured at 4.3-5.3 MiB for pools up to 256 MiB. The undo
# log of write_atomic is allocated from the same heap, and PMDK's allocator needs free whole
# chunks for it: with this margin and a 16 MiB floor, write_atomic of min(size, 4 MiB) or about
# size/10 fit (measured, PMDK 1.12); a bigger one fails with PoolTooSmallError, changing nothing.
_OVERHEAD = 8 << 20


class PmemDevice(Device):
    """A region of `size` bytes in a libpmemobj pool file.

    URL: pmem:///path[?size=64M][&pool_size=..][&chunk=64K][&verify=1][&read_only=1]
      size       region bytes: creates the pool when the file is missing; must match if given
                 for an existing pool
      pool_size  pool file bytes when creating (default: size plus metadata and log room)
      chunk      checksum granule when creating (power of two, >= 256)
      verify     check every chunk's CRC on open (default 1); pending chunks are always redone
    """

    scheme = "pmem"

    def __init__(self, path: str, *, size: int | None = None, pool_size: int | None = None,
                 chunk: int | None = None, verify: bool = True, read_only: bool = False,
                 url: str | None = None):
        super().__init__(url or f"pmem://{path}", read_only=read_only, caps=Capabilities(
            persistent=True, byte_addressable=True, is_pmem=True, granularity=256))
        self.path = os.path.abspath(path)
        self._meta = threading.Condition(threading.Lock())  # pending marks, dirty set, txs
        self._persist_lock = threading.Lock()
        self._writers = 0  # plain writes between marking and the end of their memcpy
        self._draining = False  # persist() is taking the dirty set: new writes wait
        if os.path.lexists(self.path):
            if pool_size is not None and pool_size != os.path.getsize(self.path):
                raise InvalidURLError(f"{self.url}: pool_size={pool_size} given for an existing "
                                      f"pool of {os.path.getsize(self.path)} bytes")
            self._pool = _open_pool(self.path, self.url)
        elif read_only:
            raise InvalidURLError(f"{self.url}: read_only cannot create a pool")
        elif size is None:
            raise InvalidURLError(f"{self.url}: no such pool (give ?size= to create it)")
        else:
            self._pool = _create_pool(self.path, self.url, size, pool_size,
                                      DEFAULT_CHUNK if chunk is None else chunk)
        try:
            info = self._pool.attach()
            if size is not None and size != info.region_size:
                raise InvalidURLError(f"{self.url}: the pool holds a region of "
                                      f"{info.region_size} bytes, not size={size}")
            if chunk is not None and chunk != info.chunk_size:
                raise InvalidURLError(f"{self.url}: the pool uses chunk={info.chunk_size}")
            self._len, self._chunk, self._nchunks = info.region_size, info.chunk_size, info.nchunks
            self._region = self._pool.region()
            self._dirty = np.zeros(self._nchunks, dtype=bool)
            self._recover(verify)
        except BaseException:
            self._pool.close()
            raise
        # pmem_is_pmem(): 0 without real PMem; known once the pool is open
        self._caps = dataclasses.replace(self._caps, media_is_pmem=self._pool.is_pmem)

    @classmethod
    def open_url(cls, url: DeviceURL) -> PmemDevice:
        if url.host not in ("", "localhost"):
            raise InvalidURLError(f"{url.text}: pmem:// takes a local path (pmem:///path)")
        if not url.path:
            raise InvalidURLError(f"{url.text}: pmem:// needs a path")
        options = dict(size=url.take_size("size"), pool_size=url.take_size("pool_size"),
                       chunk=url.take_size("chunk"), verify=url.take_bool("verify", True),
                       read_only=url.take_bool("read_only"))
        url.finish()
        return cls(url.path, url=url.text, **options)

    # -- open-time recovery ---------------------------------------------------------------

    def _recover(self, verify: bool) -> None:
        table = self._pool.read_table()
        pending = np.flatnonzero(table["pending"]).astype(np.uint64)
        if pending.size and not self.read_only:
            # writes to these chunks were not persisted: whatever bytes survived are the data
            crcs = self._pool.chunk_crcs(pending)
            with self._pool.transaction():
                self._pool.tx_set_crcs(pending, crcs)
                self._pool.tx_set_pending(pending, 0)
        if not verify:
            return
        settled = np.flatnonzero(table["pending"] == 0).astype(np.uint64)
        bad = settled[self._pool.chunk_crcs(settled) != table["crc"][settled]]
        if bad.size:
            first = int(bad[0])
            raise CorruptionError(f"{self.url}: chunk {first} (bytes {first * self._chunk} to "
                                  f"{min((first + 1) * self._chunk, self._len)}) fails its "
                                  f"CRC-32; {bad.size} chunk(s) bad in all: "
                                  f"{bad[:8].tolist()}")

    # -- primitives -----------------------------------------------------------------------

    def _size(self) -> int:
        return self._len

    def _read_into(self, offset: int, view: memoryview) -> None:
        native.mem_gather(self._region, self._len, np.array([offset], np.uint64), None,
                          view.nbytes, view.nbytes, view, 1)

    def _write(self, offset: int, view: memoryview) -> None:
        first, last = offset // self._chunk, (offset + view.nbytes - 1) // self._chunk
        with self._writing(np.arange(first, last + 1, dtype=np.uint64)):
            native.mem_scatter(self._region, self._len, np.array([offset], np.uint64), None,
                               view.nbytes, view.nbytes, view, 1)

    def _read_many(self, req: Requests, out: memoryview, threads: int) -> None:
        native.mem_gather(self._region, self._len, req.offsets, req.lengths, req.uniform,
                          req.total, out, threads)

    def _write_many(self, req: Requests, data: memoryview, threads: int) -> None:
        lens = req.length_array()
        used = lens > 0
        first = req.offsets[used] // np.uint64(self._chunk)
        last = (req.offsets[used] + lens[used] - np.uint64(1)) // np.uint64(self._chunk)
        # chunk c is touched when some request has first <= c <= last
        starts = np.bincount(first.astype(np.int64), minlength=self._nchunks + 1)
        ends = np.bincount(last.astype(np.int64) + 1, minlength=self._nchunks + 1)
        touched = np.flatnonzero(np.cumsum(starts - ends)[:self._nchunks] > 0)
        with self._writing(touched.astype(np.uint64)):
            native.mem_scatter(self._region, self._len, req.offsets, req.lengths, req.uniform,
                               req.total, data, threads)

    @contextmanager
    def _writing(self, chunks: np.ndarray):
        """Mark chunks pending (durably, once per persist epoch) around a plain store."""
        with self._meta:
            while self._draining:
                self._meta.wait()
            new = chunks[~self._dirty[chunks]]
            if new.size:
                with self._pool.transaction():
                    self._pool.tx_set_pending(new, 1)
                self._dirty[new] = True
            self._writers += 1
        try:
            yield
        finally:
            with self._meta:
                self._writers -= 1
                if not self._writers:
                    self._meta.notify_all()

    def _persist(self) -> None:
        with self._persist_lock:
            with self._meta:
                self._draining = True
                try:
                    while self._writers:
                        self._meta.wait()
                    chunks = np.flatnonzero(self._dirty).astype(np.uint64)
                    self._dirty[:] = False
                finally:
                    self._draining = False
                    self._meta.notify_all()
            if not chunks.size:
                return
            try:
                self._flush(chunks)
                with self._meta:
                    # CRCs under the lock: a write_atomic may have changed a chunk since the
                    # flush (it holds this lock through its transaction). Chunks written again
                    # since the snapshot stay pending for the next persist.
                    crcs = self._pool.chunk_crcs(chunks)
                    settled = chunks[~self._dirty[chunks]]
                    with self._pool.transaction():
                        self._pool.tx_set_crcs(chunks, crcs)
                        if settled.size:
                            self._pool.tx_set_pending(settled, 0)
            except BaseException:
                with self._meta:
                    self._dirty[chunks] = True  # still pending on the media: retry next time
                raise

    def _flush(self, chunks: np.ndarray) -> None:
        """Persist the byte ranges of the chunks, one range per run of consecutive chunks."""
        breaks = np.flatnonzero(np.diff(chunks) != 1) + 1
        run_first = chunks[np.concatenate(([0], breaks))]
        run_last = chunks[np.concatenate((breaks - 1, [chunks.size - 1]))]
        offs = run_first * np.uint64(self._chunk)
        ends = np.minimum((run_last + np.uint64(1)) * np.uint64(self._chunk), self._len)
        self._pool.persist(offs, ends - offs)

    def _close(self) -> None:
        self._region = None  # the mapping dies with the pool: no call may reach it after
        self._pool.close()

    # -- failure-atomic write -------------------------------------------------------------

    def write_atomic(self, offset: int, data, *,
                     hook: Callable[[str], None] | None = None) -> None:
        """Store `data` at offset in one PMDK transaction: after a crash, all old or all new.

        Durable when it returns. `hook`, when given, is called with each name in STEPS as the
        transaction passes it (tests kill the process there).
        """
        view = _byte_view(data, writable=False)
        self._check_writable("write_atomic")
        offset = self._check_range(offset, view.nbytes, "write_atomic")
        step = hook or (lambda name: None)
        with self._op("write_atomic", offset, view.nbytes):
            if not view.nbytes:
                return
            n = view.nbytes
            chunks = np.arange(offset // self._chunk, (offset + n - 1) // self._chunk + 1,
                               dtype=np.uint64)
            with self._meta:  # no pending marks, persists or other txs meanwhile
                with self._pool.transaction():
                    step("begin")
                    self._pool.tx_add_region(offset, n)
                    step("add_range")
                    self._pool.copy_in(offset, view[:n // 2])
                    step("half_copy")
                    self._pool.copy_in(offset + n // 2, view[n // 2:])
                    step("copy")
                    # dirty chunks hold unpersisted plain writes: they stay pending and get
                    # their CRC at the next persist (or open)
                    clean = chunks[~self._dirty[chunks]]
                    if clean.size:
                        self._pool.tx_set_crcs(clean, self._pool.chunk_crcs(clean))
                    step("checksum")
                    self._pool.tx_commit()
                    step("commit")
                step("end")


def _default_pool_size(size: int, chunk: int) -> int:
    table = -(-size // chunk) * pmemobj.CHUNK_ENTRY
    return max(2 * pmemobj.MIN_POOL, size + table + _OVERHEAD + size // 8)


def _check_chunk(chunk: int, url: str) -> None:
    if chunk < 256 or chunk & (chunk - 1) or chunk > 1 << 30:
        raise InvalidURLError(f"{url}: chunk must be a power of two from 256 to 1G, got {chunk}")


def _create_pool(path: str, url: str, size: int, pool_size: int | None,
                 chunk: int) -> pmemobj.Pool:
    """Create the pool under a temporary name, format it, then link it into place."""
    _check_chunk(chunk, url)
    if size <= 0 or size > pmemobj.MAX_ALLOC:
        raise InvalidURLError(f"{url}: size must be from 1 to {pmemobj.MAX_ALLOC} bytes (one "
                              f"PMDK allocation), got {size}")
    if pool_size is None:
        pool_size = _default_pool_size(size, chunk)
    if pool_size < pmemobj.MIN_POOL:
        raise PoolTooSmallError(f"{url}: pool_size={pool_size} is below PMDK's minimum pool of "
                                f"{pmemobj.MIN_POOL} bytes")
    directory, name = os.path.split(path)
    _remove_stale_temporaries(directory, name)
    tmp = os.path.join(directory, f".{name}.bas-creating.{os.getpid()}.{secrets.token_hex(4)}")
    pool = pmemobj.Pool.create(tmp, LAYOUT, pool_size)
    try:
        tail = size % chunk
        try:
            with pool.transaction():
                pool.tx_format(size, chunk, zlib.crc32(bytes(chunk)), zlib.crc32(bytes(tail)))
        except PoolTooSmallError:
            raise PoolTooSmallError(f"{url}: a pool of {pool_size} bytes cannot hold a region of "
                                    f"{size} bytes plus PMDK's metadata (about "
                                    f"{_OVERHEAD >> 20} MiB); omit pool_size or raise it") from None
        _link_into_place(tmp, path, url)
        pool.path = path
    except BaseException:
        pool.close()
        local().remove(tmp)
        raise
    local().sync_dir(directory or ".")
    return pool


def _link_into_place(tmp: str, path: str, url: str) -> None:
    ns = local()  # a pool URL has no way to name another namespace
    try:
        ns.link(tmp, path)  # unlike rename, never replaces a pool created meanwhile
    except FileExistsError:
        raise DeviceBusyError(errno.EEXIST, f"{url}: another process created the pool while "
                              f"this one was creating it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
            raise
        ns.rename(tmp, path)  # a file system without hard links
        return
    ns.remove(tmp)


def _open_pool(path: str, url: str) -> pmemobj.Pool:
    """pmemobj_check, then pmemobj_open, refusing what would crash PMDK first."""
    if not os.path.isfile(path):
        raise LayoutError(f"{url}: not a regular file")
    length = os.path.getsize(path)
    if length < pmemobj.MIN_POOL:
        # PMDK dies of SIGBUS on an empty file; no pool is smaller than the minimum
        raise CorruptionError(f"{url}: file of {length} bytes is no pmemobj pool (the minimum "
                              f"is {pmemobj.MIN_POOL}): truncated or not a pool")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PMEMPOOLSET"):
        raise LayoutError(f"{url}: poolset files are not supported (they name other files)")
    if not head.startswith(b"PMEMOBJ"):
        raise LayoutError(f"{url}: not a pmemobj pool (signature {head[:8]!r})")
    if not pmemobj.check(path, LAYOUT):
        raise CorruptionError(f"{url}: pmemobj_check found the pool inconsistent: "
                              f"{pmemobj.errormsg()}")
    return pmemobj.Pool.open(path, LAYOUT)


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Delete leftovers of creations whose process died (their pid no longer exists)."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.bas-creating\.(\d+)\.[0-9a-f]+$")
    for entry in os.listdir(directory or "."):
        match = pattern.match(entry)
        if match and not _alive(int(match.group(1))):
            try:
                local().remove(os.path.join(directory, entry))
            except FileNotFoundError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
