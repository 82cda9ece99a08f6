"""FaultNamespace: a namespace that fails chosen operations and forgets what was never synced.

Like leveldb's FaultInjectionTestEnv, and bas/wrappers/fault.py for devices: the Nth counted
operation raises OSError(fail_errno), and crash() puts the file system in a state a power loss could
leave: every creation, mkdir, link, rename and exchange not yet followed by a sync_dir of its
parent(s) is undone (newest first; a file a rename replaced gets its old bytes back), and every
file created through this namespace loses the bytes past its last sync. Use it in tests only:
replaced files are kept in memory until their rename is durable.

Model, and its limits: a removal is durable at once and takes with it the pending changes of
the names it removes (a journaling file system commits metadata in order); lock files are not
tracked; files created by other means (a device opening its own file) keep their bytes.
"""

from __future__ import annotations

import errno as errno_codes
import os
import stat
import threading
from collections import Counter
from dataclasses import dataclass, field

from bas.namespace import ExchangeUnsupportedError, LocalNamespace, Namespace, NamespaceWrapper

__all__ = ["OPERATIONS", "FaultNamespace"]

#: the operation kinds, by public method name; fail_op takes one of these or "any"
OPERATIONS = ("create", "mkdir", "rename", "exchange", "link", "remove", "remove_tree", "sync",
              "sync_dir", "lock")


@dataclass
class _Change:
    """A namespace change not yet durable: what it did and the directories still to sync."""

    kind: str  # create | mkdir | link | rename | exchange
    a: str  # the new name (create, mkdir, link), the source (rename) or one side (exchange)
    b: str | None = None  # the destination (rename) or the other side (exchange)
    dirs: set[str] = field(default_factory=set)
    replaced: tuple | None = None  # what a rename replaced: ("file", bytes, mode), ("dir",)...


@dataclass
class _File:
    path: str
    synced: int = 0  # bytes of it that are durable


