"""ckpt.load chooses its I/O path per load: mapped by default on the CPU, page cache or
O_DIRECT per chunk when reading, and the mapping is private (copy-on-write)."""

from __future__ import annotations

import os

import pytest
import torch

import ckpt
from ckpt import pool

OPTIONS = {"chunk_size": 4096, "partition_size": 64 << 10}


@pytest.fixture
def saved(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {f"w{i}": torch.randn(64, 100, generator=g) for i in range(6)}
    sd["tied"] = sd["w0"]
    path = tmp_path / "m.ckpt"
    ckpt.save(sd, path, **OPTIONS)
    return sd, path


def _evict(path) -> None:
    for name in os.listdir(path):
        fd = os.open(os.path.join(path, name), os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _cache(path) -> None:
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as f:
            while f.read(1 << 20):
                pass


def test_default_cpu_load_is_mapped_and_private(saved):
    sd, path = saved
    stats = ckpt.LoadStats()
    out = ckpt.load(path, stats=stats)
    assert stats.mapped and stats.verified
    assert all(torch.equal(out[k], sd[k]) for k in sd) and out["tied"] is out["w0"]
    out["w1"].fill_(7.0)  # copy-on-write: this process only, never the file
    again = ckpt.load(path)
    assert torch.equal(again["w1"], sd["w1"])
    ckpt.verify(path)


def test_a_pool_or_direct_asks_for_a_read_into_private_memory(saved):
    sd, path = saved
    for kwargs in ({"pool": ckpt.HostPool(8 << 20, pin=False)}, {"direct": True},
                   {"direct": False}, {"mmap": False}):
        stats = ckpt.LoadStats()
        out = ckpt.load(path, stats=stats, **kwargs)
        assert not stats.mapped, kwargs
        assert all(torch.equal(out[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="mmap=True"):
        ckpt.load(path, mmap=True, direct=True)


def test_mapped_load_checks_every_chunk(saved):
    _, path = saved
    part = os.path.join(path, ckpt.read_index(path).partitions[0].file)
    with open(part, "r+b") as f:  # one flipped bit in the first chunk
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 1]))
    with pytest.raises(ckpt.ChecksumError):
        ckpt.load(path)
    ckpt.load(path, verify=False)  # asked for: no check


def test_mapped_tensors_outlive_a_save_that_replaces_the_checkpoint(saved):
    sd, path = saved
    out = ckpt.load(path)
    ckpt.save({"other": torch.zeros(3)}, path, **OPTIONS)
    assert all(torch.equal(out[k], sd[k]) for k in sd)  # the old files live while mapped
    assert list(ckpt.load(path)) == ["other"]


def _direct_supported(path) -> bool:
    try:
        fd = os.open(os.path.join(path, "index.ckpt"), os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True


def test_a_cached_checkpoint_is_read_from_the_cache_an_evicted_one_with_o_direct(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {f"w{i}": torch.randn(256, 1024, generator=g) for i in range(6)}  # 1 MiB each
    path = tmp_path / "big.ckpt"
    ckpt.save(sd, path, chunk_size=1 << 20)
    if not _direct_supported(path):
        pytest.skip("no O_DIRECT on this file system: every read is buffered")
    total = ckpt.read_index(path).total_bytes
    _cache(path)
    stats = ckpt.LoadStats()
    ckpt.load(path, mmap=False, stats=stats)
    assert stats.direct and stats.cached_bytes == total  # nothing read from the disk again
    _evict(path)
    stats = ckpt.LoadStats()
    out = ckpt.load(path, mmap=False, stats=stats)
    # O_DIRECT for what is not cached, and asking (mincore) started no readahead
    assert stats.direct and stats.cached_bytes == 0
    assert all(torch.equal(out[k], sd[k]) for k in sd)


def test_fresh_buffer_page_size_follows_the_measurement(monkeypatch):
    import mmap as mmap_module

    advised = []

    class Recording(mmap_module.mmap):
        def madvise(self, option, *args):
            advised.append(option)
            return super().madvise(option, *args)

    monkeypatch.setattr(pool.mmap, "mmap", Recording)
    for pays in (False, True):
        advised.clear()
        monkeypatch.setattr(pool, "_huge_pages_pay", [pays])
        pool.allocate(32 << 20)
        assert (mmap_module.MADV_HUGEPAGE in advised) == pays
