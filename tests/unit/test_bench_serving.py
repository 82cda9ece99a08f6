"""The serving benchmarks' harness logic: statistics, parsing of what the servers report, the
cold-start split, memory accounting over /proc, ratios and registration (no server is run)."""

import io
import json
import os
import sys

import pytest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")
sys.path.insert(0, os.path.abspath(TOOLS))

import bench_serving  # noqa: E402
import benchkit  # noqa: E402
import loadgen  # noqa: E402
import servepeer  # noqa: E402
import serveproc  # noqa: E402
from loadgen import Result  # noqa: E402


def test_percentile_interpolates_between_closest_ranks():
    assert loadgen.percentile([], 50) is None
    assert loadgen.percentile([None, 3.0], 99) == 3.0
    assert loadgen.percentile([4, 1, 3, 2], 50) == 2.5
    assert loadgen.percentile(range(1, 101), 99) == pytest.approx(99.01)
    assert loadgen.percentile([1, 2], 0) == 1 and loadgen.percentile([1, 2], 100) == 2
    with pytest.raises(ValueError):
        loadgen.percentile([1], 101)


def test_summary_counts_tokens_failures_and_equal_lengths():
    ok = [Result(ok=True, ttft=t, seconds=1.0, output_tokens=8, text="ab") for t in (0.1, 0.3)]
    stats = loadgen.summary(ok, wall=2.0, max_tokens=8)
    assert stats["requests"] == 2 and stats["failed"] == 0 and stats["output_tokens"] == 16
    assert stats["tokens_per_s"] == 8.0 and stats["ttft_p50"] == pytest.approx(0.2)
    assert stats["equal_lengths"] is True and "error" not in stats
    short = ok + [Result(ok=True, ttft=0.2, seconds=1.0, output_tokens=5)]
    assert loadgen.summary(short, 2.0, 8)["equal_lengths"] is False
    failed = ok + [Result(ok=False, error="APIConnectionError: refused")]
    stats = loadgen.summary(failed, 2.0, 8)
    assert stats["failed"] == 1 and stats["equal_lengths"] is False
    assert "refused" in stats["error"]


def test_summary_without_usage_has_no_token_rate():
    stats = loadgen.summary([Result(ok=True, ttft=0.1, seconds=0.2)], 1.0)
    assert stats["output_tokens"] is None and stats["tokens_per_s"] is None
    assert "equal_lengths" not in stats


def test_output_digest_tells_equal_outputs_apart_from_different_ones():
    def digest(*texts):
        rs = [Result(ok=True, ttft=0.1, seconds=0.1, output_tokens=1, text=t) for t in texts]
        return loadgen.summary(rs, 1.0)["output_digest"]

    assert digest("a", "b") == digest("a", "b")
    assert digest("a", "b") != digest("ab", "")
    assert digest("a", "b") != digest("b", "a")
    assert digest("a\ufffd", "b") == digest("a", "b")  # a trailing partial character
    assert digest("\ufffda", "b") != digest("a", "b")


def test_prompts_are_fixed_and_distinct():
    first, again = loadgen.prompts(32, 48), loadgen.prompts(32, 48)
    assert first == again and len(set(first)) == 32
    assert all(len(p.split()) == 50 for p in first)  # "Request N:" and 48 words


METRICS = """\
# HELP serving_cold_starts_total Model instances started
# TYPE serving_cold_starts_total counter
serving_cold_starts_total{model="bench",tier="registry"} 1.0
serving_cold_starts_total{model="bench",tier="dram"} 3.0
serving_cold_starts_total{model="other",tier="dram"} 7.0
serving_load_seconds_bucket{le="+Inf",tier="dram"} 3.0
serving_load_seconds_sum{tier="dram"} 0.25
serving_time_to_first_token_seconds_sum{model="bench"} 1.5
serving_time_to_first_token_seconds_count{model="bench"} 4.0
weird_label{path="a\\"b"} 2
not a sample line
"""


