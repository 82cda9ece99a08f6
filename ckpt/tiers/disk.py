"""A disk tier: checkpoints in our format under one directory (local SSD, PMem on DAX), LRU.

    root/
    ├── store.json            names, sizes and last use (written atomically on every change)
    ├── llama-1b/             one checkpoint directory per name ("org/model" -> "org--model")
    └── org--model/

Names: `check_name` is the one validator of model names; every tier and every Store verb goes
through it, so no name can reach a file the tier keeps for itself (store.json and its
temporary, the `.tmp-`/`.old-`/`.del-` copies of ckpt/atomic.py and of `remove`), climb out
of root, or fail to map back from its directory on reopen.

Loads read through bas file:// devices (O_DIRECT where the file system has it). The capacity
counts every checkpoint at `checkpoint_bytes` (its index file and its partitions, each file
rounded up to BLOCK: the bytes the file system allocates), plus the bytes reserved by copies
in flight. Last use is a logical clock recorded in store.json, so the LRU order survives
restarts without trusting wall clocks or atime. On open, the directory is reconciled with
store.json: leftovers of crashed copies are removed (ckpt/atomic.py), checkpoints that
store.json lacks are adopted as least recently used, entries whose directory is gone are
forgotten. store.json is never read through a link or from a FIFO or device (ckpt/safeopen.py):
one that is absent, not a regular file, over MAX_STATE_BYTES or not valid JSON is ignored (the
tier is rebuilt from its directories, only the LRU order is lost) and the next save replaces
it with a regular file. One Store process per root at a time; thread-safe within it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import string
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bas.namespace import Namespace, local, replace_file
from ckpt import atomic
from ckpt.errors import CheckpointError, CheckpointIOError, ModelNameError, NotACheckpointError
from ckpt.format import BLOCK, HEADER_SIZE, INDEX_FILE, MAX_INDEX_BYTES, Index, align_up
from ckpt.host import read_host
from ckpt.safeopen import read_regular
from ckpt.source import Source, index_ok, open_source, read_index
from ckpt.tiers.tier import Droppable, Held, Sink, Tier, TierCapabilities, TierReader
from ckpt.unpack import Unpacker, copy_buffer, copy_dir

__all__ = ["MAX_NAME_BYTES", "MAX_STATE_BYTES", "STATE_FILE", "DirectoryReader", "DiskTier",
           "DownloadSink", "check_name", "checkpoint_bytes", "disk_bytes", "index_file"]

STATE_FILE = "store.json"
_STATE_TMP = f".{STATE_FILE}.tmp"  # starts with '.', which no model name can
MAX_STATE_BYTES = 64 << 20  # ~200k entries; a larger store.json is taken for garbage
#: a name is one or two parts; its directory ("a--b") plus the longest suffix the tier adds
#: (".tmp-" and 8 hex digits) stays far below the 255 bytes a file name may have
MAX_PART_BYTES = 100
MAX_NAME_BYTES = 2 * MAX_PART_BYTES + 1
_CHARS = frozenset(string.ascii_letters + string.digits + "._-/")
#: markers of the tier's own directories: copies being written or swapped (ckpt/atomic.py)
#: and removals under way; matched without case for case-insensitive file systems
_MARKERS = (".tmp-", ".old-", ".del-")
_RESERVED = "store."  # the tier's own files: store.json, and any later lock or backup of it


def check_name(name: str, *, reserved: tuple[str, ...] = ()) -> str:
    """name if it is a model name every tier can store; ModelNameError saying why if not.

    A name is one or two parts joined by '/' ("llama-1b", "org/model"); each part has 1 to
    MAX_PART_BYTES ASCII letters, digits, '.', '_' or '-' and starts with a letter or a
    digit (so no '', '.', '..', hidden or option-like names, no control character, no NUL).
    Refused as well: '--' (the directory spelling of '/'), the tier's markers `.tmp-`,
    `.old-`, `.del-`, names whose directory starts with `store.` (the state file and its
    kin), names whose directory would not map back to them, and names starting with one of
    the caller's `reserved` prefixes.
    """
    problem = _problem(name, reserved)
    if problem is not None:
        shown = repr(name) if len(repr(name)) <= 120 else f"{repr(name)[:100]}..."
        raise ModelNameError(f"bad model name {shown}: {problem}")
    return name


def _problem(name, reserved: tuple[str, ...]) -> str | None:
    if not isinstance(name, str):
        return f"a name is a str, not a {type(name).__name__}"
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_BYTES:  # ASCII only (checked next): characters are bytes
        return f"{len(name)} characters, more than {MAX_NAME_BYTES}"
    bad = next((c for c in name if c not in _CHARS), None)
    if bad is not None:
        return (f"character {bad!r} is not allowed (ASCII letters, digits, '.', '_', '-' and "
                f"one '/')")
    parts = name.split("/")
    if len(parts) > 2:
        return "more than one '/'"
    for part in parts:
        if not part:
            return "an empty part"
        if not part[0].isalnum():
            return f"part {part!r} does not start with a letter or digit"
        if len(part) > MAX_PART_BYTES:
            return f"part of {len(part)} characters, more than {MAX_PART_BYTES}"
    if "--" in name:
        return "'--' is how the disk tier spells '/' in directory names"
    lowered = name.lower()
    for marker in _MARKERS:
        if marker in lowered:
            return f"{marker!r} marks the disk tier's temporary and set-aside copies"
    directory = _directory(name)
    if directory.lower().startswith(_RESERVED):
        return f"names starting with {_RESERVED!r} are the disk tier's own files"
    if _name_of(directory) != name:
        return f"its directory {directory!r} would read back as {_name_of(directory)!r}"
    for prefix in reserved:
        if name.startswith(prefix):
            return f"names starting with {prefix!r} are reserved"
    return None


def _directory(name: str) -> str:
    return name.replace("/", "--")


def _name_of(directory: str) -> str:
    return directory.replace("--", "/")


def _valid_name(name: str) -> bool:
    return _problem(name, ()) is None


class DiskTier(Tier):
    """Checkpoint directories under root, at most `capacity` bytes, least recently used out.

    profile: a bas.braid.profile.Profile measured on this disk (thread counts and estimates);
    preset: the bas preset estimates use when there is no profile ("nvme", "optane-1dimm").
    direct: read with O_DIRECT where possible. ns: the bas.namespace.Namespace that copies,
    evictions and store.json go through (the local file system). Every method taking a name
    raises ModelNameError (a ValueError) for one check_name refuses.
    """

    def __init__(self, root: str | os.PathLike, capacity: int, *, name: str = "local",
                 profile=None, preset: str = "nvme", direct: bool = True,
                 ns: Namespace | None = None):
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity}")
        self.root = os.path.abspath(os.fspath(root))
        self.name = name
        # a put may make the only copy: evicted only where a slower tier holds it
        self.capabilities = TierCapabilities(persistent=True, evictable=True,
                                             holds_only_copy=True)
        self.capacity = capacity
        self.profile = profile
        self.preset = preset
        self.direct = direct
        self._ns = local(ns)
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
        """Bytes charged for stored checkpoints plus bytes reserved by copies in flight."""
        with self._lock:
            return sum(e["bytes"] for e in self._entries.values()) + self._reserved

    def names(self) -> list[str]:
        """Stored names, least recently used first."""
        with self._lock:
            return sorted(self._entries, key=lambda n: self._entries[n]["last_use"])

    def holds(self, name: str) -> bool:
        path = self.path(name)
        with self._lock:
            return name in self._entries and os.path.isdir(path)

    def path(self, name: str) -> str:
        return os.path.join(self.root, _directory(check_name(name)))

    def index(self, name: str) -> Index:
        return read_index(self.path(name))

    def estimate(self, nbytes: int, ntensors: int, device: str = "cpu") -> float:
        """Seconds to read nbytes sequentially at the profile's (or preset's) best threads."""
        prof = self.profile or self._preset_profile()
        threads = prof.best_threads("read")
        return prof.latency + prof.seconds("read", nbytes, "sequential", threads)

    # -- loading -------------------------------------------------------------------------

    @contextmanager
    def open(self, name: str) -> Iterator[DirectoryReader]:
        """Open name for loading (a context) and mark it used now.

        While open it is never evicted. NotACheckpointError when it is not (or no longer) here.
        """
        path = self.path(name)
        with self._lock:
            if name not in self._entries:
                raise NotACheckpointError(errno.ENOENT, f"{path}: not in the {self.name} tier",
                                          path)
            self._reading[name] = self._reading.get(name, 0) + 1
        try:
            with open_source(path, direct=self.direct) as source:
                self._touch(name)
                yield DirectoryReader(source, self.profile)
        finally:
            with self._lock:
                self._reading[name] -= 1
                if not self._reading[name]:
                    del self._reading[name]

    def _touch(self, name: str) -> None:
        """Record a use of name (the LRU order), durably."""
        check_name(name)
        with self._lock:
            if name in self._entries:
                self._clock += 1
                self._entries[name]["last_use"] = self._clock
                self._save()

    # -- storing -------------------------------------------------------------------------

    def keep(self, name: str, held: Held, *, droppable: Droppable) -> object:
        """Write a copy of held here (a promotion) when there is room; held.buf, or None."""
        nbytes = checkpoint_bytes(len(held.index_bytes), held.index)  # exactly what is written
        if not self._reserve(nbytes, droppable):
            return None
        try:
            copy_buffer(held.index, held.index_bytes, held.buf, self.path(name), ns=self._ns)
        except CheckpointError:
            self._unreserve(nbytes)
            return None  # a failed promotion costs speed later, not this load
        self._added(name, nbytes, reserved=nbytes)
        return held.buf

    def sink(self, name: str, *, droppable: Droppable) -> DownloadSink:
        """A sink for ckpt.host.read_packed that copies a download here, room permitting."""
        return DownloadSink(self, check_name(name), droppable)

    def put(self, name: str, src: str | Callable[[str], None], *, nbytes: int = 0,
            droppable: Droppable | None = None) -> None:
        """Store a checkpoint directory (copied, checked) or what src(path) writes as name.

        nbytes are made room for first (droppable: what may be evicted for it; default
        nothing); what was written is charged, evicting more if it came out larger.
        CheckpointError when it does not fit; the previous copy of name stays intact.
        """
        path = self.path(name)
        droppable = droppable or (lambda _: False)
        if not self._reserve(nbytes, droppable):
            raise self._no_room(name, nbytes)
        try:
            if callable(src):
                src(path)
            else:
                copy_dir(src, path, ns=self._ns)
            got = disk_bytes(path)
            if got > nbytes:  # the plan fell short: charge what was written, or take it back
                if not self._reserve(got - nbytes, droppable):
                    self.remove(name)
                    raise self._no_room(name, got)
                nbytes = got
        except BaseException:
            self._unreserve(nbytes)
            raise
        self._added(name, got, reserved=nbytes)

    def adopt(self, name: str) -> int:
        """Take in a checkpoint written straight into `path(name)`; the bytes charged."""
        return self._added(name)

    def _no_room(self, name: str, nbytes: int) -> CheckpointError:
        return CheckpointError(f"{name}: {nbytes} bytes do not fit in tier {self.name} "
                               f"({self.used} of {self.capacity} used by checkpoints no slower "
                               f"tier holds)")

    def _reserve(self, nbytes: int, droppable: Callable[[str], bool]) -> bool:
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

    def _unreserve(self, nbytes: int) -> None:
        with self._lock:
            self._reserved -= nbytes

    def _added(self, name: str, nbytes: int | None = None, reserved: int = 0) -> int:
        """Record that name was committed here, as used now; the bytes it is charged.

        nbytes: its checkpoint_bytes when the caller knows them exactly (the bytes it wrote);
        by default they are measured (disk_bytes). `reserved` bytes are released.
        """
        path = self.path(name)
        if nbytes is None:
            nbytes = disk_bytes(path)
        with self._lock:
            self._reserved -= reserved
            self._clock += 1
            self._entries[name] = {"bytes": nbytes, "last_use": self._clock}
            self._save()
        return nbytes

    def remove(self, name: str, *, force: bool = False) -> bool:
        """Delete name's checkpoint (readers with open files finish unharmed); True.

        The directory is renamed aside under the lock and deleted after it: a copy of the same
        name that a concurrent writer publishes later is never the one deleted. The aside
        name `NAME.del-TOKEN` is one that atomic.resolve/recover ignore (an `.old-` name would
        be taken for a torn swap and renamed back); `_reconcile` deletes crashed leftovers.
        """
        path = self.path(name)
        with self._lock:
            self._entries.pop(name, None)
            self._save()
            doomed = f"{path}.del-{secrets.token_hex(4)}"
            try:
                self._ns.rename(path, doomed)
            except FileNotFoundError:
                return True
            except OSError as exc:
                raise CheckpointIOError(exc.errno, f"removing {path} failed: {exc}") from exc
        self._discard(doomed)
        return True

    # -- internals -----------------------------------------------------------------------

    def _preset_profile(self):
        if self._estimator is None:
            from bas.braid.profile import Profile

            self._estimator = Profile.from_preset(self.preset)
        return self._estimator

    def _reconcile(self) -> None:
        state = self._load_state()
        for base in sorted(os.listdir(self.root)):
            if ".del-" in base:  # a removal that crashed before its delete finished
                self._discard(os.path.join(self.root, base))
                continue
            for marker in (".tmp-", ".old-"):
                if marker in base:  # a copy or swap that crashed: finish or undo it
                    # under the save lock: a save in flight keeps its temporary directory
                    atomic.try_recover(os.path.join(self.root, base.split(marker)[0]),
                                       index_ok, self._ns)
        known = state.get("entries")
        known = known if isinstance(known, dict) else {}
        for base in sorted(os.listdir(self.root)):
            full = os.path.join(self.root, base)
            name = _name_of(base)
            if not _valid_name(name) or not _is_directory(full) or not index_ok(full):
                continue  # a link is never adopted: removing it would not free its bytes
            entry = known.get(name)
            last_use = entry.get("last_use") if isinstance(entry, dict) else None
            if not _count(last_use):
                last_use = 0  # adopted: least recently used
            self._entries[name] = {"bytes": disk_bytes(full), "last_use": last_use}
        clock = state.get("clock")
        self._clock = max([clock if _count(clock) else 0]
                          + [e["last_use"] for e in self._entries.values()])
        self._save()

    def _load_state(self) -> dict:
        """store.json's content; {} when absent or unusable (see the module doc)."""
        try:
            with self._root_fd() as fd:
                data = read_regular(STATE_FILE, MAX_STATE_BYTES, dir_fd=fd,
                                    what=os.path.join(self.root, STATE_FILE))
            state = json.loads(data)
        except (CheckpointError, OSError, ValueError, RecursionError):
            return {}  # rebuilt from the directories
        return state if isinstance(state, dict) else {}

    def _save(self) -> None:
        path = os.path.join(self.root, STATE_FILE)
        data = json.dumps({"version": 1, "clock": self._clock, "entries": self._entries},
                          sort_keys=True).encode()
        try:  # whatever is at the temporary name (a crashed save's file, a link) is replaced
            replace_file(path, lambda fd: _write_all(fd, data, path), ns=self._ns,
                         tmp=os.path.join(self.root, _STATE_TMP))
        except CheckpointError:
            raise
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"writing {path} failed: {exc}") from exc

    def _discard(self, path: str) -> None:
        """Delete a directory set aside for removal; best effort (_reconcile retries)."""
        try:
            self._ns.remove_tree(path)
        except OSError:
            pass

    @contextmanager
    def _root_fd(self) -> Iterator[int]:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"opening {self.root} failed: "
                                    f"{exc.strerror}") from exc
        try:
            yield fd
        finally:
            os.close(fd)


