"""The remote tier: packed checkpoints (docs/FORMAT.md rule 22) behind URLs, through fsspec.

    RemoteTier("http://models.internal/ckpt")       # name -> http://.../NAME.ckpt.pack
    RemoteTier("file:///mnt/nfs/ckpt")
    RemoteTier("s3://bucket/ckpt")                   # needs the optional s3fs package

A remote checkpoint is one object in the packed form, so a load is one sequential GET that
`ckpt.torch.loader.read_packed` consumes front to back (http(s) streams it without range requests).
Errors of the transport (aiohttp, botocore, ...) become CheckpointIOError naming the URL.

Transfers time out on silence, never on length: connect_timeout bounds setting up a
connection and read_timeout the longest wait for the next byte (headers or body), but a
healthy multi-GB download may take as long as it needs (http(s) through aiohttp and s3
through botocore; other schemes keep their own settings).
"""

from __future__ import annotations

import errno
import os
import posixpath
from contextlib import contextmanager

from ckpt.errors import (
    CheckpointError,
    CheckpointIOError,
    IndexTooLargeError,
    NotACheckpointError,
)
from ckpt.format import HEADER_SIZE, Index, decode_header
from ckpt.host import pack, read_packed
from ckpt.tiers.disk import check_name
from ckpt.tiers.tier import Held, Sink, Tier, TierCapabilities, TierReader

__all__ = ["CONNECT_TIMEOUT", "READ_TIMEOUT", "SUFFIX", "PackedReader", "RemoteStream",
           "RemoteTier", "open_packed", "open_url"]

SUFFIX = ".ckpt.pack"
#: defaults for estimates: a 10 Gbit/s link and the time to first byte of an object store
BANDWIDTH = 1.25e9
LATENCY = 0.05
#: seconds to set up a connection, and the longest silence of a server that is tolerated
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
_STREAMING = ("http", "https")
_S3 = ("s3", "s3a")


class RemoteStream:
    """A readable stream over one remote object whose transport errors are CheckpointIOError."""

    def __init__(self, file, url: str, *, connect_timeout: float | None = CONNECT_TIMEOUT,
                 read_timeout: float | None = READ_TIMEOUT):
        self._file = file
        self.url = url
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def readinto(self, view) -> int:
        out = memoryview(view).cast("B")
        try:
            data = self._file.read(out.nbytes)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - every transport has its own error types
            raise _transport_error(self.url, "download", exc, self.connect_timeout,
                                   self.read_timeout) from exc
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
def open_url(url: str, storage_options: dict | None = None, *,
             connect_timeout: float | None = CONNECT_TIMEOUT,
             read_timeout: float | None = READ_TIMEOUT):
    """A RemoteStream over url (fsspec); NotACheckpointError when nothing is there.

    connect_timeout and read_timeout (seconds, None for no limit) bound connecting and each
    wait for data; the whole transfer has no limit. A timeout raises CheckpointIOError
    (errno ETIMEDOUT) naming the URL.
    """
    fs, path = _filesystem(url, storage_options, connect_timeout, read_timeout)
    kwargs = {"block_size": 0} if fs.protocol[0] in _STREAMING else {}
    try:
        f = fs.open(path, "rb", **kwargs)
    except FileNotFoundError as exc:
        if _timeout_kind(exc.__cause__) is not None:  # fsspec's http info() says "not found"
            raise _transport_error(url, "opening", exc.__cause__, connect_timeout,
                                   read_timeout) from exc
        raise NotACheckpointError(errno.ENOENT, f"{url}: no such remote checkpoint",
                                  url) from None
    except Exception as exc:  # noqa: BLE001
        raise _transport_error(url, "opening", exc, connect_timeout, read_timeout) from exc
    stream = RemoteStream(f, url, connect_timeout=connect_timeout, read_timeout=read_timeout)
    try:
        yield stream
    finally:
        stream.close()


@contextmanager
def open_packed(url: str, storage_options: dict | None = None, **timeouts):
    """Context: a PackedReader of the packed checkpoint at url (see open_url)."""
    with open_url(url, storage_options, **timeouts) as stream:
        yield PackedReader(stream)


