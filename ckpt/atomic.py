"""Crash-safe replacement of a checkpoint directory, and the recovery that finishes a torn one.

A save writes everything under a sibling `NAME.tmp-TOKEN`, fsyncs every file and that
directory, then publishes it:

* no checkpoint at NAME yet: rename(tmp, NAME), fsync the parent;
* NAME exists and the file system has renameat2(RENAME_EXCHANGE) (ext4, xfs, btrfs, tmpfs):
  swap tmp and NAME in one atomic step, fsync the parent, then delete tmp (now the old one);
* otherwise: rename NAME to `NAME.old-TOKEN`, rename tmp to NAME, fsync the parent, delete
  the old one. Between the two renames NAME is missing; `recover` repairs that.

At every instant NAME is absent, the complete old checkpoint or the complete new one.
A load that finds NAME missing reads through `resolve`: when an `old` sibling shows that a
swap began, the new `tmp` (if complete) or else `old` is the checkpoint; nothing is changed.
`recover` runs before every save: it renames that directory back to NAME and deletes the
leftovers of crashed saves. One writer per NAME at a time, enforced by `lock` (flock on
the hidden sibling `.NAME.ckpt-lock`), held from recovery to publish: without it, a second
saver's recovery would delete the first one's temporary directory in the middle of its
publish. Readers never lock and may run any time.

Every change to names goes through a bas.namespace.Namespace (`ns`, the local file system by
default), so tests can fail any step and drop what was not synced (bas.testing.FaultNamespace).
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import weakref

from bas.namespace import ExchangeUnsupportedError, Namespace, local
from ckpt.errors import CheckpointIOError, SaveInProgressError

__all__ = ["SaveLock", "commit_dir", "fsync_dir", "fsync_fd", "lock", "lock_path", "recover",
           "resolve", "temp_dir", "try_recover"]

#: the save lock of NAME is the hidden sibling `.NAME.ckpt-lock`: a name no user convention
#: (py-filelock's NAME.lock, say) and no model name of a disk tier can take
LOCK_SUFFIX = ".ckpt-lock"
_held: dict[str, int] = {}  # lock path -> thread holding it: flock cannot see re-entry
_held_guard = threading.Lock()


def lock_path(path: str) -> str:
    parent, base = _split(path)
    return os.path.join(parent, f".{base}{LOCK_SUFFIX}")


class SaveLock:
    """The exclusive right to save into one path; release() (or `with`) gives it back.

    The lock file is removed on release. A waiter that wins the lock on a file that was
    removed meanwhile opens it again, so two savers never hold locks on different files.
    A thread that already holds it gets SaveInProgressError at once (waiting would deadlock:
    flock locks of one process on two descriptors exclude each other).
    """

    def __init__(self, path: str, wait: bool = True, ns: Namespace | None = None):
        self._ns = local(ns)
        self.path = lock_path(path)
        me = threading.get_ident()
        with _held_guard:
            if _held.get(self.path) == me:
                raise SaveInProgressError(errno.EDEADLK, f"{path}: this thread is already "
                                          f"saving to this path", path)
        while True:
            try:
                fd = self._ns.lock(self.path, wait=wait)
            except BlockingIOError:
                raise SaveInProgressError(errno.EWOULDBLOCK, f"{path}: another save to this "
                                          f"path is under way", path) from None
            except OSError as exc:
                raise _io_error(exc, f"locking {self.path}") from exc
            try:
                held, now = os.fstat(fd), os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:  # the holder removed it as we won: take a fresh one
                os.close(fd)
                continue
            except BaseException as exc:
                os.close(fd)
                if isinstance(exc, OSError):
                    raise _io_error(exc, f"locking {self.path}") from exc
                raise
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                break
            os.close(fd)
        self._fd = fd
        self._ino = (held.st_dev, held.st_ino)
        with _held_guard:
            _held[self.path] = me
        self._closer = weakref.finalize(self, _forget, self.path, fd)  # dies with us

    def release(self) -> None:
        if not self._closer.alive:
            return
        try:
            now = os.stat(self.path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == self._ino:  # ours: remove it while still held
                self._ns.remove(self.path)
        except OSError:
            pass  # a lock file left behind costs nothing: the next saver reuses it
        finally:
            self._closer()

    def __enter__(self) -> SaveLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _forget(path: str, fd: int) -> None:
    with _held_guard:
        _held.pop(path, None)
    os.close(fd)


def lock(path: str, wait: bool = True, ns: Namespace | None = None) -> SaveLock:
    """Take the save lock of path; wait=False raises SaveInProgressError when it is held."""
    return SaveLock(os.path.abspath(path), wait, ns)


def temp_dir(path: str, ns: Namespace | None = None) -> tuple[str, str]:
    """A fresh empty sibling directory for a save into `path`: (its path, its token)."""
    token = secrets.token_hex(4)
    tmp = f"{path}.tmp-{token}"
    try:
        local(ns).mkdir(tmp, mode=0o755)
    except OSError as exc:
        raise _io_error(exc, f"creating {tmp}") from exc
    return tmp, token


def commit_dir(tmp: str, path: str, token: str, ns: Namespace | None = None) -> None:
    """Publish the fully written and synced directory tmp as path (see the module doc)."""
    ns = local(ns)
    parent = os.path.dirname(os.path.abspath(path))
    fsync_dir(tmp, ns)
    try:
        if not os.path.lexists(path):
            ns.rename(tmp, path)
            fsync_dir(parent, ns)
            return
        if _rename_exchange(tmp, path, ns):
            fsync_dir(parent, ns)
            _remove_tree(tmp, ns)
            return
        old = f"{path}.old-{token}"
        ns.rename(path, old)
        ns.rename(tmp, path)
        fsync_dir(parent, ns)
        _remove_tree(old, ns)
    except OSError as exc:
        raise _io_error(exc, f"publishing {tmp} as {path}") from exc


def resolve(path: str, is_complete) -> str | None:
    """The directory that holds the checkpoint named path, without changing anything.

    path itself when present; while a swap is torn (path missing, `old` sibling present), the
    complete new `tmp` or else the `old` one; None when there is no checkpoint.
    is_complete(dir) tells whether a directory holds a whole, valid checkpoint.
    """
    if os.path.lexists(path):
        return path
    parent, base = _split(path)
    for old in _siblings(parent, base, "old"):
        tmp = os.path.join(parent, f"{base}.tmp-{old[len(base) + 5:]}")
        return tmp if os.path.isdir(tmp) and is_complete(tmp) else os.path.join(parent, old)
    return None


def try_recover(path: str, is_complete, ns: Namespace | None = None) -> bool:
    """recover(path) unless a save to it is under way (its leftovers are its own): ran?"""
    try:
        with lock(path, wait=False, ns=ns):
            recover(path, is_complete, ns)
    except SaveInProgressError:
        return False
    return True


def recover(path: str, is_complete, ns: Namespace | None = None) -> None:
    """Before a save: finish or undo an interrupted swap, then delete leftovers of crashes.

    REQUIRES: the caller holds lock(path).
    """
    ns = local(ns)
    parent, base = _split(path)
    try:
        found = resolve(path, is_complete)
        if found is not None and found != path:
            ns.rename(found, path)
            fsync_dir(parent, ns)
        for name in _siblings(parent, base, "old") + _siblings(parent, base, "tmp"):
            _remove_tree(os.path.join(parent, name), ns)
    except OSError as exc:
        raise _io_error(exc, f"recovering {path}") from exc


def _split(path: str) -> tuple[str, str]:
    full = os.path.abspath(path)
    return os.path.dirname(full), os.path.basename(full)


def _siblings(parent: str, base: str, kind: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(parent) if n.startswith(f"{base}.{kind}-"))
    except FileNotFoundError:
        return []


def fsync_fd(fd: int, what: str, ns: Namespace | None = None) -> None:
    try:
        local(ns).sync(fd)
    except OSError as exc:
        raise _io_error(exc, f"fsync of {what}") from exc


def fsync_dir(path: str, ns: Namespace | None = None) -> None:
    try:
        local(ns).sync_dir(path)
    except OSError as exc:
        raise _io_error(exc, f"fsync of directory {path}") from exc


def _rename_exchange(a: str, b: str, ns: Namespace | None = None) -> bool:
    """Atomically swap two paths; False where the OS or the file system cannot."""
    try:
        local(ns).exchange(a, b)
    except ExchangeUnsupportedError:
        return False
    return True


def _remove_tree(path: str, ns: Namespace | None = None) -> None:
    local(ns).remove_tree(path)


def _io_error(exc: OSError, what: str) -> CheckpointIOError:
    err = CheckpointIOError(exc.errno, f"{what} failed: {exc.strerror or exc}")
    err.filename = exc.filename
    return err
