"""A disk tier: checkpoints in our format under one directory (local SSD, PMem on DAX), LRU.

    root/
    ├── store.json            names, sizes and last use (written atomically on every change)
    ├── llama-1b/             one checkpoint directory per name ("org/model" -> "org--model")
    └── org--model/

Loads read through bas file:// devices (O_DIRECT where the file system has it). The capacity
counts every byte of every checkpoint (index file + partitions) plus the bytes reserved by
copies in flight. Last use is a logical clock recorded in store.json, so the LRU order
survives restarts without trusting wall clocks or atime. On open, the directory is reconciled
with store.json: leftovers of crashed copies are removed (ckpt/atomic.py), checkpoints that
store.json lacks are adopted as least recently used, entries whose directory is gone are
forgotten. One Store process per root at a time; thread-safe within it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ckpt import atomic
from ckpt.errors import CheckpointIOError, NotACheckpointError
from ckpt.format import INDEX_FILE, Index
from ckpt.source import Source, index_ok, open_source, read_index
from ckpt.unpack import Unpacker

__all__ = ["STATE_FILE", "DiskTier", "DownloadSink", "check_name", "disk_bytes"]

STATE_FILE = "store.json"
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
_NAME = re.compile(rf"{_PART}(/{_PART})?\Z")


def check_name(name: str) -> str:
    """A model name: one or two path-safe parts ("llama-1b", "org/model"); ValueError if not."""
    if (not isinstance(name, str) or not _NAME.match(name) or "--" in name
            or ".tmp-" in name or ".old-" in name or ".del-" in name
            or name.endswith(".json")):
        raise ValueError(f"bad model name {name!r}: use letters, digits, '.', '_', '-' "
                         f"(no '--'), with at most one '/'")
    return name


class DiskTier:
    """Checkpoint directories under root, at most `capacity` bytes, least recently used out.

    profile: a bas.profile.Profile measured on this disk (thread counts and estimates);
    preset: the bas preset estimates use when there is no profile ("nvme", "optane-1dimm").
    direct: read with O_DIRECT where possible.
    """

    kind = "disk"

    def __init__(self, root: str | os.PathLike, capacity: int, *, name: str = "local",
                 profile=None, preset: str = "nvme", direct: bool = True):
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity}")
        self.root = os.path.abspath(os.fspath(root))
        self.name = name
        self.capacity = capacity
        self.profile = profile
        self.preset = preset
        self.direct = direct
        self._lock = threading.RLock()
        self._entries: dict[str, dict] = {}  # name -> {"bytes": n, "last_use": clock}
        self._clock = 0
        self._reserved = 0
        self._reading: dict[str, int] = {}
        self._estimator = None
        os.makedirs(self.root, exist_ok=True)
        self._reconcile()

    # -- queries -------------------------------------------------------------------------

    @property
    def used(self) -> int:
        """Bytes of stored checkpoints plus bytes reserved by copies in flight."""
        with self._lock:
            return sum(e["bytes"] for e in self._entries.values()) + self._reserved

    def names(self) -> list[str]:
        """Stored names, least recently used first."""
        with self._lock:
            return sorted(self._entries, key=lambda n: self._entries[n]["last_use"])

    def holds(self, name: str) -> bool:
        with self._lock:
            return name in self._entries and os.path.isdir(self.path(name))

    def path(self, name: str) -> str:
        return os.path.join(self.root, check_name(name).replace("/", "--"))

    def index(self, name: str) -> Index:
        return read_index(self.path(name))

    def estimate(self, nbytes: int, ntensors: int, device: str = "cpu") -> float:
        """Seconds to read nbytes sequentially at the profile's (or preset's) best threads."""
        prof = self.profile or self._preset_profile()
        threads = prof.best_threads("read")
        return prof.latency + prof.seconds("read", nbytes, "sequential", threads)

    # -- loading -------------------------------------------------------------------------

    @contextmanager
    def open(self, name: str) -> Iterator[Source]:
        """Open name for loading (a context) and mark it used now.

        While open it is never evicted. NotACheckpointError when it is not (or no longer) here.
        """
        with self._lock:
            if name not in self._entries:
                raise NotACheckpointError(errno.ENOENT, f"{self.path(name)}: not in the "
                                          f"{self.name} tier", self.path(name))
            self._reading[name] = self._reading.get(name, 0) + 1
        try:
            with open_source(self.path(name), direct=self.direct) as source:
                self.touch(name)
                yield source
        finally:
            with self._lock:
                self._reading[name] -= 1
                if not self._reading[name]:
                    del self._reading[name]

    def touch(self, name: str) -> None:
        """Record a use of name (the LRU order), durably."""
        with self._lock:
            if name in self._entries:
                self._clock += 1
                self._entries[name]["last_use"] = self._clock
                self._save()

    # -- storing -------------------------------------------------------------------------

    def reserve(self, nbytes: int, droppable: Callable[[str], bool]) -> bool:
        """Make room for nbytes by evicting least recently used checkpoints; whether it fits.

        Only checkpoints for which droppable(name) is true (another tier holds them) and that
        are not being read are evicted. On success the bytes stay reserved until `added` or
        `unreserve`.
        """
        with self._lock:
            if nbytes > self.capacity:
                return False
            for name in self.names():
                if self.used + nbytes <= self.capacity:
                    break
                if not self._reading.get(name) and droppable(name):
                    self.remove(name)
            if self.used + nbytes > self.capacity:
                return False
            self._reserved += nbytes
            return True

    def unreserve(self, nbytes: int) -> None:
        with self._lock:
            self._reserved -= nbytes

    def writer(self, name: str) -> Unpacker:
        """An Unpacker that writes name here (call `added` after its commit)."""
        return Unpacker(self.path(name))

    def sink(self, name: str, droppable: Callable[[str], bool]) -> DownloadSink:
        """A sink for ckpt.loader.read_packed that copies a download here, room permitting."""
        return DownloadSink(self, name, droppable)

    def added(self, name: str, nbytes: int, reserved: int = 0) -> None:
        """Record that name (nbytes on disk) was committed here, as used now."""
        with self._lock:
            self._reserved -= reserved
            self._clock += 1
            self._entries[name] = {"bytes": nbytes, "last_use": self._clock}
            self._save()

    def remove(self, name: str) -> None:
        """Delete name's checkpoint (readers with open files finish unharmed).

        The directory is renamed aside under the lock and deleted after it: a copy of the same
        name that a concurrent writer publishes later is never the one deleted. The aside
        name `NAME.del-TOKEN` is one that atomic.resolve/recover ignore (an `.old-` name would
        be taken for a torn swap and renamed back); `_reconcile` deletes crashed leftovers.
        """
        with self._lock:
            self._entries.pop(name, None)
            self._save()
            path = self.path(name)
            doomed = f"{path}.del-{secrets.token_hex(4)}"
            try:
                os.rename(path, doomed)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise CheckpointIOError(exc.errno, f"removing {path} failed: {exc}") from exc
        shutil.rmtree(doomed, ignore_errors=True)

    # -- internals -----------------------------------------------------------------------

    def _preset_profile(self):
        if self._estimator is None:
            from bas.profile import Profile

            self._estimator = Profile.from_preset(self.preset)
        return self._estimator

    def _reconcile(self) -> None:
        state = self._load_state()
        self._clock = int(state.get("clock", 0))
        for base in sorted(os.listdir(self.root)):
            if ".del-" in base:  # a removal that crashed before its delete finished
                shutil.rmtree(os.path.join(self.root, base), ignore_errors=True)
                continue
            for marker in (".tmp-", ".old-"):
                if marker in base:  # a copy or swap that crashed: finish or undo it
                    atomic.recover(os.path.join(self.root, base.split(marker)[0]), index_ok)
        known = state.get("entries", {})
        for base in sorted(os.listdir(self.root)):
            full = os.path.join(self.root, base)
            name = base.replace("--", "/")
            if not os.path.isdir(full) or not _valid_name(name) or not index_ok(full):
                continue
            entry = known.get(name)
            if not isinstance(entry, dict) or not isinstance(entry.get("last_use"), int):
                entry = {"last_use": 0}  # adopted: least recently used
            self._entries[name] = {"bytes": disk_bytes(full), "last_use": entry["last_use"]}
        self._save()

    def _load_state(self) -> dict:
        try:
            with open(os.path.join(self.root, STATE_FILE)) as f:
                state = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable: rebuilt from the directories
        return state if isinstance(state, dict) else {}

    def _save(self) -> None:
        path = os.path.join(self.root, STATE_FILE)
        tmp = f"{path}.tmp"
        data = json.dumps({"version": 1, "clock": self._clock, "entries": self._entries},
                          sort_keys=True).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            atomic.fsync_dir(self.root)
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"writing {path} failed: {exc}") from exc


class DownloadSink:
    """read_packed's sink: a download's copy into a disk tier, made only if it has room.

    A local-disk error (ENOSPC, EIO, ...) while copying drops the copy and is kept in `error`;
    the load goes on from the stream: a failed promotion costs speed later, not this load.
    """

    def __init__(self, disk: DiskTier, key: str, droppable):
        self.disk, self.key, self.droppable = disk, key, droppable
        self.active = False
        self.reserved = 0
        self.unpacker = None
        self.error: BaseException | None = None

    def begin(self, index_bytes: bytes, index) -> None:
        nbytes = len(index_bytes) + index.total_bytes
        if self.disk.reserve(nbytes, self.droppable):
            self.reserved = nbytes
            self.active = True
            try:
                self.unpacker = self.disk.writer(self.key)
                self.unpacker.begin(index_bytes, index)
            except (CheckpointIOError, OSError) as exc:
                self._drop(exc)

    def chunk(self, partition: int, offset: int, view) -> None:
        if self.active:
            try:
                self.unpacker.chunk(partition, offset, view)
            except (CheckpointIOError, OSError) as exc:
                self._drop(exc)

    def commit(self) -> str | None:
        """Publish the copy; the tier's name, or None when there is none (dropped, no room)."""
        if not self.active:
            return None
        try:
            self.unpacker.commit()
        except (CheckpointIOError, OSError) as exc:
            self._drop(exc)
            return None
        self.active = False
        self.disk.added(self.key, self.reserved, reserved=self.reserved)
        self.reserved = 0
        return self.disk.name

    def abort(self) -> None:
        if self.unpacker is not None:
            self.unpacker.abort()
        if self.reserved:
            self.disk.unreserve(self.reserved)
            self.reserved = 0
        self.active = False

    def _drop(self, exc: BaseException) -> None:
        self.error = exc
        self.abort()


def disk_bytes(directory: str) -> int:
    """Bytes a checkpoint directory occupies: its index file and its partitions."""
    index = read_index(directory)
    return index.total_bytes + os.path.getsize(os.path.join(directory, INDEX_FILE))


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
    except ValueError:
        return False
    return True