class DirectoryReader(TierReader):
    """A checkpoint directory being loaded: read_host of its Source (disk tiers, paths)."""

    def __init__(self, source: Source, profile=None):
        self.source = source
        self.profile = profile

    def read(self, *, pool=None, verify=None, stats=None, progress=None, sink=None) -> Held:
        buf = read_host(self.source, verify=verify, progress=progress, pool=pool, stats=stats,
                        profile=self.profile)
        return Held(self.source.index, index_file(self.source.name), buf, buf.nbytes)


class DownloadSink(Sink):
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
        nbytes = checkpoint_bytes(len(index_bytes), index)  # exactly what the copy writes
        if self.disk._reserve(nbytes, self.droppable):
            self.reserved = nbytes
            self.active = True
            try:
                self.unpacker = Unpacker(self.disk.path(self.key), ns=self.disk._ns)
                self.unpacker.begin(index_bytes, index)
            except (CheckpointIOError, OSError) as exc:
                self._drop(exc)

    def chunk(self, partition: int, offset: int, view) -> None:
        if self.active:
            try:
                self.unpacker.chunk(partition, offset, view)
            except (CheckpointIOError, OSError) as exc:
                self._drop(exc)

    def commit(self) -> bool:
        """Publish the copy; whether there is one (False: dropped, no room, never begun)."""
        if not self.active:
            return False
        try:
            self.unpacker.commit()
        except (CheckpointIOError, OSError) as exc:
            self._drop(exc)
            return False
        self.active = False
        self.disk._added(self.key, self.reserved, reserved=self.reserved)
        self.reserved = 0
        return True

    def abort(self) -> None:
        if self.unpacker is not None:
            self.unpacker.abort()
        if self.reserved:
            self.disk._unreserve(self.reserved)
            self.reserved = 0
        self.active = False

    def _drop(self, exc: BaseException) -> None:
        self.error = exc
        self.abort()


