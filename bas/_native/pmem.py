"""Bindings of native/bas_pmem.h: the one module that imports the optional libpmemobj
extension `bas._bas_pmem` and wraps each C helper with checks.

PMDK aborts the process on misuse (a tx call outside a transaction, tx_end while working, a
double close, touching the mapping after close). Every wrapper here checks the pool's and the
transaction's state first and raises a typed error instead; the C helpers check the stage a
second time. PMDK transactions belong to the thread that began them: a Pool runs at most one
at a time, and only its owner thread may drive it.
"""

from __future__ import annotations

import errno
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from bas._native.io import crc32
from bas.errors import (
    CorruptionError,
    DeviceBusyError,
    DeviceClosedError,
    DeviceError,
    DeviceIOError,
    LayoutError,
    PoolTooSmallError,
)

try:
    from bas._bas_pmem import ffi, lib
except ImportError as exc:  # pragma: no cover - only where PMDK is missing
    raise ImportError("pmem:// needs the bas._bas_pmem extension, built against PMDK's "
                      f"libpmemobj ({exc})") from exc

__all__ = ["CHUNK_ENTRY", "MIN_POOL", "MAX_ALLOC", "Info", "Pool", "TransactionError"]

_C = ffi.new("struct bas_pmem_consts *")
if lib.bas_pmem_consts(_C):  # pragma: no cover - the C side cannot fail today
    raise ImportError("bas pmem extension: reading PMDK's constants failed")
MIN_POOL: int = _C.min_pool
MAX_ALLOC: int = _C.max_alloc
MAGIC: int = _C.magic
VERSION: int = _C.version
CHUNK_ENTRY: int = _C.chunk_entry_size
STAGE_NONE, STAGE_WORK = _C.stage_none, _C.stage_work
_ERR_IN_TX, _ERR_NO_TX, _ERR_NOT_BAS = _C.err_in_tx, _C.err_no_tx, _C.err_not_bas
_ENTRY = np.dtype([("crc", "<u4"), ("pending", "<u4")])
assert _ENTRY.itemsize == CHUNK_ENTRY


class TransactionError(DeviceError, RuntimeError):
    """A PMDK transaction call in the wrong state (PMDK itself would abort the process)."""


@dataclass(frozen=True)
class Info:
    """The bas root of a pool, as read by Pool.attach()."""

    version: int
    region_size: int
    chunk_size: int
    nchunks: int


def errormsg() -> str:
    """This thread's last libpmemobj message (may hold non-UTF-8 bytes: replaced)."""
    return ffi.string(lib.bas_pmem_errormsg()).decode("utf-8", errors="replace")


def open_error(rc: int, path: str, what: str) -> DeviceError:
    """The typed error for a failed pmemobj_open/create/check (rc = -errno)."""
    code, msg = -rc, errormsg()
    text = f"pmem://{path}: {what} failed: {msg or os.strerror(code)}"
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return DeviceBusyError(code, f"pmem://{path}: pool is already open (by this or another "
                               f"process): {msg}")
    if code == errno.EINVAL and "layout" in msg:
        return LayoutError(text)
    if code == errno.EINVAL and "wrong pool type" in msg:
        return LayoutError(f"{text} (not a pmemobj pool)")
    if code == errno.EINVAL:
        # header checksums, versions, sizes, recovery: PMDK says EINVAL for all of them
        return CorruptionError(text)
    if code == errno.ENOMEM and what == "create":
        return PoolTooSmallError(text)
    return DeviceIOError(code, text)


def check(path: str, layout: str) -> bool:
    """pmemobj_check on a closed pool: True consistent, False not; typed errors otherwise."""
    consistent = ffi.new("int *")
    rc = lib.bas_pmem_check(os.fsencode(path), layout.encode(), consistent)
    if rc:
        raise open_error(rc, path, "pmemobj_check")
    return bool(consistent[0])


