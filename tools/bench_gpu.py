"""GPU checkpoint workloads: the pinned host-to-device copy limit, our loads to CUDA, a peer.

    tools/gpu-check                    # runs them all, after `pytest -m gpu`
    gpu-limit-h2d-pinned        one copy of the model's bytes from pinned host memory (the limit)
    gpu-limit-h2d-pageable      the same from pageable memory
    gpu-ckpt-load               ckpt.load(path, "cuda"): our defaults
    gpu-ckpt-load-cold          the same with the page cache evicted before every run
    gpu-ckpt-load-tuned-pool    ckpt.load(path, "cuda", pool=HostPool, direct=<cold>)
    gpu-ckpt-tuned-dram-hit     ckpt.Store DRAM-tier hit to CUDA (a pinned pool's cache)
    gpu-peer-safetensors        safetensors.torch.load_file(path, device="cuda")

The model is the synthetic bf16 decoder of bench_ckpt.py (random bits, --size bytes), saved
in our format and as safetensors under ctx.workdir (a temporary directory: nothing is kept).
Runs are in one process with the CUDA context and the caching allocator warm, as in a
serving process; each workload first runs once untimed. A run's time ends after
torch.cuda.synchronize(), and every run's tensors are checked on the GPU against the
checksum taken when the model was made (`valid`). A tuned row's set-up (a pinned pool, a
filled cache) is timed once as `setup_seconds`. With ctx.cold the page cache is dropped
before each run; otherwise the files are cached.
"""

from __future__ import annotations

import inspect
import json
import os
import time

import torch
from bench_ckpt import state_dict
from benchkit import Context, evict, workload
from ckptpeer import touch

_SLACK = 64 << 20  # pool room beyond the model (slab rounding)


def cuda_device(ctx: Context) -> torch.device:
    """ctx.device when it names a CUDA device, else the current one."""
    name = ctx.device if ctx.device.startswith("cuda") else "cuda"
    dev = torch.device(name)
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


def dataset(ctx: Context) -> tuple[str, dict]:
    """The model in our format and as safetensors under ctx.workdir (made once per workdir)."""
    data = os.path.join(ctx.workdir, f"gpu-model-{ctx.size}")
    marker = os.path.join(data, "expected.json")
    if not os.path.exists(marker):
        from safetensors.torch import save_file

        import ckpt

        os.makedirs(data, exist_ok=True)
        sd = state_dict(ctx.size)
        ckpt.save(sd, os.path.join(data, "model.ckpt"))
        save_file(sd, os.path.join(data, "model.safetensors"))
        expected = {"checksum": touch(sd), "tensors": len(sd),
                    "bytes": sum(t.numel() * t.element_size() for t in sd.values())}
        del sd
        with open(marker, "w") as f:
            json.dump(expected, f)
    with open(marker) as f:
        return data, json.load(f)


def _files(data: str, target: str) -> list[str]:
    path = os.path.join(data, target)
    if os.path.isdir(path):
        return [os.path.join(path, f) for f in sorted(os.listdir(path))]
    return [path]


def _limit(ctx, data, expected, dev):
    nbytes = expected["bytes"]
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    src.fill_(7)
    dst = torch.empty(nbytes, dtype=torch.uint8, device=dev)

    def run():
        dst.copy_(src, non_blocking=True)
        return None  # the same bytes every time: nothing to check

    return run, []


def _limit_pageable(ctx, data, expected, dev):
    nbytes = expected["bytes"]
    src = torch.full((nbytes,), 7, dtype=torch.uint8)  # ordinary (pageable) memory
    dst = torch.empty(nbytes, dtype=torch.uint8, device=dev)

    def run():
        dst.copy_(src)
        return None

    return run, []


def _dram(ctx, data, expected, dev):
    import ckpt

    path = os.path.join(data, "model.ckpt")
    room = ckpt.read_index(path).total_bytes + _SLACK
    store = ckpt.Store([ckpt.DramTier(room, pool=ckpt.HostPool(room))])
    assert store.tiers[0].pool.pin, "the DRAM tier's pool is not pinned with CUDA present"
    first = store.load(path)  # untimed: from disk into the DRAM tier
    del first  # no tensor of it lives on: the entry is cached, not pinned

    def run():
        got = store.load(path, dev)
        if got.tier != "dram":
            raise RuntimeError(f"expected a DRAM-tier hit, got one from {got.tier}")
        return got.tensors

    return run, []