class PackedReader(TierReader):
    """A packed checkpoint arriving as a stream: one front-to-back pass, feeding a sink."""

    def __init__(self, stream: RemoteStream):
        self.stream = stream

    def read(self, *, pool=None, verify=None, stats=None, progress=None, sink=None) -> Held:
        tee = _IndexTee(sink)
        # remote bytes cross a network: checked unless the caller said verify=False
        index, buf = read_packed(self.stream, verify=verify is not False, progress=progress,
                                 pool=pool, stats=stats, sink=tee)
        return Held(index, tee.index_bytes, buf, buf.nbytes)


class _IndexTee(Sink):
    """Keeps the index bytes a stream began with and forwards everything to sink."""

    def __init__(self, sink: Sink | None):
        self.sink = sink
        self.index_bytes = b""

    def begin(self, index_bytes, index) -> None:
        self.index_bytes = bytes(index_bytes)
        if self.sink is not None:
            self.sink.begin(index_bytes, index)

    def chunk(self, partition, offset, view) -> None:
        if self.sink is not None:
            self.sink.chunk(partition, offset, view)

    def commit(self) -> bool:
        return self.sink is not None and self.sink.commit()

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()


class RemoteTier(Tier):
    """Packed checkpoints under a base URL; read-only unless the file system takes writes.

    bandwidth (bytes/s) and latency (s to the first byte) feed estimates; storage_options go
    to fsspec (credentials, endpoint, ...). connect_timeout and read_timeout (seconds, None for
    no limit) bound connecting and the silence of the server, never the whole download; an
    explicit timeout in storage_options (client_kwargs / config_kwargs) wins over them.
    """

    def __init__(self, url: str, *, name: str = "remote", bandwidth: float = BANDWIDTH,
                 latency: float = LATENCY, storage_options: dict | None = None,
                 connect_timeout: float | None = CONNECT_TIMEOUT,
                 read_timeout: float | None = READ_TIMEOUT):
        if "://" not in url:
            url = "file://" + os.path.abspath(url)
        _check_timeouts(connect_timeout, read_timeout)
        self.url = url.rstrip("/")
        self.name = name
        # the origin: what it holds may be the only copy, and the Store never evicts it
        self.capabilities = TierCapabilities(persistent=True, evictable=False,
                                             holds_only_copy=True)
        self.bandwidth = bandwidth
        self.latency = latency
        self.storage_options = dict(storage_options or {})
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def url_of(self, name: str) -> str:
        return f"{self.url}/{check_name(name)}{SUFFIX}"

    def holds(self, name: str) -> bool:
        fs, path = self._filesystem(name)
        try:
            return bool(fs.exists(path))
        except Exception:  # noqa: BLE001 - an unreachable remote holds nothing we can get
            return False

    def open(self, name: str):
        """Context: a PackedReader over name's packed checkpoint."""
        return open_packed(self.url_of(name), self.storage_options,
                           connect_timeout=self.connect_timeout, read_timeout=self.read_timeout)

    def names(self) -> list[str]:
        """Names of the packed checkpoints under the URL (sorted; [] when unreachable)."""
        fs, base = _filesystem(self.url + "/", self.storage_options, self.connect_timeout,
                               self.read_timeout)
        try:
            found = fs.find(base)
        except Exception:  # noqa: BLE001 - an unreachable remote lists nothing
            return []
        prefix = base.rstrip("/") + "/"
        names = []
        for path in found:
            rel = path[len(prefix):] if path.startswith(prefix) else None
            if rel and rel.endswith(SUFFIX):
                try:
                    names.append(check_name(rel[:-len(SUFFIX)]))
                except ValueError:
                    continue  # an object no name maps to
        return sorted(names)

    def index(self, name: str) -> Index:
        """Read only the head of the object: header and index."""
        with open_url(self.url_of(name), self.storage_options,
                      connect_timeout=self.connect_timeout,
                      read_timeout=self.read_timeout) as stream:
            head = _read_exact(stream, HEADER_SIZE)
            _, length, _ = decode_header(head, self.url_of(name))
            return Index.decode(head + _read_exact(stream, length), self.url_of(name))

    def estimate(self, nbytes: int, ntensors: int, device: str = "cpu") -> float:
        return self.latency + nbytes / self.bandwidth

    def keep(self, name: str, held: Held, *, droppable=None) -> None:
        return None  # an origin: loads never copy into it (put uploads)

    def put(self, name: str, src, *, nbytes: int = 0, droppable=None) -> int:
        """Upload the checkpoint directory src as name (packed); the bytes written.

        The object appears under its name only once complete (written under a temporary
        name, then moved), so a failed upload leaves the previous version in place.
        """
        if callable(src) or not isinstance(src, (str, os.PathLike)):
            raise ValueError(f"tier {self.name} takes checkpoint directories: save a state "
                             f"dict into a disk tier first, then upload its directory")
        path = src
        fs, target = self._filesystem(name)
        tmp = f"{target}.uploading"
        try:
            fs.makedirs(posixpath.dirname(target), exist_ok=True)  # local and NFS need it
            with fs.open(tmp, "wb") as out:
                written = pack(path, out)
            fs.mv(tmp, target)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CheckpointIOError(getattr(exc, "errno", None) or errno.EIO,
                                    f"{self.url_of(name)}: upload failed: {exc}") from exc
        return written

    def remove(self, name: str, *, force: bool = False) -> bool:
        """Delete name's object (the owner's verb: a Store never evicts an origin)."""
        fs, target = self._filesystem(name)
        try:
            if fs.exists(target):
                fs.rm(target)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointIOError(getattr(exc, "errno", None) or errno.EIO,
                                    f"{self.url_of(name)}: delete failed: {exc}") from exc
        return True

    def _filesystem(self, name: str):
        return _filesystem(self.url_of(name), self.storage_options, self.connect_timeout,
                           self.read_timeout)


