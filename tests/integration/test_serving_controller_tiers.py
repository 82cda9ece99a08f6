"""serving.controller on one worker without a DRAM tier: cold starts from the registry, then
from the local disk; a second model takes the only worker from an idle one (LRU)."""

import pytest

from tests.servingctl import Harness, tiny_model, tokens

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    tiny = tiny_model(tmp_path_factory.mktemp("models"))
    models = [{"name": "tiny", "path": tiny, "keep_alive": 60},
              {"name": "other", "path": tiny, "keep_alive": 60}]
    harness = Harness(tmp_path_factory.mktemp("store"), models, workers=1, dram_per_worker=0)
    yield harness
    harness.close()


def _tier(h, name) -> str:
    return h.deployment(name)["instances"][0]["tier"]


def test_the_least_recently_used_idle_instance_makes_room_and_tiers_fill_up(h):
    first = h.complete("tiny", max_tokens=6)
    assert first[-1].kind == "done" and _tier(h, "tiny") == "registry"
    worker = h.status()["workers"][0]
    assert worker["tiers"] == {"local": ["tiny"]}  # no DRAM tier

    other = h.complete("other", max_tokens=6)  # the only worker holds an idle tiny
    assert other[-1].kind == "done" and _tier(h, "other") == "registry"
    assert h.deployment("tiny")["instances"] == []
    assert h.status()["workers"][0]["instance"] == "other"

    again = h.complete("tiny", max_tokens=6)  # other is idle now: it makes room in turn
    assert _tier(h, "tiny") == "local"
    assert tokens(again) == tokens(first)
    assert h.status()["workers"][0]["tiers"] == {"local": ["other", "tiny"]}
    body = h.controller.metrics.render()[0].decode()
    assert 'serving_cold_starts_total{model="tiny",tier="local"} 1.0' in body
    assert 'serving_cold_starts_total{model="tiny",tier="registry"} 1.0' in body


def test_deploy_and_delete_at_run_time(h, tmp_path):
    from serving.protocol import ServingError

    path = h.status()["deployments"][0]["spec"]["path"]
    info = h.loop.run(h.controller.deploy("late", path, keep_alive=60, max_tokens=16))
    assert info["name"] == "late" and info["state"] == "cold"
    assert "late" in [m["id"] for m in h.loop.call(h.controller.models)]
    assert h.complete("late", max_tokens=4)[-1].kind == "done"
    with pytest.raises(ServingError) as bad:
        h.loop.run(h.controller.deploy("late", path, max_instances=0))
    assert bad.value.status == 400 and "max_instances" in bad.value.message

    again = h.loop.run(h.controller.deploy("late", path, keep_alive=60, max_tokens=32))
    assert again["version"] == info["version"] and again["state"] == "ready"  # kept

    h.loop.run(h.controller.delete("late"))
    assert "late" not in [m["id"] for m in h.loop.call(h.controller.models)]
    assert "late" not in h.status()["workers"][0]["tiers"]["local"]
    assert "late" not in h.controller._deployments.registry.names()
    with pytest.raises(ServingError) as gone:
        h.open("late").next()
    assert gone.value.status == 404
    with pytest.raises(ServingError):
        h.loop.run(h.controller.delete("late"))
