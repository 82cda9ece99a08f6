"""tools/bench's harness: interleaved rounds, paired ratios, child-process timing, default rows."""

import io
import os
import sys

import pytest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")
sys.path.insert(0, os.path.abspath(TOOLS))

import benchkit  # noqa: E402
from benchkit import Context, prepare_cache, run_child  # noqa: E402
from compare import interleave, pair_ratios, report  # noqa: E402


def _ctx(tmp_path, **kw) -> Context:
    return Context(device="", size=0, threads=1, workdir=str(tmp_path), cold=False, **kw)


def _fake(name: str, times: list[float], log: list[str]):
    def fn(ctx):
        for i in range(ctx.repeat):
            log.append(name)
            yield dict(workload=name, seconds=times[i], process_seconds=times[i] + 1.0)

    return benchkit.Workload(name, "test", fn, process=True)


@pytest.fixture
def fakes(monkeypatch):
    log: list[str] = []
    monkeypatch.setitem(benchkit.WORKLOADS, "t-a", _fake("t-a", [9.0, 1.0, 2.0, 1.0], log))
    monkeypatch.setitem(benchkit.WORKLOADS, "t-b", _fake("t-b", [9.0, 2.0, 3.0, 4.0], log))
    return log


def test_runs_alternate_a_b_a_b_with_warmup_rounds_first(fakes, tmp_path):
    records = interleave(["t-a", "t-b"], lambda n: _ctx(tmp_path), rounds=3, warmup=1,
                         sink=lambda r: None)
    assert fakes == ["t-a", "t-b"] * 4
    assert [(r["workload"], r["round"], r["warmup"]) for r in records[:4]] == [
        ("t-a", 0, True), ("t-b", 0, True), ("t-a", 1, False), ("t-b", 1, False)]


def test_ratios_are_paired_by_round_and_leave_warmup_out(fakes, tmp_path):
    records = interleave(["t-a", "t-b"], lambda n: _ctx(tmp_path), rounds=3, warmup=1,
                         sink=lambda r: None)
    assert pair_ratios(records, "t-a", "t-b") == [(1, 2.0), (2, 1.5), (3, 4.0)]
    assert pair_ratios(records, "t-a", "t-b", "process_seconds") == [
        (1, 1.5), (2, 4.0 / 3.0), (3, 2.5)]
    out = io.StringIO()
    report(records, "t-a", stream=out)
    text = out.getvalue()
    assert "median 2.00x, min 1.50x, max 4.00x over 3 pairs" in text
    assert "round   2: in-process   1.500x" in text


def test_a_workload_that_raises_is_recorded_failed_and_the_others_go_on(monkeypatch, tmp_path):
    def broken(ctx):
        yield dict(workload="t-bad", seconds=1.0)
        raise RuntimeError("disk on fire")

    log: list[str] = []
    monkeypatch.setitem(benchkit.WORKLOADS, "t-a", _fake("t-a", [1.0] * 3, log))
    monkeypatch.setitem(benchkit.WORKLOADS, "t-bad", benchkit.Workload("t-bad", "test", broken))
    records = interleave(["t-a", "t-bad"], lambda n: _ctx(tmp_path), rounds=3,
                         sink=lambda r: None)
    assert [(r["workload"], r["status"] if "status" in r else "ok") for r in records] == [
        ("t-a", "ok"), ("t-bad", "ok"), ("t-a", "ok"), ("t-bad", "failed"), ("t-a", "ok")]
    assert "disk on fire" in records[3]["error"]
    assert pair_ratios(records, "t-a", "t-bad") == [(1, 1.0), (2, None), (3, None)]


def test_run_child_times_the_whole_process_beside_its_own_clock(tmp_path):
    code = ("import time, json; t = time.perf_counter(); time.sleep(0.05); "
            "print(json.dumps({'seconds': time.perf_counter() - t}))")
    child = run_child([sys.executable, "-c", code], _ctx(tmp_path, timeout=60))
    assert child.status == "ok" and child.fields()["status"] == "ok"
    assert child.result()["seconds"] >= 0.05
    assert child.process_seconds > child.result()["seconds"]  # interpreter start included


def test_run_child_kills_a_child_past_the_timeout(tmp_path):
    child = run_child([sys.executable, "-c", "import time; time.sleep(30)"],
                      _ctx(tmp_path, timeout=0.5))
    assert child.status == "timeout" and child.process_seconds < 20
    assert child.result() == {} and "timeout" in child.fields()["error"]


def test_prepare_cache_names_the_state_it_made(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10000)
    assert prepare_cache([str(path)], _ctx(tmp_path)) == "warm"
    assert prepare_cache([str(path)], _ctx(tmp_path, cached_fraction=0.5)) == "cached-0.5"
    ctx = _ctx(tmp_path)
    ctx.cold = True
    assert prepare_cache([str(path)], ctx) == "cold"


def test_the_headline_ckpt_row_calls_ckpt_load_with_no_keywords(monkeypatch):
    import ckptpeer

    import ckpt

    calls = []
    monkeypatch.setattr(ckpt, "load", lambda *a, **kw: calls.append((a, kw)))
    load, extra = ckptpeer.LOADERS["ckpt-load"].make("/data", 4, True)
    load()
    assert calls == [(("/data/model.ckpt",), {})] and extra == {}


def test_the_headline_sort_row_calls_sort_with_no_keywords(monkeypatch):
    import sortpeer

    import bas.sort

    class Report:
        algorithm, bytes_written, phases = "kv", {"out": 1}, []

    calls = []
    monkeypatch.setattr(bas.sort, "sort", lambda *a, **kw: calls.append((a, kw)) or Report())
    sortpeer.IMPLS["wiscsort"]("in", "out", None, 2, "/tmp")
    sortpeer.IMPLS["wiscsort-tuned-mergesort"]("in", "out", None, 2, "/tmp")
    assert calls == [(("in", "out"), {}), (("in", "out"), {"algorithm": "mergesort"})]


def test_rows_say_tuned_in_their_name_exactly_when_they_tune_something():
    import ckptpeer

    for name, loader in ckptpeer.LOADERS.items():
        assert ("tuned" in name) == (loader.tuned is not None), name
        assert ("tuned" in name) == loader.doc.startswith("ours, tuned"), name
