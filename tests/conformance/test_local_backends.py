"""Conformance of the dram://, file:// (buffered and O_DIRECT) and fault:// devices."""

import pytest

from bas import open_device
from bas.backends.file import FileDevice
from bas.testing import DeviceConformance, FileMedium
from bas.wrappers.fault import FaultDevice


class TestDram(DeviceConformance):
    def make_device(self, tmp_path, size):
        return open_device(f"dram://?size={size}")


class TestDramHugePages(DeviceConformance):
    def make_device(self, tmp_path, size):
        return open_device(f"dram://?size={size}&hugepages=1")


class TestFile(DeviceConformance):
    options = ""

    def make_device(self, tmp_path, size):
        return open_device(f"file://{tmp_path}/dev.bin?size={size}{self.options}")

    def open_existing(self, tmp_path, read_only=False):
        return open_device(f"file://{tmp_path}/dev.bin?read_only={int(read_only)}{self.options}")

    def make_medium(self, tmp_path):
        return FileMedium(tmp_path / "dev.bin")


class TestFilePreadOnly(TestFile):
    """Every gather through pread, none through the read mapping."""

    options = "&map=0"


class TestFileDirect(TestFile):
    options = "&direct=1"


class TestFileDirectUnalignedSize(TestFile):
    """A size that is not a multiple of the block: the tail goes through the buffered fd."""

    options = "&direct=1"
    size = (1 << 20) + 1000


class TestFault(DeviceConformance):
    """The wrapper over a file: durability is judged on the file, not the wrapper's undo log."""

    def make_device(self, tmp_path, size):
        return FaultDevice(open_device(f"file://{tmp_path}/dev.bin?size={size}"))

    def open_existing(self, tmp_path, read_only=False):
        if read_only:
            raise NotImplementedError
        return FaultDevice(open_device(f"file://{tmp_path}/dev.bin"))

    def make_medium(self, tmp_path):
        return FileMedium(tmp_path / "dev.bin")


class TestFaultUrl(DeviceConformance):
    def make_device(self, tmp_path, size):
        return open_device(f"fault://?inner=dram&size={size}")


@pytest.mark.parametrize("size", [1, 4095, 4097])
def test_direct_device_of_odd_size_round_trips(tmp_path, size):
    with open_device(f"file://{tmp_path}/odd?size={size}&direct=1") as dev:
        data = bytes(i % 251 for i in range(size))
        dev.write(0, data)
        dev.persist()
        assert dev.read(0, size) == data
    assert (tmp_path / "odd").stat().st_size == size


@pytest.mark.parametrize("suite,layer", [(TestFile, FileDevice), (TestFileDirect, FileDevice),
                                         (TestFault, FileDevice), (TestFault, FaultDevice)],
                         ids=["file", "file-direct", "fault-over-noop-file", "noop-fault"])
@pytest.mark.parametrize("check", ["test_persist_is_accepted",
                                   "test_persisted_data_survives_power_cut"])
def test_noop_persist_fails_conformance(tmp_path, monkeypatch, suite, layer, check):
    """Regression: the kit passed a device whose persist() did nothing (it only read back)."""
    monkeypatch.setattr(layer, "_persist", lambda self: None)
    with pytest.raises(AssertionError, match="lost"):
        suite().run_check(check, tmp_path)
