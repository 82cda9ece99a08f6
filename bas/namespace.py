"""Namespace: the contract for changing names in a file system (create, publish, remove, lock).

Everything in bas and ckpt that makes a name appear, move or vanish goes through one of these,
as leveldb's storage code goes through `Env`: ckpt saves and tier copies, tier eviction, sort
and gensort output, pmem pool creation. The default is `local()`, the real file system; tests
pass `bas.testing.FaultNamespace`, which fails chosen operations and, on crash(), undoes what
was not yet made durable, without patching `os`.

Durability is the POSIX rule: a new, renamed or linked name survives a power loss only once
its parent directory has been synced (`sync_dir`); a file's bytes only once the file has been
synced (`sync`). `publish` and `replace_file` are the one place the write-temp, sync, rename,
sync-parent sequence is spelled out.

Public methods check their arguments, then call a `_primitive` that a backend implements.
Paths are str or os.PathLike of str; every primitive gets an absolute str. Errors are the
OSError the system raised (its filename set), unchanged: callers add their own context.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = ["ExchangeUnsupportedError", "LocalNamespace", "Namespace", "NamespaceWrapper",
           "local", "publish", "replace_file", "temp_name"]


class ExchangeUnsupportedError(OSError):
    """The OS or the file system has no atomic exchange (renameat2 RENAME_EXCHANGE)."""


class Namespace(ABC):
    """Changes to names in a file system. Thread-safe unless a subclass says otherwise."""

    def create(self, path: str | os.PathLike, *, mode: int = 0o644) -> int:
        """Create path as a new, empty regular file open for writing; its descriptor.

        Never replaces anything and never follows a link: FileExistsError when path exists
        (a dangling link included). The caller owns the descriptor and closes it with
        os.close. The name is durable after sync_dir(parent), the bytes after sync(fd).
        """
        return self._create(_path(path), _mode(mode))

    def mkdir(self, path: str | os.PathLike, *, mode: int = 0o755) -> None:
        """Create the directory path (its parent must exist); FileExistsError when taken."""
        self._mkdir(_path(path), _mode(mode))

    def rename(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        """Atomically give src the name dst, replacing a file or an empty directory there.

        At every instant dst names the old or the new object. Durable after sync_dir of both
        parents. Raises what rename(2) raises (ENOENT, ENOTEMPTY, EXDEV, ...).
        """
        self._rename(_path(src), _path(dst))

    def exchange(self, a: str | os.PathLike, b: str | os.PathLike) -> None:
        """Atomically swap the objects named a and b (both must exist).

        Raises ExchangeUnsupportedError (errno EOPNOTSUPP) where the OS or the file system
        cannot; callers then fall back to two renames. Durable after sync_dir of both parents.
        """
        self._exchange(_path(a), _path(b))

    def link(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        """Make dst a hard link to the file src; FileExistsError when dst exists (never
        replaces, unlike rename). Durable after sync_dir(parent of dst)."""
        self._link(_path(src), _path(dst))

    def remove(self, path: str | os.PathLike) -> None:
        """Remove the name path: a file or a link (never what it points to)."""
        self._remove(_path(path))

    def remove_tree(self, path: str | os.PathLike) -> None:
        """Remove the directory path and everything under it, never following links; a file
        or link at path is simply removed. FileNotFoundError when path is absent."""
        self._remove_tree(_path(path))

    def sync(self, fd: int) -> None:
        """Make the bytes and size of the open file fd durable (fsync). REQUIRES: fd open."""
        if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
            raise ValueError(f"fd must be an open descriptor, got {fd!r}")
        self._sync(fd)

    def sync_dir(self, path: str | os.PathLike) -> None:
        """Make the names in directory path durable: creations, renames, links into it."""
        self._sync_dir(_path(path))

    def lock(self, path: str | os.PathLike, *, wait: bool = True) -> int:
        """Hold an exclusive flock on the file path (created if missing, never through a link).

        Returns the descriptor that holds it: the caller owns it and closing it releases the
        lock. wait=False raises BlockingIOError at once when another descriptor holds it.
        Two descriptors exclude each other even within one process.
        """
        return self._lock(_path(path), bool(wait))

    # -- primitives (a backend implements these; arguments are already checked) ---------

    @abstractmethod
    def _create(self, path: str, mode: int) -> int: ...

    @abstractmethod
    def _mkdir(self, path: str, mode: int) -> None: ...

    @abstractmethod
    def _rename(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def _exchange(self, a: str, b: str) -> None: ...

    @abstractmethod
    def _link(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def _remove(self, path: str) -> None: ...

    @abstractmethod
    def _remove_tree(self, path: str) -> None: ...

    @abstractmethod
    def _sync(self, fd: int) -> None: ...

    @abstractmethod
    def _sync_dir(self, path: str) -> None: ...

    @abstractmethod
    def _lock(self, path: str, wait: bool) -> int: ...


class LocalNamespace(Namespace):
    """The local file system through os calls. Stateless, so one instance serves everyone."""

    def _create(self, path: str, mode: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(path, flags, mode)

    def _mkdir(self, path: str, mode: int) -> None:
        os.mkdir(path, mode)

    def _rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def _exchange(self, a: str, b: str) -> None:
        fn = _renameat2()
        if fn is None:
            raise ExchangeUnsupportedError(errno.EOPNOTSUPP, "this C library has no renameat2",
                                           a)
        if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system
            raise ExchangeUnsupportedError(errno.EOPNOTSUPP, f"RENAME_EXCHANGE is not "
                                           f"supported here ({os.strerror(code)})", a, None, b)
        raise OSError(code, os.strerror(code), a, None, b)

    def _link(self, src: str, dst: str) -> None:
        os.link(src, dst, follow_symlinks=False)

    def _remove(self, path: str) -> None:
        os.unlink(path)

    def _remove_tree(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _sync(self, fd: int) -> None:
        os.fsync(fd)

    def _sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _lock(self, path: str, wait: bool) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BaseException:
            os.close(fd)
            raise
        return fd


class NamespaceWrapper(Namespace):
    """Forwards every primitive to `inner` (leveldb's EnvWrapper); wrappers override some."""

    def __init__(self, inner: Namespace):
        if not isinstance(inner, Namespace):
            raise TypeError(f"inner must be a Namespace, got {type(inner).__name__}")
        self.inner = inner

    def _create(self, path: str, mode: int) -> int:
        return self.inner.create(path, mode=mode)

    def _mkdir(self, path: str, mode: int) -> None:
        self.inner.mkdir(path, mode=mode)

    def _rename(self, src: str, dst: str) -> None:
        self.inner.rename(src, dst)

    def _exchange(self, a: str, b: str) -> None:
        self.inner.exchange(a, b)

    def _link(self, src: str, dst: str) -> None:
        self.inner.link(src, dst)

    def _remove(self, path: str) -> None:
        self.inner.remove(path)

    def _remove_tree(self, path: str) -> None:
        self.inner.remove_tree(path)

    def _sync(self, fd: int) -> None:
        self.inner.sync(fd)

    def _sync_dir(self, path: str) -> None:
        self.inner.sync_dir(path)

    def _lock(self, path: str, wait: bool) -> int:
        return self.inner.lock(path, wait=wait)


_LOCAL = LocalNamespace()


def local(ns: Namespace | None = None) -> Namespace:
    """ns itself, or the local file system when None: what every `ns=None` parameter means."""
    if ns is None:
        return _LOCAL
    if not isinstance(ns, Namespace):
        raise TypeError(f"ns must be a bas.namespace.Namespace, got {type(ns).__name__}")
    return ns


def temp_name(path: str | os.PathLike) -> str:
    """A fresh hidden sibling name for building what will be published as path."""
    head, tail = os.path.split(_path(path))
    return os.path.join(head, f".{tail}.{secrets.token_hex(4)}.tmp")


def publish(tmp: str | os.PathLike, path: str | os.PathLike, *,
            ns: Namespace | None = None) -> None:
    """Rename the finished (and synced) tmp over path, then sync the parent: durable on return.

    REQUIRES: tmp's content is synced and tmp is in the same file system as path.
    """
    ns = local(ns)
    tmp, path = _path(tmp), _path(path)
    ns.rename(tmp, path)
    ns.sync_dir(os.path.dirname(path))
    if os.path.dirname(tmp) != os.path.dirname(path):
        ns.sync_dir(os.path.dirname(tmp))


def replace_file(path: str | os.PathLike, fill: Callable[[int], None], *,
                 ns: Namespace | None = None, mode: int = 0o644, tmp: str | None = None) -> None:
    """Make path a regular file whose content fill(fd) writes: all of it, or nothing new.

    fill writes through the descriptor it is given (and must not close it). The file is
    created under tmp (a fresh temp_name by default; a fixed tmp is removed first, whatever
    it is), synced, closed and published over path. On any error the temporary is removed
    and the error raised; path is untouched.
    """
    ns = local(ns)
    path = _path(path)
    if tmp is None:
        tmp = temp_name(path)
    else:
        tmp = _path(tmp)
        try:
            ns.remove(tmp)  # a crashed writer's leftover, or a planted link: never followed
        except FileNotFoundError:
            pass
    fd = ns.create(tmp, mode=mode)
    try:
        try:
            fill(fd)
            ns.sync(fd)
        finally:
            os.close(fd)
        publish(tmp, path, ns=ns)
    except BaseException:
        try:
            ns.remove(tmp)
        except OSError:
            pass  # gone already (published), or the file system refuses: the error says why
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2():
    """libc's renameat2, or None where the C library lacks it (glibc < 2.28, musl, macOS)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _path(path) -> str:
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"path must be a str or os.PathLike of str, got {type(text).__name__}")
    if not text:
        raise ValueError("path must not be empty")
    return os.path.abspath(text)


def _mode(mode: int) -> int:
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be permission bits (0 to 0o7777), got {mode!r}")
    return mode
