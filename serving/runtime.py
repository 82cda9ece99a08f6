"""What runs inside one worker: its checkpoint store and at most one model instance.

    runtime = Runtime(spec)                      # imports torch/transformers, opens the tiers
    report = runtime.load("tiny")                # ckpt.Store -> build_model -> Engine
    runtime.generate("r1", "tiny", ids, params, emit)   # emit(Event) from the engine's thread
    runtime.unload()

No transport here: serving.process drives a Runtime through a pipe, a Ray actor would hold
one as well. The store's tiers, fastest first: DRAM (spec.dram_bytes, none when 0), the local
disk (spec.disk_dir), then the registry's tier; a first load streams from the registry into
the local disk and DRAM.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

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
        tiers.append(ckpt.DiskTier(spec.disk_dir, spec.disk_bytes))
        tiers.append(Registry(spec.registry).tier())
        self.store = ckpt.Store(tiers)
        self.model: str | None = None
        self._engine = None

    def tiers(self) -> dict[str, list[str]]:
        """The local tiers' contents (tier name -> model names); the registry is left out."""
        return {t.name: sorted(t.names()) for t in self.store.tiers[:-1]}

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

    def close(self) -> None:
        self.unload()
