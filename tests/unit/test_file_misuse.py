"""Misuse of the file backend gives typed errors, never a crash or a silent change."""

import errno
import os

import numpy as np
import pytest

from bas import (
    AlignmentError,
    DeviceClosedError,
    InvalidURLError,
    ReadOnlyError,
    UnsupportedError,
    open_device,
)


def test_strict_direct_refuses_misaligned_requests(tmp_path):
    with open_device(f"file://{tmp_path}/d?size=65536&direct=1&bounce=0") as dev:
        assert dev.alignment == 4096
        for call in (lambda: dev.read(1, 4096), lambda: dev.read(0, 100),
                     lambda: dev.write(4096, b"x" * 10),
                     lambda: dev.read_many([0, 100], 4096)):
            with pytest.raises(AlignmentError, match="aligned to 4096"):
                call()
        misaligned = np.zeros(8192 + 1, dtype=np.uint8)[1:]
        with pytest.raises(AlignmentError):
            dev.read_into(0, misaligned[:4096])
        block = dev.read(4096, 4096)  # read() itself allocates an aligned buffer
        assert block == bytes(4096)


def test_direct_refused_by_the_file_system_is_unsupported(tmp_path, monkeypatch):
    """tmpfs before Linux 6.6 and some FUSE file systems answer O_DIRECT with EINVAL."""
    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(UnsupportedError, match="O_DIRECT"):
        open_device(f"file://{tmp_path}/d?size=4096&direct=1")


def test_missing_file_without_size(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_device(f"file://{tmp_path}/nope")


def test_size_never_shrinks_a_file(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 100)
    with pytest.raises(InvalidURLError, match="never shrinks"):
        open_device(f"file://{tmp_path}/f?size=10")
    assert (tmp_path / "f").read_bytes() == b"x" * 100


def test_growing_keeps_old_bytes(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    with open_device(f"file://{tmp_path}/f?size=8192") as dev:
        assert dev.read(0, 4) == b"abc\0" and dev.size == 8192


def test_read_only_refuses_writes_and_persist(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    with open_device(f"file://{tmp_path}/f?read_only=1") as dev:
        with pytest.raises(ReadOnlyError):
            dev.write(0, b"z")
        with pytest.raises(ReadOnlyError):
            dev.persist()
    assert (tmp_path / "f").read_bytes() == b"abc"


def test_close_waits_and_then_refuses(tmp_path):
    dev = open_device(f"file://{tmp_path}/f?size=4096")
    dev.close()
    with pytest.raises(DeviceClosedError, match="closed"):
        dev.read(0, 1)
    with pytest.raises(DeviceClosedError, match="closed twice"):
        dev.close()
