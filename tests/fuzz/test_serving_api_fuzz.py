"""Fuzzing the HTTP layer from its own OpenAPI document: no input is a 500, the server lives.

Every operation of the app's OpenAPI document gets request bodies drawn from its JSON schema
(valid ones, and ones with a field dropped, retyped or added), random JSON and random bytes,
with random headers, plus random paths and methods. A real uvicorn server (tests.servinghttp,
with the scripted controller) must answer each without a 500, with OpenAI's error JSON for
every 4xx/5xx, and /health must still answer 200 at the end.
"""

import http.client
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servinghttp import serve

KEY = "fuzz-key"
CASES = int(os.environ.get("SERVING_FUZZ_CASES", "300"))
# scripted models whose behaviour is no bug (the "bug" ones are 500s by design, "hang" ones
# would only wait for the timeout)
MODELS = ["echo", "cold", "busy", "gone", "fail-first", "fail-later"]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def server():
    with serve(api_key=KEY, max_body_bytes=8192, request_timeout=2.0) as s:
        yield s


def _strategy(schema: dict, doc: dict, name: str = "") -> st.SearchStrategy:
    """Values of a JSON schema (the subset FastAPI writes), loosely respecting its bounds."""
    if "$ref" in schema:
        return _strategy(doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], doc,
                         name)
    if "anyOf" in schema:
        return st.one_of([_strategy(s, doc, name) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))

        def optional(k, v):  # mostly the default, so that most "valid" bodies are valid
            value = _strategy(v, doc, k)
            return st.just(v["default"]) | value if "default" in v else value

        return st.fixed_dictionaries(
            {k: _strategy(v, doc, k) for k, v in props.items() if k in required},
            optional={k: optional(k, v) for k, v in props.items() if k not in required})
    if kind == "array":
        return st.lists(_strategy(schema.get("items", {}), doc), max_size=5)
    if kind == "string":
        if name == "model":
            return st.sampled_from(MODELS) | st.text(max_size=12)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda t: len(t) <= 40) | st.text(max_size=10)
        return st.text(max_size=40)
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.integers(int(lo) - 1 if lo is not None else -5,
                           int(min(hi, 100)) + 1 if hi is not None else 100) | st.integers()
    if kind == "number":
        lo, hi = schema.get("minimum", -3), schema.get("maximum", 3)
        return st.floats(lo, hi) | st.floats(allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON


def _operations(doc: dict) -> list[tuple[str, str, dict | None]]:
    ops = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ops.append((method.upper(), path, body.get("schema")))
    return ops


@st.composite
def _requests(draw, doc: dict) -> tuple[str, str, bytes, dict]:
    method, path, schema = draw(st.sampled_from(_operations(doc)))
    path = path.replace("{model_id}", draw(st.sampled_from(MODELS) | st.text(
        st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#%"),
        max_size=10)))
    path = path.replace("{name}", draw(st.text("abcxyz./-", min_size=1, max_size=8)))
    how = draw(st.sampled_from(["valid", "valid", "drop", "retype", "extra", "json", "bytes",
                                "other-route"]))
    body: object = None
    if schema is not None:
        body = draw(_strategy(schema, doc))
    if how == "drop" and isinstance(body, dict) and body:
        body.pop(draw(st.sampled_from(sorted(body))))
    elif how == "retype" and isinstance(body, dict) and body:
        body[draw(st.sampled_from(sorted(body)))] = draw(JSON)
    elif how == "extra" and isinstance(body, dict):
        body[draw(st.text(max_size=8))] = draw(JSON)
    elif how == "json":
        body = draw(JSON)
    if how == "other-route":
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
        path = draw(st.sampled_from([path, path + "/", path + "/x", "/v1", "/", "//v1/models",
                                     "/v1/deployments/", "/%ff", "/v1/models/%00"]))
    data = draw(st.binary(max_size=64)) if how == "bytes" else (
        b"" if body is None else json.dumps(body).encode())
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    headers.update(draw(st.dictionaries(
        st.sampled_from(["Content-Type", "Accept", "Authorization", "X-Anything",
                         "Accept-Encoding", "Expect"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30), max_size=2)))
    return method, path, data, headers


@pytest.mark.slow
def test_no_input_is_a_server_error(server):
    doc = server.app.openapi()
    conn = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)]

    @settings(max_examples=CASES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_requests(doc))
    def check(request):
        method, path, data, headers = request
        try:
            conn[0].request(method, path, body=data, headers=headers)
            response = conn[0].getresponse()
        except (http.client.HTTPException, OSError):  # the server closed a kept-alive conn
            conn[0].close()
            conn[0] = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn[0].request(method, path, body=data, headers=headers)
            response = conn[0].getresponse()
        body = response.read()
        if response.getheader("Connection", "").lower() == "close":
            conn[0].close()
        assert response.status != 500 and response.status < 600, (request, body)
        assert b"internal_error" not in body, (request, body)
        if response.status >= 400 and path != "/health":
            error = json.loads(body)["error"]
            assert isinstance(error["message"], str) and error["message"], body

    check()
    conn[0].close()
    probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    probe.request("GET", "/health")
    assert probe.getresponse().status == 200
    probe.close()
