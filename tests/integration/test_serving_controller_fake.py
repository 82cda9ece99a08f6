"""serving.controller's lifecycle against an in-process fake worker (the Worker contract,
no processes): timeouts, failed loads, min_instances, scale-out, a death mid-request."""

import asyncio

import pytest

from serving.config import load_config
from serving.controller import Controller
from serving.protocol import Event, GenerateRequest, SamplingParams, ServingError
from serving.worker import LoadReport, Worker, WorkerError
from tests.servingctl import kinds, tiny_model


class FakeWorker(Worker):
    """Loads in `load_delay` seconds; a request yields max_tokens tokens 10 ms apart (or
    never finishes when its prompt asks to hang)."""

    load_delay = 0.05
    fail_load: str | None = None
    made: list = []

    def __init__(self, spec):
        super().__init__(spec)
        self._handles: dict[str, list] = {}
        FakeWorker.made.append(self)

    @property
    def pid(self):
        return None

    async def _start(self):
        return {"tiers": {"dram": []}}

    async def _call(self, op, *args):
        if op == "load":
            await asyncio.sleep(self.load_delay)
            if self.fail_load:
                raise WorkerError(self.fail_load)
            return LoadReport(args[0], "registry", self.load_delay, 0.0, 1, {"dram": [args[0]]})
        return {"dram": []}

    def _send(self, op, *args):
        loop = asyncio.get_running_loop()
        if op == "cancel":
            for handle in self._handles.pop(args[0], []):
                handle.cancel()
            return
        rid, _model, ids, params = args
        n = params.max_tokens
        handles = [loop.call_later(0.01 * (i + 1), self._event, rid,
                                   Event("token", token_ids=(i,))) for i in range(n)]
        if params.seed != 666:  # seed 666: hang after the tokens
            handles.append(loop.call_later(0.01 * (n + 1), self._event, rid,
                                           Event("done", finish_reason="length",
                                                 completion_tokens=n)))
        self._handles[rid] = handles

    async def _stop(self, grace):
        pass

    def _kill(self):
        pass


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def make(tiny, tmp_path):
    FakeWorker.made = []
    FakeWorker.fail_load = None

    def make(**spec):
        settings = {k: spec.pop(k) for k in ("workers", "request_timeout") if k in spec}
        config = load_config(None, store=str(tmp_path), heartbeat=0.05,
                             models=[{"name": "tiny", "path": tiny, **spec}],
                             **{"workers": 2, **settings})
        return Controller(config, worker_factory=FakeWorker)

    return make


def _req(rid="r", max_tokens=3, seed=None):
    return GenerateRequest(rid, "tiny", SamplingParams(max_tokens=max_tokens, seed=seed),
                           prompt="hello")


async def _all(controller, req):
    return [e async for e in controller.generate(req)]


def test_request_timeout_ends_a_request_with_504(make):
    async def main():
        c = make(request_timeout=0.5)
        await c.start()
        events = await _all(c, _req(seed=666))
        await c.stop(1)
        return events

    events = asyncio.run(main())
    assert kinds(events)[-1] == "error" and events[-1].status == 504
    assert "timed out" in events[-1].message


def test_a_failed_load_fails_the_waiting_requests(make):
    async def main():
        c = make()
        await c.start()
        FakeWorker.fail_load = "out of memory"
        events = await asyncio.gather(_all(c, _req("a")), _all(c, _req("b")))
        status = c.status()
        await c.stop(1)
        return events, status

    events, status = asyncio.run(main())
    for stream in events:
        assert stream[-1].kind == "error" and stream[-1].status == 503
        assert "out of memory" in stream[-1].message
    assert status["deployments"][0]["instances"] == []


def test_min_instances_start_with_the_server_and_stay(make):
    async def main():
        c = make(min_instances=1, keep_alive=0)
        await c.start()
        await asyncio.sleep(0.3)
        ready = c.status()["deployments"][0]["state"]
        events = await _all(c, _req())
        await asyncio.sleep(0.2)  # keep_alive 0 does not go below min_instances
        after = c.status()["deployments"][0]
        await c.stop(1)
        return ready, events, after

    ready, events, after = asyncio.run(main())
    assert ready == "ready" and "wait" not in kinds(events)
    assert after["state"] == "ready" and after["cold_starts"] == 1


def test_more_requests_than_target_concurrency_start_another_instance(make):
    async def main():
        c = make(max_instances=2, target_concurrency=1)
        await c.start()
        events = await asyncio.gather(*(_all(c, _req(str(i), 20)) for i in range(4)))
        dep = c.status()["deployments"][0]
        await c.stop(1)
        return events, dep

    events, dep = asyncio.run(main())
    assert all(e[-1].kind == "done" for e in events)
    assert dep["cold_starts"] == 2 and len(dep["instances"]) == 2


def test_a_death_mid_request_gives_503_and_a_new_worker(make):
    async def main():
        c = make()
        await c.start()
        agen = c.generate(_req("victim", 1000))
        while (await agen.__anext__()).kind != "token":
            pass
        worker = next(w for w in FakeWorker.made if w.running)
        worker._died("exit code -9")
        rest = [e async for e in agen]
        await asyncio.sleep(0.05)
        replaced = len(FakeWorker.made)
        after = await _all(c, _req("after"))
        await c.stop(1)
        return rest, replaced, after

    rest, replaced, after = asyncio.run(main())
    assert rest[-1].kind == "error" and rest[-1].status == 503
    assert "died: exit code -9" in rest[-1].message
    assert replaced == 3 and after[-1].kind == "done"


