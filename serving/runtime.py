"""What runs inside one worker: its checkpoint store and at most one model instance.

    runtime = Runtime(spec)                      # imports torch/transformers, opens the tiers
    report = runtime.load("tiny")                # ckpt.Store -> build_model -> Engine
    runtime.generate("r1", "tiny", ids, params, emit)   # emit(Event) from the engine's thread
    runtime.unload()

No transport here: serving.process drives a Runtime through a pipe, serving.rayworker's
actor holds one too. The store's tiers, fastest first: DRAM (spec.dram_bytes, none when 0),
the local disk (spec.disk_dir), then the registry's tier; a first load streams from the
registry into the local disk and DRAM.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future

from serving.protocol import Event, SamplingParams
from serving.worker import LoadReport, WorkerSpec, version_of

__all__ = ["Runtime"]

log = logging.getLogger("serving.runtime")


class Runtime:
    """One server's store and instance. Not thread-safe: one caller at a time (generate's
    emit is called from the engine's thread)."""

    def __init__(self, spec: WorkerSpec):
        import torch

        torch.set_num_threads(spec.threads)
        # imported now (seconds), not on the first request's cold start
        import transformers.modeling_utils  # noqa: F401
        from transformers import AutoModelForCausalLM  # noqa: F401

        import ckpt
        import serving.engine
        import serving.model
        import serving.text  # noqa: F401
        from serving.registry import Registry

        self.spec = spec
        tiers = []
        if spec.dram_bytes > 0:
            pool = ckpt.HostPool(spec.dram_bytes) if spec.device != "cpu" else None
            tiers.append(ckpt.DramTier(spec.dram_bytes, pool=pool))
        tiers.append(ckpt.DiskTier(spec.disk_dir, spec.disk_bytes,
                                   profile=_saved_profile(spec.disk_dir)))
        link = {} if spec.registry_bandwidth is None else {"bandwidth": spec.registry_bandwidth}
        tiers.append(Registry(spec.registry).tier(**link))
        self.store = ckpt.Store(tiers)
        self.model: str | None = None
        self._engine = None

    def tiers(self) -> dict[str, list[str]]:
        """The local tiers' contents (tier name -> model names); the registry is left out."""
        return {t.name: sorted(t.names()) for t in self.store.tiers[:-1]}

    def estimates(self) -> dict[str, dict]:
        """Each tier's (registry included) own estimate() as {"bandwidth": bytes/s,
        "latency": s, "source": ...}: a line fitted through estimates at two sizes (the
        controller's serving.estimates seeds from it, then corrects it from observed loads).
        The disk tier's comes from the bas profile measured on its directory when
        measure_disk_profile saved one there, else from its preset."""
        small, large = 64 << 20, 1 << 30
        out = {}
        for t in self.store.tiers:
            a = t.estimate(small, max(1, small >> 23), self.spec.device)
            b = t.estimate(large, max(1, large >> 23), self.spec.device)
            bandwidth = (large - small) / max(b - a, 1e-12)
            profile = getattr(t, "profile", None)
            out[t.name] = {"bandwidth": bandwidth,
                           "latency": max(0.0, a - small / bandwidth),
                           "source": "profile" if profile is not None else "tier model"}
        return out

    def load(self, model: str, version: str | None = None) -> LoadReport:
        """Load model from the fastest tier holding it and start its engine; local copies
        whose version_of is not version are dropped first."""
        from serving.engine import Engine
        from serving.model import build_model
        from serving.text import Text

        if self._engine is not None:
            raise RuntimeError(f"{self.model} is loaded; unload it first")
        if version is not None:
            for tier in self.store.tiers[:-1]:
                if tier.holds(model) and version_of(tier.index(model)) != version:
                    log.info("worker %d: dropping %s from %s (not version %s)",
                             self.spec.index, model, tier.name, version)
                    self.store.evict(model, tier.name)
        loaded = self.store.load(model, self.spec.device)
        start = time.perf_counter()
        metadata = dict(loaded.index.metadata)  # every tier carries the serving metadata
        net = build_model(metadata, loaded.tensors, self.spec.device)
        text = Text.from_metadata(metadata)
        self._engine = Engine(net, text, max_batch=self.spec.max_batch, device=self.spec.device)
        self.model = model
        report = LoadReport(model, loaded.tier, loaded.seconds, time.perf_counter() - start,
                            loaded.nbytes, self.tiers())
        log.info("worker %d: %s loaded from %s in %.3f s (+%.3f s to build)", self.spec.index,
                 model, report.tier, report.load_seconds, report.build_seconds)
        return report

    def unload(self) -> dict[str, list[str]]:
        """Drop the engine and the model (the DRAM tier keeps the checkpoint if it fits)."""
        engine, self._engine, self.model = self._engine, None, None
        if engine is not None:
            engine.close()
            del engine
            gc.collect()  # the model's tensors pin their DRAM entry until they are freed
        return self.tiers()

    def evict(self, model: str, tier: str | None = None) -> dict[str, list[str]]:
        """Drop model from the named local tier, or from every local tier (None)."""
        for t in self.store.tiers[:-1]:
            if (tier is None or t.name == tier) and t.holds(model):
                self.store.evict(model, t.name)
        return self.tiers()

    def generate(self, request_id: str, model: str, prompt_ids: list[int],
                 params: SamplingParams, emit: Callable[[Event], None]) -> None:
        if self._engine is None or model != self.model:
            emit(Event("error", status=503, message=f"worker {self.spec.index} does not hold "
                       f"{model} (it holds {self.model})"))
            return
        self._engine.submit(request_id, prompt_ids, params, emit)

    def cancel(self, request_id: str) -> None:
        if self._engine is not None:
            self._engine.cancel(request_id)

    def stage(self, request_id: str, model: str, token_ids: list[int]) -> int:
        """Extend request_id's staged KV cache (serving.migration); how many ids are staged.
        Blocks until the engine thread computed it: a transport runs it off its message loop,
        or uses stage_async."""
        return self.stage_async(request_id, model, token_ids).result()

    def stage_async(self, request_id: str, model: str, token_ids: list[int]) -> Future:
        """stage, returning at once: the engine takes the ids in the order of the calls (so a
        cancel sent after it drops what it staged); the future's result is stage's."""
        engine = self._engine
        if engine is None or model != self.model:
            raise RuntimeError(f"worker {self.spec.index} does not hold {model} "
                               f"(it holds {self.model})")
        return engine.stage(request_id, token_ids)

    def handover(self, request_id: str) -> None:
        if self._engine is not None:
            self._engine.handover(request_id)

    def resume(self, request_id: str, model: str, prompt_ids: list[int],
               generated_ids: list[int], params: SamplingParams,
               generator_state: bytes | None, emit: Callable[[Event], None]) -> None:
        if self._engine is None or model != self.model:
            emit(Event("error", status=503, message=f"worker {self.spec.index} does not hold "
                       f"{model} (it holds {self.model})"))
            return
        self._engine.submit(request_id, prompt_ids, params, emit, generated_ids=generated_ids,
                            generator_state=generator_state)

    def close(self) -> None:
        self.unload()


