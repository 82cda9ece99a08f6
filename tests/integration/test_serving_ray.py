"""Ray mode: the same controller with its workers as Ray actors, one per server slot, on a real
Ray cluster of loopback nodes (bas.testing.raycluster): a cold start on a node's actor that
streams the local mode's tokens, a node lost while it serves, and a request live-migrated
between two nodes' actors.

One cluster (a head and two nodes of one slot each) and one controller serve the module; the
tests run in file order (the second removes a node and adds another).
"""

import os
import time

import pytest

from tests.servingctl import Harness, kinds, tiny_model, tokens

ray = pytest.importorskip("ray")

from bas.testing.raycluster import LoopbackCluster  # noqa: E402
from serving.rayworker import SLOT, RayWorker  # noqa: E402

pytestmark = pytest.mark.slow

N = 12  # tokens of the compared generations
LONG = 3000  # a request that is still running when its node goes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return tiny_model(tmp_path_factory.mktemp("models"))


def _models(tiny):
    return [{"name": "tiny", "path": tiny, "keep_alive": 60, "max_tokens": LONG}]


@pytest.fixture(scope="module")
def local_tokens(tiny, tmp_path_factory) -> list[int]:
    """The reference: the same request in the local mode (a worker process)."""
    harness = Harness(tmp_path_factory.mktemp("local"), _models(tiny), workers=1)
    try:
        events = harness.complete("tiny", max_tokens=N)
    finally:
        harness.close()
    assert kinds(events)[-1] == "done"
    return tokens(events)


@pytest.fixture(scope="module")
def cluster(local_tokens):  # after the local run: the two do not share the two cores
    with LoopbackCluster([{SLOT: 1}, {SLOT: 1}]) as c:
        yield c


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def h(cluster, tiny, store):
    harness = Harness(store, _models(tiny), workers=2, backend="ray", address=cluster.address)
    yield harness
    harness.close()


def _workers(h) -> list[RayWorker]:
    return h.loop.call(lambda: list(h.controller._workers))


def _worker(h, model) -> RayWorker:
    return _workers(h)[h.worker_of(model)["index"]]


def _serving(h, request_id) -> tuple[str, int]:
    """(id at the workers, worker index) of the running request the client called request_id."""
    def find():
        return next((r.rid, r.instance.worker.spec.index) for r in h.controller._requests
                    if r.state == "running" and r.rid.startswith(request_id + "#"))

    return h.loop.call(find)


def test_a_cold_start_on_a_node_actor_streams_the_local_modes_tokens(h, cluster, store,
                                                                    local_tokens):
    workers = _workers(h)
    assert all(isinstance(w, RayWorker) and w.alive for w in workers)
    nodes = {w.node for w in workers}
    assert len(nodes) == 2 and cluster.cluster.head_node.node_id not in nodes  # one per node

    events = h.complete("tiny", max_tokens=N)
    assert events[0].kind == "wait" and events[0].info["reason"] == "cold_start"
    assert kinds(events)[-1] == "done"
    assert tokens(events) == local_tokens
    dep = h.deployment("tiny")
    assert dep["cold_starts"] == 1 and dep["instances"][0]["tier"] == "registry"

    # the checkpoint now sits in that node's own tiers, under STORE/nodes/NODE/slot-0
    worker = _worker(h, "tiny")
    assert "tiny" in worker.tiers["local"]
    assert worker.node_name.startswith("node-")  # LoopbackCluster's names
    assert os.listdir(os.path.join(store, "nodes", worker.node_name, "slot-0"))
    again = h.complete("tiny", max_tokens=N)
    assert "wait" not in kinds(again) and tokens(again) == local_tokens


def test_a_node_removed_while_serving_fails_its_request_and_the_model_restarts(
        h, cluster, local_tokens):
    victim = h.open("tiny", max_tokens=LONG, rid="victim")
    assert victim.until("token").kind == "token"
    lost = _workers(h)[_serving(h, "victim")[1]]
    lost_node = lost.node
    start = time.monotonic()
    cluster.remove(cluster.node_of(lost_node))  # kill -9 of the raylet, its store, the actor

    end = victim.rest(timeout=60)[-1]
    assert end.kind == "error" and end.status == 503
    assert f"{lost.name} died" in end.message, end.message
    assert time.monotonic() - start < 30

    # the model restarts on the other node's worker; the lost one's replacement waits for a slot
    events = h.complete("tiny", max_tokens=N, rid="after")
    assert kinds(events)[-1] == "done" and tokens(events) == local_tokens
    worker = _worker(h, "tiny")
    assert worker.node != lost_node and worker.alive
    assert not _workers(h)[lost.spec.index].alive

    # a node that joins gives the replacement its slot
    cluster.add({SLOT: 1})
    deadline = time.monotonic() + 60
    while not all(w.alive for w in _workers(h)):
        assert time.monotonic() < deadline, "the replacement did not start on the new node"
        time.sleep(0.1)
    assert {w.node for w in _workers(h)} - {worker.node, lost_node}


def test_a_request_moved_between_node_actors_streams_the_unmoved_tokens(h):
    reference = h.complete("tiny", max_tokens=LONG, rid="reference")
    stream = h.open("tiny", max_tokens=LONG, rid="moved")
    stream.until("token")
    rid, source = _serving(h, "moved")
    assert h.loop.run(h.controller.migrate(rid, 1 - source), timeout=120)  # a cold destination
    assert _serving(h, "moved")[1] == 1 - source
    events = stream.rest()
    assert tokens(events) == tokens(reference) and events[-1].kind == "done"
    numbered = [e.index for e in events if e.kind == "token"]
    assert numbered == list(range(len(numbered)))  # no gap, no duplicate
