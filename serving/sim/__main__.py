"""python -m serving.sim: simulate policies over a trace or a synthetic stream; table, CSV, PNGs.

    python -m serving.sim --servers 4 --gpus-per-server 4 --models 32 --rps 0.2,0.5,1,2 \\
        --policy all --trace synthetic --out docs/sim
    python -m serving.sim --trace serving/sim/data/AzureLLMInferenceTrace_conv.csv --rps 1,4
    python -m serving.sim --trace day01.csv,day02.csv --minutes 120 --rps 1   # Azure Functions

--trace: "synthetic" (Gamma arrivals, --cv, --zipf, --requests), a CSV of the Azure LLM
inference trace schema (its arrivals time-scaled to each --rps, --requests of them), or CSVs
of the Azure Functions 2019 schema, comma separated (mapped onto the models, rescaled to
each --rps). Every policy sees the same requests at a given rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from serving.sim.engine import simulate
from serving.sim.report import Result, table, write_csv
from serving.sim.setup import SIM_POLICIES, Setup
from serving.sim.timing import GPUS
from serving.sim.workload import (
    FUNCTION_KEYS,
    Workload,
    functions_workload,
    llm_trace,
    read_functions,
    read_llm_trace,
    synthetic,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.sim", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--servers", type=int, default=4)
    add("--gpus-per-server", type=int, default=4)
    add("--gpu", default="a40", choices=sorted(GPUS))
    add("--models", type=int, default=32)
    add("--model-sizes", default="7B", help="sizes dealt to the models in turn: 7B,13B,70B")
    add("--rps", default="0.2,0.5,1,2", help="request rates, comma separated")
    add("--policy", default="all", help=f"all, or some of {','.join(SIM_POLICIES)}")
    add("--trace", default="synthetic", help="synthetic | LLM-trace CSV | Functions CSVs")
    add("--requests", type=int, default=20_000, help="requests per run (synthetic, LLM trace)")
    add("--minutes", type=int, default=None, help="Functions trace: minutes to replay")
    add("--cv", type=float, default=4.0, help="synthetic: inter-arrival CV")
    add("--zipf", type=float, default=1.1, help="model popularity skew")
    add("--dram-gb", type=float, default=128.0, help="DRAM checkpoint cache per server")
    add("--ssd-gb", type=float, default=2000.0, help="SSD checkpoint cache per server")
    add("--ssd-copies", type=int, default=1, help="servers whose SSD holds a model at start")
    add("--network-gbit", type=float, default=10.0, help="registry bandwidth per server")
    add("--keep-alive", type=float, default=60.0)
    add("--target-concurrency", type=int, default=8)
    add("--max-instances", type=int, default=8)
    add("--seed", type=int, default=0)
    add("--out", default=None, help="directory for sim.csv and the PNG plots")
    add("--quiet", action="store_true", help="no progress bar")
    return p


def workload_for(args, rps: float) -> Workload:
    """The requests of one run at rps (see the module docstring)."""
    if args.trace == "synthetic":
        return synthetic(args.requests, rps=rps, cv=args.cv, zipf=args.zipf,
                         models=args.models, seed=args.seed)
    paths = args.trace.split(",")
    with open(paths[0], newline="") as f:
        header = f.readline().strip().split(",")
    if header[:4] == FUNCTION_KEYS:
        return functions_workload(read_functions(paths), models=args.models, rps=rps,
                                  seed=args.seed, minutes=args.minutes)
    return llm_trace(read_llm_trace(paths[0]), models=args.models, rps=rps, zipf=args.zipf,
                     seed=args.seed, limit=args.requests)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    policies = list(SIM_POLICIES) if args.policy == "all" else args.policy.split(",")
    for name in policies:
        if name not in SIM_POLICIES:
            print(f"unknown policy {name!r}; known: {', '.join(SIM_POLICIES)}", file=sys.stderr)
            return 2
    setup = Setup(servers=args.servers, gpus_per_server=args.gpus_per_server, gpu=args.gpu,
                  models=args.models, sizes=tuple(args.model_sizes.split(",")),
                  dram_gb=args.dram_gb, ssd_gb=args.ssd_gb, ssd_copies=args.ssd_copies,
                  network_gbit=args.network_gbit, keep_alive=args.keep_alive,
                  target_concurrency=args.target_concurrency,
                  max_instances=args.max_instances, seed=args.seed)
    rates = [float(x) for x in args.rps.split(",")]
    workloads = [workload_for(args, rps) for rps in rates]
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(policies) * sum(len(w) for w in workloads), unit="req",
                   unit_scale=True, file=sys.stderr, mininterval=0.5)
    results: list[Result] = []
    for rps, w in zip(rates, workloads, strict=True):
        for name in policies:
            start = time.perf_counter()
            res = simulate(setup, w, name, bar.update if bar is not None else None)
            res.wall_seconds = time.perf_counter() - start
            res.rps = rps  # the rate asked for (the stream's own mean is close to it)
            if bar is not None:
                bar.update(len(w) % 10_000)
            results.append(res)
    if bar is not None:
        bar.close()
    hw = setup.hardware()
    zoo = setup.zoo()
    print(f"# {args.servers} servers x {args.gpus_per_server} {args.gpu}, slots of "
          f"{setup.slot_gpus()} GPU(s); {args.models} models ({args.model_sizes}, "
          f"{zoo[0].nbytes / 1e9:.1f} GB first); dram/local/registry "
          f"{hw.dram_bandwidth / 1e9:.1f}/{hw.ssd_bandwidth / 1e9:.1f}/"
          f"{hw.registry_bandwidth / 1e9:.2f} GB/s; keep-alive {args.keep_alive:g} s; "
          f"trace {workloads[0].source}")
    print(table(results))
    if args.out:
        _save(args.out, results, rates)
    return 0


def _save(out: str, results: list[Result], rates: list[float]) -> None:
    from serving.sim.plots import cdf_plot, rate_plot

    os.makedirs(out, exist_ok=True)
    write_csv(os.path.join(out, "sim.csv"), results)
    for rps in sorted({r.rps for r in results}):
        same = [r for r in results if r.rps == rps]
        for what in ("startup", "ttft"):
            cdf_plot(same, what, os.path.join(out, f"cdf-{what}-rps{rps:.3g}.png"),
                     f"{what} CDF at {rps:.3g} requests/s")
    if len(rates) > 1:
        for what in ("startup", "ttft"):
            rate_plot(results, os.path.join(out, f"rate-{what}.png"), what,
                      f"{what} against the request rate")
    print(f"# wrote {out}/sim.csv and the plots", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