def test_parse_metrics_and_sum_by_labels():
    samples = loadgen.parse_metrics(METRICS)
    assert loadgen.metric(samples, "serving_cold_starts_total", model="bench") == 4.0
    assert loadgen.metric(samples, "serving_cold_starts_total", tier="dram") == 10.0
    assert loadgen.metric(samples, "serving_cold_starts_total", model="x") == 0.0
    assert loadgen.metric(samples, "serving_load_seconds_bucket", le="+Inf") == 3.0
    assert loadgen.metric(samples, "weird_label", path='a\\"b') == 2.0


LOG = """\
2026-12-01 02:37:40,645 INFO serving.controller: bench: cold start on worker-0 (expected tier registry)
2026-12-01 02:37:40,790 INFO serving.controller: cold start of bench on worker-0: from registry, load 0.048 s, build 0.087 s, first token 0.145 s after the start
2026-12-01 02:37:41,000 INFO serving.controller: cold start of benchmark on worker-1: from dram, load 9.0 s, build 9.0 s, first token 9.0 s after the start
2026-12-01 02:37:44,886 INFO serving.controller: cold start of bench on worker-1: from dram, load 0.000 s, build 0.035 s, first token 0.051 s after the start
"""  # noqa: E501


def test_parse_cold_start_takes_the_models_last_line():
    got = loadgen.parse_cold_start(LOG, "bench")
    assert got == dict(worker="worker-1", tier="dram", ckpt_load_seconds=0.0,
                       build_seconds=0.035, instance_first_token_seconds=0.051)
    assert loadgen.parse_cold_start(LOG, "benchmark")["tier"] == "dram"
    assert loadgen.parse_cold_start(LOG, "absent") is None
    assert loadgen.parse_cold_start("", "bench") is None


def test_cold_split_adds_up_to_ttft():
    split = loadgen.cold_split(2.0, 1.5, server_wait=0.1)
    assert split["queue_wait"] == 0.1 and split["load_seconds"] == 1.5
    assert sum(split.values()) == pytest.approx(2.0)
    # a server's own clock wins over the measured server-side wait
    assert loadgen.cold_split(2.0, 1.0, server_wait=0.1, load_start_delay=0.3)[
        "queue_wait"] == 0.3
    unknown = loadgen.cold_split(2.0, 1.0)
    assert unknown == dict(queue_wait=None, load_seconds=1.0, first_token_seconds=None)


def _before_after(tier: str):
    before = loadgen.parse_metrics(METRICS)
    after = dict(before)
    key = ("serving_cold_starts_total", frozenset({("model", "bench"), ("tier", tier)}))
    after[key] = after.get(key, 0.0) + 1
    after[("serving_load_seconds_sum", frozenset({("tier", tier)}))] = (
        before.get(("serving_load_seconds_sum", frozenset({("tier", tier)})), 0.0) + 0.5)
    for name, add in (("sum", 1.2), ("count", 1)):
        k = (f"serving_time_to_first_token_seconds_{name}", frozenset({("model", "bench")}))
        after[k] = before[k] + add
    return before, after


def test_cold_record_of_ours_splits_and_checks_the_tier():
    before, after = _before_after("local")
    logged = dict(tier="local", build_seconds=0.2, instance_first_token_seconds=1.0)
    result = Result(ok=True, ttft=1.3, seconds=1.3, output_tokens=1)
    rec = bench_serving._cold_record_ours(result, before, after, logged, "local")
    assert rec["tier"] == "local" and rec["valid"] is True
    assert rec["ckpt_load_seconds"] == pytest.approx(0.5)
    assert rec["load_seconds"] == pytest.approx(0.7)  # checkpoint load + model build
    assert rec["server_ttft"] == pytest.approx(1.2)
    assert rec["queue_wait"] == pytest.approx(0.2)  # arrival to the instance's start
    assert rec["queue_wait"] + rec["load_seconds"] + rec["first_token_seconds"] == (
        pytest.approx(1.3))
    assert rec["seconds"] == rec["ttft"] == 1.3
    wrong = bench_serving._cold_record_ours(result, before, after, logged, "dram")
    assert wrong["valid"] is False and wrong["tier"] == "local"


