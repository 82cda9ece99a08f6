"""Regressions: a disk tier never holds more than its capacity (issue H, item 5).

Store.put budgeted 512 bytes of index per tensor, but a tensor name may have 1 KiB: a disk
tier was filled to 112 % of its capacity. A tier now charges what a checkpoint occupies on
disk (ckpt.tiers.disk.checkpoint_bytes: the index file and the partitions, each rounded up to
BLOCK).
"""

import os

import pytest
import torch

import ckpt
from ckpt.format import BLOCK, align_up
from ckpt.tiers.disk import STATE_FILE
from ckpt.torch import store as store_module

LONG = "n" * 1000  # tensor names of about 1 KiB


def on_disk(root) -> int:
    """What the checkpoints under root occupy, as the tier defines it: every file but the
    tier's state file, rounded up to BLOCK."""
    total = 0
    for parent, _, files in os.walk(root):
        for name in files:
            if parent == str(root) and name == STATE_FILE:
                continue
            total += align_up(os.lstat(os.path.join(parent, name)).st_size, BLOCK)
    return total


def _model(i: int, n: int) -> dict[str, torch.Tensor]:
    return {f"{LONG}.{i}.{j}": torch.full((3,), float(j)) for j in range(n)}


def test_long_tensor_names_never_overfill_a_small_disk_tier(tmp_path):
    capacity = 400 << 10
    fast = ckpt.DiskTier(tmp_path / "fast", capacity, name="fast")
    slow = ckpt.DiskTier(tmp_path / "slow", 1 << 30, name="slow")
    store = ckpt.Store([fast, slow])
    charged = []
    for i, n in enumerate([40, 23, 57, 31, 49, 12, 60, 35]):
        store.put(f"m{i}", _model(i, n), tier="slow")  # a slower copy: fast may evict it
        store.put(f"m{i}", _model(i, n), tier="fast")
        assert on_disk(fast.root) <= capacity, f"after m{i}: {on_disk(fast.root)} > {capacity}"
        assert fast.names()[-1] == f"m{i}"
        charged.append((fast.used, on_disk(fast.root)))
    assert all(used == occupied for used, occupied in charged), charged
    again = ckpt.DiskTier(tmp_path / "fast", capacity)
    assert again.used == on_disk(fast.root) <= capacity


def test_a_put_larger_than_planned_is_charged_what_was_written_or_taken_back(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(store_module, "_planned_bytes", lambda state: BLOCK)  # a bad plan
    capacity = 64 << 10
    store = ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", capacity)])
    store.put("small", {"w": torch.ones(3)})
    assert store.tier("local").used == on_disk(tmp_path / "ssd") == 2 * BLOCK
    with pytest.raises(ckpt.CheckpointError, match="do not fit"):
        store.put("big", _model(0, 40))
    assert store.tier("local").names() == ["small"]
    assert store.tier("local").used == on_disk(tmp_path / "ssd") == 2 * BLOCK
    assert sorted(os.listdir(tmp_path / "ssd")) == ["small", STATE_FILE]


def test_the_plan_of_a_state_dict_is_what_save_writes(tmp_path):
    sds = [{}, {"z": torch.zeros(0)}, _model(1, 7),
           {"a": torch.ones(1000, dtype=torch.bfloat16), "b": torch.ones(3, dtype=torch.int8),
            "é" * 300: torch.ones(2, 2, dtype=torch.complex64)}]
    sds[-1]["tied"] = sds[-1]["a"]
    for i, sd in enumerate(sds):
        ckpt.save(sd, tmp_path / f"m{i}")
        written = ckpt.tiers.disk.disk_bytes(str(tmp_path / f"m{i}"))
        assert written == on_disk(tmp_path / f"m{i}")
        assert written <= store_module._planned_bytes(sd) <= written + BLOCK


@pytest.mark.parametrize("how", ["promotion", "download"])
def test_copies_made_by_loads_are_charged_what_they_occupy(how, tmp_path):
    sd = _model(2, 30)
    fast = ckpt.DiskTier(tmp_path / "fast", 1 << 20, name="fast")
    if how == "promotion":
        slow = ckpt.DiskTier(tmp_path / "slow", 1 << 30, name="slow")
    else:
        slow = ckpt.RemoteTier(f"file://{tmp_path}/remote")
        (tmp_path / "remote").mkdir()
        ckpt.save(sd, tmp_path / "src")
        slow.put("m", tmp_path / "src")
    store = ckpt.Store([fast, slow])
    if how == "promotion":
        store.put("m", sd, tier="slow")
    got = store.load("m")
    assert got.promoted == ["fast"]
    assert fast.used == on_disk(fast.root) > 0
