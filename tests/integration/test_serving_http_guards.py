"""What the HTTP layer refuses and how it lets go: API key, body limit, bad input, timeouts,
client disconnects (over a real uvicorn server; see tests.servinghttp)."""

import json
import socket
import time

import openai
import pytest
from fastapi.routing import APIRoute

from tests.servinghttp import raw, serve

KEY = "s3cret-key"
LIMIT = 2000


@pytest.fixture(scope="module")
def server():
    with serve(api_key=KEY, max_body_bytes=LIMIT, request_timeout=30.0) as s:
        yield s


def _auth(headers=None):
    return {"Authorization": f"Bearer {KEY}", **(headers or {})}


def _routes(app):
    for route in app.routes:
        if isinstance(route, APIRoute):
            path = route.path.replace("{model_id:path}", "echo").replace("{name:path}", "echo")
            for method in route.methods:
                yield method, path


def test_every_route_but_health_needs_the_key(server):
    routes = list(_routes(server.app))
    assert len(routes) >= 11
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                        {"Authorization": f"Basic {KEY}"}):
            status, got, body = raw(server.port, method, path, b"{}", headers)
            if path == "/health":
                assert status == 200
                continue
            assert status == 401, (method, path, headers)
            assert got["www-authenticate"] == "Bearer"
            assert json.loads(body)["error"]["code"] == "invalid_api_key"
    status, _, _ = raw(server.port, "GET", "/openapi.json")
    assert status == 401
    assert raw(server.port, "GET", "/nope")[0] == 401  # unknown routes too: nothing leaks


def test_right_key_passes(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0) as client:
        assert client.completions.create(model="echo", prompt="a").choices[0].text == "a "
    with openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert raw(server.port, "GET", "/metrics", headers=_auth())[0] == 200


def test_body_over_limit_by_content_length(server):
    body = json.dumps({"model": "echo", "prompt": "x" * LIMIT}).encode()
    status, headers, answer = raw(server.port, "POST", "/v1/completions", body,
                                  _auth({"Content-Type": "application/json"}))
    assert status == 413 and json.loads(answer)["error"]["code"] == "request_too_large"
    # a huge Content-Length is refused before any of its body is sent
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000"
                     b"\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")


def test_body_over_limit_while_reading_chunks(server):
    # chunks past the limit and no final chunk: the 413 must come while the body is still
    # arriving (and nothing unread is left to turn the server's close into a reset)
    chunks = b"".join(b"%x\r\n%s\r\n" % (500, b"x" * 500) for _ in range(5))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                     b"chunked\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                     + KEY.encode() + b"\r\n\r\n" + chunks)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    assert answer.startswith(b"HTTP/1.1 413 ") and b"request_too_large" in answer
    # http.client sends an iterable body chunked (no Content-Length)
    small = iter([b'{"model": "echo", ', b'"prompt": "a b"}'])
    status, _, answer = raw(server.port, "POST", "/v1/completions", small,
                            _auth({"Content-Type": "application/json"}))
    assert status == 200 and json.loads(answer)["choices"][0]["text"] == "a b "


BAD = [
    (b"{not json", "invalid_json", None),
    (b"", None, None),
    (b"[1, 2]", None, None),
    (b'"text"', None, None),
    (b"\xff\xfe\x00", None, None),
    (b"[" * (LIMIT - 10), None, None),
    (b'{"model": "echo"}', "missing", "prompt"),
    (b'{"model": "echo", "prompt": 5}', "string_type", "prompt"),
    (b'{"model": "echo", "prompt": [1, 2, 3]}', "string_type", "prompt"),
    (b'{"model": "echo", "prompt": ["a", "b"]}', "value_error", "prompt"),
    (b'{"model": 3, "prompt": "x"}', "string_type", "model"),
    (b'{"model": "echo", "prompt": "x", "max_tokens": "5"}', "int_type", "max_tokens"),
    (b'{"model": "echo", "prompt": "x", "max_tokens": 0}', "greater_than_equal", "max_tokens"),
    (b'{"model": "echo", "prompt": "x", "max_tokens": 1e400}', "int_type", "max_tokens"),
    (b'{"model": "echo", "prompt": "x", "temperature": NaN}', "finite_number", "temperature"),
    (b'{"model": "echo", "prompt": "x", "temperature": 9}', "less_than_equal", "temperature"),
    (b'{"model": "echo", "prompt": "x", "top_p": 0}', "greater_than", "top_p"),
    (b'{"model": "echo", "prompt": "x", "stream": "yes"}', "bool_type", "stream"),
    (b'{"model": "echo", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', "value_error",
     "stop"),
    (b'{"model": "echo", "prompt": "x", "stop": [""]}', "value_error", "stop"),
    (b'{"model": "echo", "prompt": "x", "n": 2}', "value_error", "n"),
    (b'{"model": "echo", "prompt": "x", "echo": true}', "value_error", "echo"),
    (b'{"model": "echo", "prompt": "x", "logprobs": 2}', "value_error", "logprobs"),
    (b'{"model": "echo", "prompt": "x", "best_of": 3}', "value_error", "best_of"),
    (b'{"model": "echo", "prompt": "x", "seed": 99999999999999999999999}', None, "seed"),
    (b'{"model": "echo", "prompt": "x", "stream_options": {"include_usage": true}}',
     "value_error", None),
]


