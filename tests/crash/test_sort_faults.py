"""Failures at every phase of a sort leave no output, no temporary file and no runs."""

import errno
import os

import pytest

from bas import DeviceIOError, open_device
from bas.sort import sort
from bas.wrappers.fault import FaultDevice
from tests.sortcheck import random_records, stable_model


def _scratch_failing(tmp_path, fail_after, code, made):
    def make(size):
        inner = open_device(f"file://{tmp_path}/scratch-{len(made)}.bin?size={size}")
        dev = FaultDevice(inner, fail_after=fail_after, fail_errno=code)
        made.append(dev)
        return dev
    return make


def _scratch_operations(tmp_path, data, algorithm) -> int:
    """Operations a clean sort does on its run device (checking its output on the way)."""
    made = []
    sort(tmp_path / "in", tmp_path / "out", memory_budget="64K", algorithm=algorithm,
         scratch=_scratch_failing(tmp_path, None, errno.ENOSPC, made))
    assert (tmp_path / "out").read_bytes() == stable_model(data, 100, 0, 10)
    os.unlink(tmp_path / "out")
    assert len(made) == 1 and made[0].closed
    return made[0].operations


@pytest.mark.parametrize("algorithm", ["kv-external", "mergesort"])
def test_run_device_failure_leaves_nothing(tmp_path, algorithm):
    """A fault at every operation of the run device, each one asserted to have fired.

    Regression: fixed fail_after points past the device's last operation passed untested.
    """
    data = random_records(2000, 100, 10, seed=1)
    (tmp_path / "in").write_bytes(data)
    operations = _scratch_operations(tmp_path, data, algorithm)
    assert operations >= 4, "the run device is barely used: the faults would test little"
    for fail_after in range(1, operations + 1):
        made = []
        with pytest.raises(DeviceIOError) as info:
            sort(tmp_path / "in", tmp_path / "out", memory_budget="64K", algorithm=algorithm,
                 scratch=_scratch_failing(tmp_path, fail_after, errno.ENOSPC, made))
        assert info.value.errno == errno.ENOSPC
        assert made and made[0].operations >= fail_after, "the fault did not fire"
        assert not (tmp_path / "out").exists()
        assert all(dev.closed for dev in made), "a run device was left open"
        leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".out")]
        assert leftovers == []


@pytest.mark.parametrize("algorithm", ["kv", "kv-external", "mergesort"])
@pytest.mark.parametrize("fail_op", ["read", "write", "persist"])
@pytest.mark.parametrize("schedule", ["staged", "piped"])
def test_output_device_failure_is_reported(tmp_path, algorithm, fail_op, schedule):
    data = random_records(1500, 100, 10, seed=2)
    src = open_device(f"dram://?size={len(data)}")
    src.write(0, data)
    fail_after = 1 if fail_op == "persist" else 2
    dst = FaultDevice(open_device(f"dram://?size={len(data)}"), fail_after=fail_after,
                      fail_op=fail_op, fail_errno=errno.EIO, fail_count=0)
    with src, dst:
        if fail_op == "read":  # the engine never reads its output: nothing may fail
            sort(src, dst, memory_budget="128K", algorithm=algorithm, schedule=schedule,
                 scratch=str(tmp_path))
            assert dst.operations == 0, "the engine read its output"
            assert dst.inner.read(0, len(data)) == stable_model(data, 100, 0, 10)
        else:
            with pytest.raises(DeviceIOError) as info:
                sort(src, dst, memory_budget="128K", algorithm=algorithm, schedule=schedule,
                     scratch=str(tmp_path))
            assert info.value.errno == errno.EIO
            assert dst.operations >= fail_after, "the fault did not fire"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".bas-sort-runs")] == []


def test_input_read_failure_at_each_phase(tmp_path):
    """A fault at every read of the input, each one asserted to have fired."""
    data = random_records(3000, 100, 10, seed=3)

    def source(fail_after):
        inner = open_device(f"dram://?size={len(data)}")
        inner.write(0, data)
        return FaultDevice(inner, fail_after=fail_after, fail_op="read")

    with source(None) as src:
        sort(src, tmp_path / "out", memory_budget="128K", algorithm="kv-external")
        reads = src.operations
    assert (tmp_path / "out").read_bytes() == stable_model(data, 100, 0, 10)
    os.unlink(tmp_path / "out")
    assert reads >= 16, "the input is read in too few requests to fail in every phase"
    for fail_after in range(1, reads + 1):
        with source(fail_after) as src:
            with pytest.raises(DeviceIOError):
                sort(src, tmp_path / "out", memory_budget="128K", algorithm="kv-external")
            assert src.operations >= fail_after, "the fault did not fire"
        assert not (tmp_path / "out").exists()
        assert [p for p in os.listdir(tmp_path) if p != "out"] == []


def test_interrupt_leaves_no_partial_output(tmp_path):
    data = random_records(2000, 100, 10, seed=4)
    (tmp_path / "in").write_bytes(data)
    calls = []

    def progress(phase, done, total):
        calls.append(phase)
        if phase == "form-runs":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sort(tmp_path / "in", tmp_path / "out", memory_budget="64K", algorithm="kv-external",
             progress=progress)
    assert sorted(os.listdir(tmp_path)) == ["in"]


@pytest.mark.parametrize("fail_op", ["write", "read"])
def test_piped_run_formation_stops_every_stage_on_error(tmp_path, fail_op):
    """Regression: a failing stage left the reader blocked on its queue and sort() hung."""
    import threading

    data = random_records(6000, 100, 10, seed=7)
    inner = open_device(f"dram://?size={len(data)}")
    inner.write(0, data)
    src = FaultDevice(inner, fail_after=4, fail_op="read", fail_count=0) \
        if fail_op == "read" else inner
    before = threading.active_count()
    made = []
    scratch = _scratch_failing(tmp_path, 2 if fail_op == "write" else 10**6, errno.EIO, made)
    with src, pytest.raises(DeviceIOError):
        sort(src, tmp_path / "out", memory_budget="256K", algorithm="kv-external",
             schedule="piped", scratch=scratch)
    failing, fail_after = (src, 4) if fail_op == "read" else (made[0], 2)
    assert failing.operations >= fail_after, "the fault did not fire"
    assert threading.active_count() == before, "a pipeline thread outlived the sort"
    assert not (tmp_path / "out").exists()
