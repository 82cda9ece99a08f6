"""The loader end to end on CPU: one buffer, pooling, O_DIRECT and its fallback, sources."""

import gc
import io
import os

import pytest
import torch
from torch import nn

import ckpt
from bas import UnsupportedError, open_device
from ckpt.testing import golden_state_dict, same


def _model_sd():
    g = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(64, 64, generator=g) for i in range(6)} | {
        "norm": torch.ones(64, dtype=torch.bfloat16)}


@pytest.fixture
def saved(tmp_path):
    sd = _model_sd()
    ckpt.save(sd, tmp_path / "m", chunk_size=8192, partition_size=40000)
    return sd, tmp_path / "m"


def test_tensors_are_views_of_one_aligned_buffer(saved):
    sd, path = saved
    stats = ckpt.LoadStats()
    out = ckpt.load(path, stats=stats, mmap=False)  # the reading path: one buffer
    index = ckpt.read_index(path)
    base = out["layer0.weight"].untyped_storage().data_ptr()
    assert base % 4096 == 0
    for name, t in out.items():
        assert t.untyped_storage().data_ptr() == base  # one storage for all
        assert (t.data_ptr() - base) % index.alignment == 0
        assert torch.equal(t, sd[name])
    assert stats.bytes_read == index.total_bytes and stats.verified
    assert stats.chunks == sum(len(p.crc32) for p in index.partitions)
    assert len(index.partitions) > 1


def test_pool_reuses_buffers_and_gets_them_back_when_tensors_die(saved):
    sd, path = saved
    pool = ckpt.HostPool(64 << 20, pin=False)
    out = ckpt.load(path, pool=pool)
    first = out["norm"].untyped_storage().data_ptr()
    assert pool.stats.in_use > 0 and pool.stats.misses == 1
    del out
    gc.collect()
    assert pool.stats.in_use == 0
    out = ckpt.load(path, pool=pool)
    assert out["norm"].untyped_storage().data_ptr() == first
    assert pool.stats.hits == 1 and pool.stats.allocated == pool.stats.in_use
    assert all(torch.equal(out[k], sd[k]) for k in sd)
    held = ckpt.load(path, pool=pool)  # the first is still alive: a second buffer
    assert held["norm"].untyped_storage().data_ptr() != first
    del out, held
    gc.collect()
    assert pool.stats.in_use == 0
    assert pool.trim() > 0 and pool.stats.allocated == 0


def test_dropping_the_tensors_frees_the_one_buffer(saved, monkeypatch):
    import weakref

    from ckpt import pool

    made = []

    def tracked(nbytes):
        buf = pool.allocate(nbytes)
        made.append(weakref.ref(buf))
        return buf

    monkeypatch.setattr("ckpt.host.allocate", tracked)
    out = ckpt.load(saved[1], mmap=False)
    assert len(made) == 1 and made[0]() is not None
    keep = out["norm"]
    del out
    gc.collect()
    assert made[0]() is not None  # one tensor still views it
    del keep
    gc.collect()
    assert made[0]() is None


def test_pool_is_bounded_and_overflows_to_plain_buffers(saved):
    _, path = saved
    pool = ckpt.HostPool(0, pin=False)
    out = ckpt.load(path, pool=pool)
    assert pool.stats.overflows == 1 and pool.stats.allocated == 0
    assert out["norm"].dtype == torch.bfloat16


def test_pool_reserve_warms_a_buffer_ahead():
    pool = ckpt.HostPool(8 << 20, pin=False)
    pool.reserve(3 << 20)
    assert pool.stats.allocated == 4 << 20 and pool.stats.in_use == 0
    buf = pool.acquire(3 << 20)
    assert pool.stats.hits == 1 and buf.ctypes.data % 4096 == 0
    pool.close()


def test_falls_back_to_buffered_reads_without_o_direct(saved, monkeypatch):
    sd, path = saved

    def no_direct(target, **options):
        if options.get("direct"):
            raise UnsupportedError("no O_DIRECT here")
        return open_device(target, **options)

    monkeypatch.setattr("ckpt.source.open_device", no_direct)
    stats = ckpt.LoadStats()
    out = ckpt.load(path, stats=stats)
    assert not stats.direct
    assert all(torch.equal(out[k], sd[k]) for k in sd)


def test_direct_io_is_used_where_the_file_system_has_it(saved):
    _, path = saved
    with ckpt.open_source(path) as source:
        devices = [dev for dev, _ in source.parts]
        assert all(dev.direct_io for dev in devices) == source.direct
    assert all(dev.closed for dev in devices)
    stats = ckpt.LoadStats()
    ckpt.load(path, direct=False, stats=stats)
    assert not stats.direct


@pytest.mark.parametrize("threads", [1, 4])
def test_threads_and_progress(saved, threads):
    sd, path = saved
    seen = []
    out = ckpt.load(path, threads=threads, progress=lambda done, total: seen.append((done,
                                                                                       total)))
    total = ckpt.read_index(path).total_bytes
    assert seen == sorted(seen) and seen[-1] == (total, total)
    assert all(torch.equal(out[k], sd[k]) for k in sd)


def test_threads_from_a_device_profile(saved):
    _, path = saved

    class Profile:
        def best_threads(self, kind, pattern, access_size=None):
            assert (kind, pattern, access_size) == ("read", "sequential", 8192)
            return 3

    stats = ckpt.LoadStats()
    ckpt.load(path, profile=Profile(), stats=stats, mmap=False)
    assert stats.threads == 3


