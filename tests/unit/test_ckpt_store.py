"""ckpt.Store tiers on small checkpoints: DRAM hits, pins, LRU, capacity, disk state, estimates."""

import gc
import json
import os

import pytest
import torch

import ckpt
import ckpt.tiers.disk
import ckpt.tiers.tier
from ckpt.tiers.disk import STATE_FILE


def _sd(seed: int, n: int = 4, side: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"layer{i}.weight": torch.randn(side, side, generator=g) for i in range(n)} | {
        "norm": torch.ones(side, dtype=torch.bfloat16)}


def _size(path) -> int:
    return ckpt.read_index(path).total_bytes


@pytest.fixture
def models(tmp_path):
    """Three saved checkpoints a, b, c of equal size, outside any tier."""
    out = {}
    for i, name in enumerate("abc"):
        sd = _sd(i)
        ckpt.save(sd, tmp_path / f"{name}.ckpt")
        out[name] = (sd, tmp_path / f"{name}.ckpt")
    return out


def _same(tensors, sd) -> bool:
    return tensors.keys() == sd.keys() and all(torch.equal(tensors[k], sd[k]) for k in sd)


def test_dram_hit_returns_views_of_the_cached_buffer_and_reads_no_bytes(models, tmp_path):
    store = ckpt.Store([ckpt.DramTier(1 << 20), ckpt.DiskTier(tmp_path / "ssd", 1 << 20)])
    sd, path = models["a"]
    store.put("a", path)
    first = store.load("a")
    assert first.tier == "local" and first.stats.bytes_read == _size(path)
    assert first.promoted == ["dram"] and _same(first.tensors, sd)
    hit = store.load("a")
    assert hit.tier == "dram" and hit.stats.bytes_read == 0 and hit.stats.chunks == 0
    assert _same(hit.tensors, sd)
    for name in sd:  # the very same memory: no copy was made
        assert hit.tensors[name].data_ptr() == first.tensors[name].data_ptr()


def test_hit_cost_does_not_depend_on_bytes(tmp_path):
    """A hit slices views (O(tensors)): it never touches the data, so reading is impossible."""
    tier = ckpt.DramTier(64 << 20)
    sd = {"big": torch.zeros(4 << 20, dtype=torch.uint8), "small": torch.ones(3)}
    ckpt.save(sd, tmp_path / "m")
    with ckpt.open_source(tmp_path / "m") as source:
        buf = ckpt.torch.loader.read_host(source)
        index = source.index
        index_bytes = ckpt.tiers.disk.index_file(source.name)
    held = tier.keep("m", ckpt.tiers.tier.Held(index, index_bytes, buf), droppable=lambda _: True)
    buf[:] = 7  # the cache holds buf itself: a hit sees this write, proof that it copies nothing
    with tier.open("m") as reader:
        hit = reader.read()
    assert hit.bytes_read == 0 and int(hit.buf[123]) == 7
    assert hit.buf.ctypes.data == held.ctypes.data


def test_dram_lru_evicts_the_least_recently_used(models):
    size = _size(models["a"][1])
    store = ckpt.Store([ckpt.DramTier(2 * size)])
    for name in "ab":
        store.load(models[name][1])
    gc.collect()
    store.load(models["a"][1])  # a is now more recent than b
    store.load(models["c"][1])
    keys = store.tiers[0].names()
    keys = [k.split("@")[0] for k in keys]  # path keys carry the index identity after "@"
    assert len(keys) == 2 and keys[-1].endswith("c.ckpt") and keys[0].endswith("a.ckpt")
    assert store.tiers[0].used == 2 * size


def test_pinned_entries_are_not_evicted(models):
    size = _size(models["a"][1])
    store = ckpt.Store([ckpt.DramTier(2 * size)])
    a = store.load(models["a"][1])
    b = store.load(models["b"][1])
    assert store.tiers[0].pins(a.key) == 1 and store.tiers[0].pins(b.key) == 1
    c = store.load(models["c"][1])  # no room without evicting a pinned entry: served uncached
    assert c.promoted == [] and not store.tiers[0].holds(c.key)
    assert store.tiers[0].holds(a.key) and store.tiers[0].holds(b.key)
    assert store.tiers[0].used == 2 * size and _same(c.tensors, models["c"][0])
    assert not store.tiers[0].remove(a.key)  # pinned
    del a
    gc.collect()
    assert store.tiers[0].pins(store.tiers[0].names()[0]) == 0
    c = store.load(models["c"][1])
    assert c.promoted == ["dram"] and store.tiers[0].used == 2 * size
    assert _same(b.tensors, models["b"][0])  # b's tensors survived all of it


def test_a_pin_lasts_while_any_tensor_of_the_hit_lives(models):
    store = ckpt.Store([ckpt.DramTier(1 << 20)])
    got = store.load(models["a"][1])
    one = got.tensors["norm"]
    del got
    gc.collect()
    key = store.tiers[0].names()[0]
    assert store.tiers[0].pins(key) == 1
    del one
    gc.collect()
    assert store.tiers[0].pins(key) == 0


