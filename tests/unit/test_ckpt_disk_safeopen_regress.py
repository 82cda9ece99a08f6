"""Regressions: the disk tier never follows a link or blocks on a file inside its root or a
checkpoint it copies (issue H, item 3).

store.json replaced by a FIFO hung every open of the tier; replaced by a link to /dev/zero it
was read without end. A link at the state file's temporary name was written through. A
partition linked to /dev/zero was copied without end by Store.put.
"""

import os

import pytest
import torch

import ckpt
from ckpt.tiers.disk import STATE_FILE

SD = {"w": torch.arange(12, dtype=torch.float32), "b": torch.ones(3)}


def _same(tensors, sd) -> bool:
    return tensors.keys() == sd.keys() and all(torch.equal(tensors[k], sd[k]) for k in sd)


def _tier_with_m(root) -> ckpt.Store:
    store = ckpt.Store([ckpt.DiskTier(root, 1 << 20)])
    store.put("m", SD)
    return store


def _replace(path, how: str) -> None:
    os.unlink(path)
    if how == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["fifo", "link-to-dev-zero"])
def test_a_state_file_that_is_not_a_regular_file_is_rebuilt_never_waited_on(how, tmp_path):
    root = tmp_path / "ssd"
    _tier_with_m(root)
    _replace(root / STATE_FILE, how)
    store = ckpt.Store([ckpt.DiskTier(root, 1 << 20)])  # treated as absent: rebuilt
    assert store.tier("local").names() == ["m"]
    assert _same(store.load("m").tensors, SD)
    assert (root / STATE_FILE).is_file() and not (root / STATE_FILE).is_symlink()
    store.put("n", SD)
    assert ckpt.DiskTier(root, 1 << 20).names() == ["m", "n"]


@pytest.mark.timeout(20)
def test_a_link_at_the_state_files_temporary_name_is_never_written_through(tmp_path):
    root = tmp_path / "ssd"
    root.mkdir()
    victims = []
    for name in ["store.json.tmp", ".store.json.tmp"]:  # the temporary, before and after
        victim = tmp_path / f"victim-{len(victims)}"
        victim.write_text("keep me")
        os.symlink(victim, root / name)
        victims.append(victim)
    _tier_with_m(root)
    assert [v.read_text() for v in victims] == ["keep me", "keep me"]
    assert ckpt.DiskTier(root, 1 << 20).names() == ["m"]


@pytest.mark.timeout(20)
def test_a_corrupt_state_file_is_rebuilt(tmp_path):
    root = tmp_path / "ssd"
    _tier_with_m(root)
    for garbage in [b"\xff\xfe", b"[1, 2]", b'{"clock": "x", "entries": {"m": 7}}',
                    b'{"clock": -5, "entries": []}', b"[" * 100000]:
        (root / STATE_FILE).write_bytes(garbage)
        assert ckpt.DiskTier(root, 1 << 20).names() == ["m"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["fifo", "link-to-dev-zero"])
def test_copying_a_partition_that_is_not_a_regular_file_fails_typed_and_never_hangs(how,
                                                                                      tmp_path):
    src = tmp_path / "src"
    ckpt.save(SD, src)
    _replace(src / "part-00000.bin", how)
    store = ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", 1 << 30)])
    with pytest.raises(ckpt.MissingPartitionError, match="not a regular file"):
        store.put("m", src)
    assert sorted(os.listdir(tmp_path / "ssd")) == [STATE_FILE]
    assert store.tier("local").used == 0


@pytest.mark.timeout(20)
def test_copying_an_index_that_is_a_link_fails_typed(tmp_path):
    src = tmp_path / "src"
    ckpt.save(SD, src)
    _replace(src / "index.ckpt", "link-to-dev-zero")
    store = ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", 1 << 30)])
    with pytest.raises(ckpt.CheckpointError):
        store.put("m", src)
    assert sorted(os.listdir(tmp_path / "ssd")) == [STATE_FILE]
