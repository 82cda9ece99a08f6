"""Load the benchmark checkpoint once with one loader, in its own process; print one JSON object.

    python tools/ckptpeer.py NAME DATADIR THREADS COLD

Every loader ends with the same full reduction over every byte of every tensor (a wrapping
64-bit word sum, `touch`), inside the timed region: lazy loaders (mmap) pay their reads there
and eager ones a memory pass, so `seconds` compares equal work. `load_seconds` is the loader
call alone. Modules are imported and long-lived buffers (our pool, the limits' destination
buffers) are made before the clock starts. A fresh process per run keeps peak RSS its own.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

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


def touch_buffer(buf, nbytes: int) -> int:
    return touch([torch.frombuffer(buf, dtype=torch.uint8, count=nbytes)])


def _ours(data: str, threads: int, cold: bool, pool: bool = True):
    import ckpt

    path = os.path.join(data, "model.ckpt")
    nbytes = ckpt.read_index(path).total_bytes
    p = ckpt.HostPool(nbytes + (64 << 20), pin=False) if pool else None
    if p is not None:
        p.reserve(nbytes)  # a serving process keeps its pool: faulting it is not a load
    stats = ckpt.LoadStats()
    start = time.perf_counter()
    out = ckpt.load(path, pool=p, stats=stats, direct=cold)
    return out, start, {"bytes_read": stats.bytes_read, "direct": stats.direct,
                        "reader_threads": stats.threads, "verified": stats.verified}


def _dram_hit(data: str, threads: int, cold: bool):
    import ckpt

    path = os.path.join(data, "model.ckpt")
    nbytes = ckpt.read_index(path).total_bytes
    store = ckpt.Store([ckpt.DramTier(nbytes, pool=ckpt.HostPool(nbytes + (64 << 20),
                                                                  pin=False))])
    first = store.load(path)
    del first  # unpinned, still cached
    start = time.perf_counter()
    got = store.load(path)
    assert got.tier == "dram" and got.stats.bytes_read == 0
    return got.tensors, start, {"bytes_read": 0, "tier": got.tier}


def _safetensors(data, threads, cold):
    from safetensors.torch import load_file

    start = time.perf_counter()
    return load_file(os.path.join(data, "model.safetensors")), start, {}


def _torch_load(data, threads, cold, mmap=False):
    start = time.perf_counter()
    out = torch.load(os.path.join(data, "model.pt"), weights_only=True, mmap=mmap)
    return out, start, {"mmap": mmap}


def _tensorizer(data, threads, cold):
    from tensorizer import TensorDeserializer

    start = time.perf_counter()
    out = TensorDeserializer(os.path.join(data, "model.tensors"), device="cpu")
    return out, start, {}


def _fastsafetensors(data, threads, cold):
    from fastsafetensors import fastsafe_open

    start = time.perf_counter()
    with fastsafe_open(filenames=[os.path.join(data, "model.safetensors")], nogds=True,
                       device="cpu") as f:
        out = {k: f.get_tensor(k) for k in f.keys()}
    return out, start, {}


def _odirect(data, threads, cold):
    """The limit: the same partition bytes, O_DIRECT, into one pre-faulted aligned buffer."""
    import ckpt
    from bas import open_device

    path = os.path.join(data, "model.ckpt")
    index = ckpt.read_index(path)
    buf = ckpt.HostPool(index.total_bytes + (64 << 20), pin=False).acquire(index.total_bytes)
    n = max(4, threads)  # the thread count ckpt.load uses by default here
    chunk = index.chunk_size
    devs = [open_device(os.path.join(path, p.file), direct=True, read_only=True,
                        bounce=False) for p in index.partitions]
    start = time.perf_counter()
    for dev, base, p in zip(devs, index.partition_bases(), index.partitions, strict=True):
        offs = np.arange(0, p.size, chunk, dtype=np.uint64)
        lens = np.minimum(chunk, p.size - offs).astype(np.uint64)
        dev.read_many(offs, lens, buf[base:base + p.size], threads=n)
    return [torch.frombuffer(buf, dtype=torch.uint8)], start, {"reader_threads": n}


def _memcpy(data, threads, cold):
    """The limit: copy the same number of bytes from memory into a pre-faulted buffer.

    bas's native multi-threaded copy (dram:// read_many), after one untimed pass.
    """
    import ckpt
    from bas import open_device

    nbytes = ckpt.read_index(os.path.join(data, "model.ckpt")).total_bytes
    src = open_device("dram://", size=nbytes)
    chunk = 16 << 20
    offs = np.arange(0, nbytes, chunk, dtype=np.uint64)
    lens = np.minimum(chunk, nbytes - offs).astype(np.uint64)
    src.write_many(offs, lens, np.full(nbytes, 7, dtype=np.uint8), threads=threads)
    buf = ckpt.HostPool(nbytes + (64 << 20), pin=False).acquire(nbytes)
    n = max(4, threads)  # as many threads as ckpt.load reads with
    src.read_many(offs, lens, buf, threads=n)  # one untimed pass: a limit is the best case
    start = time.perf_counter()
    src.read_many(offs, lens, buf, threads=n)
    return [torch.frombuffer(buf, dtype=torch.uint8)], start, {"copy_threads": n}


LOADERS = {
    "ckpt-ours": _ours,
    "ckpt-ours-nopool": lambda d, t, c: _ours(d, t, c, pool=False),
    "ckpt-ours-dram-hit": _dram_hit,
    "peer-safetensors": _safetensors,
    "peer-torch-load": _torch_load,
    "peer-torch-load-mmap": lambda d, t, c: _torch_load(d, t, c, mmap=True),
    "peer-tensorizer": _tensorizer,
    "peer-fastsafetensors": _fastsafetensors,
    "limit-odirect-read": _odirect,
    "limit-memcpy": _memcpy,
}


def _peak_rss() -> int:
    """VmHWM: this process's own peak RSS (ru_maxrss keeps the forking parent's across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> int:
    name, data, threads, cold = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    torch.set_num_threads(threads)
    tensors, start, extra = LOADERS[name](data, threads, cold)
    loaded = time.perf_counter()
    checksum = touch(tensors)
    end = time.perf_counter()
    me = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps(dict(load_seconds=loaded - start, touch_seconds=end - loaded,
                          seconds=end - start, checksum=checksum, peak_rss=_peak_rss(),
                          io_bytes_read=me.ru_inblock * 512, **extra)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