@pytest.mark.parametrize("body, code, param", BAD)
def test_bad_completion_bodies_are_400(server, body, code, param):
    status, _, answer = raw(server.port, "POST", "/v1/completions", body,
                            _auth({"Content-Type": "application/json"}))
    assert status == 400, answer
    error = json.loads(answer)["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if code is not None:
        assert error["code"] == code
    assert error["param"] == param


BAD_CHAT = [
    ({"model": "echo", "messages": []}, "messages"),
    ({"model": "echo", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"model": "echo", "messages": [{"role": "user"}]}, "messages.0.content"),
    ({"model": "echo", "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
    ({"model": "echo", "messages": [{"role": "user", "content": [{"type": "image_url",
                                                                  "image_url": "u"}]}]}, None),
    ({"model": "echo", "messages": "hello"}, "messages"),
    ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "logprobs": True},
     "logprobs"),
    ({"model": "echo", "messages": [{"role": "user", "content": "x"}],
      "max_completion_tokens": -1}, "max_completion_tokens"),
]


@pytest.mark.parametrize("body, param", BAD_CHAT)
def test_bad_chat_bodies_are_400(server, body, param):
    status, _, answer = raw(server.port, "POST", "/v1/chat/completions", body, _auth())
    assert status == 400, answer
    error = json.loads(answer)["error"]
    if param is not None:
        assert error["param"] == param
    assert error["message"].startswith(param or "")


def test_body_without_json_content_type_is_415(server):
    body = b'{"model": "echo", "prompt": "x"}'
    for headers in ({}, {"Content-Type": "text/plain"},
                    {"Content-Type": "application/x-www-form-urlencoded"}):
        status, _, answer = raw(server.port, "POST", "/v1/completions", body,
                                _auth(headers))
        assert status == 415 and "Content-Type: application/json" in answer.decode()
    status, _, _ = raw(server.port, "POST", "/v1/completions", body,
                       _auth({"Content-Type": "application/json; charset=utf-8"}))
    assert status == 200


def test_wrong_method_and_route(server):
    status, headers, answer = raw(server.port, "GET", "/v1/completions", headers=_auth())
    assert status == 405 and "POST" in headers["allow"]
    assert json.loads(answer)["error"]["type"] == "invalid_request_error"
    status, _, answer = raw(server.port, "GET", "/v2/nothing", headers=_auth())
    assert status == 404 and "no route" in json.loads(answer)["error"]["message"]


def _stream_then_hang_up(port: int, body: dict, wait_for: bytes | None) -> None:
    """Send a request on a raw socket, read until wait_for appears (None: read nothing), and
    close the connection."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nAuthorization: Bearer " + KEY.encode() +
                     b"\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        seen = b""
        while wait_for is not None and wait_for not in seen:
            piece = sock.recv(65536)
            assert piece, seen
            seen += piece


@pytest.mark.parametrize("stream, model, wait_for", [
    (True, "hang", b"first"),  # mid-stream, while the generator waits for its next token
    (True, "hang-first", None),  # before the first event (headers not sent yet)
    (False, "hang", None),  # a non-streaming request that is still collecting
])
def test_client_disconnect_closes_the_generator(server, stream, model, wait_for):
    controller = server.controller
    controller.closed_event.clear()
    before = len(controller.requests)
    _stream_then_hang_up(server.port, {"model": model, "prompt": "x", "stream": stream},
                         wait_for)
    assert controller.closed_event.wait(10), "the generator was not closed"
    deadline = time.monotonic() + 10
    while len(controller.requests) <= before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert controller.requests[before].request_id in controller.closed
    assert raw(server.port, "GET", "/health")[0] == 200


def test_request_timeout_closes_the_generator():
    with serve(request_timeout=0.3) as s:
        status, _, answer = raw(s.port, "POST", "/v1/completions",
                                {"model": "hang-first", "prompt": "x"})
        assert status == 504 and json.loads(answer)["error"]["code"] == "timeout"
        status, _, answer = raw(s.port, "POST", "/v1/chat/completions",
                                {"model": "hang", "stream": True,
                                 "messages": [{"role": "user", "content": "x"}]})
        assert status == 200
        blocks = answer.decode().split("\n\n")
        assert '"content":"first"' in blocks[1]
        assert json.loads(blocks[-3][len("data: "):])["error"]["code"] == "timeout"
        assert blocks[-2] == "data: [DONE]"
        assert len(s.controller.closed) == 2
        text = raw(s.port, "GET", "/metrics")[2].decode()
        assert 'serving_requests_total{model="hang",status="504"} 1.0' in text
