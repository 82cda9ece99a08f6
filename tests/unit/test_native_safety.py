"""No public call can kill the interpreter: no raw addresses, SIGBUS becomes DeviceIOError,
offsets are Python integers before any arithmetic, limits come from C."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bas
from bas import OutOfBoundsError, open_device
from bas._native import io as native
from bas._native import sort as native_sort


def _run(code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter: a crash there is a failed test, not a dead pytest."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_mem_gather_with_integer_address_raises_instead_of_segfault():
    proc = _run("""
        import numpy as np
        from bas._native import io as native
        offs = np.zeros(1, np.uint64)
        for base in (0, np.uint64(4096), 1 << 40):
            try:
                native.mem_gather(base, 1 << 20, offs, None, 8, 8, bytearray(8))
            except TypeError as exc:
                assert "integer address" in str(exc)
            else:
                raise SystemExit("accepted an integer address")
        print("ok")
    """)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "ok"


def test_region_length_comes_from_the_buffer_not_the_caller():
    with pytest.raises(ValueError, match="reaches past"):
        native.mem_gather(bytearray(16), 1 << 30, np.array([64], np.uint64), None, 8, 8,
                          bytearray(8))


def test_binding_module_is_private():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("bas.native")
    assert bas.crc32(b"123456789") == 0xCBF43926  # the public checksum


@pytest.mark.parametrize("threads", [1, 4])
def test_file_truncated_under_the_mapping_raises_device_io_error_not_sigbus(tmp_path,
                                                                            threads):
    path = tmp_path / "data.bin"
    proc = _run(f"""
        import faulthandler, subprocess, sys
        import numpy as np
        from bas import DeviceIOError, open_device
        faulthandler.enable()  # as pytest does: the guard must win over it
        dev = open_device({str(path)!r}, size=8 << 20)
        dev.write(0, bytes(range(256)) * 4096)
        offs = np.arange(0, 8 << 20, 4096 * 3, dtype=np.uint64)
        first = dev.read_many(offs, 100, threads={threads})  # small pieces: the mapping
        assert bytes(first[:4]) == bytes(range(4))
        # another process rewrites the file (truncates it), as a sort's input may be
        subprocess.run([sys.executable, "-c",
                        "import os; os.truncate({str(path)!r}, 4096)"], check=True)
        try:
            dev.read_many(offs, 100, threads={threads})
        except DeviceIOError as exc:
            print("DeviceIOError", exc)
        else:
            raise SystemExit("read past the truncated end without an error")
        assert bytes(dev.read_many(offs[:1], 100)[:4]) == bytes(range(4))  # still usable
        dev.close()
        print("ok")
    """)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "DeviceIOError" in proc.stdout and proc.stdout.strip().endswith("ok")


@pytest.mark.parametrize("faulthandler_first", [False, True])
def test_sigbus_outside_a_guarded_copy_still_kills_and_never_loops(faulthandler_first):
    """Foreign faults go on to the previous handler once, then kill: never swallowed, never a
    ping-pong with faulthandler (enabled after the guard, it saved the guard as previous)."""
    proc = _run(f"""
        import faulthandler, os, signal
        from bas import open_device
        if {faulthandler_first}:
            faulthandler.enable()
        dev = open_device("dram://?size=4096")
        dev.read_many([0], 8)  # installs the guard
        faulthandler.enable()  # now after it
        dev.read_many([0], 8)  # reinstalls the guard over faulthandler
        os.kill(os.getpid(), signal.SIGBUS)
        print("survived")
    """)
    assert proc.returncode == -7 and "survived" not in proc.stdout  # SIGBUS
    assert proc.stderr.count("Fatal Python error") <= 1


def test_guard_survives_faulthandler_enabled_after_it(tmp_path):
    path = tmp_path / "data.bin"
    proc = _run(f"""
        import faulthandler, os
        from bas import DeviceIOError, open_device
        dev = open_device({str(path)!r}, size=1 << 20)
        dev.read_many([0, 8192], 100)  # the guard is installed
        faulthandler.enable()  # replaces the SIGBUS handler
        os.truncate({str(path)!r}, 0)
        try:
            dev.read_many([0, 8192], 100)
        except DeviceIOError:
            print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("offset", [np.uint64(2**64 - 10), np.uint64(2**63), 2**64 - 10,
                                    np.int64(-1)])
def test_huge_numpy_offset_is_out_of_bounds_not_wrapped(offset):
    with open_device("dram://?size=4096") as dev:
        with pytest.raises(OutOfBoundsError):
            dev.read(offset, 20)
        with pytest.raises(OutOfBoundsError):
            dev.write(offset, b"x" * 20)
        with pytest.raises(OutOfBoundsError):
            dev.read_into(offset, bytearray(20))


@pytest.mark.parametrize("bad", [1.5, "8", True, np.float64(3), None])
def test_non_integer_offsets_and_lengths_are_refused(bad):
    with open_device("dram://?size=4096") as dev:
        with pytest.raises(OutOfBoundsError):
            dev.read(bad, 4)
        with pytest.raises(OutOfBoundsError):
            dev.read(0, bad)


def test_largest_entry_python_allows_is_one_c_sorts():
    """Python's limit is C's: the largest key Python lets through sorts in C, one more is
    refused in Python (before, a copy of C's constant could drift from it)."""
    key = native_sort.MAX_ENTRY_SIZE - native_sort.INDEX_BYTES
    n = 5
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 256, size=n * key, dtype=np.uint8)
    entries = np.zeros(n * native_sort.MAX_ENTRY_SIZE, np.uint8)
    native_sort.entries_from_keys(keys, n, key, 0, entries)
    native_sort.sort_entries(entries, n, key, np.zeros_like(entries))
    got = entries.reshape(n, -1)[:, :key]
    assert [bytes(r) for r in got] == sorted(bytes(r) for r in keys.reshape(n, key))
    with pytest.raises(ValueError):
        native_sort.entry_size(key + 1)


def test_mapped_load_of_a_partition_truncated_meanwhile_raises_not_sigbus(tmp_path):
    proc = _run(f"""
        import os, faulthandler, torch, ckpt
        from ckpt.torch import mapped
        faulthandler.enable()
        path = {str(tmp_path / "m.ckpt")!r}
        ckpt.save({{"w": torch.ones(4 << 20)}}, path, chunk_size=1 << 20)
        part = os.path.join(path, ckpt.read_index(path).partitions[0].file)
        real = mapped._map

        def map_then_truncate(p):
            out = real(p)
            os.truncate(part, 4096)  # another process rewrites the file meanwhile
            return out

        mapped._map = map_then_truncate
        try:
            ckpt.load(path)
        except ckpt.CheckpointIOError as exc:
            print("CheckpointIOError", exc)
    """)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "CheckpointIOError" in proc.stdout and "shrank" in proc.stdout
