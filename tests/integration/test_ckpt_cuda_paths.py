"""Every path to the GPU: stream ordering, pinned bounded staging, tiers, streams, errors.

Needs a CUDA device (skipped elsewhere, run by tools/gpu-check).
"""

from __future__ import annotations

import gc
import io
import threading

import numpy as np
import pytest
import torch

import ckpt
from ckpt.pool import HostPool, _pin, _Slab, _unpin
from ckpt.torch import cuda

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

MIB = 1 << 20


@pytest.fixture
def model(tmp_path):
    g = torch.Generator().manual_seed(0)
    # 48 MiB in 3 MiB chunks: several chunks per thread, and one chunk larger than a slot
    sd = {f"w{i}": torch.randn(512, 1024, generator=g) for i in range(24)}
    sd["big"] = torch.randn(5 * 1024 * 1024, generator=g)  # 20 MiB tensor
    sd["tied"] = sd["w0"]
    path = tmp_path / "m.ckpt"
    ckpt.save(sd, path, chunk_size=3 * MIB)
    big_chunk = tmp_path / "big.ckpt"
    ckpt.save({"x": sd["big"]}, big_chunk, chunk_size=32 * MIB)  # chunk > SLOT
    return sd, path, big_chunk


def _equal(out, sd) -> bool:
    return all(torch.equal(out[k].cpu(), sd[k]) for k in sd)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("side_stream", [False, True], ids=["default-stream", "side-stream"])
def test_load_after_pending_work_on_the_current_stream_is_byte_equal(model, threads,
                                                                     side_stream):
    sd, path, _ = model
    nbytes = ckpt.read_index(path).total_bytes
    stream = torch.cuda.Stream() if side_stream else torch.cuda.current_stream()
    reused = []
    with torch.cuda.stream(stream):
        for _ in range(3):
            victim = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
            torch.cuda._sleep(200_000_000)  # the fill below runs long after the call returns
            victim.fill_(0xAB)
            block = victim.data_ptr()
            del victim  # back to the allocator while the fill is still queued
            out = ckpt.load(path, "cuda", threads=threads)
            reused.append(out["w0"].untyped_storage().data_ptr() == block)
            assert _equal(out, sd), "weights overwritten by work queued before the load"
            del out
    torch.cuda.synchronize()
    assert any(reused), "the allocator never handed the busy block back: nothing was tested"


def test_tensors_are_usable_on_the_callers_stream_at_once(model):
    sd, path, _ = model
    out = ckpt.load(path, "cuda")
    total = sum(float(out[k].double().sum()) for k in sd)  # kernels on the current stream
    assert total == pytest.approx(sum(float(sd[k].double().sum()) for k in sd))


def test_staging_is_pinned_bounded_and_reused_across_loads(model):
    sd, path, big_chunk = model
    for source in (path, big_chunk, path):
        stats = ckpt.LoadStats()
        out = ckpt.load(source, "cuda", threads=4, stats=stats)
        assert stats.staging_pinned, stats.staging_note
        del out
    made = cuda._staging._made
    assert made * cuda.SLOT <= cuda.STAGING_CAP
    assert all(slot.is_pinned() for slot in cuda._staging._free)
    ckpt.load(path, "cuda", threads=4)
    assert cuda._staging._made == made  # reused, not made again
    assert len(cuda._staging._free) == made  # every slot given back


def test_a_chunk_larger_than_a_slot_goes_in_pieces(model):
    sd, _, big_chunk = model
    out = ckpt.load(big_chunk, "cuda")
    assert torch.equal(out["x"].cpu(), sd["big"])


def test_a_pool_that_overflows_still_loads_with_pinned_staging(model):
    sd, path, _ = model
    pool = HostPool(2 * MIB)  # far too small: every buffer overflows
    stats = ckpt.LoadStats()
    out = ckpt.load(path, "cuda", pool=pool, stats=stats)
    assert _equal(out, sd) and stats.staging_pinned