def test_queue_limit_zero_refuses_but_starts_an_instance(make):
    async def main():
        c = make(queue_limit=0)
        await c.start()
        with pytest.raises(ServingError) as refused:
            await _all(c, _req())
        await asyncio.sleep(0.3)
        events = await _all(c, _req())
        await c.stop(1)
        return refused.value, events

    refused, events = asyncio.run(main())
    assert refused.status == 429 and events[-1].kind == "done"


def _models_controller(tmp_path, tiny, names, **settings):
    config = load_config(None, store=str(tmp_path), heartbeat=0.05, workers=1,
                         models=[{"name": n, "path": tiny, "keep_alive": 60.0,
                                  "max_instances": 1} for n in names], **settings)
    return Controller(config, worker_factory=FakeWorker)


def _for(model, rid, max_tokens=3):
    return GenerateRequest(rid, model, SamplingParams(max_tokens=max_tokens), prompt="hello")


def test_a_start_waiting_for_a_server_takes_an_instance_as_soon_as_it_idles(tiny, tmp_path):
    # regression: the waiting start was pumped only when the idle instance's keep-alive
    # (60 s here) expired, so the request timed out although the worker sat idle
    FakeWorker.made = []
    FakeWorker.fail_load = None

    async def main():
        c = _models_controller(tmp_path, tiny, ["a", "b"], request_timeout=5.0)
        await c.start()
        first = asyncio.ensure_future(_all(c, _for("a", "1", 30)))
        await asyncio.sleep(0.15)  # a is loaded and generating on the only worker
        second = await _all(c, _for("b", "2"))
        await first
        await c.stop(1)
        return second

    second = asyncio.run(main())
    assert second[-1].kind == "done", second[-1]


def test_a_freed_server_goes_to_the_request_that_waited_longest(tiny, tmp_path):
    # regression: freed servers went to the deployments in the order they were deployed,
    # so a model deployed early overtook the queue of one deployed later
    FakeWorker.made = []
    FakeWorker.fail_load = None
    finished = []

    async def main():
        c = _models_controller(tmp_path, tiny, ["early", "late", "busy"])
        await c.start()

        async def run(model, rid, n=3):
            events = await _all(c, _for(model, rid, n))
            finished.append(model)
            return events

        busy = asyncio.ensure_future(run("busy", "1", 30))
        await asyncio.sleep(0.15)
        late = asyncio.ensure_future(run("late", "2"))
        await asyncio.sleep(0.05)
        early = asyncio.ensure_future(run("early", "3"))
        events = await asyncio.gather(busy, late, early)
        await c.stop(1)
        return events

    events = asyncio.run(main())
    assert all(e[-1].kind == "done" for e in events)
    assert finished == ["busy", "late", "early"]


class HoldingWorker(FakeWorker):
    """Keeps every model it loaded in its DRAM tier; its registry link is slow (100 B/s), so a
    start elsewhere costs seconds while its DRAM costs nothing."""

    loads: list = []

    async def _start(self):
        self.dram = set()
        return {"tiers": {"dram": []},
                "estimates": {"dram": {"bandwidth": 1e12}, "registry": {"bandwidth": 1e2}}}

    async def _call(self, op, *args):
        if op != "load":
            return {"dram": sorted(self.dram)}
        await asyncio.sleep(self.load_delay)
        tier = "dram" if args[0] in self.dram else "registry"
        self.dram.add(args[0])
        HoldingWorker.loads.append((self.spec.index, args[0], tier))
        return LoadReport(args[0], tier, self.load_delay, 0.0, 10_000, {"dram": sorted(self.dram)})


@pytest.mark.parametrize("while_y", ["generates", "loads"])
def test_a_start_waits_for_the_busy_server_holding_its_checkpoint(tiny, tmp_path, while_y,
                                                                   monkeypatch):
    HoldingWorker.loads = []
    HoldingWorker.fail_load = None
    if while_y == "loads":
        monkeypatch.setattr(HoldingWorker, "load_delay", 0.3)

    async def main():
        config = load_config(None, store=str(tmp_path), heartbeat=0.05, workers=2, models=[
            {"name": n, "path": tiny, "keep_alive": 0.0, "max_instances": 1}
            for n in ("x", "y")])
        c = Controller(config, worker_factory=HoldingWorker)
        await c.start()
        await _all(c, _for("x", "1"))  # x's checkpoint is now in worker 0's DRAM
        await asyncio.sleep(0.1)  # and its instance unloaded (keep_alive 0)
        busy = asyncio.ensure_future(_all(c, _for("y", "2", 30)))  # y on worker 0 (index)
        await asyncio.sleep(0.1)  # y generates (seconds per token known), or still loads
        again = await _all(c, _for("x", "3"))
        await busy
        await c.stop(1)
        return again

    again = asyncio.run(main())
    assert again[-1].kind == "done"
    assert HoldingWorker.loads == [(0, "x", "registry"), (0, "y", "registry"),
                                   (0, "x", "dram")]
