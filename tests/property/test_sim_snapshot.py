"""serving.sim on random small clusters and streams: every decision made on its incremental
snapshot equals the decision on Snapshot.of over every server view, and the run's books
balance (every request served once, latencies ordered, counts consistent)."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from serving.policy import Snapshot
from serving.sim import Setup, Simulator, synthetic
from serving.sim.setup import SIM_POLICIES


class _Twin(Simulator):
    """Checks each decision against Snapshot.of over every view (a copy of the policy
    draws the same random numbers)."""

    def _scale_up(self, dep):
        c, now = self.cluster, self.now
        lazy = c.snapshot(now)
        full = Snapshot.of([c.view(i, now) for i in range(len(c.slots))],
                           [lazy.models[n] for n in lazy.models])
        saved = copy.deepcopy(self.policy)  # Random's generator, before any draw
        want = copy.deepcopy(saved).place(dep.model.name, full)
        got = self.policy.place(dep.model.name, lazy)
        assert (got.server, got.candidates, got.migration, got.examined) == (
            want.server, want.candidates, want.migration, want.examined)
        self.policy = saved  # the run decides with the same draw, as a plain run would
        return super()._scale_up(dep)


@given(servers=st.integers(1, 4), gpus=st.sampled_from([1, 2, 4]),
       models=st.integers(1, 8), dram_models=st.floats(0.5, 4), ssd_models=st.floats(0.5, 6),
       ssd_copies=st.integers(0, 2), keep_alive=st.sampled_from([0.5, 5.0, 60.0]),
       rps=st.sampled_from([0.2, 1.0, 5.0]), cv=st.sampled_from([1.0, 4.0]),
       max_instances=st.integers(1, 3), policy=st.sampled_from(SIM_POLICIES),
       estimates=st.sampled_from([None, {"local": 0.5e9, "registry": 2e9}]),
       seed=st.integers(0, 3))
def test_decisions_match_snapshot_of_and_the_books_balance(
        servers, gpus, models, dram_models, ssd_models, ssd_copies, keep_alive, rps, cv,
        max_instances, policy, estimates, seed):
    size = 13.48  # GB of a 7B model in fp16
    setup = Setup(servers=servers, gpus_per_server=gpus, models=models,
                  dram_gb=size * dram_models, ssd_gb=size * ssd_models, ssd_copies=ssd_copies,
                  keep_alive=keep_alive, max_instances=max_instances,
                  target_concurrency=2, estimates=estimates, seed=seed)
    w = synthetic(150, rps=rps, cv=cv, models=models, seed=seed)
    sim = _Twin(setup, policy)
    res = sim.run(w)
    assert len(res.startup) == len(w)
    assert (res.startup >= 0).all() and (res.ttft >= res.startup).all()
    assert sum(res.cold.values()) >= 1 and res.decisions >= sum(res.cold.values()) - \
        res.migrations  # every start was decided (a migration starts two)
    assert res.gpu_seconds > 0
    if policy == "serverless":
        assert res.cold.get("dram", 0) == 0
    # everything was unloaded at the end: the slots are free and nothing is reclaimable
    assert len(sim.cluster.free) == len(sim.cluster.slots) and not sim.cluster.reclaimable
    for m in sim.cluster.machines:
        assert m.dram.used <= setup.dram_gb * 1e9 and m.ssd.used <= setup.ssd_gb * 1e9
        assert m.dram.used == sum(m.dram.models.values())
    again = Simulator(setup, policy).run(w)
    assert np.array_equal(again.ttft, res.ttft) and again.cold == res.cold
