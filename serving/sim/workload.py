"""Request streams for the simulator: trace readers and a seeded synthetic generator.

    w = llm_trace(read_llm_trace(LLM_TRACE), models=32, rps=2.0, seed=0)
    w = functions_workload(read_functions(["d01.csv"]), models=32, rps=1.0, seed=0)
    w = synthetic(100_000, rps=5.0, cv=4.0, zipf=1.1, models=32, seed=0)
    w.times[i], w.models[i], w.prompt[i], w.output[i]      # sorted by arrival

Schemas: the Azure LLM inference trace 2023 (`TIMESTAMP,ContextTokens,GeneratedTokens`) and
the Azure Functions 2019 trace (`HashOwner,HashApp,HashFunction,Trigger` then 1440 per-minute
invocation counts, one CSV per day). The same arguments always give the same workload.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np

__all__ = ["LLM_TRACE", "FunctionCounts", "LLMTrace", "Workload", "functions_workload",
           "llm_trace", "read_functions", "read_llm_trace", "synthetic", "zipf_models"]

#: the bundled real trace (CC-BY 4.0, attribution in data/README.md)
LLM_TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                         "AzureLLMInferenceTrace_conv.csv")
LLM_COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
FUNCTION_KEYS = ["HashOwner", "HashApp", "HashFunction", "Trigger"]
MINUTES = 1440


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival: seconds from the start, model number (into the zoo),
    prompt tokens and output tokens (at least 1)."""

    times: np.ndarray
    models: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    source: str = ""

    def __post_init__(self):
        n = len(self.times)
        if not (len(self.models) == len(self.prompt) == len(self.output) == n):
            raise ValueError("a workload's columns must have one length")
        if n and np.any(np.diff(self.times) < 0):
            raise ValueError("a workload's arrivals must be sorted")

    def __len__(self) -> int:
        return len(self.times)

    @property
    def duration(self) -> float:
        return float(self.times[-1] - self.times[0]) if len(self) > 1 else 0.0

    @property
    def rate(self) -> float:
        """Mean requests per second."""
        return (len(self) - 1) / self.duration if self.duration > 0 else 0.0

    def head(self, n: int) -> Workload:
        return Workload(self.times[:n], self.models[:n], self.prompt[:n], self.output[:n],
                        self.source)


@dataclass(frozen=True)
class LLMTrace:
    """The Azure LLM inference trace: arrival seconds from its first request, tokens."""

    times: np.ndarray
    context: np.ndarray
    generated: np.ndarray


def read_llm_trace(path: str = LLM_TRACE) -> LLMTrace:
    """Read a CSV in the Azure LLM inference trace schema. ValueError names the bad line."""
    times, ctx, gen = [], [], []
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header != LLM_COLUMNS:
            raise ValueError(f"{path}: header {header}, expected {LLM_COLUMNS}")
        for line, row in enumerate(rows, 2):
            try:
                stamp, c, g = row
                times.append(datetime.fromisoformat(stamp).timestamp())
                ctx.append(int(c))
                gen.append(int(g))
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {row!r}: {exc}") from None
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    return LLMTrace(t - t[0] if len(t) else t, np.asarray(ctx, np.int64)[order],
                    np.asarray(gen, np.int64)[order])


def zipf_models(n: int, models: int, zipf: float, rng: np.random.Generator) -> np.ndarray:
    """n model numbers with Zipf(zipf) popularity over the models in a seeded random order
    (the most popular is not always m0)."""
    order = rng.permutation(models)
    weights = 1.0 / np.arange(1, models + 1) ** zipf
    return order[rng.choice(models, size=n, p=weights / weights.sum())].astype(np.int32)


def llm_trace(trace: LLMTrace, *, models: int, rps: float | None = None, zipf: float = 1.1,
              seed: int = 0, limit: int | None = None) -> Workload:
    """The trace's arrivals and token counts, time scaled to a mean of rps requests/s
    (None: as recorded), each request given a model by Zipf popularity."""
    n = len(trace.times) if limit is None else min(limit, len(trace.times))
    t = trace.times[:n].copy()
    if rps is not None and n > 1 and t[-1] > 0:
        t *= ((n - 1) / t[-1]) / rps
    rng = np.random.default_rng(seed)
    return Workload(t, zipf_models(n, models, zipf, rng), _tokens(trace.context[:n]),
                    _tokens(trace.generated[:n]), "azure-llm")