def _check_timeouts(*timeouts: float | None) -> None:
    for t in timeouts:
        if t is not None and not t > 0:
            raise ValueError(f"timeouts must be positive seconds or None, got {t!r}")


def _filesystem(url: str, storage_options: dict | None, connect_timeout: float | None,
                read_timeout: float | None):
    """(fsspec file system, path) for url, with the timeouts given to its transport."""
    _check_timeouts(connect_timeout, read_timeout)
    options = dict(storage_options or {})
    scheme = url.split("://", 1)[0].lower()
    try:
        import fsspec.core

        if scheme in _STREAMING:
            import aiohttp

            # aiohttp's default is a 5-minute limit on the whole request, body included
            timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                            sock_connect=connect_timeout, sock_read=read_timeout)
            options["client_kwargs"] = {"timeout": timeout, **options.get("client_kwargs", {})}
        elif scheme in _S3:  # botocore's timeouts are per connection attempt and per read
            options["config_kwargs"] = {"connect_timeout": connect_timeout,
                                        "read_timeout": read_timeout,
                                        **options.get("config_kwargs", {})}
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise CheckpointIOError(errno.ENOPKG if hasattr(errno, "ENOPKG") else errno.EIO,
                                f"{url}: {exc} (remote tiers need fsspec, http(s):// aiohttp "
                                f"and s3:// s3fs: pip install 'bas[http]' or 'bas[s3]')") from exc


def _timeout_kind(exc: BaseException | None) -> str | None:
    """"connect" or "read" when exc, or an exception it was raised from, is a timeout."""
    connecting = False  # aiohttp's ClientConnectorError wraps the OS's ETIMEDOUT
    for _ in range(8):  # bounded: a chain may loop
        if exc is None:
            return None
        name = type(exc).__name__
        connecting = connecting or "Connect" in name
        if isinstance(exc, TimeoutError) or "Timeout" in name:  # botocore's are not TimeoutError
            return "connect" if connecting else "read"
        exc = exc.__cause__ or exc.__context__
    return None


def _transport_error(url: str, what: str, exc: BaseException, connect_timeout: float | None,
                     read_timeout: float | None) -> CheckpointIOError:
    """The CheckpointIOError for a failure of the transport while opening or downloading url."""
    kind = _timeout_kind(exc)
    if kind == "connect" and connect_timeout is not None:
        return CheckpointIOError(errno.ETIMEDOUT, f"{url}: {what} failed: no connection to the "
                                 f"server within {connect_timeout} s")
    if kind is not None:
        silence = f"for {read_timeout} s" if read_timeout is not None else "(timed out)"
        return CheckpointIOError(errno.ETIMEDOUT, f"{url}: {what} failed: the server went "
                                 f"silent {silence} ({type(exc).__name__})")
    return CheckpointIOError(getattr(exc, "errno", None) or errno.EIO,
                             f"{url}: {what} failed: {type(exc).__name__}: {exc}")


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
