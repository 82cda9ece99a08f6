"""The simulator's numbers: GPUs, model sizes, tier bandwidths and the inference time model.

    gpu = GPUS["a40"]
    zoo = make_zoo(32, ["7B", "13B"], gpu)       # SimModel: bytes, GPUs, prefill, per token
    hw = Hardware.from_presets(gpu)               # dram / local (SSD) / registry bandwidths
    zoo[0].prefill_seconds(512), zoo[0].decode_seconds

The time model (docs/SIMULATOR.md lists the sources):

- prefill of n tokens = n * 2 * params FLOPs (a transformer's forward pass costs about two
  FLOPs per parameter per token) / (GPUs * peak fp16 tensor FLOP/s * MFU);
- one decode step = weight bytes / (GPUs * HBM bytes/s * MBU): decoding reads every weight
  once per step and is bound by memory bandwidth, so a small batch costs the same as one
  request, and each request's tokens come one step apart;
- a model needs the smallest power of two of GPUs whose memory holds its weights within
  WEIGHT_SHARE of it (the rest is for the KV cache and activations).

Tier bandwidths: DRAM -> GPU is the PCIe link of each of the slot's GPUs (loaded in
parallel), capped by the DRAM preset; the local SSD is bas's `nvme` preset (sequential
read peak); the registry is the network to the model store. No clocks, no randomness.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bas.braid.presets import get_preset

__all__ = ["GPUS", "GPU", "Hardware", "SIZES", "SimModel", "WEIGHT_SHARE", "make_zoo",
           "parse_size", "sim_model", "slot_gpus"]

GB = 1e9
#: share of a GPU's memory the weights may take (the rest: KV cache, activations)
WEIGHT_SHARE = 0.8
#: assumed model FLOPs utilisation of prefill and memory bandwidth utilisation of decode
MFU = 0.5
MBU = 0.7


@dataclass(frozen=True)
class GPU:
    """One GPU model: memory, dense fp16 tensor FLOP/s, HBM bytes/s, host link bytes/s."""

    name: str
    memory: float
    flops: float
    hbm: float
    pcie: float


#: datasheet figures (dense fp16 tensor throughput, no sparsity); pcie is what a pinned
#: host-to-device copy reaches in practice (PCIe 4.0 x16 ~ 25 GB/s, 5.0 x16 ~ 50 GB/s)
GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("a40", 48 * GB, 149.7e12, 696 * GB, 25 * GB),
    GPU("a100", 80 * GB, 312e12, 2039 * GB, 25 * GB),
    GPU("h100", 80 * GB, 989e12, 3350 * GB, 50 * GB),
    GPU("cpu", 64 * GB, 1e12, 20 * GB, 20 * GB),  # placeholder; the cross-check measures
)}

#: parameter counts of common open model sizes (Llama 2 7B/13B/70B, Code Llama 34B)
SIZES: dict[str, float] = {"7B": 6.74e9, "13B": 13.0e9, "34B": 33.7e9, "70B": 69.0e9}


def parse_size(text: str) -> float:
    """Parameters from "7B", "13b", "350M" or a plain number."""
    text = text.strip()
    if text.upper() in SIZES:
        return SIZES[text.upper()]
    m = re.fullmatch(r"([0-9.]+)\s*([kKmMbB]?)", text)
    if not m:
        raise ValueError(f"not a model size: {text!r} (e.g. 7B, 350M, {sorted(SIZES)})")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()]


@dataclass(frozen=True)
class SimModel:
    """A model of the zoo: checkpoint bytes, GPUs per instance and its time model.

    prefill: seconds per prompt token; decode_seconds: one decode step; cost_a/cost_b:
    the migration cost model (recompute a * tokens + b per moved inference); overhead:
    fixed seconds before a request's first token besides its prefill (0 on GPUs here; the
    cross-check measures HTTP, tokenising and the first step of a CPU server).
    """

    name: str
    params: float
    nbytes: int
    gpus: int
    prefill: float
    decode_seconds: float
    cost_a: float
    cost_b: float
    overhead: float = 0.0

    def prefill_seconds(self, tokens: int) -> float:
        return self.overhead + tokens * self.prefill


def gpus_needed(nbytes: float, gpu: GPU) -> int:
    """The smallest power of two of GPUs whose memory holds nbytes of weights."""
    k = 1
    while nbytes > k * gpu.memory * WEIGHT_SHARE:
        k *= 2
        if k > 64:
            raise ValueError(f"{nbytes / GB:.0f} GB of weights need more than 64 {gpu.name}")
    return k


def sim_model(name: str, params: float, gpu: GPU, *, bytes_per_param: float = 2.0,
              handover: float = 0.02) -> SimModel:
    """A model of params parameters in fp16 on GPUs of type gpu (see the module docstring);
    handover: the fixed seconds of one inference's migration (cost_b)."""
    nbytes = int(params * bytes_per_param)
    k = gpus_needed(nbytes, gpu)
    prefill = 2.0 * params / (k * gpu.flops * MFU)
    decode = nbytes / (k * gpu.hbm * MBU)
    return SimModel(name, params, nbytes, k, prefill, decode, prefill, handover)


