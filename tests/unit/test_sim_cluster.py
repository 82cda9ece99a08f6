"""serving.sim's cluster: the snapshot it hands the policies is serving.policy's own, its
incremental indexes decide as Snapshot.of over every server would, and a decision's cost
does not grow with servers unrelated to it."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

import serving.policy as policy_mod
from serving.policy import Snapshot
from serving.sim import Setup, Simulator, synthetic
from serving.sim.cluster import Cluster, Instance
from serving.sim.setup import SIM_POLICIES, make_policy
from serving.sim.timing import GPUS, Hardware, make_zoo


class _Checked(Simulator):
    """A simulator that also asks a copy of its policy on Snapshot.of(every view)."""

    checked = 0

    def _scale_up(self, dep):
        now, c = self.now, self.cluster
        lazy = c.snapshot(now)
        full = Snapshot.of([c.view(i, now) for i in range(len(c.slots))],
                           [lazy.models[n] for n in lazy.models])
        saved = copy.deepcopy(self.policy)  # Random's generator, before any draw
        want = copy.deepcopy(saved).place(dep.model.name, full)
        got = self.policy.place(dep.model.name, lazy)
        assert (got.server, got.candidates, got.migration) == (
            want.server, want.candidates, want.migration)
        assert tuple(c.snapshot(now).free) == full.free
        assert tuple(c.snapshot(now).reclaimable) == full.reclaimable
        self.policy = saved  # the run decides with the same draw, as a plain run would
        type(self).checked += 1
        return super()._scale_up(dep)


@pytest.mark.parametrize("name", SIM_POLICIES)
def test_incremental_snapshot_decides_as_snapshot_of(name):
    setup = Setup(servers=3, gpus_per_server=2, models=10, dram_gb=40, ssd_gb=60,
                  keep_alive=5.0, max_instances=2)
    w = synthetic(600, rps=3.0, cv=3.0, models=10, seed=1)
    _Checked.checked = 0
    _Checked(setup, name).run(w)
    assert _Checked.checked > 50


def test_the_policies_are_serving_policy_objects(monkeypatch):
    calls = []
    real = policy_mod.Policy.place

    def spy(self, model, snapshot):
        calls.append((type(self), type(snapshot)))
        return real(self, model, snapshot)

    monkeypatch.setattr(policy_mod.Policy, "place", spy)
    for name in SIM_POLICIES:
        p, _ = make_policy(name)
        assert isinstance(p, policy_mod.Policy)
        sim = Simulator(Setup(servers=2, models=4), name)
        assert sim.policy.name == ("random" if name == "serverless" else name)
        sim.run(synthetic(50, rps=1.0, models=4, seed=0))
    assert calls and {s for _, s in calls} == {Snapshot}
    assert {p for p, _ in calls} == {policy_mod.Random, policy_mod.LeastLoaded,
                                     policy_mod.Locality, policy_mod.LocalityMigration}


def test_free_order_puts_machines_loading_last():
    zoo = make_zoo(3, ["7B"], GPUS["a40"])
    c = Cluster(Hardware(GPUS["a40"], gpus=2), servers=3, slot_gpus=1, models=zoo)
    c.reserve_io(0, 0.0, 5.0)  # machine 0 (slots 0, 1) loads until t=5
    c.reserve_io(1, 0.0, 2.0)  # machine 1 (slots 2, 3) until t=2
    snap = c.snapshot(1.0)
    assert list(snap.free) == [4, 5, 2, 3, 0, 1]
    assert [snap.free[k] for k in range(6)] == [4, 5, 2, 3, 0, 1]
    assert snap.servers[0].queue_wait == 4.0 and snap.servers[4].queue_wait == 0.0
    assert list(c.snapshot(3.0).free) == [2, 3, 4, 5, 0, 1]


def test_holders_follow_the_tiers_of_a_machine():
    zoo = make_zoo(3, ["7B"], GPUS["a40"])  # 13.5 GB each
    hw = Hardware(GPUS["a40"], gpus=2, dram_bytes=20e9, ssd_bytes=30e9)
    c = Cluster(hw, servers=2, slot_gpus=1, models=zoo)
    c.store(1, "local", "m0")
    c.store(1, "local", "m1")
    assert c.holders["m0"] == {2, 3} and c.snapshot(0.0).servers[2].holds("m1")
    c.store(1, "local", "m2")  # the SSD holds two: m0, least recently used, goes
    assert c.holders["m0"] == set() and c.holders["m2"] == {2, 3}
    c.store(1, "dram", "m1")
    assert c.source(1, "m1") == "dram" and c.source(1, "m2") == "local"
    assert c.source(0, "m1") == "registry"


def test_reclaimable_ties_keep_index_order():
    zoo = make_zoo(1, ["7B"], GPUS["a40"])
    c = Cluster(Hardware(GPUS["a40"], gpus=4), servers=1, slot_gpus=1, models=zoo)
    for s in (2, 0, 3):
        inst = Instance(zoo[0], s, 0.0, "registry")
        inst.state = "ready"
        c.occupy(inst)
    c.set_reclaimable(3, True, 1.0)
    c.set_reclaimable(2, True, 2.0)
    c.set_reclaimable(0, True, 2.0)
    assert list(c.reclaimable) == [3, 0, 2]


def test_decision_cost_does_not_grow_with_unrelated_servers():
    """The same requests on 2 machines and on 200 (the extra ones hold nothing): the
    servers a decision examines stay the same."""
    w = synthetic(300, rps=0.5, cv=2.0, models=4, seed=3)
    examined = {}
    for servers in (2, 200):
        for name in ("locality", "locality+migration"):
            sim = Simulator(Setup(servers=servers, gpus_per_server=2, models=4,
                                  ssd_copies=1), name)
            res = sim.run(w)
            examined[servers, name] = res.examined_max
    for name in ("locality", "locality+migration"):
        assert examined[200, name] <= examined[2, name] + 2, examined


def test_the_simulator_imports_without_torch():
    code = ("import sys, serving.sim, serving.sim.__main__; "
            "assert not any(m.split('.')[0] in ('torch', 'ray', 'fastapi') "
            "for m in sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
