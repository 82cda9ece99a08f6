"""Regression: remote reads time out on a silent server, never on the length of a download.

A real HTTP server on 127.0.0.1 sends a packed checkpoint slowly (every gap shorter than the
read timeout, the whole longer) or stops sending (answers nothing at all, or stops before the
headers of the GET, after them, or half way through the body).
"""

import errno
import functools
import http.server
import os
import threading
import time

import pytest
import torch

import ckpt
from ckpt.tiers import remote
from ckpt.tiers.remote import SUFFIX

aiohttp = pytest.importorskip("aiohttp")  # fsspec's http filesystem needs it

READ_TIMEOUT = 1.0
SD = {"w": torch.randn(48, 48, generator=torch.Generator().manual_seed(0)),
      "b": torch.arange(40, dtype=torch.bfloat16)}


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves one packed checkpoint as the server's `mode` says: trickle or stall somewhere."""

    protocol_version = "HTTP/1.1"

    def __init__(self, *args, data: bytes, mode: str, release: threading.Event, **kwargs):
        self.data, self.mode, self.release = data, mode, release
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        if self.mode == "no-answer":
            return self._stall()
        self._headers()

    def do_GET(self) -> None:
        if self.mode in ("no-answer", "before-headers"):
            return self._stall()
        self._headers()
        if self.mode == "after-headers":
            return self._stall()
        if self.mode == "mid-body":
            self._send(self.data[:len(self.data) // 2])
            return self._stall()
        pieces = 6  # trickle: 5 gaps of 0.4 s, 2 s in all, twice the read timeout
        step = -(-len(self.data) // pieces)
        for i in range(0, len(self.data), step):
            if i:
                time.sleep(0.4 * READ_TIMEOUT)
            self._send(self.data[i:i + step])

    def _headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()

    def _send(self, piece: bytes) -> None:
        self.wfile.write(piece)
        self.wfile.flush()

    def _stall(self) -> None:
        self.wfile.flush()
        self.release.wait(30)  # until the test is over: the client must give up first
        self.close_connection = True


@pytest.fixture
def serve(tmp_path):
    """serve(mode) -> the URL of a RemoteTier whose only checkpoint "m" is served that way."""
    ckpt.save(SD, tmp_path / "src", chunk_size=4096)
    with open(tmp_path / f"m{SUFFIX}", "wb") as f:
        ckpt.pack(tmp_path / "src", f)
    data = (tmp_path / f"m{SUFFIX}").read_bytes()
    release = threading.Event()
    servers = []

    def start(mode: str) -> str:
        handler = functools.partial(_SlowHandler, data=data, mode=mode, release=release)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    release.set()
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


def _store(tmp_path, url: str) -> ckpt.Store:
    return ckpt.Store([ckpt.DiskTier(tmp_path / "ssd", 16 << 20),
                       ckpt.RemoteTier(url, connect_timeout=5, read_timeout=READ_TIMEOUT)])


@pytest.mark.timeout(60)
def test_slow_but_steady_download_outlasting_the_read_timeout_loads(serve, tmp_path):
    store = _store(tmp_path, serve("trickle"))
    start = time.monotonic()
    got = store.load("m")
    assert time.monotonic() - start > READ_TIMEOUT  # the server really was slow
    assert got.tier == "remote" and got.tensors.keys() == SD.keys()
    assert all(torch.equal(got.tensors[k], SD[k]) for k in SD)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["no-answer", "before-headers", "after-headers", "mid-body"])
def test_stalled_server_times_out_on_silence(serve, tmp_path, mode):
    url = serve(mode)
    store = _store(tmp_path, url)
    with pytest.raises(ckpt.CheckpointIOError, match=f"went silent for {READ_TIMEOUT} s") as e:
        store.load("m")
    assert e.value.errno == errno.ETIMEDOUT and f"{url}/m{SUFFIX}" in str(e.value)
    assert sorted(os.listdir(tmp_path / "ssd")) == ["store.json"], "partial copy left behind"


@pytest.mark.timeout(60)
def test_stalled_url_times_out_through_open_url(serve):
    url = f"{serve('mid-body')}/m{SUFFIX}"
    with remote.open_url(url, read_timeout=READ_TIMEOUT) as stream:
        with pytest.raises(ckpt.CheckpointIOError, match="went silent") as e:
            while stream.read(1 << 16):
                pass
    assert url in str(e.value)


def test_http_downloads_have_no_total_time_limit():
    fs, _ = remote._filesystem("http://127.0.0.1:9/x", None, 3.0, 7.0)
    assert fs.client_kwargs["timeout"] == aiohttp.ClientTimeout(
        total=None, connect=3.0, sock_connect=3.0, sock_read=7.0)
    tier = ckpt.RemoteTier("http://127.0.0.1:9")
    assert (tier.connect_timeout, tier.read_timeout) == (remote.CONNECT_TIMEOUT,
                                                         remote.READ_TIMEOUT)
    timeout = tier._filesystem("m")[0].client_kwargs["timeout"]
    assert timeout.total is None and timeout.sock_read == remote.READ_TIMEOUT
    with pytest.raises(ValueError, match="positive"):
        ckpt.RemoteTier("http://127.0.0.1:9", read_timeout=0)


def test_connect_and_transport_timeouts_become_typed_errors_naming_the_limit():
    url = "http://10.0.0.1/m.ckpt.pack"
    err = remote._transport_error(url, "opening", aiohttp.ConnectionTimeoutError("slow"), 3.0,
                                  7.0)
    assert err.errno == errno.ETIMEDOUT and "no connection to the server within 3.0 s" in str(err)

    class ReadTimeoutError(Exception):  # botocore's timeouts are no TimeoutError subclasses
        pass

    err = remote._transport_error(url, "download", ReadTimeoutError("read"), 3.0, 7.0)
    assert isinstance(err, ckpt.CheckpointIOError) and "went silent for 7.0 s" in str(err)
    err = remote._transport_error(url, "download", ConnectionResetError(104, "reset"), 3.0, 7.0)
    assert err.errno == 104 and "ConnectionResetError" in str(err)