#: where measure_disk_profile leaves the disk tier's profile (a file: the tier adopts
#: only checkpoint directories, so it ignores it)
PROFILE_FILE = "braid-profile.json"


def measure_disk_profile(disk_dir: str, size: int = 64 << 20) -> str:
    """Measure a quick bas profile on a file in the disk tier's own directory (the file
    system its checkpoints live on, page cache dropped before each read, not a temporary
    directory elsewhere), save it there for the workers' DiskTier, and return its path.
    Seconds of I/O: run it once per machine (tools/bench_policies.py does), not per start."""
    from bas.braid.profile import measure
    from bas.registry import open_device

    os.makedirs(disk_dir, exist_ok=True)
    scratch = os.path.join(os.path.abspath(disk_dir), ".braid-profile.bin")
    try:
        with open_device(f"file://{scratch}?size={size}") as device:
            prof = measure(device, threads=[1, 2, 4], quick=True)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    path = os.path.join(disk_dir, PROFILE_FILE)
    prof.save(path)
    return path


def _saved_profile(disk_dir: str):
    """The profile measure_disk_profile saved in disk_dir, or None (the tier's preset)."""
    from bas.braid.profile import Profile

    path = os.path.join(disk_dir, PROFILE_FILE)
    if not os.path.exists(path):
        return None
    try:
        return Profile.load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the disk profile %s: %s", path, exc)
        return None
