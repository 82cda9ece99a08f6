"""Regressions: disk-tier eviction racing a publish, and loads racing a save."""

import os
import shutil

import pytest
import torch

import ckpt
from ckpt import atomic, source
from ckpt.torch.loader import load_from

OPTIONS = {"chunk_size": 4096, "partition_size": 8192, "alignment": 256}
OLD = {"a": torch.arange(3000, dtype=torch.int32), "b": torch.ones(5)}
NEW = {"a": torch.full((3000,), 7, dtype=torch.int32), "b": torch.zeros(5)}


def _same(got, sd) -> bool:
    return got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_eviction_does_not_delete_a_copy_published_after_it(tmp_path, monkeypatch):
    disk = ckpt.DiskTier(tmp_path / "ssd", 16 << 20)
    ckpt.save(OLD, disk.path("m"), **OPTIONS)
    disk.adopt("m")
    real_rmtree = shutil.rmtree
    published = []

    def late_rmtree(path, *args, **kwargs):  # a put of "m" commits before the delete runs
        if not published:
            published.append(path)
            ckpt.save(NEW, disk.path("m"), **OPTIONS)
            disk.adopt("m")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", late_rmtree)
    disk.remove("m")
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert published, "remove deleted nothing"
    assert disk.holds("m")
    with disk.open("m") as src:
        assert _same(ckpt.load(src.source.name, threads=1), NEW)
    assert sorted(os.listdir(disk.root)) == ["m", "store.json"]


def test_a_removal_that_crashed_mid_delete_is_cleaned_not_resurrected(tmp_path):
    root = tmp_path / "ssd"
    disk = ckpt.DiskTier(root, 16 << 20)
    ckpt.save(OLD, disk.path("m"), **OPTIONS)
    disk.adopt("m")
    os.rename(disk.path("m"), f"{disk.path('m')}.del-0badc0de")  # died after the rename
    again = ckpt.DiskTier(root, 16 << 20)
    assert again.names() == [] and sorted(os.listdir(root)) == ["store.json"]


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "rename-aside"])
@pytest.mark.parametrize("hook", ["_fd_path", "_open_partition"])
def test_load_racing_a_save_never_mixes_old_index_with_new_partitions(tmp_path, monkeypatch,
                                                                      exchange, hook):
    path = str(tmp_path / "m")
    ckpt.save(OLD, path, **OPTIONS)
    assert len(ckpt.read_index(path).partitions) > 1
    if not exchange:
        monkeypatch.setattr(atomic, "_rename_exchange", lambda a, b, ns=None: False)
    real = getattr(source, hook)
    calls = []

    def save_in_between(*args, **kwargs):  # after the index (and maybe part 0) is open
        calls.append(1)
        if len(calls) == (1 if hook == "_fd_path" else 2):
            ckpt.save(NEW, path, **OPTIONS)
        return real(*args, **kwargs)

    monkeypatch.setattr(source, hook, save_in_between)
    got = ckpt.load(path, threads=1)  # no ChecksumError, no size error, no mix
    assert _same(got, OLD) or _same(got, NEW), {k: v[:4] for k, v in got.items()}


def test_a_held_directory_is_read_whole_although_a_save_replaced_it(tmp_path, monkeypatch):
    path = str(tmp_path / "m")
    ckpt.save(OLD, path, **OPTIONS)
    real = source._open_at

    def save_after_the_directory_is_open(directory, dir_fd, direct):
        monkeypatch.setattr(atomic, "_remove_tree", lambda *_: None)  # old files stay readable
        ckpt.save(NEW, path, **OPTIONS)
        return real(directory, dir_fd, direct)

    monkeypatch.setattr(source, "_open_at", save_after_the_directory_is_open)
    with source.open_source(path) as src:
        monkeypatch.undo()
        assert _same(load_from(src, threads=1), OLD)


def test_resolve_naming_a_tmp_renamed_just_after_is_retried(tmp_path, monkeypatch):
    path = str(tmp_path / "m")
    ckpt.save(OLD, path, **OPTIONS)
    real = atomic.resolve
    calls = []

    def stale(p, is_complete):  # the torn-swap answer a writer's rename makes stale
        calls.append(p)
        return f"{p}.tmp-deadbeef" if len(calls) == 1 else real(p, is_complete)

    monkeypatch.setattr(atomic, "resolve", stale)
    assert _same(ckpt.load(path, threads=1), OLD)
