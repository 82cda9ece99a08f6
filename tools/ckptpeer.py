"""Load the benchmark checkpoint with one loader, in its own process; print one JSON object.

    python tools/ckptpeer.py NAME DATADIR THREADS LOADS CACHE

Every loader ends with the same full reduction over every byte of every tensor (a wrapping
64-bit word sum, `touch`), inside the timed region: lazy loaders (mmap) pay their reads there
and eager ones a memory pass, so `seconds` compares equal work. `load_seconds` is the loader
call alone. Headline rows call the loader with its defaults; a tuned row's set-up (a pool made
and faulted, a cache filled) runs before the clock and is timed as `setup_seconds`. With LOADS
> 1 the process loads LOADS times, putting the files back in the CACHE state (cold, warm or
cached-F, as the harness did before the first) before each later load, and reports the last:
a long-lived process's repeated load. A fresh process per run keeps peak RSS its own.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

MASK = (1 << 64) - 1


def touch(tensors) -> int:
    """Wrapping 64-bit sum of every 8-byte word (and the odd tail bytes) of every tensor."""
    total = 0
    for t in tensors.values() if hasattr(tensors, "values") else tensors:
        b = t.detach().reshape(-1).view(torch.uint8)
        n = b.numel() // 8 * 8
        words = b[:n]
        if words.data_ptr() % 8:
            words = words.clone()  # never the case for the loaders here; kept for safety
        total += int(words.view(torch.int64).sum()) + int(b[n:].sum())
    return total & MASK


@dataclass(frozen=True)
class Loader:
    """make(data, threads, cold) -> (load() -> tensors, extra fields); runs before the clock."""

    make: Callable
    doc: str
    reads: str | None  # the file (or checkpoint directory) under DATADIR it reads
    tuned: str | None = None  # what a tuned row changes from the defaults
    modules: tuple[str, ...] = ("ckpt",)  # imported before set-up, timed as import_seconds

    @property
    def role(self) -> str:
        return "limit" if self.doc.startswith("limit") else (
            "peer" if self.doc.startswith("peer") else "ours")


def _ckpt_path(data: str) -> str:
    return os.path.join(data, "model.ckpt")


def _load(data, threads, cold):
    import ckpt

    path = _ckpt_path(data)
    return (lambda: ckpt.load(path)), {}


def _load_noverify(data, threads, cold):
    import ckpt

    path = _ckpt_path(data)
    return (lambda: ckpt.load(path, verify=False)), {}


def _pool(nbytes: int):
    import ckpt

    pool = ckpt.HostPool(nbytes + (64 << 20), pin=False)
    pool.reserve(nbytes)  # a serving process keeps its pool: faulting it is set-up, not a load
    return pool


def _load_pool(data, threads, cold):
    import ckpt

    path = _ckpt_path(data)
    pool = _pool(ckpt.read_index(path).total_bytes)
    return (lambda: ckpt.load(path, pool=pool)), {}


def _load_pool_direct(data, threads, cold):
    import ckpt

    if "direct" not in inspect.signature(ckpt.load).parameters:
        raise SystemExit("ckpt.load has no direct= keyword any more: this tuned row is moot")
    path = _ckpt_path(data)
    pool = _pool(ckpt.read_index(path).total_bytes)
    return (lambda: ckpt.load(path, pool=pool, direct=cold)), {"direct": cold}


def _dram_hit(data, threads, cold):
    import ckpt

    path = _ckpt_path(data)
    room = ckpt.read_index(path).total_bytes + (64 << 20)  # slack for 2 MiB slab rounding
    store = ckpt.Store([ckpt.DramTier(room, pool=ckpt.HostPool(room, pin=False))])
    first = store.load(path)  # fills the tier
    del first  # unpinned, still cached

    def load():
        got = store.load(path)
        if got.tier != "dram" or got.stats.bytes_read:
            raise RuntimeError(f"expected a DRAM-tier hit, got {got.tier}")
        return got.tensors

    return load, {"tier": "dram"}


def _safetensors(data, threads, cold):
    from safetensors.torch import load_file

    path = os.path.join(data, "model.safetensors")
    return (lambda: load_file(path)), {}


def _torch_load(data, threads, cold, mmap=False):
    path = os.path.join(data, "model.pt")
    return (lambda: torch.load(path, weights_only=True, mmap=mmap)), {"mmap": mmap}


def _tensorizer(data, threads, cold):
    from tensorizer import TensorDeserializer

    path = os.path.join(data, "model.tensors")
    return (lambda: TensorDeserializer(path, device="cpu")), {}


def _fastsafetensors(data, threads, cold):
    from fastsafetensors import fastsafe_open

    path = os.path.join(data, "model.safetensors")

    def load():
        # tensors share ownership of their buffer: valid after the with-block (its docstring)
        with fastsafe_open(filenames=[path], nogds=True, device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}

    return load, {}


def _runai(data, threads, cold):
    from runai_model_streamer import SafetensorsStreamer

    path = os.path.join(data, "model.safetensors")
    # 0.17 yields tensors the caller owns (stream_file(owned=True), the default): copying them
    # would be a second pass its users do not make. Older releases reuse their buffers, so
    # there each tensor is copied out as their documentation says.
    owned = "owned" in inspect.signature(SafetensorsStreamer.stream_file).parameters

    def load():
        out = {}
        with SafetensorsStreamer() as streamer:
            streamer.stream_file(path)
            for name, tensor in streamer.get_tensors():
                out[name] = tensor if owned else tensor.clone()
        return out

    return load, {"copied": not owned}


def _odirect(data, threads, cold):
    """The limit: the same partition bytes, O_DIRECT, into one pre-faulted aligned buffer."""
    import ckpt
    from bas import open_device

    path = _ckpt_path(data)
    index = ckpt.read_index(path)
    buf = ckpt.HostPool(index.total_bytes + (64 << 20), pin=False).acquire(index.total_bytes)
    n = max(4, threads)  # the thread count ckpt.load uses by default here
    chunk = index.chunk_size
    devs = [open_device(os.path.join(path, p.file), direct=True, read_only=True,
                        bounce=False) for p in index.partitions]

    def load():
        for dev, base, p in zip(devs, index.partition_bases(), index.partitions, strict=True):
            offs = np.arange(0, p.size, chunk, dtype=np.uint64)
            lens = np.minimum(chunk, p.size - offs).astype(np.uint64)
            dev.read_many(offs, lens, buf[base:base + p.size], threads=n)
        return [torch.frombuffer(buf, dtype=torch.uint8)]

    return load, {"reader_threads": n}


def _memcpy(data, threads, cold):
    """The limit: copy the model's byte count from memory into a pre-faulted buffer."""
    import ckpt
    from bas import open_device

    nbytes = ckpt.read_index(_ckpt_path(data)).total_bytes
    src = open_device("dram://", size=nbytes)
    chunk = 16 << 20
    offs = np.arange(0, nbytes, chunk, dtype=np.uint64)
    lens = np.minimum(chunk, nbytes - offs).astype(np.uint64)
    src.write_many(offs, lens, np.full(nbytes, 7, dtype=np.uint8), threads=threads)
    buf = ckpt.HostPool(nbytes + (64 << 20), pin=False).acquire(nbytes)
    n = max(4, threads)  # as many threads as ckpt.load reads with
    src.read_many(offs, lens, buf, threads=n)  # one untimed pass: a limit is the best case

    def load():
        src.read_many(offs, lens, buf, threads=n)
        return [torch.frombuffer(buf, dtype=torch.uint8)]

    return load, {"copy_threads": n}


