"""TierConformance: the one test suite every ckpt.tiers.tier.Tier must pass (shipped, like
bas.testing.DeviceConformance).

Subclass it in a test module and override make_tier; a tier that outlives its object
(capabilities.persistent) also overrides reopen. A tier that takes no put (a cache) is filled
through keep, an origin through put: the suite reads the capabilities and checks what they
promise. Torch-free: checkpoints are written from numpy arrays with ckpt.Writer.

    class TestMyTier(TierConformance):
        def make_tier(self, tmp_path, capacity):
            return MyTier(tmp_path / "t", capacity)
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ckpt.errors import CheckpointError, ModelNameError, NotACheckpointError
from ckpt.source import open_source
from ckpt.tiers.disk import disk_bytes, index_file
from ckpt.tiers.tier import Held, Tier
from ckpt.writer import Writer

__all__ = ["TierConformance"]


def _anything(_key: str) -> bool:
    return True


class TierConformance:
    """Behaviour every tier must show. Override make_tier (and reopen when persistent)."""

    capacity: int = 64 << 20

    def make_tier(self, tmp_path, capacity: int) -> Tier:
        raise NotImplementedError

    def reopen(self, tier: Tier, tmp_path) -> Tier:
        """A new object over a persistent tier's storage (persistent tiers override)."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------

    def checkpoint(self, tmp_path, name: str, value: float, n: int = 1000) -> str:
        path = os.path.join(tmp_path, f"src-{name}-{value}.ckpt")
        data = np.full(n, value, dtype=np.float32)
        with Writer(path, metadata={"name": name}) as w:
            w.add("w", "float32", data.shape, data)
        return path

    def held(self, path: str) -> Held:
        with open_source(path) as source:
            from ckpt.host import read_host

            buf = read_host(source)
            return Held(source.index, index_file(path), buf, buf.nbytes)

    def fill(self, tier: Tier, tmp_path, name: str, value: float = 1.0) -> str:
        """Store a checkpoint of `value`s under name the way the tier takes one."""
        path = self.checkpoint(tmp_path, name, value)
        if tier.persistent:
            tier.put(name, path, nbytes=0, droppable=_anything)
        else:
            assert tier.keep(name, self.held(path), droppable=_anything) is not None
        return path

    @staticmethod
    def values(held: Held) -> np.ndarray:
        entry = held.index.tensors[0]
        return held.buf[entry.offset:entry.offset + entry.length].view(np.float32)

    # -- the contract --------------------------------------------------------------------

    def test_is_a_tier_with_capabilities(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        assert isinstance(tier, Tier) and isinstance(tier.name, str) and tier.name
        caps = tier.capabilities
        assert (tier.persistent, tier.evictable, tier.holds_only_copy) == (
            caps.persistent, caps.evictable, caps.holds_only_copy)
        with pytest.raises(AttributeError):
            caps.persistent = not caps.persistent  # fixed when the tier is made

    def test_absent_key_is_not_held_and_not_a_checkpoint(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        assert not tier.holds("nothing") and "nothing" not in tier.names()
        with pytest.raises(NotACheckpointError):
            tier.index("nothing")
        with pytest.raises(NotACheckpointError), tier.open("nothing"):
            pass

    @pytest.mark.parametrize("bad", ["", "../up", "a/b/c", "x\x00y", "store.json"])
    def test_bad_names_are_refused(self, tmp_path, bad):
        tier = self.make_tier(tmp_path, self.capacity)
        with pytest.raises(ModelNameError):
            tier.holds(bad)
        with pytest.raises(ModelNameError):
            tier.index(bad)

    def test_what_is_stored_reads_back_whole(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        path = self.fill(tier, tmp_path, "m", 3.0)
        assert tier.holds("m") and "m" in tier.names()
        assert tier.index("m") == self.held(path).index
        with tier.open("m") as reader:
            held = reader.read(verify=True)
        assert held.index == tier.index("m") and held.index_bytes == index_file(path)
        assert np.all(self.values(held) == 3.0)
        assert held.index.metadata == {"name": "m"}

    def test_a_new_version_replaces_the_old(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        self.fill(tier, tmp_path, "m", 1.0)
        self.fill(tier, tmp_path, "m", 2.0)
        with tier.open("m") as reader:
            assert np.all(self.values(reader.read()) == 2.0)
        assert tier.names().count("m") == 1

    def test_remove_drops_the_copy(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        self.fill(tier, tmp_path, "m")
        assert tier.remove("m") is True and not tier.holds("m")
        assert tier.remove("m") is True  # not here: gone already
        with pytest.raises(NotACheckpointError):
            tier.index("m")

    def test_estimate_grows_with_size(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        small, big = tier.estimate(1 << 20, 10), tier.estimate(1 << 34, 10)
        assert 0 <= small <= big and np.isfinite(big)

    def test_sink_streams_a_whole_copy_or_is_absent(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        sink = tier.sink("m", droppable=_anything)
        if sink is None:
            return
        held = self.held(self.checkpoint(tmp_path, "m", 5.0))
        sink.begin(held.index_bytes, held.index)
        for p, part in enumerate(held.index.partitions):
            start = sum(q.size for q in held.index.partitions[:p])
            sink.chunk(p, 0, held.buf[start:start + part.size])
        assert sink.commit() is True and tier.holds("m")
        with tier.open("m") as reader:
            assert np.all(self.values(reader.read()) == 5.0)

    def test_an_aborted_sink_leaves_the_previous_copy(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        sink = tier.sink("m", droppable=_anything)
        if sink is None:
            return
        self.fill(tier, tmp_path, "m", 1.0)
        held = self.held(self.checkpoint(tmp_path, "m", 9.0))
        sink = tier.sink("m", droppable=_anything)
        sink.begin(held.index_bytes, held.index)
        sink.abort()
        with tier.open("m") as reader:
            assert np.all(self.values(reader.read()) == 1.0)

    # -- capabilities keep their promises ------------------------------------------------

    def test_a_cache_takes_no_put_and_fills_by_keep(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        if tier.persistent:
            return
        with pytest.raises(ValueError):
            tier.put("m", self.checkpoint(tmp_path, "m", 1.0), nbytes=0, droppable=_anything)
        held = self.held(self.checkpoint(tmp_path, "m", 1.0))
        assert tier.keep("m", held, droppable=_anything) is not None

    def test_keep_never_exceeds_the_capacity(self, tmp_path):
        path = self.checkpoint(tmp_path, "m", 1.0)
        tier = self.make_tier(tmp_path, 1024)  # smaller than any copy of it
        if tier.keep("m", self.held(path), droppable=_anything) is not None:
            pytest.skip("this tier keeps no capacity")
        assert not tier.holds("m")

    def test_a_persistent_tier_outlives_its_object(self, tmp_path):
        tier = self.make_tier(tmp_path, self.capacity)
        if not tier.persistent:
            return
        self.fill(tier, tmp_path, "m", 4.0)
        again = self.reopen(tier, tmp_path)
        assert again.holds("m")
        with again.open("m") as reader:
            assert np.all(self.values(reader.read(verify=True)) == 4.0)

    def test_only_copies_are_kept_when_nothing_may_be_dropped(self, tmp_path):
        """A tier that may hold the only copy evicts only what droppable allows."""
        tier = self.make_tier(tmp_path, self.capacity)
        if not (tier.holds_only_copy and tier.evictable):
            return
        size = disk_bytes(self.fill(tier, tmp_path, "a"))
        small = self.make_tier(tmp_path / "small", size * 3 // 2)  # room for one copy
        self.fill(small, tmp_path, "a")
        path = self.checkpoint(tmp_path, "b", 2.0)
        with pytest.raises(CheckpointError):
            small.put("b", path, nbytes=0, droppable=lambda _: False)
        assert small.holds("a") and not small.holds("b")
        small.put("b", path, nbytes=0, droppable=_anything)
        assert small.holds("b") and not small.holds("a")
