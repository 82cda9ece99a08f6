"""Checkpoint loading workloads: ckpt.load, the DRAM tier and peer loaders on one model.

    tools/bench ckpt-ours peer-safetensors ... --size 2G --repeat 3 [--cold]

The model is a synthetic GPT-like decoder in bf16 (embeddings, per layer q/k/v/o, MLP
gate/up/down and two norms; layers added until --size is reached: 2 GiB gives 272 tensors),
saved once in our format, safetensors, torch .pt and tensorizer under $BAS_BENCH_DATA
(default /var/tmp/bas-bench-ckpt), and reused by later invocations. Each run is a fresh
process (tools/ckptpeer.py) that ends with the same full reduction over every byte; its
checksum must equal the one taken when the model was made. With --cold the files the loader
reads are evicted from the page cache (posix_fadvise DONTNEED) before each run; without it
they are read once beforehand, so every run finds them cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from benchkit import Context, evict, workload
from ckptpeer import touch

HERE = os.path.dirname(os.path.abspath(__file__))
HIDDEN, KV, FFN, VOCAB = 2048, 512, 3840, 24576
READS = {  # workload -> the files (or checkpoint directory) it reads
    "ckpt-ours": "model.ckpt", "ckpt-ours-nopool": "model.ckpt",
    "ckpt-ours-dram-hit": "model.ckpt", "limit-odirect-read": "model.ckpt",
    "peer-safetensors": "model.safetensors", "peer-fastsafetensors": "model.safetensors",
    "peer-torch-load": "model.pt", "peer-torch-load-mmap": "model.pt",
    "peer-tensorizer": "model.tensors", "limit-memcpy": None,
}
DOCS = {
    "ckpt-ours": "ours: ckpt.load into a pre-faulted HostPool (O_DIRECT cold, buffered warm)",
    "ckpt-ours-nopool": "ours: ckpt.load into a fresh buffer (faulted inside the timer)",
    "ckpt-ours-dram-hit": "ours: Store DRAM-tier hit (views of the cached buffer)",
    "peer-safetensors": "peer: safetensors.torch.load_file",
    "peer-torch-load": "peer: torch.load(weights_only=True)",
    "peer-torch-load-mmap": "peer: torch.load(weights_only=True, mmap=True)",
    "peer-tensorizer": "peer: tensorizer TensorDeserializer(device='cpu')",
    "peer-fastsafetensors": "peer: fastsafetensors fastsafe_open(nogds=True, device='cpu')",
    "limit-odirect-read": "limit: O_DIRECT read_many of the same partition bytes",
    "limit-memcpy": "limit: multi-threaded memcpy of the same number of bytes",
}


def shapes(size: int) -> list[tuple[str, tuple[int, ...]]]:
    """A decoder's tensors in load order, with as many layers as fit in size bytes (bf16)."""
    layer = [("self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
             ("self_attn.k_proj.weight", (KV, HIDDEN)),
             ("self_attn.v_proj.weight", (KV, HIDDEN)),
             ("self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
             ("mlp.gate_proj.weight", (FFN, HIDDEN)), ("mlp.up_proj.weight", (FFN, HIDDEN)),
             ("mlp.down_proj.weight", (HIDDEN, FFN)),
             ("input_layernorm.weight", (HIDDEN,)), ("post_attention_layernorm.weight", (HIDDEN,))]
    per_layer = sum(_numel(s) for _, s in layer) * 2
    layers = max(1, round((size - VOCAB * HIDDEN * 2) / per_layer))
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        out += [(f"model.layers.{i}.{n}", s) for n, s in layer]
    return out + [("model.norm.weight", (HIDDEN,))]


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def dataset(ctx: Context) -> str:
    """The directory with the model in every format (made once; a marker says complete)."""
    root = os.environ.get("BAS_BENCH_DATA", "/var/tmp/bas-bench-ckpt")
    data = os.path.join(root, f"gpt-{ctx.size}")
    marker = os.path.join(data, "expected.json")
    if os.path.exists(marker):
        return data
    os.makedirs(data, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    sd = {name: torch.randint(-(1 << 15), 1 << 15, s, dtype=torch.int16, generator=gen
                              ).view(torch.bfloat16) for name, s in shapes(ctx.size)}
    from safetensors.torch import save_file

    import ckpt

    ckpt.save(sd, os.path.join(data, "model.ckpt"))
    save_file(sd, os.path.join(data, "model.safetensors"))
    torch.save(sd, os.path.join(data, "model.pt"))
    try:
        from tensorizer import TensorSerializer

        writer = TensorSerializer(os.path.join(data, "model.tensors"))
        writer.write_state_dict(sd)
        writer.close()
    except ImportError as exc:
        print(f"tensorizer unavailable: {exc}", file=sys.stderr)
    expected = {"checksum": touch(sd), "tensors": len(sd),
                "bytes": sum(t.numel() * 2 for t in sd.values())}
    with open(marker, "w") as f:
        json.dump(expected, f)
    return data


def _files(data: str, name: str) -> list[str]:
    target = READS[name]
    if target is None:
        return []
    path = os.path.join(data, target)
    if os.path.isdir(path):
        return [os.path.join(path, f) for f in sorted(os.listdir(path))]
    return [path]


def _warm(files: list[str]) -> None:
    for path in files:
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass


def _runs(name: str, ctx: Context):
    data = dataset(ctx)
    with open(os.path.join(data, "expected.json")) as f:
        expected = json.load(f)
    files = _files(data, name)
    if not ctx.cold:
        _warm(files)
    for _ in range(ctx.repeat):
        for path in files if ctx.cold else []:
            evict(path)
        proc = subprocess.run([sys.executable, os.path.join(HERE, "ckptpeer.py"), name, data,
                               str(ctx.threads), "1" if ctx.cold else "0"],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{name} failed: {proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        valid = name == "limit-memcpy" or result["checksum"] == expected["checksum"]
        yield dict(workload=name, device=f"file://{data}", is_pmem=False, size=ctx.size,
                   tensors=expected["tensors"], threads=ctx.threads, cold=ctx.cold,
                   bytes=expected["bytes"], bytes_written=0, valid=valid, **result)


def _register(name: str) -> None:
    def fn(ctx: Context):
        yield from _runs(name, ctx)

    fn.__doc__ = DOCS[name]
    workload(name, "ckpt")(fn)


for _name in DOCS:
    _register(_name)
