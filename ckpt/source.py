"""Where a checkpoint's bytes come from: its index plus one (Device, base offset) per partition.

`open_source(path)` opens a checkpoint directory: the index is read with a bounded read and
validated, every partition must be a regular file of exactly the size the index gives, and
each is opened as a bas file:// device with O_DIRECT that first takes what the page cache
holds (buffered where the file system has no O_DIRECT). `Source(index, parts)` wraps
devices that are already open (a DRAM tier, one big file holding every partition back to
back): the loader does not care which.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bas import Device, DeviceError, InvalidURLError, UnsupportedError, open_device
from ckpt import atomic
from ckpt.errors import (
    CheckpointError,
    CheckpointIOError,
    IndexTooLargeError,
    MissingPartitionError,
    NotACheckpointError,
    PartitionSizeError,
)
from ckpt.format import (
    BLOCK,
    HEADER_SIZE,
    INDEX_FILE,
    MAX_INDEX_BYTES,
    Index,
    align_up,
    decode_header,
)

T = TypeVar("T")

__all__ = ["Source", "at_directory", "index_ok", "open_source", "packed_source", "read_index",
           "resolve_dir"]


@dataclass
class Source:
    """A validated index and, for partition i, the device and offset that hold its bytes."""

    index: Index
    parts: list[tuple[Device, int]]
    name: str = "checkpoint"
    direct: bool = False  # every partition is read with O_DIRECT (cached chunks may not be)
    owned: list[Device] = field(default_factory=list)  # closed by close()

    def __post_init__(self):
        if len(self.parts) != len(self.index.partitions):
            raise ValueError(f"{self.name}: {len(self.parts)} devices for "
                             f"{len(self.index.partitions)} partitions")
        for (dev, base), p in zip(self.parts, self.index.partitions, strict=True):
            if base < 0 or base + p.size > dev.size:
                raise PartitionSizeError(f"{self.name}: partition {p.file} needs {p.size} bytes "
                                         f"at {base} of {dev.url} ({dev.size} bytes)")

    def close(self) -> None:
        while self.owned:
            dev = self.owned.pop()
            if not dev.closed:
                dev.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_dir(path: str | os.PathLike) -> str:
    """The directory holding the checkpoint named path (see atomic.resolve for torn saves)."""
    path = os.path.abspath(os.fspath(path))
    found = atomic.resolve(path, index_ok)
    if found is None or not os.path.isdir(found):
        raise NotACheckpointError(errno.ENOENT, f"{path}: no checkpoint directory here", path)
    return found


def read_index(directory: str, *, dir_fd: int | None = None) -> Index:
    """Read and validate the index file of a checkpoint directory (bounded: MAX_INDEX_BYTES).

    dir_fd: an open descriptor of that directory; the index is opened relative to it.
    """
    path = os.path.join(directory, INDEX_FILE)
    try:
        fd = os.open(INDEX_FILE if dir_fd is not None else path,
                     os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        raise NotACheckpointError(errno.ENOENT, f"{directory}: no {INDEX_FILE} (not a "
                                  f"checkpoint)", path) from None
    except OSError as exc:
        raise CheckpointIOError(exc.errno, f"opening {path} failed: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotACheckpointError(errno.EINVAL, f"{path} is not a regular file", path)
        head = _read_exact(fd, min(HEADER_SIZE, info.st_size), path)
        _, length, _ = decode_header(head, path)
        if info.st_size != HEADER_SIZE + length:
            raise IndexTooLargeError(f"{path}: header declares an index of {length} bytes, the "
                                     f"file holds {info.st_size - HEADER_SIZE} after the header")
        body = _read_exact(fd, min(length, MAX_INDEX_BYTES), path)
    finally:
        os.close(fd)
    return Index.decode(head + body, path)


def open_source(path: str | os.PathLike, *, direct: bool | None = None) -> Source:
    """Open a checkpoint directory for loading; close() (or `with`) releases the devices.

    direct: None (default) reads each chunk from the page cache when it is there and with
    O_DIRECT otherwise (the right path whether the checkpoint is cold, warm or partly
    cached, decided per chunk at read time); True always O_DIRECT; False always through
    the page cache. Without O_DIRECT (tmpfs) every mode reads through the page cache.

    One version of the checkpoint, opened through its directory's descriptor (at_directory).
    """
    return at_directory(path, lambda directory, dir_fd: _open_at(directory, dir_fd, direct))


def at_directory(path: str | os.PathLike, opener: Callable[[str, int], T]) -> T:
    """opener(directory, dir_fd) on the checkpoint directory named path, opened once.

    Everything opener opens is relative to dir_fd (closed when it returns), so a save that
    replaces the checkpoint meanwhile cannot mix its files with the old ones. When that save
    moved or deleted the directory before every file was open (or resolve named a `tmp` that
    was renamed just after), it is tried once more.
    """
    for attempt in (1, 2):
        try:
            directory = resolve_dir(path)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (NotACheckpointError, FileNotFoundError) as exc:
            if attempt == 1:
                continue  # resolve named a directory a save renamed just after: again
            if isinstance(exc, NotACheckpointError):
                raise
            raise NotACheckpointError(errno.ENOENT, f"{directory}: no checkpoint directory "
                                      f"here", directory) from None
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"opening {directory} failed: "
                                    f"{exc.strerror}") from exc
        try:
            return opener(directory, dir_fd)
        except (NotACheckpointError, MissingPartitionError, CheckpointIOError):
            if attempt == 2 or not _moved(directory, dir_fd):
                raise
        finally:
            os.close(dir_fd)  # what opener opened no longer needs it
    raise AssertionError("unreachable")


def _open_at(directory: str, dir_fd: int, direct: bool | None) -> Source:
    index = read_index(directory, dir_fd=dir_fd)
    owned: list[Device] = []
    try:
        parts, all_direct = [], direct is not False
        for p in index.partitions:
            full = os.path.join(directory, p.file)
            dev, is_direct = _open_partition(full, direct, _fd_path(dir_fd, p.file, full))
            owned.append(dev)
            _check_partition_size(dev, full, p.size)
            parts.append((dev, 0))
            all_direct = all_direct and is_direct
        return Source(index, parts, directory, direct=all_direct, owned=owned)
    except BaseException:
        for dev in owned:
            dev.close()
        raise


def _fd_path(dir_fd: int, name: str, full: str) -> str:
    """A path to name inside the directory open as dir_fd, for APIs that take a path."""
    at = f"/proc/self/fd/{dir_fd}"
    return f"{at}/{name}" if os.path.isdir(at) else full  # no /proc: by path, as before


def _moved(directory: str, dir_fd: int) -> bool:
    """Whether directory no longer names the directory open as dir_fd (a save replaced it)."""
    try:
        now = os.stat(directory)
    except OSError:
        return True
    held = os.fstat(dir_fd)
    return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


def packed_source(device: Device, offset: int = 0, name: str | None = None) -> Source:
    """A Source over the packed form (see ckpt.pack) stored at offset of an open device.

    For tiers that keep a whole checkpoint in one device (dram://, one file, a PMem pool):
    the index is read and validated from the device, the partitions follow it.
    """
    name = name or f"{device.url}@{offset}"
    try:
        head = device.read(offset, min(HEADER_SIZE, max(device.size - offset, 0)))
        _, length, _ = decode_header(head, name)
        if offset + HEADER_SIZE + length > device.size:
            raise IndexTooLargeError(f"{name}: the index reaches past the device's end")
        index = Index.decode(head + device.read(offset + HEADER_SIZE, length), name)
    except DeviceError as exc:
        raise CheckpointIOError(getattr(exc, "errno", 0) or 0, f"{name}: {exc}") from exc
    start = offset + align_up(HEADER_SIZE + length, BLOCK)
    parts = [(device, start + base) for base in index.partition_bases()]
    return Source(index, parts, name, direct=device.direct_io)


def _check_partition_size(dev: Device, full: str, size: int) -> None:
    """The opened file itself (not what the path named a moment before) has the index's size."""
    if dev.size != size:
        kind = "truncated" if dev.size < size else "extended"
        raise PartitionSizeError(f"{full}: partition {kind}: {dev.size} bytes, the index "
                                 f"says {size}")


def _open_partition(full: str, direct: bool | None, at: str) -> tuple[Device, bool]:
    """Open the partition named full (in messages) through the path at.

    Never through a link and never blocking (a FIFO or a link to /dev/zero swapped in after
    the index was read is refused); the device reads through the descriptor it checked.
    """
    try:
        if direct is not False:
            try:
                return open_device(at, direct=True, read_only=True, nofollow=True,
                                   cache_first=direct is None), True
            except UnsupportedError:
                pass  # tmpfs and friends: buffered reads still work
        return open_device(at, read_only=True, nofollow=True), False
    except FileNotFoundError:
        raise MissingPartitionError(f"{full}: partition file is missing") from None
    except InvalidURLError as exc:  # a link, FIFO, socket or device: what nofollow refuses
        raise MissingPartitionError(f"{full}: partition is not a regular file ({exc})") from None
    except (DeviceError, OSError) as exc:
        raise CheckpointIOError(getattr(exc, "errno", None) or 0,
                                f"opening partition {full} failed: {exc}") from exc


def _read_exact(fd: int, n: int, path: str) -> bytes:
    chunks, got = [], 0
    while got < n:
        try:
            data = os.read(fd, n - got)
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"reading {path} failed: {exc.strerror}") from exc
        if not data:
            raise IndexTooLargeError(f"{path}: file ends after {got} of {n} bytes")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def index_ok(directory: str) -> bool:
    """Whether directory holds a readable, valid index (how a save marks itself complete)."""
    try:
        read_index(directory)
    except CheckpointError:
        return False
    return True