def index_file(directory: str) -> bytes:
    """The bytes of a checkpoint directory's index file (bounded, never through a link)."""
    return read_regular(os.path.join(directory, INDEX_FILE), HEADER_SIZE + MAX_INDEX_BYTES,
                        missing=NotACheckpointError)


def checkpoint_bytes(index_size: int, index: Index) -> int:
    """What a checkpoint occupies in a disk tier: its index file of index_size bytes and its
    partitions, each file rounded up to BLOCK (file systems allocate whole blocks)."""
    return align_up(index_size, BLOCK) + sum(align_up(p.size, BLOCK) for p in index.partitions)


def disk_bytes(directory: str) -> int:
    """checkpoint_bytes of the checkpoint directory, measured (its index file is not followed
    through a link)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotACheckpointError(errno.ENOENT, f"{directory}: no checkpoint directory here",
                                  directory) from None
    except OSError as exc:
        raise CheckpointIOError(exc.errno, f"opening {directory} failed: "
                                f"{exc.strerror}") from exc
    try:
        index = read_index(directory, dir_fd=dir_fd)
        size = os.stat(INDEX_FILE, dir_fd=dir_fd, follow_symlinks=False).st_size
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointIOError(exc.errno, f"reading {directory}/{INDEX_FILE} failed: "
                                f"{exc.strerror}") from exc
    finally:
        os.close(dir_fd)
    return checkpoint_bytes(size, index)


def _is_directory(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _count(value) -> bool:
    """Whether value is a usable clock reading of store.json (an int >= 0, not a bool)."""
    return type(value) is int and value >= 0


def _write_all(fd: int, data: bytes, what: str) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise CheckpointIOError(0, f"writing {what}: the OS wrote nothing")
        view = view[n:]