def test_cold_record_of_ours_without_the_log_line_keeps_what_metrics_tell():
    before, after = _before_after("dram")
    result = Result(ok=True, ttft=1.0, seconds=1.0, output_tokens=1)
    rec = bench_serving._cold_record_ours(result, before, after, {}, "dram")
    assert rec["tier"] == "dram" and rec["load_seconds"] == pytest.approx(0.5)
    assert rec["queue_wait"] is None and rec["first_token_seconds"] is None
    failed = bench_serving._cold_record_ours(Result(ok=False, error="boom"), before, before,
                                             {}, "dram")
    assert failed["valid"] is False and failed["error"] == "boom" and failed["tier"] is None


def _fake_proc(root, pid: int, ppid: int, rss_kib: int, pss_kib: int, comm="py (x) y"):
    d = root / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")
    (d / "status").write_text(f"Name:\tpy\nVmRSS:\t  {rss_kib} kB\nThreads:\t1\n")
    (d / "smaps_rollup").write_text(f"Rss:  {rss_kib} kB\nPss:  {pss_kib} kB\n")


def test_process_tree_and_memory_over_a_fake_proc(tmp_path):
    _fake_proc(tmp_path, 10, 1, 100, 60)
    _fake_proc(tmp_path, 11, 10, 200, 150, comm="worker) 1 (")
    _fake_proc(tmp_path, 12, 11, 50, 25)
    _fake_proc(tmp_path, 20, 1, 999, 999)  # not in the tree
    (tmp_path / "self").mkdir()  # non-numeric entries are skipped
    assert loadgen.process_tree(10, proc=str(tmp_path)) == [10, 11, 12]
    assert loadgen.process_tree(11, proc=str(tmp_path)) == [11, 12]
    mem = loadgen.tree_memory([10, 11, 12, 99], proc=str(tmp_path))
    assert mem == dict(rss=350 * 1024, pss=235 * 1024, processes=3)


@pytest.mark.parametrize("size, hidden", [(4 << 20, 64), (512 << 20, 1024), (2 << 30, 2048)])
def test_model_config_fills_the_size(size, hidden):
    cfg = bench_serving.model_config(size)
    assert cfg["hidden_size"] == hidden and cfg["num_hidden_layers"] >= 1
    assert cfg["tie_word_embeddings"] is False  # the zeroed output rows are the head's own
    h, f, v, n = (cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"],
                  cfg["num_hidden_layers"])
    params = 2 * v * h + n * (4 * h * h + 3 * h * f + 2 * h) + h
    if size >= 64 << 20:
        assert abs(params * 4 - size) / size < 0.1


def test_knob_reads_the_environment(monkeypatch):
    monkeypatch.delenv("BAS_BENCH_SERVING_CLIENTS", raising=False)
    assert bench_serving.knob("CLIENTS", 16) == 16
    monkeypatch.setenv("BAS_BENCH_SERVING_CLIENTS", "4")
    assert bench_serving.knob("CLIENTS", 16) == 4
    monkeypatch.setenv("BAS_BENCH_SERVING_CLIENTS", "0")
    with pytest.raises(ValueError, match="at least 1"):
        bench_serving.knob("CLIENTS", 16)
    monkeypatch.setenv("BAS_BENCH_SERVING_CLIENTS", "many")
    with pytest.raises(ValueError):
        bench_serving.knob("CLIENTS", 16)


def test_data_dir_is_beside_the_scratch_dir_unless_told(monkeypatch, tmp_path):
    ctx = benchkit.Context(device="", size=123, threads=1, workdir=str(tmp_path / "bas-x"),
                           cold=False)
    monkeypatch.delenv("BAS_BENCH_DATA", raising=False)
    assert bench_serving.data_dir(ctx) == str(tmp_path / "bas-bench-serving" / "llama-123")
    monkeypatch.setenv("BAS_BENCH_DATA", "/data")
    assert bench_serving.data_dir(ctx) == "/data/bas-bench-serving/llama-123"


