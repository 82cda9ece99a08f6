"""Regression: a local-disk error while copying a download fails the copy, not the load."""

import errno
import os

import pytest
import torch

import ckpt
from ckpt import atomic, unpack
from ckpt.errors import CheckpointIOError
from ckpt.tiers.remote import SUFFIX

SD = {f"w{i}": torch.randn(64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)}


def _enospc(*args, **kwargs):
    raise CheckpointIOError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["begin", "chunk", "commit"])
def test_local_disk_full_during_a_download_still_loads_and_keeps_no_partial(tmp_path,
                                                                             monkeypatch, where):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    ckpt.save(SD, tmp_path / "src", chunk_size=16384)
    with open(bucket / f"m{SUFFIX}", "wb") as f:
        ckpt.pack(tmp_path / "src", f)
    store = ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", 16 << 20),
                        ckpt.RemoteTier(f"file://{bucket}")])
    if where == "begin":
        monkeypatch.setattr(atomic, "temp_dir", _enospc)
    elif where == "chunk":
        monkeypatch.setattr(unpack, "_pwrite_all", _enospc)
    else:
        monkeypatch.setattr(atomic, "commit_dir", _enospc)
    got = store.load("m")
    assert got.tier == "remote" and got.promoted == []
    assert got.tensors.keys() == SD.keys() and all(torch.equal(got.tensors[k], SD[k]) for k in SD)
    assert sorted(os.listdir(tmp_path / "ssd")) == ["store.json"], "partial copy left behind"
    assert store.tier("local").used == 0 and store.locate("m") == ["remote"]
