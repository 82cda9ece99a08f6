"""Regressions of the host pool and the DRAM tier's accounting."""

import gc

from ckpt.pool import HostPool
from ckpt.tiers.dram import held_bytes


def test_pool_finalizer_inside_a_locked_section_does_not_deadlock():
    """Regression: a collection inside the pool's locked section ran a finalizer that waited
    for the same lock, and the thread hung."""
    pool = HostPool(64 << 20)
    lent = pool.acquire(1 << 20)
    cycle = [lent]
    cycle.append(cycle)  # only the cycle keeps the array alive
    del lent, cycle
    with pool._lock:  # what an automatic collection inside acquire() would see
        gc.collect()
    stats = pool.stats
    assert stats.in_use == 0 and stats.allocated >= 1 << 20
    again = pool.acquire(1 << 20)  # the returned slab is reused, not a new one
    assert pool.stats.hits == 1
    del again


def test_a_pool_slab_is_charged_at_its_real_size():
    """Regression: the DRAM tier counted the checkpoint's bytes, not the larger slab held."""
    pool = HostPool(64 << 20)
    buf = pool.acquire(4_198_400)
    assert held_bytes(buf) >= 4_198_400 and held_bytes(buf) % (2 << 20) == 0
    assert held_bytes(buf[:10]) == held_bytes(buf)


def test_a_conjugate_view_is_not_saved_as_an_alias(tmp_path):
    """Regression: x.conj() shares x's memory, was stored as an alias of x, loaded wrong."""
    import torch

    import ckpt

    a = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    ckpt.save({"a": a, "ac": a.conj(), "an": a._neg_view()}, tmp_path / "c.ckpt")
    got = ckpt.load(tmp_path / "c.ckpt")
    assert torch.equal(got["ac"], a.conj().resolve_conj())
    assert torch.equal(got["an"], -a)
    assert torch.equal(got["a"], a)


def test_a_corrupt_config_json_is_a_convert_error(tmp_path):
    import pytest
    import torch
    from safetensors.torch import save_file

    from ckpt.convert import convert
    from ckpt.errors import CheckpointError

    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": torch.zeros(2)}, str(model / "model.safetensors"))
    (model / "config.json").write_bytes(b"{\\xff not json")
    with pytest.raises(CheckpointError, match="config.json"):
        convert(str(model), str(tmp_path / "out.ckpt"))


def _state(value: float):
    import torch

    return {"w": torch.full((4,), value)}


def test_a_model_loaded_by_path_and_saved_again_is_not_served_stale(tmp_path):
    """Regression: path keys were cached forever; a re-saved checkpoint loaded old values."""
    import torch

    import ckpt
    from ckpt import DramTier, Store

    store = Store([DramTier(64 << 20)])
    path = tmp_path / "m.ckpt"
    ckpt.save(_state(1.0), path)
    assert torch.equal(store.load(path).tensors["w"], torch.full((4,), 1.0))
    ckpt.save(_state(2.0), path)
    again = store.load(path)
    assert torch.equal(again.tensors["w"], torch.full((4,), 2.0))


def test_put_of_a_new_version_drops_older_copies_in_faster_tiers(tmp_path):
    """Regression: v2 put into a slower tier left v1 in the faster one, which kept serving it."""
    import torch

    import ckpt
    from ckpt import DiskTier, DramTier, Store

    fast = DiskTier(tmp_path / "fast", 64 << 20, name="fast")
    slow = DiskTier(tmp_path / "slow", 64 << 20, name="slow")
    store = Store([DramTier(64 << 20), fast, slow])
    ckpt.save(_state(1.0), tmp_path / "v1.ckpt")
    ckpt.save(_state(2.0), tmp_path / "v2.ckpt")
    store.put("m", tmp_path / "v1.ckpt", tier="fast")
    assert torch.equal(store.load("m").tensors["w"], torch.full((4,), 1.0))
    store.put("m", tmp_path / "v2.ckpt", tier="slow")
    assert torch.equal(store.load("m").tensors["w"], torch.full((4,), 2.0))


def test_eviction_skips_a_name_whose_put_or_load_is_under_way(tmp_path):
    """Regression: an eviction could remove a copy that a concurrent put was publishing."""
    import ckpt
    from ckpt import DiskTier, Store

    fast = DiskTier(tmp_path / "fast", 64 << 20, name="fast")
    slow = DiskTier(tmp_path / "slow", 64 << 20, name="slow")
    store = Store([fast, slow])
    ckpt.save(_state(1.0), tmp_path / "v.ckpt")
    store.put("m", tmp_path / "v.ckpt", tier="slow")
    store.put("m", tmp_path / "v.ckpt", tier="fast")
    droppable = store._droppable(store.tier("fast"))
    assert droppable("m")  # the slow tier holds it too
    with store._flight("m"):
        assert not droppable("m")