class Pool:
    """An open libpmemobj pool handle. Use Pool.create or Pool.open; close exactly once."""

    def __init__(self, handle, path: str):
        self._handle = handle
        self.path = path
        self._state = threading.Lock()
        self._tx_owner: int | None = None  # thread running this pool's transaction
        self._region_addr = 0
        self._region_size = 0
        self._chunk_size = 0
        self._nchunks = 0
        self.is_pmem = False

    @classmethod
    def create(cls, path: str, layout: str, pool_size: int, mode: int = 0o644) -> Pool:
        """pmemobj_create a new file (EEXIST if it exists) with an empty bas root."""
        if pool_size < MIN_POOL:
            raise PoolTooSmallError(f"pmem://{path}: pool of {pool_size} bytes is below PMDK's "
                                    f"minimum of {MIN_POOL}")
        out = ffi.new("struct bas_pmem_pool **")
        rc = lib.bas_pmem_create(os.fsencode(path), layout.encode(), pool_size, mode, out)
        if rc:
            raise open_error(rc, path, "create")
        return cls(out[0], path)

    @classmethod
    def open(cls, path: str, layout: str) -> Pool:
        """pmemobj_open an existing pool (PMDK recovers unfinished transactions here)."""
        out = ffi.new("struct bas_pmem_pool **")
        rc = lib.bas_pmem_open(os.fsencode(path), layout.encode(), out)
        if rc:
            raise open_error(rc, path, "pmemobj_open")
        return cls(out[0], path)

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """pmemobj_close. Refused twice and while a transaction is open."""
        with self._state:
            handle = self._live("close")
            if self._tx_owner is not None:
                raise TransactionError(f"pmem://{self.path}: close during a transaction")
            rc = lib.bas_pmem_close(handle)
            if rc:
                raise TransactionError(f"pmem://{self.path}: close refused ({os.strerror(-rc)})")
            self._handle = None
            self._region_addr = 0

    # -- root and region ------------------------------------------------------------------

    def attach(self) -> Info:
        """Validate the bas root and map region and table; LayoutError/CorruptionError."""
        info = ffi.new("struct bas_pmem_info *")
        rc = lib.bas_pmem_attach(self._live("attach"), info)
        where = f"pmem://{self.path}"
        if rc == -_ERR_NOT_BAS:
            raise LayoutError(f"{where}: not a bas pool (root magic {info.magic:#x}, "
                              f"expected {MAGIC:#x})")
        if rc == -errno.EBADMSG:
            raise CorruptionError(f"{where}: the bas root object is damaged (checksum, sizes "
                                  f"or object references do not match)")
        if rc:
            raise DeviceIOError(-rc, f"{where}: reading the root failed: {os.strerror(-rc)}")
        if info.version != VERSION:
            raise LayoutError(f"{where}: bas pool format version {info.version}, this build "
                              f"reads version {VERSION}")
        addr, size, is_pmem = ffi.new("uint64_t *"), ffi.new("uint64_t *"), ffi.new("int *")
        self._raise(lib.bas_pmem_region(self._handle, addr, size, is_pmem), "region")
        self._region_addr, self._region_size = int(addr[0]), int(size[0])
        self._chunk_size, self._nchunks = int(info.chunk_size), int(info.nchunks)
        self.is_pmem = bool(is_pmem[0])
        return Info(int(info.version), int(info.region_size), int(info.chunk_size),
                    int(info.nchunks))

    def region(self):
        """The mapped region as a writable buffer object (no raw address leaves this module).

        REQUIRES: the pool stays open while the buffer is used; the device that owns the pool
        drops its reference before close (Device.close waits for calls in flight).
        """
        self._attached("region")
        return ffi.buffer(ffi.cast("uint8_t *", self._region_addr), self._region_size)

    def read_table(self) -> np.ndarray:
        """A copy of the whole chunk table (fields crc and pending)."""
        self._attached("read_table")
        out = np.zeros(self._nchunks, dtype=_ENTRY)
        rc = lib.bas_pmem_read_table(self._handle, 0, self._nchunks,
                                     ffi.from_buffer("struct bas_pmem_chunk[]", out))
        self._raise(rc, "read_table")
        return out

    def chunk_crcs(self, idx: np.ndarray) -> np.ndarray:
        """CRC-32 of the region's chunks idx (the last chunk may be shorter)."""
        self._attached("chunk_crcs")
        idx = self._indexes(idx)
        out = np.empty(idx.size, dtype=np.uint32)
        cs, size, base = self._chunk_size, self._region_size, self._region_addr
        for k, i in enumerate(idx.tolist()):
            start = i * cs
            view = ffi.buffer(ffi.cast("uint8_t *", base + start), min(cs, size - start))
            out[k] = crc32(view)
        return out

    def copy_in(self, offset: int, data) -> None:
        """Store bytes at a region offset (durable after persist or a tx commit)."""
        self._attached("copy_in")
        with ffi.from_buffer(data) as src:
            self._check_range(offset, len(src), "copy_in")
            rc = lib.bas_pmem_copy_in(self._handle, offset, src, len(src))
        self._raise(rc, "copy_in")

    def persist(self, offsets: np.ndarray, lengths: np.ndarray) -> None:
        """Make region ranges durable (msync here, cache flushes on real PMem)."""
        self._attached("persist")
        offs = np.ascontiguousarray(offsets, dtype=np.uint64)
        lens = np.ascontiguousarray(lengths, dtype=np.uint64)
        if offs.shape != lens.shape or offs.ndim != 1:
            raise ValueError("persist needs equally long 1-d offsets and lengths")
        size = np.uint64(self._region_size)
        if offs.size and (bool(np.any(lens > size)) or bool(np.any(offs > size - lens))):
            raise ValueError(f"pmem://{self.path}: persist range outside the region of "
                             f"{self._region_size} bytes")
        rc = lib.bas_pmem_persist(self._handle, ffi.from_buffer("uint64_t[]", offs),
                                  ffi.from_buffer("uint64_t[]", lens), offs.size)
        self._raise(rc, "persist")

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def transaction(self):
        """begin ... commit (unless done) ... end; on an exception abort (if working), end."""
        self.tx_begin()
        try:
            yield self
        except BaseException:
            if self.tx_stage() == STAGE_WORK:
                self.tx_abort(errno.ECANCELED)
            self.tx_end()
            raise
        if self.tx_stage() == STAGE_WORK:
            self.tx_commit()
        tx_errno = self.tx_end()
        if tx_errno:
            raise self._tx_failure(tx_errno, "transaction")

    def tx_stage(self) -> int:
        """This thread's PMDK transaction stage (STAGE_NONE, STAGE_WORK, ...)."""
        stage = ffi.new("int *")
        self._raise(lib.bas_pmem_tx_stage(stage), "tx_stage")
        return stage[0]

    def tx_begin(self) -> None:
        with self._state:
            handle = self._live("tx_begin")
            if self._tx_owner is not None:
                raise TransactionError(f"pmem://{self.path}: a transaction is already open "
                                       f"(nesting is not supported)")
            rc = lib.bas_pmem_tx_begin(handle)
            if rc == -_ERR_IN_TX:
                raise TransactionError(f"pmem://{self.path}: this thread is in a transaction "
                                       f"of another pool")
            if rc:
                raise self._tx_failure(-rc, "tx_begin")
            self._tx_owner = threading.get_ident()

    def tx_add_region(self, offset: int, length: int) -> None:
        """Snapshot region bytes into the undo log (before writing them)."""
        self._in_tx("tx_add_region", work=True)
        if not 0 <= offset <= offset + length <= self._region_size or length <= 0:
            raise TransactionError(f"pmem://{self.path}: snapshot [{offset}, {offset + length})"
                                   f" is not inside the region of {self._region_size} bytes")
        self._tx_rc(lib.bas_pmem_tx_add_region(self._handle, offset, length), "tx_add_range")

    def tx_format(self, region_size: int, chunk_size: int, crc_full: int, crc_tail: int) -> None:
        """In a tx: allocate the zeroed region and chunk table, fill the root."""
        self._in_tx("tx_format", work=True)
        rc = lib.bas_pmem_tx_format(self._handle, region_size, chunk_size, crc_full, crc_tail)
        self._tx_rc(rc, "tx_format")

    def tx_set_crcs(self, idx: np.ndarray, crcs: np.ndarray) -> None:
        """In a tx: store the CRCs of chunks idx (sorted, unique)."""
        self._in_tx("tx_set_crcs", work=True)
        idx = self._indexes(idx)
        crcs = np.ascontiguousarray(crcs, dtype=np.uint32)
        if crcs.shape != idx.shape:
            raise ValueError("tx_set_crcs needs one CRC per chunk index")
        rc = lib.bas_pmem_tx_set_crcs(self._handle, ffi.from_buffer("uint64_t[]", idx),
                                      ffi.from_buffer("uint32_t[]", crcs), idx.size)
        self._tx_rc(rc, "tx_set_crcs")

    def tx_set_pending(self, idx: np.ndarray, value: int) -> None:
        """In a tx: set or clear the pending mark of chunks idx (sorted, unique)."""
        self._in_tx("tx_set_pending", work=True)
        idx = self._indexes(idx)
        rc = lib.bas_pmem_tx_set_pending(self._handle, ffi.from_buffer("uint64_t[]", idx),
                                         idx.size, 1 if value else 0)
        self._tx_rc(rc, "tx_set_pending")

    def tx_commit(self) -> None:
        self._in_tx("tx_commit", work=True)
        self._tx_rc(lib.bas_pmem_tx_commit(), "tx_commit")

    def tx_abort(self, err: int = errno.ECANCELED) -> None:
        self._in_tx("tx_abort", work=True)
        self._tx_rc(lib.bas_pmem_tx_abort(err), "tx_abort")

    def tx_end(self) -> int:
        """End a committed or aborted transaction; returns its errno (0 when committed)."""
        self._in_tx("tx_end", work=False)
        tx_errno = ffi.new("int *")
        rc = lib.bas_pmem_tx_end(tx_errno)
        if rc and rc != -_ERR_NO_TX:
            raise TransactionError(f"pmem://{self.path}: tx_end refused: {os.strerror(-rc)}")
        with self._state:
            self._tx_owner = None  # also when PMDK has no transaction: nothing is left to end
        if rc:
            raise TransactionError(f"pmem://{self.path}: tx_end found no transaction")
        return tx_errno[0]

    # -- checks ---------------------------------------------------------------------------

    def _live(self, what: str):
        if self._handle is None:
            raise DeviceClosedError(f"pmem://{self.path}: {what} on a closed pool")
        return self._handle

    def _attached(self, what: str) -> None:
        self._live(what)
        if not self._region_addr:
            raise LayoutError(f"pmem://{self.path}: {what} before the bas root was attached")

    def _check_range(self, offset: int, length: int, what: str) -> None:
        if (isinstance(offset, bool) or not isinstance(offset, (int, np.integer))
                or not 0 <= offset <= self._region_size - length):
            raise ValueError(f"pmem://{self.path}: {what} [{offset}, {offset}+{length}) is "
                             f"outside the region of {self._region_size} bytes")

    def _indexes(self, idx) -> np.ndarray:
        idx = np.ascontiguousarray(idx, dtype=np.uint64)
        if idx.ndim != 1 or (idx.size and int(idx.max()) >= self._nchunks):
            raise ValueError(f"chunk indexes must be a 1-d array below {self._nchunks}")
        if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            raise ValueError("chunk indexes must be sorted and unique")
        return idx

    def _in_tx(self, what: str, *, work: bool) -> None:
        self._live(what)
        if self._tx_owner is None:
            raise TransactionError(f"pmem://{self.path}: {what} outside a transaction")
        if self._tx_owner != threading.get_ident():
            raise TransactionError(f"pmem://{self.path}: {what} from a thread that does not "
                                   f"own the transaction")
        stage = self.tx_stage()
        if work and stage != STAGE_WORK:
            raise TransactionError(f"pmem://{self.path}: {what} after the transaction was "
                                   f"committed or aborted (stage {stage})")
        if not work and stage == STAGE_WORK:
            raise TransactionError(f"pmem://{self.path}: {what} while the transaction is "
                                   f"working (commit or abort first)")

    def _tx_rc(self, rc: int, what: str) -> None:
        if rc:
            # PMDK aborted the transaction (stage ONABORT) unless our own check refused
            raise self._tx_failure(-rc, what)

    def _tx_failure(self, code: int, what: str) -> DeviceError:
        text = f"pmem://{self.path}: {what} failed: {errormsg() or os.strerror(code)}"
        if code in (_ERR_IN_TX, _ERR_NO_TX):
            return TransactionError(text)
        if code == errno.ENOMEM:
            return PoolTooSmallError(f"{text} (the pool has no room left for this transaction's "
                                     f"undo log or allocation; create it with a larger pool_size)")
        return DeviceIOError(code, text)

    def _raise(self, rc: int, what: str) -> None:
        if rc:
            raise DeviceIOError(-rc, f"pmem://{self.path}: {what} failed: {os.strerror(-rc)}")
