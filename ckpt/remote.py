"""The remote tier: packed checkpoints (docs/FORMAT.md rule 20) behind URLs, through fsspec.

    RemoteTier("http://models.internal/ckpt")       # name -> http://.../NAME.ckpt.pack
    RemoteTier("file:///mnt/nfs/ckpt")
    RemoteTier("s3://bucket/ckpt")                   # needs the optional s3fs package

A remote checkpoint is one object in the packed form, so a load is one sequential GET that
`ckpt.loader.read_packed` consumes front to back (http(s) streams it without range requests).
Errors of the transport (aiohttp, botocore, ...) become CheckpointIOError naming the URL.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager

from ckpt.errors import (
    CheckpointError,
    CheckpointIOError,
    IndexTooLargeError,
    NotACheckpointError,
)
from ckpt.format import HEADER_SIZE, Index, decode_header
from ckpt.loader import pack

__all__ = ["SUFFIX", "RemoteStream", "RemoteTier", "open_url"]

SUFFIX = ".ckpt.pack"
#: defaults for estimates: a 10 Gbit/s link and the time to first byte of an object store
BANDWIDTH = 1.25e9
LATENCY = 0.05
_STREAMING = ("http", "https")


class RemoteStream:
    """A readable stream over one remote object whose transport errors are CheckpointIOError."""

    def __init__(self, file, url: str):
        self._file = file
        self.url = url

    def readinto(self, view) -> int:
        out = memoryview(view).cast("B")
        try:
            data = self._file.read(out.nbytes)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - every transport has its own error types
            code = getattr(exc, "errno", None) or errno.EIO
            raise CheckpointIOError(code, f"{self.url}: download failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
        out[:len(data)] = data
        return len(data)

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        return bytes(buf[:self.readinto(buf)])

    def close(self) -> None:
        try:
            self._file.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail again
            pass


@contextmanager
def open_url(url: str, storage_options: dict | None = None):
    """A RemoteStream over url (fsspec); NotACheckpointError when nothing is there."""
    fs, path = _filesystem(url, storage_options)
    kwargs = {"block_size": 0} if fs.protocol[0] in _STREAMING else {}
    try:
        f = fs.open(path, "rb", **kwargs)
    except FileNotFoundError:
        raise NotACheckpointError(errno.ENOENT, f"{url}: no such remote checkpoint",
                                  url) from None
    except Exception as exc:  # noqa: BLE001
        raise CheckpointIOError(getattr(exc, "errno", None) or errno.EIO,
                                f"{url}: opening failed: {type(exc).__name__}: {exc}") from exc
    stream = RemoteStream(f, url)
    try:
        yield stream
    finally:
        stream.close()


class RemoteTier:
    """Packed checkpoints under a base URL; read-only unless the file system takes writes.

    bandwidth (bytes/s) and latency (s to the first byte) feed estimates; storage_options go
    to fsspec (credentials, endpoint, ...).
    """

    kind = "remote"

    def __init__(self, url: str, *, name: str = "remote", bandwidth: float = BANDWIDTH,
                 latency: float = LATENCY, storage_options: dict | None = None):
        if "://" not in url:
            url = "file://" + os.path.abspath(url)
        self.url = url.rstrip("/")
        self.name = name
        self.bandwidth = bandwidth
        self.latency = latency
        self.storage_options = dict(storage_options or {})

    def url_of(self, name: str) -> str:
        return f"{self.url}/{name}{SUFFIX}"

    def holds(self, name: str) -> bool:
        fs, path = _filesystem(self.url_of(name), self.storage_options)
        try:
            return bool(fs.exists(path))
        except Exception:  # noqa: BLE001 - an unreachable remote holds nothing we can get
            return False

    def open(self, name: str):
        """Context: a RemoteStream over name's packed checkpoint."""
        return open_url(self.url_of(name), self.storage_options)

    def index(self, name: str) -> Index:
        """Read only the head of the object: header and index."""
        with self.open(name) as stream:
            head = _read_exact(stream, HEADER_SIZE)
            _, length, _ = decode_header(head, self.url_of(name))
            return Index.decode(head + _read_exact(stream, length), self.url_of(name))

    def estimate(self, nbytes: int, ntensors: int, device: str = "cpu") -> float:
        return self.latency + nbytes / self.bandwidth

    def put(self, name: str, path: str | os.PathLike) -> int:
        """Upload the checkpoint directory at path as name (packed); the bytes written."""
        fs, target = _filesystem(self.url_of(name), self.storage_options)
        tmp = f"{target}.uploading"
        try:
            with fs.open(tmp, "wb") as out:
                written = pack(path, out)
            fs.mv(tmp, target)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CheckpointIOError(getattr(exc, "errno", None) or errno.EIO,
                                    f"{self.url_of(name)}: upload failed: {exc}") from exc
        return written


def _filesystem(url: str, storage_options: dict | None):
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        raise CheckpointIOError(errno.ENOPKG if hasattr(errno, "ENOPKG") else errno.EIO,
                                f"{url}: {exc} (s3:// needs the optional s3fs package: "
                                f"pip install s3fs)") from exc


def _read_exact(stream: RemoteStream, n: int) -> bytes:
    buf = bytearray(n)
    got = 0
    while got < n:
        k = stream.readinto(memoryview(buf)[got:])
        if not k:
            raise IndexTooLargeError(f"{stream.url}: ends after {got} of the {n} bytes of "
                                     f"its header and index")
        got += k
    return bytes(buf)
