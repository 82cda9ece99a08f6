"""Fault injection on the file backend: lost unpersisted writes, failing operations, kills."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bas import DeviceIOError, open_device
from bas.wrappers.fault import FaultDevice

SIZE = 256 << 10


def _file(tmp_path, **options):
    return open_device(f"file://{tmp_path}/dev.bin", size=SIZE, **options)


def test_crash_drops_everything_since_the_last_persist(tmp_path):
    with FaultDevice(_file(tmp_path)) as dev:
        dev.write(0, b"persisted")
        dev.persist()
        dev.write(0, b"LOST")
        dev.write_many([100, 5000], [3, 3], b"abcdef")
        dev.crash("drop")
        assert dev.read(0, 9) == b"persisted"
    with open_device(f"file://{tmp_path}/dev.bin") as again:
        assert again.read(0, 9) == b"persisted"
        assert again.read(100, 3) == b"\0\0\0" and again.read(5000, 3) == b"\0\0\0"


@pytest.mark.parametrize("direct", [False, True])
def test_torn_crash_keeps_old_or_new_per_unit(tmp_path, direct):
    with FaultDevice(_file(tmp_path, direct=direct), tear_unit=512, seed=11) as dev:
        old = bytes(range(256)) * (SIZE // 256)
        dev.write(0, old)
        dev.persist()
        new = b"\xee" * SIZE
        dev.write(0, new)
        dev.crash("tear")
        after = dev.read(0, SIZE)
    units = [after[i:i + 512] for i in range(0, SIZE, 512)]
    assert all(u in (old[i * 512:(i + 1) * 512], new[:512]) for i, u in enumerate(units))
    assert any(u == new[:512] for u in units) and any(u != new[:512] for u in units)


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("fail_after", range(1, 7))
def test_nth_operation_fails_and_nothing_else_changes(tmp_path, code, fail_after):
    ops = [
        lambda d: d.write(0, b"one"),
        lambda d: d.read(0, 3),
        lambda d: d.write_many([10, 20], 2, b"xxyy"),
        lambda d: d.persist(),
        lambda d: d.write(30, b"two"),
        lambda d: d.read_many([0, 10], 2),
    ]
    with FaultDevice(_file(tmp_path), fail_after=fail_after, fail_errno=code) as dev:
        for i, op in enumerate(ops, start=1):
            if i == fail_after:
                with pytest.raises(DeviceIOError) as info:
                    op(dev)
                assert info.value.errno == code
                assert "injected" in str(info.value) and dev.url in str(info.value)
            else:
                op(dev)
        image = dev.read(0, 40)
    failed_write = {1: (0, 3), 3: (10, 14), 5: (30, 3)}.get(fail_after)
    expected = bytearray(40)
    for k, (off, data) in enumerate([(0, b"one"), (10, b"xx"), (20, b"yy"), (30, b"two")]):
        op_no = {0: 1, 1: 3, 2: 3, 3: 5}[k]
        if op_no != fail_after:
            expected[off:off + len(data)] = data
    assert image == bytes(expected), failed_write


def test_sticky_failure_models_a_dead_device(tmp_path):
    with FaultDevice(_file(tmp_path), fail_after=2, fail_count=0, fail_op="write") as dev:
        dev.write(0, b"ok")
        for _ in range(3):
            with pytest.raises(DeviceIOError):
                dev.write(0, b"no")
        assert dev.read(0, 2) == b"ok"


def test_fault_url_options(tmp_path):
    url = "fault://?inner=dram&size=4096&fail_after=1&fail_op=persist&errno=ENOSPC"
    with open_device(url) as dev:
        dev.write(0, b"x")
        with pytest.raises(DeviceIOError) as info:
            dev.persist()
        assert info.value.errno == errno.ENOSPC


CHILD = textwrap.dedent("""
    import os, signal, sys
    from bas import open_device
    dev = open_device(sys.argv[1])
    dev.write(0, b"durable!")
    dev.persist()
    dev.write(8, b"maybe")
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("direct", ["0", "1"])
def test_killed_process_keeps_persisted_writes(tmp_path, direct):
    url = f"file://{tmp_path}/dev.bin?size={SIZE}&direct={direct}"
    proc = subprocess.run([sys.executable, "-c", CHILD, url], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with open_device(f"file://{tmp_path}/dev.bin") as dev:
        assert dev.read(0, 8) == b"durable!"
        assert dev.size == SIZE
    assert os.path.getsize(tmp_path / "dev.bin") == SIZE
