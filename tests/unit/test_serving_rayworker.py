"""The Ray backend's pieces that need no Ray: its settings, the factory choice, the per-node
slot directories and the one-line death reasons (tests/integration/test_serving_ray.py runs
the real thing)."""

import os

import pytest

from serving.config import ConfigError, load_config
from serving.controller import Controller
from serving.process import ProcessWorker
from serving.rayworker import RayWorker, RayWorkers, _claim_slot, _why


def test_the_local_backend_is_the_default():
    config = load_config(None)
    assert config.backend == "local" and config.address is None
    assert Controller(config)._factory is ProcessWorker


def test_the_ray_backend_makes_ray_workers_without_connecting(tmp_path):
    config = load_config(None, backend="ray", address="127.0.0.1:6379", store=str(tmp_path),
                         workers=3)
    factory = Controller(config)._factory
    assert isinstance(factory, RayWorkers) and factory.address == "127.0.0.1:6379"
    worker = factory(Controller(config)._spec(1))
    assert isinstance(worker, RayWorker) and worker.name == "worker-1" and worker.pid is None
    assert os.path.isabs(worker.spec.registry)  # the actors do not run in our directory


@pytest.mark.parametrize("settings, words", [
    ({"backend": "slurm"}, ["backend", "slurm"]),
    ({"address": "127.0.0.1:6379"}, ["address", "ray"]),
    ({"backend": "ray", "address": ""}, ["address"]),
])
def test_bad_backend_settings_name_the_key(settings, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, **settings)
    assert all(w in str(info.value) for w in words)


def test_each_actor_of_a_node_claims_its_own_slot_directory(tmp_path):
    first, fd0 = _claim_slot(str(tmp_path / "node-a"))
    second, fd1 = _claim_slot(str(tmp_path / "node-a"))
    assert (os.path.basename(first), os.path.basename(second)) == ("slot-0", "slot-1")
    os.close(fd0)  # its actor is gone: the next one takes its directory (and its tiers)
    again, fd2 = _claim_slot(str(tmp_path / "node-a"))
    assert again == first
    os.close(fd1)
    os.close(fd2)


def test_a_ray_death_is_told_in_one_line():
    text = ("The actor died unexpectedly before finishing this task.\n\tclass_name: _Server\n"
            "\tactor_id: 0123\n\tpid: 42\n\tip: 127.0.0.1\nThe actor is dead because its "
            "node has died. Node Id: abcd")
    assert _why(RuntimeError(text)) == "The actor is dead because its node has died. Node Id: abcd"
    assert _why(RuntimeError("x" * 1000)).endswith("...")
