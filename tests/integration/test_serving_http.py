"""The OpenAI routes over a real uvicorn server, driven by the openai client and raw HTTP.

The controller behind the server is tests.servinghttp.ScriptedController: the model name picks
what its generate() yields, so these tests check what the HTTP layer makes of each behaviour.
"""

import json

import openai
import pytest

from tests.servinghttp import raw, serve

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}]


@pytest.fixture(scope="module")
def server():
    with serve() as s:
        yield s


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def _events(body: bytes) -> list:
    """The SSE body's events in order: dicts, "[DONE]", or ": comment" lines."""
    out = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
        elif block:
            out.append(block)
    return out


def test_models_list_and_one(client, server):
    ids = [m.id for m in client.models.list()]
    assert "echo" in ids and "cold" in ids
    assert client.models.retrieve("echo").id == "echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_completion_not_streaming(client, server):
    out = client.completions.create(model="echo", prompt="a b c", max_tokens=2, temperature=0,
                                    seed=7, stop=["zz"], extra_body={"top_k": 5})
    assert out.object == "text_completion" and out.choices[0].text == "a b "
    assert out.choices[0].finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (
        3, 2, 5)
    req = server.controller.requests[-1]
    assert req.prompt == "a b c" and req.messages is None and not req.stream
    p = req.params
    assert (p.max_tokens, p.temperature, p.seed, p.stop, p.top_k) == (2, 0.0, 7, ("zz",), 5)


def test_completion_prompt_as_list_of_one(client, server):
    out = client.completions.create(model="echo", prompt=["x y"])
    assert out.choices[0].text == "x y " and out.choices[0].finish_reason == "stop"
    assert server.controller.requests[-1].params.max_tokens == 16  # OpenAI's default


def test_chat_not_streaming(client, server):
    out = client.chat.completions.create(model="echo", messages=CHAT, max_completion_tokens=5)
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == "one two three "
    assert out.choices[0].finish_reason == "stop" and out.usage.total_tokens == 6
    req = server.controller.requests[-1]
    assert req.prompt is None and req.messages == tuple(CHAT) and req.params.max_tokens == 5


def test_chat_text_parts_and_default_max_tokens(client, server):
    parts = [{"type": "text", "text": "a b"}, {"type": "text", "text": "c"}]
    client.chat.completions.create(model="echo",
                                   messages=[{"role": "developer", "content": "sys"},
                                             {"role": "user", "content": parts}])
    req = server.controller.requests[-1]
    assert req.messages == ({"role": "system", "content": "sys"},
                            {"role": "user", "content": "a b\nc"})
    assert req.params.max_tokens == 64  # the model object's max_tokens


def test_chat_streaming_with_usage(client, server):
    chunks = list(client.chat.completions.create(
        model="cold", messages=CHAT, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hi there"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 5
    assert server.controller.requests[-1].stream


def test_completion_streaming_without_usage(client):
    chunks = list(client.completions.create(model="echo", prompt="p q", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "p q "
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_sse_wire_format_waits_then_done(server):
    status, headers, body = raw(server.port, "POST", "/v1/chat/completions", {
        "model": "cold", "messages": CHAT, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body.endswith(b"\n\ndata: [DONE]\n\n")
    events = _events(body)
    assert events[1:3] == [": waiting (cold start)", ": waiting (loading from disk)"]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert [e["choices"][0]["delta"] for e in events[3:-2]] == [{"content": "hi"},
                                                                 {"content": " there"}]


def test_error_after_stream_started_is_an_sse_error(client, server):
    status, _, body = raw(server.port, "POST", "/v1/completions", {
        "model": "fail-later", "prompt": "x", "stream": True})
    events = _events(body)
    assert status == 200 and events[-1] == "[DONE]"
    assert events[-2]["error"]["message"] == "worker died"
    assert events[-2]["error"]["type"] == "service_unavailable"
    with pytest.raises(openai.APIError, match="worker died"):
        list(client.chat.completions.create(model="fail-later", messages=CHAT, stream=True))


def test_error_before_first_token_keeps_its_status(client, server):
    for stream in (False, True):
        status, headers, body = raw(server.port, "POST", "/v1/completions", {
            "model": "fail-first", "prompt": "x", "stream": stream})
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"]["message"] == "worker died"


def test_refusal_429_carries_retry_after(client, server):
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="busy", messages=CHAT)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "3"  # 2.5 s rounded up
    assert info.value.body["message"] == "queue full"
    status, headers, _ = raw(server.port, "POST", "/v1/completions", {
        "model": "busy", "prompt": "x", "stream": True})
    assert status == 429 and headers["retry-after"] == "3"


def test_refusal_503_passes_through(client):
    with pytest.raises(openai.InternalServerError) as info:
        client.completions.create(model="gone", prompt="x")
    assert info.value.status_code == 503


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"


def test_controller_bug_is_500_or_sse_error_and_server_lives(server, client):
    status, _, body = raw(server.port, "POST", "/v1/completions", {"model": "bug-first",
                                                                   "prompt": "x"})
    assert status == 500 and json.loads(body)["error"]["type"] == "server_error"
    status, _, body = raw(server.port, "POST", "/v1/completions", {
        "model": "bug", "prompt": "x", "stream": True})
    assert status == 200 and _events(body)[-2]["error"]["code"] == "internal_error"
    status, _, body = raw(server.port, "POST", "/v1/completions", {"model": "no-done",
                                                                   "prompt": "x"})
    assert status == 500
    assert client.completions.create(model="echo", prompt="still alive").choices


def test_metrics_text(server, client):
    client.completions.create(model="echo", prompt="x")
    status, headers, body = raw(server.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'serving_requests_total{model="echo",status="200"}' in text
    assert 'serving_requests_total{model="busy",status="429"}' in text


def test_health_while_accepting_and_while_stopping():
    with serve() as s:
        assert raw(s.port, "GET", "/health")[0] == 200
        s.controller._accepting = False
        status, _, body = raw(s.port, "GET", "/health")
        assert status == 503 and json.loads(body)["status"] == "shutting down"
        status, _, body = raw(s.port, "POST", "/v1/completions", {"model": "echo",
                                                                  "prompt": "x"})
        assert status == 503 and json.loads(body)["error"]["code"] == "shutting_down"