def test_load_from_an_open_dram_device(saved):
    sd, path = saved
    index = ckpt.read_index(path)
    dram = open_device("dram://", size=index.total_bytes + 4096)
    parts = []
    for p, base in zip(index.partitions, index.partition_bases(), strict=True):
        with open(os.path.join(path, p.file), "rb") as f:
            dram.write(base + 4096, f.read())
        parts.append((dram, base + 4096))
    stats = ckpt.LoadStats()
    out = ckpt.load_from(ckpt.Source(index, parts, "dram"), stats=stats)
    assert all(torch.equal(out[k], sd[k]) for k in sd)
    assert stats.bytes_read == index.total_bytes and not stats.direct
    dram.close()


def test_load_the_packed_form_from_one_device(saved):
    sd, path = saved
    buf = io.BytesIO()
    size = ckpt.pack(path, buf)
    dram = open_device("dram://", size=size + 8192)
    dram.write(8192, buf.getvalue())
    out = ckpt.load_from(ckpt.packed_source(dram, 8192))
    assert all(torch.equal(out[k], sd[k]) for k in sd)
    with pytest.raises(ckpt.BadMagicError):
        ckpt.packed_source(dram, 0)
    dram.close()


def test_stream_that_ends_early_is_rejected(saved):
    _, path = saved
    buf = io.BytesIO()
    ckpt.pack(path, buf)
    with pytest.raises(ckpt.PartitionSizeError, match="truncated"):
        ckpt.load_stream(io.BytesIO(buf.getvalue()[:-100]))
    data = bytearray(buf.getvalue())
    data[-5000] ^= 1
    with pytest.raises(ckpt.ChecksumError):
        ckpt.load_stream(io.BytesIO(bytes(data)))
    with pytest.raises(ckpt.PartitionSizeError, match="limit"):
        ckpt.load_stream(io.BytesIO(buf.getvalue()), max_bytes=4096)


def test_save_replaces_atomically_and_leaves_nothing_behind(tmp_path):
    ckpt.save({"a": torch.zeros(3)}, tmp_path / "m")
    ckpt.save({"b": torch.ones(2)}, tmp_path / "m")
    assert os.listdir(tmp_path) == ["m"]
    assert list(ckpt.load(tmp_path / "m")) == ["b"]


def test_writer_refuses_bad_input_and_leaves_no_checkpoint(tmp_path):
    with pytest.raises(ckpt.LengthMismatchError):
        with ckpt.Writer(tmp_path / "m") as w:
            w.add("a", "float32", (2,), b"123")
    with pytest.raises(ckpt.SchemaError):
        with ckpt.Writer(tmp_path / "m") as w:
            w.add("a", "uint8", (1,), b"1")
            w.add("a", "uint8", (1,), b"1")
    with pytest.raises(ckpt.SchemaError):
        with ckpt.Writer(tmp_path / "m") as w:
            w.alias("x", "nothing")
    with pytest.raises(ckpt.CheckpointError):
        ckpt.save({"m": torch.empty(2, device="meta")}, tmp_path / "m")
    with pytest.raises(ckpt.UnsupportedDtypeError):
        ckpt.save({"s": torch.eye(2).to_sparse()}, tmp_path / "m")
    assert os.listdir(tmp_path) == []


def test_save_never_replaces_something_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "file").write_text("precious")
    (tmp_path / "dir").mkdir()
    for name in ("file", "dir"):
        with pytest.raises(ckpt.CheckpointError, match="not a checkpoint"):
            ckpt.save({"a": torch.zeros(1)}, tmp_path / name)
    assert (tmp_path / "file").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["dir", "file"]


def test_writer_streams_pieces(tmp_path):
    with ckpt.Writer(tmp_path / "m", chunk_size=4096) as w:
        w.add("x", "uint8", (10000,), (bytes([i % 251]) * 100 for i in range(100)))
    out = ckpt.load(tmp_path / "m")
    assert out["x"][:101].tolist() == [0] * 100 + [1]


def test_a_missing_checkpoint_is_typed(tmp_path):
    with pytest.raises(ckpt.NotACheckpointError):
        ckpt.load(tmp_path / "nothing")


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied
        self.register_buffer("scale", torch.arange(4.0), persistent=False)


def test_load_into_a_module_on_meta(tmp_path):
    torch.manual_seed(0)
    ref = _Tiny()
    sd = ref.state_dict()
    ckpt.save(sd, tmp_path / "m")
    assert ckpt.read_index(tmp_path / "m").aliases == {"head.weight": "emb.weight"}
    with ckpt.init_empty():
        model = _Tiny()
    assert model.proj.weight.device.type == "meta" and model.scale.device.type == "cpu"
    ckpt.load_into(model, tmp_path / "m")
    assert model.head.weight is model.emb.weight
    assert model.proj.weight.requires_grad
    x = torch.tensor([1, 2, 3])
    assert torch.equal(model.head(model.proj(model.emb(x))), ref.head(ref.proj(ref.emb(x))))
    assert torch.equal(model.scale, ref.scale)


def test_load_into_fills_tied_names_missing_from_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    sd = {k: v for k, v in _Tiny().state_dict().items() if k != "head.weight"}
    ckpt.save(sd, tmp_path / "m")
    with ckpt.init_empty():
        model = _Tiny()
    ckpt.load_into(model, tmp_path / "m")
    assert model.head.weight is model.emb.weight


def test_load_into_names_buffers_a_meta_build_lost(tmp_path):
    ckpt.save(_Tiny().state_dict(), tmp_path / "m")
    with torch.device("meta"):
        model = _Tiny()
    with pytest.raises(ckpt.CheckpointError, match="scale"):
        ckpt.load_into(model, tmp_path / "m")


def test_golden_dtypes_survive_a_pooled_threaded_load(tmp_path):
    sd = golden_state_dict()
    ckpt.save(sd, tmp_path / "g")
    out = ckpt.load(tmp_path / "g", threads=3, pool=ckpt.HostPool(16 << 20, pin=False))
    assert all(same(out[k], sd[k]) for k in sd)