def _load(ctx, data, expected, dev):
    import ckpt

    path = os.path.join(data, "model.ckpt")

    def run():
        return ckpt.load(path, dev)

    return run, _files(data, "model.ckpt")


def _disk(ctx, data, expected, dev):
    import ckpt

    path = os.path.join(data, "model.ckpt")
    pool = ckpt.HostPool(ckpt.read_index(path).total_bytes + _SLACK)  # pinned staging
    kwargs = {"pool": pool}
    if "direct" in inspect.signature(ckpt.load).parameters:
        kwargs["direct"] = ctx.cold

    def run():
        return ckpt.load(path, dev, **kwargs)

    return run, _files(data, "model.ckpt")


def _safetensors(ctx, data, expected, dev):
    from safetensors.torch import load_file

    path = os.path.join(data, "model.safetensors")

    def run():
        return load_file(path, device=str(dev))

    return run, [path]


WORKLOADS = {
    "gpu-limit-h2d-pinned": (_limit, "limit: one copy of the model's bytes from pinned memory"),
    "gpu-limit-h2d-pageable": (_limit_pageable,
                               "limit: one copy of the model's bytes from pageable memory"),
    "gpu-ckpt-load": (_load, "ours: ckpt.load(path, 'cuda'), defaults"),
    "gpu-ckpt-load-cold": (_load, "ours: ckpt.load(path, 'cuda'), defaults, page cache "
                                  "evicted before every run"),
    "gpu-ckpt-load-tuned-pool": (_disk, "ours, tuned: ckpt.load to CUDA, pinned HostPool staging"),
    "gpu-ckpt-tuned-dram-hit": (_dram, "ours, tuned: Store DRAM-tier hit to CUDA (pinned cache)"),
    "gpu-peer-safetensors": (_safetensors, "peer: safetensors.torch.load_file(device='cuda')"),
}
TUNED = {"gpu-ckpt-load-tuned-pool": "pool: a pinned HostPool made before the clock; "
                                     "direct=True when the run is cold",
         "gpu-ckpt-tuned-dram-hit": "Store with a pinned DRAM tier filled by one load before "
                                    "the clock; the run is a hit"}
LIMIT = "gpu-limit-h2d-pinned"
ALWAYS_COLD = {"gpu-ckpt-load-cold"}  # so one gpu-check shows disk-to-GPU cold and warm


def runs(name: str, ctx: Context):
    """The records of ctx.repeat timed runs of workload name (after one untimed run)."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"{name}: no CUDA device")
    dev = cuda_device(ctx)
    data, expected = dataset(ctx)
    t0 = time.perf_counter()
    run, files = WORKLOADS[name][0](ctx, data, expected, dev)
    setup = time.perf_counter() - t0
    for i in range(ctx.repeat + 1):  # run 0 warms up, untimed
        for path in files if ctx.cold or name in ALWAYS_COLD else []:
            evict(path)
        torch.cuda.synchronize(dev)
        start = time.perf_counter()
        out = run()
        torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
        valid = out is None or touch(out) == expected["checksum"]
        del out
        if i:
            yield dict(workload=name, device=f"{dev} {torch.cuda.get_device_name(dev)}",
                       role=WORKLOADS[name][1].split(":")[0].split(",")[0],
                       tuned=TUNED.get(name), setup_seconds=setup,
                       is_pmem=False, size=ctx.size, tensors=expected["tensors"],
                       threads=ctx.threads, cold=ctx.cold or name in ALWAYS_COLD,
                       bytes=expected["bytes"],
                       bytes_written=0, seconds=seconds, valid=valid)


def _register(name: str) -> None:
    def fn(ctx: Context):
        yield from runs(name, ctx)

    fn.__doc__ = WORKLOADS[name][1]
    workload(name, "gpu")(fn)


for _name in WORKLOADS:
    _register(_name)