_POOL = "a HostPool made and pre-faulted before the clock (kept by a serving process)"
LOADERS = {
    "ckpt-load": Loader(_load, "ours: ckpt.load(path), defaults", "model.ckpt"),
    "ckpt-load-tuned-noverify": Loader(_load_noverify, "ours, tuned: ckpt.load(path, "
                                       "verify=False)", "model.ckpt",
                                       "verify=False: no CRC-32 check (as the peers do none)"),
    "ckpt-load-tuned-pool": Loader(_load_pool, "ours, tuned: ckpt.load(path, pool=HostPool)",
                                   "model.ckpt", f"pool: {_POOL}"),
    "ckpt-load-tuned-pool-direct": Loader(
        _load_pool_direct, "ours, tuned: ckpt.load(path, pool=HostPool, direct=<run is cold>)",
        "model.ckpt", f"pool: {_POOL}; direct=True when the harness makes the run cold"),
    "ckpt-tuned-dram-hit": Loader(_dram_hit, "ours, tuned: Store DRAM-tier hit",
                                  "model.ckpt", "Store with a DRAM tier filled by one load "
                                  "before the clock; the run is a hit (views of the cache)"),
    "peer-safetensors": Loader(_safetensors, "peer: safetensors.torch.load_file(path)",
                               "model.safetensors", modules=("safetensors.torch",)),
    "peer-fastsafetensors": Loader(_fastsafetensors, "peer: fastsafetensors fastsafe_open("
                                   "nogds=True, device='cpu')", "model.safetensors",
                                   modules=("fastsafetensors",)),
    "peer-runai-streamer": Loader(_runai, "peer: runai_model_streamer SafetensorsStreamer"
                                  "().stream_file(path)", "model.safetensors",
                                  modules=("runai_model_streamer",)),
    "peer-tensorizer": Loader(_tensorizer, "peer: tensorizer TensorDeserializer(path, "
                              "device='cpu')", "model.tensors", modules=("tensorizer",)),
    "peer-torch-load": Loader(_torch_load, "peer: torch.load(path, weights_only=True)",
                              "model.pt", modules=()),
    "peer-torch-load-mmap": Loader(lambda d, t, c: _torch_load(d, t, c, mmap=True),
                                   "peer: torch.load(path, weights_only=True, mmap=True)",
                                   "model.pt", modules=()),
    "limit-odirect-read": Loader(_odirect, "limit: O_DIRECT read_many of the same partition "
                                 "bytes into a pre-faulted buffer", "model.ckpt",
                                 modules=("ckpt", "bas")),
    "limit-memcpy": Loader(_memcpy, "limit: multi-threaded memcpy of the same number of bytes",
                           None, modules=("ckpt", "bas")),
}


