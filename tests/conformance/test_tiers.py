"""Every shipped tier passes TierConformance, and so does a tier defined here: adding a tier
is one Tier subclass plus one conformance class, and ckpt.Store uses it unchanged."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import ckpt
from ckpt.errors import NotACheckpointError
from ckpt.tiers.conformance import TierConformance
from ckpt.tiers.disk import check_name
from ckpt.tiers.tier import Held, Tier, TierCapabilities, TierReader


class TestDramTier(TierConformance):
    def make_tier(self, tmp_path, capacity):
        return ckpt.DramTier(capacity)


class TestDiskTier(TierConformance):
    def make_tier(self, tmp_path, capacity):
        return ckpt.DiskTier(tmp_path / "disk", capacity)

    def reopen(self, tier, tmp_path):
        return ckpt.DiskTier(tier.root, tier.capacity)


class TestRemoteTier(TierConformance):
    def make_tier(self, tmp_path, capacity):
        return ckpt.RemoteTier(f"file://{tmp_path}/remote")

    def reopen(self, tier, tmp_path):
        return ckpt.RemoteTier(tier.url)


class PeerTier(Tier):
    """A toy: checkpoints held by a peer in memory (as a peer server's DRAM would be for live
    migration); a cache without a capacity. Nothing but the contract."""

    def __init__(self, name: str = "peer"):
        self.name = name
        self.capabilities = TierCapabilities(persistent=False, evictable=True,
                                             holds_only_copy=False)
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()

    def holds(self, key):
        with self._lock:
            return check_name(key) in self._held

    def index(self, key):
        return self._get(key).index

    def names(self):
        with self._lock:
            return list(self._held)

    def estimate(self, nbytes, ntensors, device="cpu"):
        return 1e-3 + nbytes / 10e9  # a 100 Gbit/s link

    @contextmanager
    def open(self, key):
        held = self._get(key)
        yield _Given(Held(held.index, held.index_bytes, held.buf.copy(), held.buf.nbytes))

    def keep(self, key, held, *, droppable):
        if held.buf.nbytes > 1 << 30:
            return None
        with self._lock:
            self._held[check_name(key)] = held
        return held.buf

    def put(self, key, src, *, nbytes=0, droppable=None):
        raise ValueError("a peer's memory is filled by loads")

    def remove(self, key, *, force=False):
        with self._lock:
            self._held.pop(check_name(key), None)
        return True

    def _get(self, key) -> Held:
        with self._lock:
            held = self._held.get(check_name(key))
        if held is None:
            raise NotACheckpointError(2, f"{key}: not held by peer {self.name}", key)
        return held


class _Given(TierReader):
    def __init__(self, held):
        self.held = held

    def read(self, **_):
        return self.held


class TestPeerTier(TierConformance):
    def make_tier(self, tmp_path, capacity):
        return PeerTier()

    def test_keep_never_exceeds_the_capacity(self, tmp_path):
        pytest.skip("the toy has no capacity")


def test_store_uses_a_new_tier_without_changes(tmp_path):
    """A Store over [peer, disk, remote] loads from the remote, copies into the disk and the
    peer, and then serves the peer's copy."""
    sd = {"w": torch.arange(1000, dtype=torch.float32)}
    ckpt.save(sd, tmp_path / "src")
    remote = ckpt.RemoteTier(f"file://{tmp_path}/registry")
    remote.put("m", str(tmp_path / "src"))
    store = ckpt.Store([PeerTier(), ckpt.DiskTier(tmp_path / "disk", 64 << 20), remote])
    first = store.load("m")
    assert first.tier == "remote" and sorted(first.promoted) == ["local", "peer"]
    again = store.load("m")
    assert again.tier == "peer" and torch.equal(again.tensors["w"], sd["w"])
    assert store.locate("m") == ["peer", "local", "remote"]
    assert np.isfinite(list(store.estimate_load_time("m").values())).all()


def test_remote_put_into_a_missing_directory_creates_it(tmp_path):
    """Regression: RemoteTier.put on a file:// URL whose directory did not exist yet failed
    with ENOENT on its temporary object."""
    ckpt.save({"w": torch.ones(3)}, tmp_path / "src")
    remote = ckpt.RemoteTier(f"file://{tmp_path}/not/yet/there")
    remote.put("m", str(tmp_path / "src"))
    assert remote.holds("m") and remote.names() == ["m"]