def test_a_refused_pin_leaves_the_next_kernel_working():
    slab = _Slab(4 * MIB, populate=True)
    assert _pin(slab)
    try:
        assert not _pin(slab)  # registering twice is refused: CUDA sets its last error
        x = torch.arange(1000, device="cuda", dtype=torch.float32)
        assert float((x * 2).sum()) == pytest.approx(999_000.0)  # no stale error surfaces
        torch.cuda.synchronize()
    finally:
        _unpin(slab)
        slab.mem.close()


def test_gpu_and_pinned_memory_return_to_baseline(model):
    sd, path, _ = model
    ckpt.load(path, "cuda")  # staging made once
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    for _ in range(3):
        out = ckpt.load(path, "cuda")
        del out
        with ckpt.init_empty():
            module = torch.nn.Linear(1024, 512)
        ckpt.save({"weight": sd["w1"], "bias": torch.zeros(512)}, path.parent / "lin")
        ckpt.load_into(module, path.parent / "lin", device="cuda")
        del module
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == base
    assert len(cuda._staging._free) == cuda._staging._made


def test_store_and_dram_tier_to_cuda_miss_then_hit_release_the_lease(model, tmp_path):
    sd, path, _ = model
    dram = ckpt.DramTier(256 * MIB, pool=HostPool(256 * MIB))
    assert dram.pool.pin  # HostPool pins where an accelerator exists
    store = ckpt.Store([dram, ckpt.DiskTier(tmp_path / "disk", 256 * MIB)])
    store.put("m", path)
    miss = store.load("m", "cuda")
    assert miss.tier != "dram" and _equal(miss.tensors, sd)
    hit = store.load("m", "cuda")
    assert hit.tier == "dram" and _equal(hit.tensors, sd)
    assert hit.tensors["tied"] is hit.tensors["w0"]
    del miss, hit
    gc.collect()
    assert dram.pins("m") == 0


def test_load_stream_to_cuda(model):
    sd, path, _ = model
    packed = io.BytesIO()
    ckpt.pack(path, packed)
    packed.seek(0)
    out = ckpt.load_stream(packed, "cuda")
    assert _equal(out, sd) and out["tied"] is out["w0"]


def test_aliases_and_tied_weights_on_cuda(model):
    _, path, _ = model
    out = ckpt.load(path, "cuda")
    assert out["tied"] is out["w0"] and out["w0"].device.type == "cuda"


def test_an_error_mid_load_releases_everything_and_the_next_load_works(model, tmp_path):
    sd, path, _ = model
    bad = tmp_path / "bad.ckpt"
    ckpt.save(sd, bad, chunk_size=3 * MIB)
    part = bad / ckpt.read_index(bad).partitions[0].file
    with open(part, "r+b") as f:
        f.seek(10 * MIB)
        f.write(b"\xff" * 64)
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    with pytest.raises(ckpt.ChecksumError):
        ckpt.load(bad, "cuda", threads=4)
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == base
    assert len(cuda._staging._free) == cuda._staging._made
    assert _equal(ckpt.load(path, "cuda", threads=4), sd)


def test_progress_reaches_the_total_only_when_the_copies_are_done(model):
    _, path, _ = model
    seen = []
    ckpt.load(path, "cuda", progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))


def test_two_concurrent_loads_share_the_staging(model):
    sd, path, _ = model
    results, errors = [], []

    def one():
        try:
            results.append(ckpt.load(path, "cuda", threads=8))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=one) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and len(results) == 2
    assert all(_equal(r, sd) for r in results)
    assert cuda._staging._made * cuda.SLOT <= cuda.STAGING_CAP


def test_host_to_cuda_from_pageable_and_pinned_memory():
    data = np.random.default_rng(0).integers(0, 256, 40 * MIB + 123, dtype=np.uint8)
    for src in (data, torch.from_numpy(data).pin_memory()):
        out = cuda.host_to_cuda(src, torch.device("cuda"))
        assert torch.equal(out.cpu(), torch.from_numpy(data))
