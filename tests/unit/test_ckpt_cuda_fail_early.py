"""Without CUDA, every CUDA entry point fails with one clear error before anything is read,
cached or promoted (it used to read and cache the model, then raise AssertionError)."""

from __future__ import annotations

import io
import os

import pytest
import torch

import ckpt

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.ckpt"
    ckpt.save({"w": torch.arange(6.0), "b": torch.ones(2)}, path)
    return path


def test_load_to_cuda_without_cuda_fails_before_reading(saved, monkeypatch):
    import ckpt.torch.loader

    monkeypatch.setattr(ckpt.torch.loader, "open_source", lambda *a, **k: pytest.fail("opened"))
    for device in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            ckpt.load(saved, device)


def test_load_stream_to_cuda_without_cuda_reads_nothing(saved):
    stream = io.BytesIO()
    ckpt.pack(saved, stream)
    stream.seek(0)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        ckpt.load_stream(stream, "cuda")
    assert stream.tell() == 0


def test_store_load_to_cuda_without_cuda_caches_and_promotes_nothing(saved, tmp_path):
    dram = ckpt.DramTier(64 << 20)
    fast = ckpt.DiskTier(tmp_path / "fast", 64 << 20, name="fast")
    slow = ckpt.DiskTier(tmp_path / "slow", 64 << 20, name="slow")
    store = ckpt.Store([dram, fast, slow])
    store.put("m", saved, tier="slow")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        store.load("m", "cuda")
    assert dram.names() == [] and not fast.holds("m")
    assert sorted(os.listdir(tmp_path / "fast")) == ["store.json"]


def test_load_into_cuda_without_cuda_leaves_the_module_alone(saved):
    module = torch.nn.Linear(2, 3)
    before = module.weight.detach().clone()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        ckpt.load_into(module, saved, device="cuda")
    assert torch.equal(module.weight, before)


def test_unknown_device_type_is_a_value_error(saved):
    with pytest.raises(ValueError, match="not supported"):
        ckpt.load(saved, "meta")
