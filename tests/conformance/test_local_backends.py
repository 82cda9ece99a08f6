"""Conformance of the dram://, file:// (buffered and O_DIRECT) and fault:// devices."""

import pytest

from bas import open_device
from bas.fault import FaultDevice
from bas.testing import DeviceConformance


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

    def reopen(self, device, tmp_path):
        device.close()
        return open_device(f"file://{tmp_path}/dev.bin?{self.options.lstrip('&')}")

    def reopen_read_only(self, device, tmp_path):
        device.close()
        return open_device(f"file://{tmp_path}/dev.bin?read_only=1{self.options}")


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
    def make_device(self, tmp_path, size):
        return FaultDevice(open_device(f"file://{tmp_path}/dev.bin?size={size}"))

    def reopen(self, device, tmp_path):
        device.close()
        return FaultDevice(open_device(f"file://{tmp_path}/dev.bin"))


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
