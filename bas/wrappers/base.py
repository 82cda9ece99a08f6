"""WrapperDevice: a device that forwards everything to an inner device (leveldb's EnvWrapper).

Wrappers (fault injection, emulation) subclass it and override only what they change. The
wrapper owns its inner device: closing the wrapper closes the inner one.
"""

from __future__ import annotations

from urllib.parse import quote

from bas.device import Capabilities, Device, Requests
from bas.errors import InvalidURLError
from bas.registry import DeviceURL, open_device

__all__ = ["WrapperDevice", "inner_from_url", "wrap_url"]


class WrapperDevice(Device):
    """Forwards every primitive and capability to `inner`."""

    def __init__(self, inner: Device, url: str, caps: Capabilities | None = None):
        super().__init__(url, read_only=inner.read_only, caps=caps or inner.capabilities)
        self.inner = inner

    @property
    def clock(self) -> float | None:
        return self.inner.clock

    @property
    def clock_domain(self) -> object:
        return self.inner.clock_domain

    @property
    def preset(self) -> str | None:
        return self.inner.preset

    def overlap(self):
        return self.inner.overlap()

    def _size(self) -> int:
        return self.inner.size

    def _read_into(self, offset: int, view: memoryview) -> None:
        self.inner.read_into(offset, view)

    def _write(self, offset: int, view: memoryview) -> None:
        self.inner.write(offset, view)

    def _read_many(self, req: Requests, out: memoryview, threads: int) -> None:
        self.inner.read_many(req.offsets, _lengths(req), out, threads=threads)

    def _write_many(self, req: Requests, data: memoryview, threads: int) -> None:
        self.inner.write_many(req.offsets, _lengths(req), data, threads=threads)

    def _persist(self) -> None:
        self.inner.persist()

    def _close(self) -> None:
        self.inner.close()

    def _drop_caches(self) -> None:
        self.inner.drop_caches()


def _lengths(req: Requests):
    return req.uniform if req.lengths is None else req.lengths


def inner_from_url(url: DeviceURL, default_size: int | None = None) -> Device:
    """Open the device named by a wrapper URL's `inner=` option (percent-encoded URL or path).

    `inner=dram` is shorthand for dram://?size=<size=>.
    """
    inner = url.take("inner")
    if not inner:
        raise InvalidURLError(f"{url.text}: {url.scheme}:// needs inner=<device URL>")
    if inner == "dram":
        if default_size is None:
            raise InvalidURLError(f"{url.text}: inner=dram needs size=")
        return open_device(f"dram://?size={default_size}")
    return open_device(inner)


def wrap_url(scheme: str, inner_url: str, **options) -> str:
    """Build a wrapper URL around an inner device URL (percent-encodes it)."""
    query = "&".join([f"inner={quote(inner_url, safe='')}"]
                     + [f"{k}={v}" for k, v in options.items()])
    return f"{scheme}://?{query}"
