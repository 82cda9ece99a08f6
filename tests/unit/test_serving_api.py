"""serving.metrics, serving.schemas and the CLI's parser, without a server."""

import threading

import pytest
from pydantic import ValidationError

from serving import schemas
from serving.__main__ import _parser
from serving.metrics import Metrics
from serving.protocol import Event, SamplingParams


def _sample(text: str, name: str, **labels) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0] == f"{name}{{{want}":
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_record_and_render():
    m = Metrics()
    m.cold_start("tiny", "dram", 0.3)
    m.cold_start("tiny", "remote", 12.0)
    m.cold_start("tiny", "remote", 8.0)
    m.first_token("tiny", 0.2)
    m.token_interval("tiny", 0.01)
    m.queue_length("tiny", 3)
    m.instances("tiny", 2)
    m.request_done("tiny", 200)
    m.request_done("tiny", "429")
    body, content_type = m.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert _sample(text, "serving_cold_starts_total", model="tiny", tier="remote") == 2
    assert _sample(text, "serving_load_seconds_count", tier="remote") == 2
    assert _sample(text, "serving_load_seconds_sum", tier="remote") == 20.0
    assert _sample(text, "serving_time_to_first_token_seconds_count", model="tiny") == 1
    assert _sample(text, "serving_time_per_output_token_seconds_count", model="tiny") == 1
    assert _sample(text, "serving_queue_length", model="tiny") == 3
    assert _sample(text, "serving_instances", model="tiny") == 2
    assert _sample(text, "serving_requests_total", model="tiny", status="200") == 1
    assert _sample(text, "serving_requests_total", model="tiny", status="429") == 1
    m.forget("tiny")
    m.forget("never-seen")
    assert _sample(m.render()[0].decode(), "serving_queue_length", model="tiny") is None


def test_metrics_registries_are_separate_and_threads_may_share_one():
    a, b = Metrics(), Metrics()  # the global registry would refuse a second set of names
    threads = [threading.Thread(target=lambda: [a.request_done("m", 200) for _ in range(500)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _sample(a.render()[0].decode(), "serving_requests_total", model="m",
                   status="200") == 2000
    assert _sample(b.render()[0].decode(), "serving_requests_total", model="m",
                   status="200") is None


def test_completion_to_request():
    body = schemas.CompletionRequest.model_validate({
        "model": "m", "prompt": ["hi"], "max_tokens": 5, "temperature": 0, "top_p": 0.5,
        "top_k": -1, "seed": 3, "stop": "\n", "stream": True, "user": "ignored",
        "stream_options": {"include_usage": True}})
    req = body.to_request("cmpl-1")
    assert req.prompt == "hi" and req.messages is None and req.stream
    assert req.params == SamplingParams(max_tokens=5, temperature=0.0, top_p=0.5, top_k=0,
                                        seed=3, stop=("\n",))
    assert body.include_usage


def test_chat_to_request_prefers_max_completion_tokens():
    body = schemas.ChatRequest.model_validate({
        "model": "m", "max_tokens": 9, "max_completion_tokens": 4,
        "messages": [{"role": "user", "content": "x"}]})
    assert body.to_request("c", 100).params.max_tokens == 4
    body = schemas.ChatRequest.model_validate({
        "model": "m", "messages": [{"role": "assistant", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    req = body.to_request("c", 100)
    assert req.params.max_tokens == 100
    assert req.messages == ({"role": "assistant", "content": "a\nb"},)


@pytest.mark.parametrize("field, value", [
    ("n", 3), ("n", True), ("echo", True), ("best_of", 2), ("logprobs", 1), ("suffix", "x"),
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("top_p", 0), ("temperature", -0.1),
    ("stop", ["a"] * 5), ("stop", ""), ("prompt", []), ("prompt", ["a", "b"]),
    ("max_tokens", 2**31), ("seed", 2**63), ("stream", 1), ("temperature", "1"),
])
def test_completion_refuses(field, value):
    with pytest.raises(ValidationError):
        schemas.CompletionRequest.model_validate({"model": "m", "prompt": "p", field: value})


def test_defaults_of_unsupported_fields_pass():
    schemas.CompletionRequest.model_validate({
        "model": "m", "prompt": "p", "n": 1, "echo": False, "best_of": 1, "logprobs": None,
        "presence_penalty": 0, "frequency_penalty": 0.0, "suffix": None})
    schemas.ChatRequest.model_validate({
        "model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": False,
        "tools": [], "top_logprobs": None})


def test_deploy_spec_keeps_only_given_settings():
    body = schemas.DeployRequest.model_validate({"name": "org/m-1.5", "path": "/p",
                                                 "max_instances": 2, "keep_alive": None})
    assert body.spec() == {"max_instances": 2}


def test_error_body_and_usage():
    assert schemas.error_body(429, "full") == {"error": {
        "message": "full", "type": "rate_limit_error", "param": None, "code": None}}
    assert schemas.error_body(502, "x")["error"]["type"] == "server_error"
    done = Event("done", finish_reason="stop", prompt_tokens=2, completion_tokens=3)
    assert schemas.usage(done) == {"prompt_tokens": 2, "completion_tokens": 3,
                                   "total_tokens": 5}


def test_cli_parser():
    args = _parser().parse_args(["deploy", "m", "/p", "--max-instances", "2", "--keep-alive",
                                 "0.5", "--url", "http://h:1", "--api-key", "k"])
    assert (args.name, args.path, args.max_instances, args.keep_alive, args.url,
            args.api_key, args.min_instances) == ("m", "/p", 2, 0.5, "http://h:1", "k", None)
    with pytest.raises(SystemExit):
        _parser().parse_args(["deploy", "m"])