def files(data: str, name: str) -> list[str]:
    """The files loader `name` reads (every partition file of a checkpoint directory)."""
    target = LOADERS[name].reads
    if target is None:
        return []
    path = os.path.join(data, target)
    if os.path.isdir(path):
        return [os.path.join(path, f) for f in sorted(os.listdir(path))]
    return [path]


def _peak_rss() -> int:
    """VmHWM: this process's own peak RSS (ru_maxrss keeps the forking parent's across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _recache(data: str, name: str, cache: str) -> None:
    from benchkit import Context, prepare_cache

    fraction = None if cache in ("cold", "warm") else float(cache.removeprefix("cached-"))
    prepare_cache(files(data, name), Context(device="", size=0, threads=1, workdir="",
                                             cold=cache == "cold", cached_fraction=fraction))


def main() -> int:
    name, data, threads, loads, cache = sys.argv[1:6]
    threads, loads = int(threads), int(loads)
    torch.set_num_threads(threads)
    loader = LOADERS[name]
    t0 = time.perf_counter()
    for module in loader.modules:
        importlib.import_module(module)
    t1 = time.perf_counter()
    load, extra = loader.make(data, threads, cache == "cold")
    setup = time.perf_counter() - t1
    times = []
    for i in range(loads):
        if i:
            gc.collect()  # the previous load's buffers go back (a pool's, or to the OS)
            _recache(data, name, cache)
        start = time.perf_counter()
        tensors = load()
        loaded = time.perf_counter()
        checksum = touch(tensors)
        end = time.perf_counter()
        del tensors
        times.append((loaded - start, end - loaded, end - start))
    me = resource.getrusage(resource.RUSAGE_SELF)
    result = dict(load_seconds=times[-1][0], touch_seconds=times[-1][1], seconds=times[-1][2],
                  setup_seconds=setup, import_seconds=t1 - t0, checksum=checksum,
                  peak_rss=_peak_rss(), io_bytes_read=me.ru_inblock * 512, **extra)
    if loads > 1:
        result["loads_seconds"] = [t[2] for t in times]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
