"""What one simulation runs on: the cluster, the model zoo and the serving settings.

    s = Setup(servers=4, gpus_per_server=4, models=32, sizes=("7B",), gpu="a40")
    hw, zoo, slot_gpus = s.hardware(), s.zoo(), s.slot_gpus()

Simulated policies (SIM_POLICIES) are serving.policy's four, plus "serverless": the
locality-agnostic serverless baseline, i.e. serving.policy's `random` placement on machines
without a DRAM checkpoint cache (a load fills no DRAM; the SSD holds what it held or
downloaded, as for every policy), so every cold start loads from the SSD or the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.policy import POLICIES, Policy, get_policy
from serving.sim.timing import GPUS, Hardware, SimModel, make_zoo, slot_gpus

__all__ = ["SIM_POLICIES", "Setup", "make_policy"]

#: the serverless baseline first, then serving.policy's policies
SIM_POLICIES = ("serverless", "random", "least-loaded", "locality", "locality+migration")


def make_policy(name: str, seed: int = 0) -> tuple[Policy, bool]:
    """(the serving.policy object, whether machines cache checkpoints in DRAM) for a
    simulated policy name."""
    if name == "serverless":
        return get_policy("random", seed=seed), False
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {list(SIM_POLICIES)}")
    return get_policy(name, **({"seed": seed} if name == "random" else {})), True


@dataclass(frozen=True)
class Setup:
    """A cluster and its serving settings (defaults: a paper-like 4 x 4 A40 cluster).

    sizes: model sizes dealt in turn to m0 .. m{models-1} (e.g. "7B", "70B"). dram_gb,
    ssd_gb: each machine's checkpoint caches. ssd_copies: machines whose SSD holds each
    model at the start (model i on machines i, i+1, ... mod servers). network_gbit: the
    registry's bandwidth to each machine. keep_alive, target_concurrency, max_instances:
    serving.config's ModelSpec settings, for every model. build: seconds from loaded
    weights to a serving instance. Explicit bandwidths (GB/s) override the presets.
    initial: machine -> the models its SSD holds at the start (instead of ssd_copies).
    measured: a measured time model for every model instead of the GPU table (keys nbytes,
    prefill, decode, overhead: bytes, s per prompt token, s per output token, s), one GPU.
    estimates: tier -> bytes/s the policies start from (as a worker seeds the controller's
    serving.estimates), corrected by each load; None: they see the true speeds.
    """

    servers: int = 4
    gpus_per_server: int = 4
    gpu: str = "a40"
    models: int = 32
    sizes: tuple[str, ...] = ("7B",)
    dram_gb: float = 128.0
    ssd_gb: float = 2000.0
    ssds: int = 1
    ssd_copies: int = 1
    network_gbit: float = 10.0
    keep_alive: float = 60.0
    target_concurrency: int = 8
    max_instances: int = 8
    build: float = 0.0
    bandwidths: dict = field(default_factory=dict)  # tier -> GB/s, overriding presets
    seed: int = 0
    initial: dict | None = None
    measured: dict | None = None
    estimates: dict | None = None

    def zoo(self) -> list[SimModel]:
        m = self.measured
        if m is not None:
            return [SimModel(f"m{i}", 0.0, int(m["nbytes"]), 1, m["prefill"], m["decode"],
                             m["prefill"], 0.02, m.get("overhead", 0.0))
                    for i in range(self.models)]
        return make_zoo(self.models, list(self.sizes), GPUS[self.gpu])

    def slot_gpus(self) -> int:
        return slot_gpus(self.zoo(), self.gpus_per_server)

    def hardware(self) -> Hardware:
        if self.gpu not in GPUS:
            raise ValueError(f"unknown GPU {self.gpu!r}; known: {sorted(GPUS)}")
        hw = Hardware.from_presets(GPUS[self.gpu], gpus=self.gpus_per_server,
                                   dram_gb=self.dram_gb, ssd_gb=self.ssd_gb, ssds=self.ssds,
                                   network_gbit=self.network_gbit,
                                   slot_gpus=self.slot_gpus())
        fields = {"dram": "dram_bandwidth", "local": "ssd_bandwidth",
                  "registry": "registry_bandwidth"}
        over = {fields[t]: gbps * 1e9 for t, gbps in self.bandwidths.items()}
        return Hardware(**{**hw.__dict__, **over, "build": self.build})

    def layout(self) -> dict[int, list[str]]:
        """Machine -> the models its SSD holds at the start."""
        if self.initial is not None:
            return {int(k): list(v) for k, v in self.initial.items()}
        out: dict[int, list[str]] = {m: [] for m in range(self.servers)}
        for i in range(self.models):
            for c in range(min(self.ssd_copies, self.servers)):
                out[(i + c) % self.servers].append(f"m{i}")
        return out
