"""dram:// -- anonymous memory, optionally on transparent huge pages."""

from __future__ import annotations

import mmap

from bas._native import io as native
from bas.device import Capabilities, Device, Requests
from bas.errors import InvalidURLError
from bas.registry import DeviceURL

__all__ = ["DramDevice"]


class DramDevice(Device):
    """Volatile byte-addressable memory. URL: dram://?size=64M[&hugepages=1]."""

    scheme = "dram"

    def __init__(self, size: int, *, hugepages: bool = False, url: str | None = None):
        if size <= 0:
            raise InvalidURLError(f"dram:// needs a positive size, got {size}")
        super().__init__(url or f"dram://?size={size}", caps=Capabilities(byte_addressable=True))
        self._mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hugepages and hasattr(mmap, "MADV_HUGEPAGE"):
            # explicit hugetlbfs pages need a reserved pool; THP needs none and falls back
            self._mem.madvise(mmap.MADV_HUGEPAGE)
        self._len = size

    @classmethod
    def open_url(cls, url: DeviceURL) -> DramDevice:
        size = url.take_size("size")
        if size is None:
            raise InvalidURLError(f"{url.text}: dram:// needs ?size=")
        hugepages = url.take_bool("hugepages")
        url.finish()
        return cls(size, hugepages=hugepages, url=url.text)

    def _size(self) -> int:
        return self._len

    def _read_into(self, offset: int, view: memoryview) -> None:
        with memoryview(self._mem) as mem:  # released at once so close() can unmap
            view[:] = mem[offset:offset + view.nbytes]

    def _write(self, offset: int, view: memoryview) -> None:
        with memoryview(self._mem) as mem:
            mem[offset:offset + view.nbytes] = view

    def _read_many(self, req: Requests, out: memoryview, threads: int) -> None:
        native.mem_gather(self._mem, self._len, req.offsets, req.lengths, req.uniform,
                          req.total, out, threads)

    def _write_many(self, req: Requests, data: memoryview, threads: int) -> None:
        native.mem_scatter(self._mem, self._len, req.offsets, req.lengths, req.uniform,
                           req.total, data, threads)

    def _persist(self) -> None:
        """DRAM is volatile: nothing to make durable."""

    def _close(self) -> None:
        self._mem.close()
