"""serving.controller with real workers and the locality policy: the workers report their
tiers' estimates when ready (the disk tier's from a profile saved in its directory), a cold
start goes back to the worker whose DRAM holds the checkpoint, the load corrects the
estimates, and the placement and its candidates are in /metrics."""

import os
import time

import pytest

from bas.braid.profile import Profile
from serving.runtime import PROFILE_FILE
from tests.servingctl import Harness, tiny_model, tokens

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    tiny = tiny_model(tmp_path_factory.mktemp("models"))
    store = tmp_path_factory.mktemp("store")
    disk = os.path.join(store, "workers", "1")
    os.makedirs(disk)
    Profile.from_preset("optane-1dimm").save(os.path.join(disk, PROFILE_FILE))
    harness = Harness(store, [{"name": "tiny", "path": tiny, "keep_alive": 0.2}], workers=2)
    yield harness
    harness.close()


def _wait_cold(h, timeout=30.0):
    deadline = time.monotonic() + timeout
    while h.deployment("tiny")["instances"]:
        assert time.monotonic() < deadline, h.status()
        time.sleep(0.05)


def test_workers_report_their_tiers_estimates_when_ready(h):
    for w in h.controller._workers:
        est = w.estimates
        assert set(est) == {"dram", "local", "registry"}
        assert est["dram"]["bandwidth"] > est["local"]["bandwidth"] > 0
        assert est["registry"]["bandwidth"] > 0
    sources = [w.estimates["local"]["source"] for w in h.controller._workers]
    assert sources == ["tier model", "profile"]  # worker 1's disk has a saved profile
    body = h.controller.metrics.render()[0].decode()
    assert 'serving_tier_bandwidth_bytes_per_second{server="worker-1",tier="local"}' in body


def test_a_cold_start_returns_to_the_worker_whose_dram_holds_the_model(h):
    first = h.complete("tiny", max_tokens=4)
    assert first[-1].kind == "done"
    inst = h.deployment("tiny")["instances"][0]
    assert inst["tier"] == "registry"
    home = inst["worker"]
    index = int(home.rsplit("-", 1)[1])
    est = h.controller._estimates.estimate(index, "registry")
    assert est.observed == 1  # the load corrected the seed
    _wait_cold(h)
    assert h.status()["workers"][index]["tiers"]["dram"] == ["tiny"]

    again = h.complete("tiny", max_tokens=4)
    inst = h.deployment("tiny")["instances"][0]
    assert (inst["worker"], inst["tier"]) == (home, "dram")
    assert tokens(again) == tokens(first)
    body = h.controller.metrics.render()[0].decode()
    assert (f'serving_placements_total{{model="tiny",policy="locality",server="{home}",'
            f'tier="dram"}} 1.0') in body
    assert f'serving_placement_estimate_seconds{{model="tiny",server="{home}"}}' in body
    assert 'serving_load_estimate_ratio_count{tier="dram"} 1.0' in body
