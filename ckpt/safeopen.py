"""Opening files inside directories the library manages: never through a link, never blocking.

A checkpoint directory or a disk tier can be changed by someone else between a check and an
open: a partition swapped for a FIFO would block `open` forever, a symlink to `/dev/zero` would
feed endless bytes. So every such open is relative to the directory's descriptor (when given),
with O_NOFOLLOW | O_NONBLOCK, and the opened descriptor itself is checked with fstat: what is
read is exactly the regular file that was checked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from ckpt.errors import CheckpointIOError, MissingPartitionError

__all__ = ["open_regular", "read_regular"]

_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def open_regular(name: str, *, dir_fd: int | None = None, what: str | None = None,
                 flags: int = os.O_RDONLY, mode: int = 0o644,
                 missing: type[Exception] = MissingPartitionError) -> int:
    """A descriptor of the regular file `name` (relative to dir_fd when given); caller closes.

    Links, FIFOs, sockets and devices raise `missing` (its message names `what`), as does an
    absent file (FileNotFoundError is kept as the cause); other OS errors raise
    CheckpointIOError. The descriptor is back in blocking mode when returned.
    """
    what = what or name
    try:
        fd = os.open(name, flags | _FLAGS, mode, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise missing(f"{what}: no such file") from exc
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EMLINK):  # a link (or socket)
            raise missing(f"{what}: not a regular file (a link or special file)") from None
        raise CheckpointIOError(exc.errno, f"opening {what} failed: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise missing(f"{what}: not a regular file")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(name: str, limit: int, *, dir_fd: int | None = None, what: str | None = None,
                 missing: type[Exception] = MissingPartitionError) -> bytes:
    """The whole content of a regular file of at most `limit` bytes (see open_regular)."""
    what = what or name
    fd = open_regular(name, dir_fd=dir_fd, what=what, missing=missing)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise missing(f"{what}: {size} bytes, more than the {limit} allowed")
        chunks, got = [], 0
        while got < size:
            try:
                data = os.read(fd, size - got)
            except OSError as exc:
                raise CheckpointIOError(exc.errno, f"reading {what} failed: "
                                        f"{exc.strerror}") from exc
            if not data:
                break  # shrank meanwhile: return what is there, the parser will judge it
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)
    finally:
        os.close(fd)