def make_zoo(n: int, sizes: list[str] | list[float], gpu: GPU) -> list[SimModel]:
    """n models m0 .. m{n-1}, sizes taken in turn from sizes."""
    if n < 1 or not sizes:
        raise ValueError("a zoo needs at least one model and one size")
    params = [parse_size(s) if isinstance(s, str) else float(s) for s in sizes]
    return [sim_model(f"m{i}", params[i % len(params)], gpu) for i in range(n)]


@dataclass(frozen=True)
class Hardware:
    """One machine of the cluster: GPUs, DRAM and SSD checkpoint caches, tier bandwidths.

    Bandwidths in bytes/s and latencies in seconds, per tier name as policies see them
    ("dram", "local" for the SSD, "registry"); `build` is the fixed seconds from loaded
    weights to a serving instance.
    """

    gpu: GPU
    gpus: int = 4
    dram_bytes: float = 128 * GB
    ssd_bytes: float = 2000 * GB
    dram_bandwidth: float = 25 * GB
    ssd_bandwidth: float = 7 * GB
    registry_bandwidth: float = 1.25 * GB
    dram_latency: float = 0.0
    ssd_latency: float = 0.0
    registry_latency: float = 0.01
    build: float = 0.0

    @classmethod
    def from_presets(cls, gpu: GPU, *, gpus: int = 4, dram_gb: float = 128,
                     ssd_gb: float = 2000, ssds: int = 1, network_gbit: float = 10.0,
                     slot_gpus: int = 1) -> Hardware:
        """A machine from bas's presets: DRAM -> GPU over the slot's PCIe links, capped by
        the `dram` preset's peak; the SSD `ssds` x the `nvme` preset's sequential read
        peak; the registry network_gbit Gbit/s."""
        dram, nvme = get_preset("dram"), get_preset("nvme")
        return cls(gpu=gpu, gpus=gpus, dram_bytes=dram_gb * GB, ssd_bytes=ssd_gb * GB,
                   dram_bandwidth=min(slot_gpus * gpu.pcie, dram.seq_read.peak),
                   ssd_bandwidth=ssds * nvme.seq_read.peak,
                   registry_bandwidth=network_gbit * GB / 8,
                   dram_latency=dram.read_latency, ssd_latency=nvme.read_latency)

    def load_seconds(self, tier: str, nbytes: int) -> float:
        """Seconds to load nbytes from tier (what the policies' TierView estimates too)."""
        bw, lat = self.tier(tier)
        return lat + nbytes / bw

    def tier(self, name: str) -> tuple[float, float]:
        """(bandwidth, latency) of tier name."""
        if name == "dram":
            return self.dram_bandwidth, self.dram_latency
        if name == "local":
            return self.ssd_bandwidth, self.ssd_latency
        if name == "registry":
            return self.registry_bandwidth, self.registry_latency
        raise ValueError(f"unknown tier {name!r}")


def slot_gpus(models: list[SimModel], gpus_per_server: int) -> int:
    """GPUs per policy server (slot): the most any model needs; it must divide the machine."""
    k = max(m.gpus for m in models)
    if k > gpus_per_server or gpus_per_server % k:
        raise ValueError(f"a model needs {k} GPUs; a server has {gpus_per_server} "
                         f"(slots of {k} GPUs must tile it)")
    return k
