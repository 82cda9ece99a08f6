"""serving.sim's workloads: the real Azure LLM trace, synthetic files in the Azure Functions
2019 schema, and the synthetic generator's statistics."""

from __future__ import annotations

import os

import numpy as np
import pytest

from serving.sim.workload import (
    LLM_TRACE,
    functions_workload,
    llm_trace,
    read_functions,
    read_llm_trace,
    synthetic,
)


def test_the_real_llm_trace_is_read_whole():
    t = read_llm_trace()
    # 19,366 rows (the traces README says 19,365; the file, CRLF, no final newline, has one more)
    assert len(t.times) == 19_366
    assert t.times[0] == 0.0 and np.all(np.diff(t.times) >= 0)
    # 2023-11-16 18:15:46.68059 to 19:14:08.xx: about 58.4 minutes
    assert 3490 < t.times[-1] < 3510
    assert (t.context[:4] == [374, 396, 879, 91]).all()
    assert (t.generated[:4] == [44, 109, 55, 16]).all()
    assert t.times[1] == pytest.approx(50.9951690 - 46.6805900, abs=1e-6)


def test_the_trace_carries_its_attribution():
    with open(os.path.join(os.path.dirname(LLM_TRACE), "README.md")) as f:
        text = f.read()
    assert "CC-BY 4.0" in text and "Splitwise" in text and "Patel" in text


def test_llm_trace_rescales_to_a_rate_and_assigns_models():
    w = llm_trace(read_llm_trace(), models=8, rps=2.0, seed=1, limit=1000)
    assert len(w) == 1000 and w.rate == pytest.approx(2.0)
    assert set(np.unique(w.models)) <= set(range(8)) and (w.prompt >= 1).all()
    same = llm_trace(read_llm_trace(), models=8, rps=2.0, seed=1, limit=1000)
    assert np.array_equal(w.models, same.models)


def test_a_malformed_llm_trace_names_its_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,1,2\n"
                 "yesterday,3,4\n")
    with pytest.raises(ValueError, match=r"bad.csv:3"):
        read_llm_trace(str(p))
    p.write_text("time,in,out\n")
    with pytest.raises(ValueError, match="header"):
        read_llm_trace(str(p))


def _day(path, rows) -> str:
    """A day file in the exact Azure Functions 2019 schema."""
    header = ["HashOwner", "HashApp", "HashFunction", "Trigger"] + [
        str(i) for i in range(1, 1441)]
    lines = [",".join(header)]
    for keys, counts in rows:
        lines.append(",".join(list(keys) + [str(c) for c in counts]))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_functions_files_are_read_and_days_concatenated(tmp_path):
    a = ("o1", "a1", "f1", "http")
    b = ("o2", "a2", "f2", "timer")
    d1 = _day(tmp_path / "invocations_per_function_md.anon.d01.csv",
              [(a, [1] * 1440), (b, [0] * 1439 + [7])])
    d2 = _day(tmp_path / "d02.csv", [(a, [2] * 1440)])
    fns = read_functions([d1, d2])
    assert [(f.function, f.trigger) for f in fns] == [("f1", "http"), ("f2", "timer")]
    assert len(fns[0].counts) == 2880 and fns[0].counts.sum() == 1440 * 3
    assert fns[1].counts[1439] == 7 and fns[1].counts[1440:].sum() == 0  # absent day 2


def test_functions_schema_is_checked(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,2\n")
    with pytest.raises(ValueError, match="schema"):
        read_functions([str(bad)])
    short = _day(tmp_path / "short.csv", [(("o", "a", "f", "http"), [1] * 1440)])
    with open(short, "a") as f:
        f.write("o,a,g,http,1,2,3\n")
    with pytest.raises(ValueError, match="short.csv:3"):
        read_functions([short])


def test_functions_map_onto_models_and_rescale(tmp_path):
    rng = np.random.default_rng(0)
    rows = [((f"o{i}", "a", f"f{i}", "http"), rng.poisson(50.0 / (i + 1), 1440))
            for i in range(10)]
    fns = read_functions([_day(tmp_path / "d.csv", rows)])
    w = functions_workload(fns, models=4, rps=0.5, seed=2, minutes=120)
    assert len(w) == pytest.approx(0.5 * 7200, rel=0.05)  # rescaled to 0.5 requests/s
    assert w.times.max() < 7200 and np.all(np.diff(w.times) >= 0)
    # the most invoked function (f0) is dealt to model 0: the busiest model
    per = np.bincount(w.models, minlength=4)
    assert per.argmax() == 0
    # functions i, i+4, i+8 make model i: the per-minute shape follows their sum
    want = sum(rows[i][1][:120].sum() for i in (1, 5, 9)) / sum(r[1][:120].sum() for r in rows)
    assert per[1] / len(w) == pytest.approx(want, abs=0.03)
    again = functions_workload(fns, models=4, rps=0.5, seed=2, minutes=120)
    assert np.array_equal(w.times, again.times)


@pytest.mark.parametrize("cv", [1.0, 4.0])
def test_synthetic_arrivals_have_the_rate_and_cv(cv):
    w = synthetic(200_000, rps=5.0, cv=cv, zipf=1.1, models=16, seed=0)
    gaps = np.diff(w.times)
    assert gaps.mean() == pytest.approx(0.2, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_synthetic_popularity_is_zipf_and_lengths_come_from_the_trace():
    w = synthetic(200_000, rps=1.0, zipf=1.2, models=16, seed=0)
    counts = np.sort(np.bincount(w.models, minlength=16))[::-1]
    expect = 1.0 / np.arange(1, 17) ** 1.2
    assert counts / counts.sum() == pytest.approx(expect / expect.sum(), abs=0.005)
    # the fitted slope of log(count) on log(rank) is -zipf
    slope = np.polyfit(np.log(np.arange(1, 17)), np.log(counts), 1)[0]
    assert slope == pytest.approx(-1.2, abs=0.05)
    t = read_llm_trace()
    assert np.median(w.prompt) == pytest.approx(np.median(t.context), rel=0.05)
    assert np.median(w.output) == pytest.approx(np.median(t.generated), rel=0.05)


def test_synthetic_is_deterministic_for_a_seed():
    a = synthetic(1000, rps=1.0, cv=2.0, models=8, seed=5)
    b = synthetic(1000, rps=1.0, cv=2.0, models=8, seed=5)
    c = synthetic(1000, rps=1.0, cv=2.0, models=8, seed=6)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.models, b.models)
    assert not np.array_equal(a.times, c.times)