def synthetic(n: int, *, rps: float, cv: float = 1.0, zipf: float = 1.1, models: int = 32,
              seed: int = 0, lengths: LLMTrace | None = None) -> Workload:
    """n requests: Gamma inter-arrival times of mean 1/rps and coefficient of variation cv
    (1: Poisson, more: burstier), Zipf-skewed model popularity, (prompt, output) pairs drawn
    together from lengths (default: the bundled trace)."""
    if rps <= 0 or cv <= 0 or n < 0:
        raise ValueError("synthetic needs rps > 0, cv > 0 and n >= 0")
    rng = np.random.default_rng(seed)
    shape = 1.0 / (cv * cv)
    gaps = rng.gamma(shape, 1.0 / rps / shape, size=n)
    lengths = lengths if lengths is not None else read_llm_trace()
    pick = rng.integers(0, len(lengths.context), size=n)
    return Workload(np.cumsum(gaps), zipf_models(n, models, zipf, rng),
                    _tokens(lengths.context[pick]), _tokens(lengths.generated[pick]),
                    f"synthetic-cv{cv:g}-zipf{zipf:g}")


def _tokens(a: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(a, dtype=np.int64), 1).astype(np.int32)


# -- Azure Functions 2019 ---------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionCounts:
    """One function of the Azure Functions trace: its keys and its invocations per minute
    (1440 per day read, days concatenated in the order given)."""

    owner: str
    app: str
    function: str
    trigger: str
    counts: np.ndarray


def read_functions(paths: list[str]) -> list[FunctionCounts]:
    """Read day files of the Azure Functions 2019 schema. A function missing from a day
    counts 0 that day; ValueError names a bad file or line."""
    days: list[dict[tuple, np.ndarray]] = []
    for path in paths:
        day: dict[tuple, np.ndarray] = {}
        with open(path, newline="") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            want = FUNCTION_KEYS + [str(i) for i in range(1, MINUTES + 1)]
            if header != want:
                raise ValueError(f"{path}: not the Azure Functions schema "
                                 f"(HashOwner,HashApp,HashFunction,Trigger,1..1440)")
            for line, row in enumerate(rows, 2):
                if len(row) != len(want):
                    raise ValueError(f"{path}:{line}: {len(row)} fields, expected {len(want)}")
                try:
                    counts = np.asarray([int(x) for x in row[4:]], dtype=np.int64)
                except ValueError as exc:
                    raise ValueError(f"{path}:{line}: {exc}") from None
                key = tuple(row[:4])
                day[key] = day[key] + counts if key in day else counts
        days.append(day)
    keys = sorted({k for d in days for k in d})
    zero = np.zeros(MINUTES, dtype=np.int64)
    return [FunctionCounts(*k, np.concatenate([d.get(k, zero) for d in days])) for k in keys]


def functions_workload(functions: list[FunctionCounts], *, models: int, rps: float,
                       seed: int = 0, minutes: int | None = None,
                       lengths: LLMTrace | None = None) -> Workload:
    """Requests from per-minute function counts. Mapping: functions, most invoked first,
    are dealt round robin onto the models (model i gets functions i, i + models, ...), so
    popular functions make popular models; each model's per-minute count is the sum of its
    functions'. Rescaling: every count times one factor so that the mean rate over the
    window (the first `minutes`, default all) is rps; a fractional count rounds up with
    probability its fraction, and a minute's requests arrive uniformly at random within it.
    Prompt and output lengths are drawn as in synthetic."""
    if not functions or models < 1 or rps <= 0:
        raise ValueError("functions_workload needs functions, models >= 1 and rps > 0")
    span = len(functions[0].counts) if minutes is None else minutes
    ranked = sorted(functions, key=lambda f: (-int(f.counts[:span].sum()), f.owner, f.app,
                                              f.function))
    per_model = np.zeros((models, span), dtype=np.float64)
    for i, fn in enumerate(ranked):
        per_model[i % models] += fn.counts[:span]
    total = per_model.sum()
    if total == 0:
        raise ValueError("the functions have no invocations in the window")
    scaled = per_model * (rps * 60.0 * span / total)
    rng = np.random.default_rng(seed)
    whole = np.floor(scaled)
    counts = (whole + (rng.random(scaled.shape) < scaled - whole)).astype(np.int64)
    model_of = np.repeat(np.tile(np.arange(models), span), counts.T.ravel())
    minute = np.repeat(np.repeat(np.arange(span), models), counts.T.ravel())
    t = (minute + rng.random(len(minute))) * 60.0
    order = np.argsort(t, kind="stable")
    lengths = lengths if lengths is not None else read_llm_trace()
    pick = rng.integers(0, len(lengths.context), size=len(t))
    return Workload(t[order], model_of[order].astype(np.int32), _tokens(lengths.context[pick]),
                    _tokens(lengths.generated[pick]), "azure-functions")
