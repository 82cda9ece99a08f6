"""Opening a checkpoint never follows links or blocks: a partition or index swapped for a FIFO
or a link (to /dev/zero, to another file) is refused with a typed error, at any moment."""

from __future__ import annotations

import io
import os

import pytest
import torch

import ckpt
from bas import InvalidURLError, open_device
from ckpt import source

pytestmark = pytest.mark.timeout(30)  # a regression would hang: fail instead


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.ckpt"
    ckpt.save({"w": torch.arange(10.0)}, path)
    return path


def _part(path) -> str:
    return os.path.join(path, ckpt.read_index(path).partitions[0].file)


def _fifo(target: str) -> None:
    os.unlink(target)
    os.mkfifo(target)


def _link(target: str, to: str) -> None:
    os.unlink(target)
    os.symlink(to, target)


@pytest.mark.parametrize("swap", ["fifo", "dev-zero", "link-to-copy"])
def test_partition_swapped_before_load_is_refused(saved, swap):
    part = _part(saved)
    if swap == "fifo":
        _fifo(part)
    elif swap == "dev-zero":
        _link(part, "/dev/zero")
    else:
        copy = str(saved) + "-copy.bin"
        with open(part, "rb") as f, open(copy, "wb") as g:
            g.write(f.read())
        _link(part, copy)
    for mmap in (True, False):
        with pytest.raises(ckpt.MissingPartitionError, match="not a regular file"):
            ckpt.load(saved, mmap=mmap)
    with pytest.raises(ckpt.MissingPartitionError):
        ckpt.pack(saved, io.BytesIO())


def test_partition_swapped_for_fifo_between_check_and_open_never_hangs(saved, monkeypatch):
    real = source._fd_path

    def swap_then_path(dir_fd, name, full):  # the window between the index and the open
        _fifo(full)
        return real(dir_fd, name, full)

    monkeypatch.setattr(source, "_fd_path", swap_then_path)
    with pytest.raises(ckpt.MissingPartitionError, match="not a regular file"):
        ckpt.load(saved, mmap=False)  # the reading path (the mapping path: the test above)


@pytest.mark.parametrize("swap", ["fifo", "dev-zero"])
def test_index_swapped_for_fifo_or_link_never_hangs(saved, swap):
    index = os.path.join(saved, "index.ckpt")
    _fifo(index) if swap == "fifo" else _link(index, "/dev/zero")
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load(saved)


def test_file_device_refuses_a_fifo_without_blocking(tmp_path):
    fifo = str(tmp_path / "f")
    os.mkfifo(fifo)
    with pytest.raises(InvalidURLError, match="not a regular file"):
        open_device(fifo, read_only=True)


def test_file_device_nofollow_refuses_links(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"x" * 4096)
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    with open_device(str(link), read_only=True) as dev:  # links are fine unless refused
        assert dev.read(0, 1) == b"x"
    with pytest.raises(InvalidURLError, match="symbolic link"):
        open_device(str(link), read_only=True, nofollow=True)
