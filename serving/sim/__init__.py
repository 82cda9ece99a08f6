"""serving.sim: a trace-driven discrete-event simulation of a serverless LLM cluster whose
placements, evictions and migrations are decided by serving.policy's own objects.

    from serving.sim import Setup, simulate, synthetic
    res = simulate(Setup(servers=4, gpus_per_server=4, models=32),
                   synthetic(10_000, rps=1.0, cv=4.0, models=32), "locality+migration")
    res.summary()

    python -m serving.sim --servers 4 --gpus-per-server 4 --models 32 --rps 0.2,0.5,1,2 \\
        --policy all --trace synthetic

No torch, Ray or HTTP: only serving.policy, bas's presets, numpy (and matplotlib for plots).
docs/SIMULATOR.md describes the model, its numbers and their sources.
"""

from serving.sim.cluster import Cluster
from serving.sim.engine import Simulator, simulate
from serving.sim.report import Result, table, write_csv
from serving.sim.setup import SIM_POLICIES, Setup, make_policy
from serving.sim.timing import GPUS, Hardware, SimModel, make_zoo
from serving.sim.workload import (
    LLM_TRACE,
    Workload,
    functions_workload,
    llm_trace,
    read_functions,
    read_llm_trace,
    synthetic,
)

__all__ = ["GPUS", "LLM_TRACE", "SIM_POLICIES", "Cluster", "Hardware", "Result", "Setup",
           "SimModel", "Simulator", "Workload", "functions_workload", "llm_trace",
           "make_policy", "make_zoo", "read_functions", "read_llm_trace", "simulate",
           "synthetic", "table", "write_csv"]
