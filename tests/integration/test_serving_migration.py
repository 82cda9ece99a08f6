"""Live migration end to end (serving.migration): real worker processes and a tiny fp32 Llama.
A request moved mid-generation gives its client exactly the tokens (ids, indices, usage) an
unmoved run gives, streamed or read at the end, under concurrent load; the source's slot is
freed; a migration that fails at any step leaves the request running where it was."""

from __future__ import annotations

import os
import signal
import threading
import time

import openai
import pytest

import serving.run
from serving.config import load_config
from serving.migration import MigrationSettings
from serving.process import ProcessWorker
from serving.worker import WorkerError
from tests.servingctl import Harness, kinds, tiny_model, tokens

pytestmark = pytest.mark.slow

PROMPT = "Once upon a time"
LONG = 1500  # tokens: outlives a migration to a loaded instance
LONGER = 3000  # outlives a destination's cold start too


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("models"))


def _harness(tmp_path, model_dir, *, spec=None, **settings) -> Harness:
    model = {"name": "tiny", "path": model_dir, "max_tokens": 4096, **(spec or {})}
    settings.setdefault("policy", "locality+migration")
    return Harness(tmp_path / "store", [model], **settings)


def _ready(h: Harness, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(i["state"] == "ready" for i in h.deployment("tiny")["instances"]) < count:
        assert time.monotonic() < deadline, h.deployment("tiny")
        time.sleep(0.05)


def _running(h: Harness) -> dict[str, tuple[int, int]]:
    """Request id at the workers -> (worker index, tokens relayed so far)."""
    def snap():
        return {r.rid: (r.instance.worker.spec.index, len(r.output))
                for r in h.controller._requests if r.state == "running"}

    return h.loop.call(snap)


def _rid(h: Harness, request_id: str) -> tuple[str, int]:
    """(id at the workers, worker index) of the running request the client called request_id."""
    return next((rid, w) for rid, (w, _) in _running(h).items()
                if rid.startswith(request_id + "#"))


def _migrate(h: Harness, rid: str, destination: int) -> bool:
    return h.loop.run(h.controller.migrate(rid, destination), timeout=300)


def _tokens_read(stream, n: int) -> None:
    while len(tokens(stream.events)) < n:
        assert stream.until("token").kind == "token"


def _same(events, reference) -> None:
    """The client saw exactly the reference's tokens, numbered 0.. without a gap, then done."""
    assert tokens(events) == tokens(reference)
    numbered = [e.index for e in events if e.kind == "token"]
    assert numbered == list(range(len(numbered)))
    assert set(kinds(events)) <= {"wait", "token", "done"} and events[-1].kind == "done"
    done, expected = events[-1], reference[-1]
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == (
        expected.finish_reason, expected.prompt_tokens, expected.completion_tokens)


def test_streamed_greedy_request_moved_to_a_loaded_instance_equals_unmoved(tmp_path, model_dir):
    h = _harness(tmp_path, model_dir, spec={"min_instances": 2, "max_instances": 2})
    try:
        _ready(h, 2)
        reference = h.complete("tiny", PROMPT, max_tokens=LONG, rid="ref")
        stream = h.open("tiny", PROMPT, max_tokens=LONG, rid="moved")
        _tokens_read(stream, 20)
        rid, source = _rid(h, "moved")
        assert _migrate(h, rid, 1 - source)
        workers = h.status()["workers"]
        assert workers[source]["running"] == 0  # the source's slot is free at once
        assert workers[1 - source]["running"] == 1
        assert _running(h)[rid][0] == 1 - source
        # and back again: evacuate moves everything its instance runs
        assert h.loop.run(h.controller.evacuate(1 - source, source), timeout=300)
        assert _running(h)[rid][0] == source
        assert h.status()["workers"][1 - source]["running"] == 0
        _same(stream.rest(), reference)
        assert not _migrate(h, "nobody#1", source)
    finally:
        h.close()


def test_request_read_at_the_end_moved_to_a_cold_destination_equals_unmoved(tmp_path,
                                                                             model_dir):
    h = _harness(tmp_path, model_dir)
    try:
        reference = h.complete("tiny", PROMPT, max_tokens=LONGER, rid="ref")
        stream = h.open("tiny", PROMPT, max_tokens=LONGER, rid="moved")
        stream.until("token")  # running; the rest is read once it is over
        rid, source = _rid(h, "moved")
        assert h.status()["workers"][1 - source]["instance"] is None
        assert _migrate(h, rid, 1 - source)  # loads the model there first
        assert h.status()["workers"][1 - source]["instance"] == "tiny"
        _same(stream.rest(), reference)
        # the cost model was measured once the first instance had nothing to do
        deadline = time.monotonic() + 120
        while "tiny" not in h.loop.call(lambda: dict(h.controller._migration_costs)):
            assert time.monotonic() < deadline, "the migration cost was never measured"
            time.sleep(0.05)
        a, b = h.loop.call(lambda: h.controller._migration_costs["tiny"])
        assert a >= 0 and b > 0
        snapshot = h.loop.call(h.controller._snapshot)
        assert (snapshot.models["tiny"].cost_a, snapshot.models["tiny"].cost_b) == (a, b)
    finally:
        h.close()


def test_one_of_several_concurrent_requests_moved_every_output_equals_unmoved(tmp_path,
                                                                               model_dir):
    h = _harness(tmp_path, model_dir, spec={"min_instances": 2, "max_instances": 2})
    try:
        _ready(h, 2)
        prompts = [PROMPT, "The storage engine", "A lazy dog", "Models decode tokens"]
        seeded = {"temperature": 1.0, "seed": 7}

        def run_all(tag):
            streams = [h.open("tiny", p, max_tokens=LONG, rid=f"{tag}{i}",
                              **(seeded if i == 3 else {}))
                       for i, p in enumerate(prompts)]
            for s in streams:
                s.until("token")
            return streams

        references = [s.rest() for s in run_all("ref")]
        streams = run_all("load")
        _tokens_read(streams[0], 10)
        rid, source = _rid(h, "load0")
        assert _migrate(h, rid, 1 - source)
        rid, source = _rid(h, "load3")  # seeded sampling goes on from the same state
        assert _migrate(h, rid, 1 - source)
        for stream, reference in zip(streams, references, strict=True):
            _same(stream.rest(), reference)
    finally:
        h.close()


class Faulty(ProcessWorker):
    """A ProcessWorker that fails once where `faults` says (worker index -> fault)."""

    faults: dict[int, str] = {}

    def _take(self, fault: str) -> bool:
        if self.faults.get(self.spec.index) != fault:
            return False
        del self.faults[self.spec.index]
        return True

    async def load(self, model, version=None):
        if self._take("load"):
            raise WorkerError(f"{self.name}: injected load failure")
        return await super().load(model, version)

    async def stage(self, request_id, model, token_ids):
        if self._take("stage-kill"):
            os.kill(self.pid, signal.SIGKILL)
        return await super().stage(request_id, model, token_ids)

    def resume(self, request_id, model, prompt_ids, generated_ids, params, emit,
               generator_state=None):
        if self._take("resume-kill"):  # dies right after the source handed over
            os.kill(self.pid, signal.SIGKILL)
        elif self._take("resume-drop"):  # takes it and never answers
            self._requests[request_id] = emit
            return
        super().resume(request_id, model, prompt_ids, generated_ids, params, emit,
                       generator_state)


@pytest.mark.parametrize("fault", ["load", "stage-kill", "resume-kill", "resume-drop"])
def test_failed_migration_leaves_the_request_running_unchanged(tmp_path, model_dir, fault):
    Faulty.faults.clear()
    h = _harness(tmp_path, model_dir, worker_factory=Faulty)
    try:
        h.controller.migration_settings = MigrationSettings(resume_timeout=1.0)
        reference = h.complete("tiny", PROMPT, max_tokens=LONGER, rid="ref")
        stream = h.open("tiny", PROMPT, max_tokens=LONGER, rid="moved")
        _tokens_read(stream, 5)
        rid, source = _rid(h, "moved")
        Faulty.faults[1 - source] = fault
        assert not _migrate(h, rid, 1 - source)
        assert fault not in Faulty.faults.values()  # the fault did happen
        assert _running(h)[rid][0] == source
        _same(stream.rest(), reference)
        assert h.status()["workers"][source]["running"] == 0
    finally:
        Faulty.faults.clear()
        h.close()


def test_non_streaming_http_request_moved_mid_generation(tmp_path, model_dir):
    config = load_config(None, port=0, workers=2, store=str(tmp_path / "store"),
                         dram_per_worker="64MiB", disk_per_worker="1GiB", threads_per_worker=1,
                         shutdown_grace=5, heartbeat=0.2, models=[{
                             "name": "tiny", "path": model_dir, "max_tokens": 4096,
                             "min_instances": 2, "max_instances": 2}])
    with serving.run.Server(config) as server, openai.OpenAI(
            base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300) as client:
        controller = server.controller

        def complete():
            return client.completions.create(model="tiny", prompt=PROMPT, max_tokens=LONGER,
                                             temperature=0)

        reference = complete()
        answers = []
        thread = threading.Thread(target=lambda: answers.append(complete()))
        thread.start()
        deadline = time.monotonic() + 120
        while True:
            going = server.call(lambda: [(r.rid, r.instance.worker.spec.index, len(r.output))
                                         for r in controller._requests
                                         if r.state == "running"])
            if going and going[0][2] >= 20:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        rid, source, _ = going[0]
        assert server.call(controller.migrate(rid, 1 - source), timeout=300)
        thread.join(300)
        (answer,) = answers
        assert answer.choices[0].text == reference.choices[0].text
        assert answer.usage.completion_tokens == reference.usage.completion_tokens == LONGER


def test_policy_moves_an_inference_off_the_worker_whose_dram_holds_the_new_model(tmp_path,
                                                                                  model_dir):
    """locality+migration: worker 0 runs a long request of model a and its DRAM holds b;
    worker 1 is free and its DRAM holds a. A request for b moves a's inference to worker 1
    (a from DRAM, its KV cache recomputed) and starts b on worker 0 from DRAM."""
    spec = {"path": model_dir, "max_tokens": 4096, "keep_alive": 0.2}
    h = Harness(tmp_path / "store", [{"name": "a", "target_concurrency": 1,
                                      "max_instances": 2, **spec}, {"name": "b", **spec}],
                workers=2, policy="locality+migration")
    try:
        for model in ("a", "b"):  # the recompute is cheap here; measuring it is tested above
            h.loop.call(h.controller.set_migration_cost, model, 0.0, 0.0)

        def cold(timeout=30.0):
            deadline = time.monotonic() + timeout
            while any(w["instance"] for w in h.status()["workers"]):
                assert time.monotonic() < deadline, h.status()
                time.sleep(0.05)

        assert h.complete("b", max_tokens=4)[-1].kind == "done"  # b on worker 0 (a tie)
        assert h.status()["workers"][0]["tiers"]["dram"] == ["b"]
        cold()
        pair = [h.open("a", PROMPT, max_tokens=LONG, rid=f"ref{i}") for i in range(2)]
        for s in pair:
            s.next()  # both admitted: one instance of a on each worker
        references = [s.rest() for s in pair]
        assert tokens(references[0]) == tokens(references[1])
        cold()
        assert all("a" in w["tiers"]["dram"] for w in h.status()["workers"])

        stream = h.open("a", PROMPT, max_tokens=LONG, rid="long")
        _tokens_read(stream, 10)
        assert _rid(h, "long")[1] == 0  # both DRAMs hold a: the tie goes to worker 0
        started = h.complete("b", max_tokens=4)
        assert started[-1].kind == "done"
        _same(stream.rest(), references[0])
        # instances idle out after 0.2 s: the counts tell where they started from. a from
        # DRAM twice (worker 0, then the migration's destination), b from worker 0's DRAM
        body = h.controller.metrics.render()[0].decode()
        assert 'serving_cold_starts_total{model="a",tier="dram"} 2.0' in body
        assert 'serving_cold_starts_total{model="b",tier="dram"} 1.0' in body
        assert 'serving_cold_starts_total{model="b",tier="registry"} 1.0' in body
    finally:
        h.close()
