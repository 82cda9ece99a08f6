"""The HTTP layer in front of the real stack (serving.run.Server: uvicorn, Controller, a worker
process, a tiny model): deployed at run time with `python -m serving deploy`, then used by the
openai client (chat and completions, streaming and not) and raw HTTP, then deleted."""

import json
import os
import socket
import subprocess
import sys
import time

import openai
import pytest

import serving.run
from serving.config import load_config
from tests.servingctl import tiny_model
from tests.servinghttp import raw

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "stack-key"


def _cli(*args):
    env = {**os.environ, "BAS_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "serving", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    tiny = tiny_model(root / "models")
    config = load_config(None, port=0, workers=1, store=str(root / "store"), api_key=KEY,
                         dram_per_worker="64MiB", disk_per_worker="1GiB",
                         threads_per_worker=1, shutdown_grace=5, heartbeat=0.1)
    with serving.run.Server(config) as server:
        done = _cli("deploy", "tiny", tiny, "--max-tokens", "512", "--url", server.url)
        assert done.returncode == 0, done.stderr
        yield server


@pytest.fixture
def client(stack):
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


def _auth():
    return {"Authorization": f"Bearer {KEY}"}


def test_cold_start_stream_shows_waits_then_tokens(stack):
    status, _, body = raw(stack.port, "POST", "/v1/completions", {
        "model": "tiny", "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}}, _auth(), timeout=300)
    assert status == 200
    blocks = [b for b in body.decode().split("\n\n") if b]
    assert blocks[0].startswith(": waiting (")  # the first request found no instance
    assert blocks[-1] == "data: [DONE]"
    usage = json.loads(blocks[-2][len("data: "):])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4


def test_completion_and_chat(client):
    first = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=6,
                                      temperature=0)
    again = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=6,
                                      temperature=0)
    assert first.choices[0].text == again.choices[0].text  # greedy: the same text
    assert first.choices[0].finish_reason == "length"
    assert first.usage.completion_tokens == 6 and first.usage.prompt_tokens > 0
    chat = client.chat.completions.create(model="tiny", max_tokens=5, temperature=0,
                                          messages=[{"role": "user", "content": "Hello"}])
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 5
    chunks = list(client.chat.completions.create(
        model="tiny", max_tokens=5, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Hello"}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_refusals_from_the_controller(client):
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny", prompt="x", max_tokens=513)
    with pytest.raises(openai.BadRequestError, match="tokens"):
        client.completions.create(model="tiny", prompt="word " * 5000, max_tokens=1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")


def test_disconnect_mid_stream_frees_the_instance(stack):
    data = json.dumps({"model": "tiny", "prompt": "Once", "max_tokens": 500, "stream": True,
                       "temperature": 0}).encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nAuthorization: Bearer " + KEY.encode() +
                     b"\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        seen = b""
        while seen.count(b'"text"') < 3:
            piece = sock.recv(65536)
            assert piece
            seen += piece

    def active():
        status = raw(stack.port, "GET", "/v1/deployments/tiny", headers=_auth())
        return json.loads(status[2])["active"]

    deadline = time.monotonic() + 30
    while active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert active() == 0


def test_metrics_and_cli_status_then_delete(stack, client):
    text = raw(stack.port, "GET", "/metrics", headers=_auth())[2].decode()
    assert 'serving_cold_starts_total{model="tiny",tier="registry"} 1.0' in text
    assert 'serving_requests_total{model="tiny",status="200"}' in text
    assert 'serving_requests_total{model="tiny",status="400"}' in text
    done = _cli("status", "--url", stack.url)
    assert done.returncode == 0
    assert [d["name"] for d in json.loads(done.stdout)["deployments"]] == ["tiny"]
    done = _cli("delete", "tiny", "--url", stack.url)
    assert done.returncode == 0, done.stderr
    assert [m.id for m in client.models.list()] == []
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="tiny", prompt="x")
