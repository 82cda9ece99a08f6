"""ckpt.Store end to end: remote tiers over a real HTTP server on 127.0.0.1 and file://,
downloads that load and copy in one pass, promotion, and interrupted or corrupt downloads."""

import functools
import gc
import http.server
import os
import threading

import pytest
import torch

import ckpt
from ckpt.tiers.remote import SUFFIX

pytest.importorskip("aiohttp")  # fsspec's http filesystem needs it (pinned in requirements.lock)


def _sd(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"h.{i}.w": torch.randn(96, 96, generator=g) for i in range(6)} | {
        "emb": torch.randn(50, 96, generator=g).to(torch.bfloat16)}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the directory; paths under /broken/ send half the body and drop the connection."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/broken/"):
            return super().do_GET()
        path = self.translate_path(self.path.replace("/broken/", "/", 1))
        with open(path, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def served(tmp_path):
    """(a directory of packed checkpoints, the http URL serving it)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _publish(sd, root, name: str) -> int:
    src = root.parent / f"{name}-src.ckpt"
    ckpt.save(sd, src, chunk_size=16384)
    with open(root / f"{name}{SUFFIX}", "wb") as f:
        ckpt.pack(src, f)
    return ckpt.read_index(src).total_bytes


def _store(tmp_path, url: str, dram: int = 16 << 20, disk: int = 16 << 20) -> ckpt.Store:
    return ckpt.Store([ckpt.DramTier(dram), ckpt.DiskTier(tmp_path / "ssd", disk),
                       ckpt.RemoteTier(url)])


def _same(tensors, sd) -> bool:
    return tensors.keys() == sd.keys() and all(torch.equal(tensors[k], sd[k]) for k in sd)


def _no_partials(tmp_path, name="m") -> None:
    assert sorted(os.listdir(tmp_path / "ssd")) == ["store.json"], "partial copy left behind"


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_remote_miss_downloads_while_loading_then_hits_faster_tiers(served, tmp_path, scheme):
    root, http_url = served
    url = http_url if scheme == "http" else f"file://{root}"
    sd = _sd()
    nbytes = _publish(sd, root, "m")
    store = _store(tmp_path, url)
    assert store.locate("m") == ["remote"]
    got = store.load("m")
    assert got.tier == "remote" and got.promoted == ["local", "dram"]
    assert _same(got.tensors, sd) and got.stats.verified
    assert got.stats.bytes_read >= nbytes  # the stream was read once: index + data
    assert store.locate("m") == ["dram", "local", "remote"]
    ckpt.verify(tmp_path / "ssd" / "m")  # the local copy is complete and checksummed
    hit = store.load("m")
    assert hit.tier == "dram" and hit.stats.bytes_read == 0
    del got, hit
    gc.collect()
    store.tiers[0].clear()
    local = store.load("m")
    assert local.tier == "local" and _same(local.tensors, sd)
    assert local.stats.bytes_read == nbytes


def test_a_url_loads_directly_and_is_cached_locally(served, tmp_path):
    root, url = served
    sd = _sd(1)
    _publish(sd, root, "direct")
    store = ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", 16 << 20)])
    got = store.load(f"{url}/direct{SUFFIX}")
    assert got.tier == "url" and _same(got.tensors, sd) and got.key.startswith("url-")
    again = store.load(f"{url}/direct{SUFFIX}")
    assert again.tier == "local" and _same(again.tensors, sd)


def test_download_cut_half_way_leaves_no_partial_checkpoint(served, tmp_path):
    root, url = served
    (root / "broken").mkdir()
    _publish(_sd(), root / "broken", "m")
    (root / f"m{SUFFIX}").symlink_to(root / "broken" / f"m{SUFFIX}")
    store = _store(tmp_path, f"{url}/broken")
    with pytest.raises(ckpt.CheckpointIOError, match="download failed"):
        store.load("m")
    _no_partials(tmp_path)
    assert store.tier("local").used == 0 and store.tiers[0].used == 0
    assert store.locate("m") == ["remote"]


def test_truncated_remote_object_leaves_no_partial_checkpoint(served, tmp_path):
    root, url = served
    _publish(_sd(), root, "m")
    path = root / f"m{SUFFIX}"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 3 // 4])
    store = _store(tmp_path, url)
    with pytest.raises(ckpt.PartitionSizeError, match="truncated"):
        store.load("m")
    _no_partials(tmp_path)


def test_corrupt_remote_object_is_refused_and_not_kept(served, tmp_path):
    root, url = served
    _publish(_sd(), root, "m")
    path = root / f"m{SUFFIX}"
    data = bytearray(path.read_bytes())
    data[-5000] ^= 0xFF  # a bit flip in the last partition's data
    path.write_bytes(bytes(data))
    store = _store(tmp_path, f"file://{root}")
    with pytest.raises(ckpt.ChecksumError):
        store.load("m")
    _no_partials(tmp_path)


def test_missing_everywhere(served, tmp_path):
    _, url = served
    store = _store(tmp_path, url)
    with pytest.raises(ckpt.NotACheckpointError, match="in none of the tiers"):
        store.load("nope")


def test_remote_download_evicts_what_the_remote_still_holds(served, tmp_path):
    root, url = served
    sds = {name: _sd(i) for i, name in enumerate(["a", "b"])}
    sizes = [_publish(sd, root, name) for name, sd in sds.items()]
    store = _store(tmp_path, url, disk=max(sizes) + 60000)  # room for one
    store.load("a")
    store.load("b")
    assert store.tier("local").names() == ["b"]  # a was evicted: the remote still holds it
    store.tiers[0].clear()
    assert _same(store.load("a").tensors, sds["a"])


def test_put_uploads_to_a_file_remote(tmp_path):
    store = ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", 16 << 20),
                        ckpt.RemoteTier(f"file://{tmp_path}/bucket")])
    (tmp_path / "bucket").mkdir()
    sd = _sd(3)
    store.put("m", sd)
    store.put("m", tmp_path / "ssd" / "m", tier="remote")
    assert store.locate("m") == ["local", "remote"]
    store.evict("m", "local")
    assert _same(store.load("m").tensors, sd)