def test_every_serving_workload_is_registered_and_tuned_rows_say_what_they_tune():
    names = {n for n, w in benchkit.WORKLOADS.items() if w.group == "serving"}
    assert {"serve-cold-dram", "serve-cold-disk", "serve-cold-registry", "peer-hf-serve-cold",
            "peer-hf-process-cold", "serve-warm", "peer-hf-serve-warm",
            "peer-hf-serve-warm-cb", "serve-memory", "peer-hf-serve-memory"} <= names
    for name in names:
        w = benchkit.WORKLOADS[name]
        assert w.process and w.doc
        assert w.doc.startswith("peer") == name.startswith("peer-")
        assert ("tuned" in name) == ("tuned" in w.doc)


def _records(pairs):
    out = []
    for number, a, b in pairs:
        out.append(dict(workload="a", round=number, warmup=number <= 0, ttft=a))
        out.append(dict(workload="b", round=number, warmup=number <= 0, ttft=b))
    return out


def test_paired_ratios_per_round_skip_warmup_and_bad_runs():
    records = _records([(0, 1.0, 9.0), (1, 1.0, 2.0), (2, 2.0, 3.0), (3, 1.0, None)])
    records.append(dict(workload="a", round=4, ttft=1.0))
    records.append(dict(workload="b", round=4, ttft=5.0, valid=False))
    records.append(dict(workload="a", round=5, ttft=1.0, status="failed"))
    records.append(dict(workload="b", round=5, ttft=5.0))
    got = bench_serving.paired(records, "a", "b", "ttft")
    assert got == [(1, 2.0), (2, 1.5), (3, None), (4, None), (5, None)]


def test_ratio_report_prints_median_and_range(tmp_path):
    records = _records([(1, 1.0, 2.0), (2, 1.0, 4.0), (3, 1.0, 3.0)])
    out = io.StringIO()
    bench_serving.ratio_report(records, "a", ("ttft", "tokens_per_s"), stream=out)
    text = out.getvalue()
    assert "median 3.00x [2.00-4.00] over 3 pairs" in text
    assert "tokens_per_s" not in text  # absent keys are left out
    path = tmp_path / "results.jsonl"
    path.write_text("summary line\n" + "\n".join(json.dumps(r) for r in records) + "\n{bad\n")
    assert len(bench_serving.read_records(path.read_text().splitlines())) == 6


def test_hf_serve_load_events_are_read_from_its_log(tmp_path):
    log = tmp_path / "hf.log"
    log.write_text('INFO: started\nBENCH-LOAD {"model": "m@main", "start": 1.0, "end": 3.5}\n')
    server = serveproc.HFServe(str(tmp_path), 5)
    server.server = serveproc._Process(["true"], str(log))
    assert server.events() == [("BENCH-LOAD", {"model": "m@main", "start": 1.0, "end": 3.5})]
    assert server.loaded is True and server.events() == []
    with open(log, "a") as f:
        f.write('[transformers] noise\nBENCH-UNLOAD {"at": 9.0}\nBENCH-LOAD {"mod')
    assert server.events() == [("BENCH-UNLOAD", {"at": 9.0})] and server.loaded is False
    with open(log, "a") as f:  # a line read while it was being written: taken once whole
        f.write('el": "m@main", "start": 10.0, "end": 11.0}\n')
    assert server.events() == [("BENCH-LOAD", {"model": "m@main", "start": 10.0,
                                              "end": 11.0})]


def test_command_lines_refuse_bad_arguments(capsys):
    assert servepeer.main([]) == 2
    assert servepeer.main(["hf-process", "dir"]) == 2
    assert bench_serving.main(["nonsense"]) == 2
    assert "usage" in capsys.readouterr().err


def test_same_outputs_compares_digests_round_by_round():
    records = [dict(workload="a", round=1, output_digest="x"),
               dict(workload="b", round=1, output_digest="x"),
               dict(workload="a", round=2, output_digest="y"),
               dict(workload="b", round=2, output_digest="z"),
               dict(workload="a", round=3, output_digest="y"),
               dict(workload="a", round=0, warmup=True, output_digest="w"),
               dict(workload="b", round=0, warmup=True, output_digest="w")]
    assert bench_serving.same_outputs(records, "a", "b") == (1, 2)
    out = io.StringIO()
    bench_serving.ratio_report(records, "a", ("ttft",), stream=out)
    assert "b: the same outputs as a in 1 of 2 rounds" in out.getvalue()