def test_discarding_a_pinned_entry_keeps_its_bytes_counted_until_released(models, tmp_path):
    size = _size(models["a"][1])
    store = ckpt.Store([ckpt.DramTier(4 * size), ckpt.DiskTier(tmp_path / "ssd", 1 << 20)])
    store.put("m", models["a"][1])
    old = store.load("m")
    store.put("m", models["b"][1])  # a new version: the cached one is discarded
    assert not store.tiers[0].holds("m") and store.tiers[0].used == size
    new = store.load("m")
    assert _same(new.tensors, models["b"][0]) and _same(old.tensors, models["a"][0])
    assert store.tiers[0].used == 2 * size
    del old
    gc.collect()
    assert store.tiers[0].used == size


def test_disk_tier_capacity_lru_and_state_survive_reopening(models, tmp_path):
    root = tmp_path / "ssd"
    remote = ckpt.DiskTier(tmp_path / "slow", 1 << 30, name="slow")
    sizes = {n: ckpt.tiers.disk.disk_bytes(str(models[n][1])) for n in "abc"}
    room = max(sizes.values()) * 2
    store = ckpt.Store([ckpt.DiskTier(root, room), remote])
    for name in "abc":
        store.put(name, models[name][1], tier="slow")
    store.load("a")
    store.load("b")  # both promoted from slow to local
    assert store.tier("local").names() == ["a", "b"]
    assert store.tier("local").used == sizes["a"] + sizes["b"]
    store.load("a")
    store.load("c")  # evicts b, the least recently used (slow holds it)
    assert store.tier("local").names() == ["a", "c"]
    state = json.loads((root / STATE_FILE).read_text())
    assert set(state["entries"]) == {"a", "c"}
    again = ckpt.DiskTier(root, room)
    assert again.names() == ["a", "c"] and again.used == sizes["a"] + sizes["c"]


def test_only_copies_are_never_evicted(models, tmp_path):
    sizes = [ckpt.tiers.disk.disk_bytes(str(models[n][1])) for n in "ab"]
    store = ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", sum(sizes) + 100)])
    store.put("a", models["a"][1])
    store.put("b", models["b"][1])
    with pytest.raises(ckpt.CheckpointError, match="do not fit"):
        store.put("c", models["c"][1])
    assert store.tier("local").names() == ["a", "b"] and store.tier("local").used == sum(sizes)
    assert not os.path.exists(tmp_path / "ssd" / "c")


def test_reopening_removes_crashed_copies_and_adopts_unknown_checkpoints(models, tmp_path):
    root = tmp_path / "ssd"
    root.mkdir()
    ckpt.save(models["a"][0], root / "a")
    partial = root / "b.tmp-0badc0de"  # what a download killed half-way leaves
    partial.mkdir()
    (partial / "part-00000.bin").write_bytes(b"\0" * 4096)
    tier = ckpt.DiskTier(root, 1 << 20)
    assert tier.names() == ["a"] and not partial.exists()
    assert sorted(os.listdir(root)) == ["a", STATE_FILE]


def test_estimates_order_dram_local_remote(models, tmp_path):
    sd, path = models["a"]
    store = ckpt.Store([ckpt.DramTier(1 << 20), ckpt.DiskTier(tmp_path / "ssd", 1 << 20),
                        ckpt.RemoteTier(f"file://{tmp_path}/remote")])
    store.put("a", path)
    est = store.estimate_load_time("a")
    assert list(est) == ["dram", "local", "remote"]
    assert est["dram"] < est["local"] < est["remote"]
    big = store.estimate_load_time("x", nbytes=2 << 30, ntensors=270)
    assert big["dram"] < big["local"] < big["remote"]
    assert store.locate("a") == ["local"]
    with pytest.raises(ckpt.NotACheckpointError):
        store.estimate_load_time("missing")


def test_estimates_use_the_tier_profile(tmp_path):
    from bas.braid.profile import Profile

    slow = Profile.from_preset("sata-ssd")
    fast = Profile.from_preset("nvme")
    a = ckpt.DiskTier(tmp_path / "a", 1 << 20, profile=fast).estimate(1 << 30, 10)
    b = ckpt.DiskTier(tmp_path / "b", 1 << 20, profile=slow).estimate(1 << 30, 10)
    assert a < b
    assert b == pytest.approx(slow.latency + slow.seconds(
        "read", 1 << 30, "sequential", slow.best_threads("read")))


@pytest.mark.parametrize("bad", ["", "a--b", "../x", "a/b/c", "x.tmp-1", ".hidden", "a b"])
def test_bad_names_are_refused(bad, tmp_path):
    store = ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", 1 << 20)])
    with pytest.raises(ValueError):
        store.put(bad, {"w": torch.ones(1)})


def test_put_a_state_dict_and_org_names(tmp_path):
    store = ckpt.Store([ckpt.DramTier(1 << 20), ckpt.DiskTier(tmp_path / "ssd", 1 << 20)])
    sd = _sd(5)
    assert store.put("org/model", sd) == "local"
    assert (tmp_path / "ssd" / "org--model" / "index.ckpt").exists()
    assert _same(store.load("org/model").tensors, sd)
    with pytest.raises(ValueError, match="reserved"):
        store.put("url-abc", sd)


def test_tier_order_is_checked(tmp_path):
    with pytest.raises(ValueError, match="fastest first"):
        ckpt.Store([ckpt.DiskTier(tmp_path, 1), ckpt.DramTier(1)])
    with pytest.raises(ValueError, match="fastest first"):
        ckpt.Store([ckpt.RemoteTier(str(tmp_path / "r")), ckpt.DiskTier(tmp_path / "d", 1)])
    with pytest.raises(TypeError, match="ckpt.tiers.tier.Tier"):
        ckpt.Store([object()])
