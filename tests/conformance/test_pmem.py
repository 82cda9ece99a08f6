"""Conformance of pmem:// (a libpmemobj pool; skipped where the PMDK extension is not built)."""

import pytest

pytest.importorskip("bas.backends.pmem", exc_type=ImportError)

from bas import open_device  # noqa: E402
from bas.backends.pmem import PmemDevice  # noqa: E402
from bas.testing import DeviceConformance, PmemMedium  # noqa: E402


class TestPmem(DeviceConformance):
    def make_device(self, tmp_path, size):
        return open_device(f"pmem://{tmp_path}/dev.pool?size={size}")

    def open_existing(self, tmp_path, read_only=False):
        return open_device(f"pmem://{tmp_path}/dev.pool?read_only={int(read_only)}")

    def make_medium(self, tmp_path):
        return PmemMedium(tmp_path / "dev.pool")


class TestPmemSmallChunks(TestPmem):
    """Chunks of the media granularity: many chunks per request, an uneven last chunk."""

    size = (1 << 20) + 1000

    def make_device(self, tmp_path, size):
        return open_device(f"pmem://{tmp_path}/dev.pool?size={size}&chunk=256")


@pytest.mark.parametrize("suite", [TestPmem, TestPmemSmallChunks])
@pytest.mark.parametrize("check", ["test_persist_is_accepted",
                                   "test_persisted_data_survives_power_cut"])
def test_noop_persist_fails_conformance(tmp_path, monkeypatch, suite, check):
    """Regression: the kit passed a device whose persist() did nothing (it only read back)."""
    monkeypatch.setattr(PmemDevice, "_persist", lambda self: None)
    with pytest.raises(AssertionError, match="lost"):
        suite().run_check(check, tmp_path)