class FaultNamespace(NamespaceWrapper):
    """Fault injection and crash simulation around a namespace (the local one by default).

    fail_after: the Nth counted operation (1-based) fails with OSError(fail_errno) and does
      nothing, and so do the next fail_count - 1 (fail_count=0: every later one).
    fail_op: which operations count: "any" or one of OPERATIONS.
    exchange=False: act as a file system without RENAME_EXCHANGE (ExchangeUnsupportedError).
    Thread-safe; crash() REQUIRES that no other thread is using it.
    """

    def __init__(self, inner: Namespace | None = None, *, fail_after: int | None = None,
                 fail_op: str = "any", fail_errno: int = errno_codes.EIO, fail_count: int = 1,
                 exchange: bool = True):
        super().__init__(inner if inner is not None else LocalNamespace())
        self.exchange_supported = exchange
        self._guard = threading.Lock()
        self.calls: Counter[str] = Counter()  # every call, by kind, failed or not
        self.crashes = 0
        self._pending: list[_Change] = []
        self._files: dict[int, _File] = {}  # descriptor -> file, while this process has it
        self._tracked: list[_File] = []
        self.arm(fail_after, fail_op=fail_op, fail_errno=fail_errno, fail_count=fail_count)

    # -- fault injection ----------------------------------------------------------------

    @property
    def operations(self) -> int:
        """Counted operations since the last arm (those matching fail_op)."""
        return self._counted

    def arm(self, fail_after: int | None, *, fail_op: str = "any",
            fail_errno: int = errno_codes.EIO, fail_count: int = 1) -> None:
        """Re-arm: the fail_after-th counted operation from now fails (None: none fails)."""
        if fail_op != "any" and fail_op not in OPERATIONS:
            raise ValueError(f"fail_op must be 'any' or one of {OPERATIONS}, got {fail_op!r}")
        if fail_after is not None and fail_after < 1:
            raise ValueError(f"fail_after counts from 1, got {fail_after}")
        if fail_count < 0:
            raise ValueError(f"fail_count must not be negative, got {fail_count}")
        with self._guard:
            self._counted = 0
            self.fail_after, self.fail_op = fail_after, fail_op
            self.fail_errno, self.fail_count = fail_errno, fail_count

    def _check(self, kind: str, path: str | None) -> None:
        with self._guard:
            self.calls[kind] += 1
            if self.fail_op not in ("any", kind):
                return
            self._counted += 1
            n = self._counted
        if self.fail_after is None or n < self.fail_after:
            return
        if self.fail_count and n >= self.fail_after + self.fail_count:
            return
        raise OSError(self.fail_errno, f"injected fault in {kind} (operation #{n})", path)

    # -- crash simulation ---------------------------------------------------------------

    @property
    def unsynced(self) -> list[tuple[str, str, str | None]]:
        """The changes crash() would undo, oldest first: (kind, name, other name or None)."""
        with self._guard:
            return [(c.kind, c.a, c.b) for c in self._pending]

    def crash(self) -> None:
        """Leave what a power loss now could: unsynced bytes and names dropped (module doc)."""
        with self._guard:
            for f in self._tracked:
                try:
                    st = os.stat(f.path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size > f.synced:
                    os.truncate(f.path, f.synced)
            for change in reversed(self._pending):
                self._undo(change)
            self._pending.clear()
            self._files.clear()
            self._tracked.clear()
            self.crashes += 1

    def _undo(self, c: _Change) -> None:
        inner = self.inner
        if c.kind in ("create", "mkdir", "link"):
            if os.path.lexists(c.a):
                inner.remove_tree(c.a)
        elif c.kind == "rename" and os.path.lexists(c.b):
            inner.rename(c.b, c.a)
            if c.replaced is not None:
                _restore(c.b, c.replaced)
        elif c.kind == "exchange" and os.path.lexists(c.a) and os.path.lexists(c.b):
            inner.exchange(c.a, c.b)

    def _record(self, change: _Change) -> None:
        with self._guard:
            self._pending.append(change)

    def _forget(self, path: str) -> None:
        """path was removed: the pending changes that made names under it are moot."""
        with self._guard:
            self._pending = [c for c in self._pending
                             if not any(p is not None and _under(p, path) for p in (c.a, c.b))]
            self._tracked = [f for f in self._tracked if not _under(f.path, path)]

    def _moved(self, src: str, dst: str, swap: bool = False) -> None:
        """Bytes follow their inode: tracked files under src now live under dst."""
        with self._guard:
            for f in self._tracked:
                if _under(f.path, src):
                    f.path = dst + f.path[len(src):]
                elif swap and _under(f.path, dst):
                    f.path = src + f.path[len(dst):]

    # -- primitives ---------------------------------------------------------------------

    def _create(self, path: str, mode: int) -> int:
        self._check("create", path)
        fd = self.inner.create(path, mode=mode)
        f = _File(path)
        with self._guard:
            self._files[fd] = f
            self._tracked.append(f)
            self._pending.append(_Change("create", path, dirs={_parent(path)}))
        return fd

    def _mkdir(self, path: str, mode: int) -> None:
        self._check("mkdir", path)
        self.inner.mkdir(path, mode=mode)
        self._record(_Change("mkdir", path, dirs={_parent(path)}))

    def _rename(self, src: str, dst: str) -> None:
        self._check("rename", src)
        replaced = _snapshot(dst)
        self.inner.rename(src, dst)
        self._moved(src, dst)
        self._record(_Change("rename", src, dst, {_parent(src), _parent(dst)}, replaced))

    def _exchange(self, a: str, b: str) -> None:
        self._check("exchange", a)
        if not self.exchange_supported:
            raise ExchangeUnsupportedError(errno_codes.EOPNOTSUPP, "RENAME_EXCHANGE is "
                                           "turned off in this FaultNamespace", a, None, b)
        self.inner.exchange(a, b)
        self._moved(a, b, swap=True)
        self._record(_Change("exchange", a, b, {_parent(a), _parent(b)}))

    def _link(self, src: str, dst: str) -> None:
        self._check("link", dst)
        self.inner.link(src, dst)
        self._record(_Change("link", dst, dirs={_parent(dst)}))

    def _remove(self, path: str) -> None:
        self._check("remove", path)
        self.inner.remove(path)
        self._forget(path)

    def _remove_tree(self, path: str) -> None:
        self._check("remove_tree", path)
        self.inner.remove_tree(path)
        self._forget(path)

    def _sync(self, fd: int) -> None:
        self._check("sync", None)
        self.inner.sync(fd)
        with self._guard:
            f = self._files.get(fd)
            if f is not None:
                f.synced = os.fstat(fd).st_size

    def _sync_dir(self, path: str) -> None:
        self._check("sync_dir", path)
        self.inner.sync_dir(path)
        with self._guard:
            still = []
            for c in self._pending:
                c.dirs.discard(path)
                if c.dirs:
                    still.append(c)
                elif c.kind in ("rename", "exchange"):
                    # durable: what older pending changes made under the old name is there now
                    for older in still:
                        older.a, older.b = (_move(p, c.a, c.b, c.kind == "exchange")
                                            for p in (older.a, older.b))
            self._pending = still

    def _lock(self, path: str, wait: bool) -> int:
        self._check("lock", path)
        return self.inner.lock(path, wait=wait)


def _parent(path: str) -> str:
    return os.path.dirname(path)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _move(path: str | None, src: str, dst: str, swap: bool) -> str | None:
    if path is None:
        return None
    if _under(path, src):
        return dst + path[len(src):]
    if swap and _under(path, dst):
        return src + path[len(dst):]
    return path


def _snapshot(path: str) -> tuple | None:
    """What a rename over path replaces, enough to put it back; None when nothing is there."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode))  # rename replaces only an empty one
    with open(path, "rb") as f:
        return ("file", f.read(), stat.S_IMODE(st.st_mode))


def _restore(path: str, what: tuple) -> None:
    if what[0] == "link":
        os.symlink(what[1], path)
    elif what[0] == "dir":
        os.mkdir(path, what[1])
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, what[2])
        try:
            view = memoryview(what[1])
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
