"""Conformance of pmem:// (a libpmemobj pool; skipped where the PMDK extension is not built)."""

import pytest

pytest.importorskip("bas.pmem", exc_type=ImportError)

from bas import open_device  # noqa: E402
from bas.testing import DeviceConformance  # noqa: E402


class TestPmem(DeviceConformance):
    def make_device(self, tmp_path, size):
        return open_device(f"pmem://{tmp_path}/dev.pool?size={size}")

    def reopen(self, device, tmp_path):
        device.close()
        return open_device(f"pmem://{tmp_path}/dev.pool")

    def reopen_read_only(self, device, tmp_path):
        device.close()
        return open_device(f"pmem://{tmp_path}/dev.pool?read_only=1")


class TestPmemSmallChunks(TestPmem):
    """Chunks of the media granularity: many chunks per request, an uneven last chunk."""

    size = (1 << 20) + 1000

    def make_device(self, tmp_path, size):
        return open_device(f"pmem://{tmp_path}/dev.pool?size={size}&chunk=256")
