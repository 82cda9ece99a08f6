"""CUDA loading: overlapped staging into one device allocation (needs a GPU; skipped without)."""

import pytest
import torch

import ckpt
from ckpt.testing import golden_state_dict, same

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture
def saved(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {f"w{i}": torch.randn(300, 257, generator=g) for i in range(8)} | {
        "h": torch.randn(1000, generator=g).half(), "z": torch.tensor(1.0)}
    ckpt.save(sd, tmp_path / "m", chunk_size=64 << 10, partition_size=1 << 20)
    return sd, tmp_path / "m"


@pytest.mark.parametrize("threads", [1, 4])
def test_load_to_cuda_matches_cpu(saved, threads):
    sd, path = saved
    stats = ckpt.LoadStats()
    out = ckpt.load(path, "cuda:0", threads=threads, stats=stats)
    base = out["w0"].untyped_storage().data_ptr()
    for name, t in out.items():
        assert t.device.type == "cuda"
        assert t.untyped_storage().data_ptr() == base
        assert t.data_ptr() % 256 == 0
        assert torch.equal(t.cpu(), sd[name])
    assert stats.bytes_read == ckpt.read_index(path).total_bytes and stats.verified


def test_load_to_cuda_with_a_pinned_pool(saved):
    sd, path = saved
    pool = ckpt.HostPool(64 << 20)
    assert pool.pin
    stats = ckpt.LoadStats()
    out = ckpt.load(path, "cuda", pool=pool, stats=stats)
    assert all(torch.equal(out[k].cpu(), sd[k]) for k in sd)
    assert stats.staging_pinned  # the process's own bounded staging, not the pool's


def test_corrupted_chunk_is_caught_before_the_gpu(saved):
    _, path = saved
    with open(path / "part-00000.bin", "r+b") as f:
        f.write(b"\xff" * 8)
    with pytest.raises(ckpt.ChecksumError):
        ckpt.load(path, "cuda:0", threads=2)


def test_golden_dtypes_on_cuda(tmp_path):
    sd = golden_state_dict()
    ckpt.save(sd, tmp_path / "g")
    out = ckpt.load(tmp_path / "g", "cuda:0")
    for name, t in sd.items():
        assert same(out[name], t), name


def test_load_into_on_cuda(tmp_path):
    model = torch.nn.Linear(8, 4)
    ckpt.save(model.state_dict(), tmp_path / "m")
    with ckpt.init_empty():
        empty = torch.nn.Linear(8, 4)
    ckpt.load_into(empty, tmp_path / "m", device="cuda:0")
    assert empty.weight.device.type == "cuda"
    assert torch.equal(empty.weight.cpu(), model.weight.detach())
