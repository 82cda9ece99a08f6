"""Checkpoint loading workloads: ckpt.load, its tuned variants and peer loaders on one model.

    tools/bench compare ckpt-load peer-safetensors peer-runai-streamer ... --size 2G --cold

The model is a synthetic GPT-like decoder in bf16 (embeddings, per layer q/k/v/o, MLP
gate/up/down and two norms; layers added until --size is reached: 2 GiB gives 272 tensors),
saved once in our format, safetensors, torch .pt and tensorizer under $BAS_BENCH_DATA
(default /var/tmp/bas-bench-ckpt), and reused by later invocations. Each run is a fresh
process (tools/ckptpeer.py, where the loaders are) that ends with the same full reduction over
every byte; its checksum must equal the one taken when the model was made. Before each run the
files the loader reads are evicted from the page cache (--cold), partly cached
(--cached-fraction) or read whole so that the run finds them cached.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from benchkit import Context, prepare_cache, run_child, workload
from ckptpeer import LOADERS, files, touch

HERE = os.path.dirname(os.path.abspath(__file__))
HIDDEN, KV, FFN, VOCAB = 2048, 512, 3840, 24576
SMALL = 256 << 20  # under this, a decoder 8x narrower (for quick checks of the harness)


def shapes(size: int) -> list[tuple[str, tuple[int, ...]]]:
    """A decoder's tensors in load order, with as many layers as fit in size bytes (bf16)."""
    hidden, kv, ffn, vocab = (d // 8 if size < SMALL else d for d in (HIDDEN, KV, FFN, VOCAB))
    layer = [("self_attn.q_proj.weight", (hidden, hidden)),
             ("self_attn.k_proj.weight", (kv, hidden)),
             ("self_attn.v_proj.weight", (kv, hidden)),
             ("self_attn.o_proj.weight", (hidden, hidden)),
             ("mlp.gate_proj.weight", (ffn, hidden)), ("mlp.up_proj.weight", (ffn, hidden)),
             ("mlp.down_proj.weight", (hidden, ffn)),
             ("input_layernorm.weight", (hidden,)), ("post_attention_layernorm.weight", (hidden,))]
    per_layer = sum(_numel(s) for _, s in layer) * 2
    layers = max(1, round((size - vocab * hidden * 2) / per_layer))
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        out += [(f"model.layers.{i}.{n}", s) for n, s in layer]
    return out + [("model.norm.weight", (hidden,))]


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def state_dict(size: int) -> dict[str, torch.Tensor]:
    """The synthetic model of about size bytes: random bf16 bits, the same for every seed 0."""
    gen = torch.Generator().manual_seed(0)
    return {name: torch.randint(-(1 << 15), 1 << 15, s, dtype=torch.int16, generator=gen
                                ).view(torch.bfloat16) for name, s in shapes(size)}


def dataset(ctx: Context) -> str:
    """The directory with the model in every format (made once; a marker says complete)."""
    root = os.environ.get("BAS_BENCH_DATA", "/var/tmp/bas-bench-ckpt")
    data = os.path.join(root, f"gpt-{ctx.size}")
    marker = os.path.join(data, "expected.json")
    if os.path.exists(marker):
        return data
    os.makedirs(data, exist_ok=True)
    sd = state_dict(ctx.size)
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


def _runs(name: str, ctx: Context):
    data = dataset(ctx)
    with open(os.path.join(data, "expected.json")) as f:
        expected = json.load(f)
    loader = LOADERS[name]
    for _ in range(ctx.repeat):
        cache = prepare_cache(files(data, name), ctx)
        child = run_child([sys.executable, os.path.join(HERE, "ckptpeer.py"), name, data,
                           str(ctx.threads), str(ctx.loads), cache], ctx)
        result = child.result()
        valid = child.status == "ok" and (name == "limit-memcpy"
                                          or result["checksum"] == expected["checksum"])
        yield dict(workload=name, role=loader.role, tuned=loader.tuned,
                   device=f"file://{data}", is_pmem=False, size=ctx.size,
                   tensors=expected["tensors"], threads=ctx.threads, cache=cache,
                   cold=ctx.cold, loads=ctx.loads, bytes=expected["bytes"], bytes_written=0,
                   valid=valid, **{"seconds": None, **child.fields(), **result})


def _register(name: str) -> None:
    def fn(ctx: Context):
        yield from _runs(name, ctx)

    fn.__doc__ = LOADERS[name].doc
    workload(name, "ckpt", process=True)(fn)


for _name in LOADERS:
    _register(_name)
