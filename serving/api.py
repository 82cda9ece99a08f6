"""The OpenAI-compatible HTTP layer: make_app(controller, config) -> a FastAPI app.

Routes: GET /health (no auth), GET /metrics, GET /v1/models[/{id}], POST /v1/completions,
POST /v1/chat/completions, POST|GET /v1/deployments, GET|DELETE /v1/deployments/{name},
GET /v1/status. Every error is OpenAI's JSON {"error": {"message", "type", "param", "code"}}:

    400 bad JSON, wrong types, unsupported fields   401 missing or wrong API key
    404 unknown model / deployment / route          405 wrong method
    413 body over config.max_body_bytes             415 a body that is not application/json
    429 ServingError(429) + Retry-After
    503 shutting down or ServingError(503)          504 request_timeout passed
    ServingError(status) / Event(kind="error")      -> that status
    500 only for a bug of this server (logged)
    (499 in the metrics: the client disconnected; its generator was closed at once)

A stream that already started reports a later problem as `data: {"error": ...}` then [DONE].
The controller's contract (what make_app calls) is in make_app's docstring.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serving import schemas
from serving.guards import Auth, BodyLimit, error, install_handlers, refused
from serving.protocol import Event, ServingError
from serving.sse import CANCELLED, DONE_LINE, END, EventStream, Run, sse, watch_disconnect

__all__ = ["make_app"]

log = logging.getLogger("serving.api")

TIMEOUT = "timeout"  # _next's answer when the request's deadline passed


def make_app(controller: Any, config: Any = None) -> FastAPI:
    """The HTTP app in front of controller.

    controller: `metrics` (serving.metrics.Metrics); `accepting` (bool); `models()` -> OpenAI
    model objects; `generate(GenerateRequest)` -> async iterator of Events (raises
    ServingError before its first event to refuse; closing it cancels the request);
    `async deploy(name, path, **spec)` -> dict; `async delete(name)`; `status()` -> dict
    (its "deployments": a list of dicts with "name", or a dict by name).
    config: any object with api_key (None: no auth), max_body_bytes, request_timeout (seconds
    from arrival to the last byte; 0: none).
    """
    api_key = getattr(config, "api_key", None)
    limit = int(getattr(config, "max_body_bytes", 1 << 20))
    timeout = float(getattr(config, "request_timeout", 600.0))

    app = FastAPI(title="bas serving", version="1", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=limit)
    if api_key:
        app.add_middleware(Auth, key=api_key)  # added last: runs first
    install_handlers(app)
    metrics = controller.metrics

    @app.get("/health")
    async def health() -> JSONResponse:
        if controller.accepting:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "shutting down"}, status_code=503)

    @app.get("/metrics")
    async def render_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": list(controller.models())}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> JSONResponse:
        found = _model(controller, model_id)
        if found is None:
            return error(404, f"The model {model_id!r} does not exist", param="model",
                         code="model_not_found")
        return JSONResponse(found)

    @app.post("/v1/completions")
    async def completions(body: schemas.CompletionRequest, request: Request) -> Response:
        return await _generate(request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: schemas.ChatRequest, request: Request) -> Response:
        return await _generate(request, body, chat=True)

    @app.post("/v1/deployments", status_code=201)
    async def deploy(body: schemas.DeployRequest) -> JSONResponse:
        if not controller.accepting:
            return error(503, "the server is shutting down", code="shutting_down")
        info = await controller.deploy(body.name, body.path, **body.spec())
        return JSONResponse(info, status_code=201)

    @app.get("/v1/deployments")
    async def list_deployments() -> dict:
        return {"object": "list", "data": _deployments(controller.status())}

    @app.get("/v1/deployments/{name:path}")
    async def get_deployment(name: str) -> JSONResponse:
        found = next((d for d in _deployments(controller.status()) if d.get("name") == name),
                     None)
        if found is None:
            return error(404, f"no deployment named {name!r}", param="name", code="not_found")
        return JSONResponse(found)

    @app.delete("/v1/deployments/{name:path}")
    async def delete(name: str) -> JSONResponse:
        await controller.delete(name)
        return JSONResponse({"name": name, "deleted": True})

    @app.get("/v1/status")
    async def status() -> dict:
        return controller.status()

    async def _generate(request: Request, body: Any, *, chat: bool) -> Response:
        if not controller.accepting:
            return error(503, "the server is shutting down", code="shutting_down")
        model = _model(controller, body.model)
        if model is None:
            return error(404, f"The model {body.model!r} does not exist", param="model",
                         code="model_not_found")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        req = (body.to_request(rid, _default_max_tokens(model)) if chat
               else body.to_request(rid))
        deadline = asyncio.get_running_loop().time() + timeout if timeout > 0 else None
        try:
            run = Run(controller.generate(req))
        except ServingError as exc:  # a generate() that refuses as it is called
            metrics.request_done(body.model, exc.status)
            return refused(exc)
        watcher = asyncio.get_running_loop().create_task(
            watch_disconnect(request.receive, run.cancel))
        stream = None
        try:
            first = await _next(run, deadline)
            answer = _early_answer(first)
            if answer is not None:
                metrics.request_done(body.model, answer.status_code)
                return answer
            if body.stream:
                stream = _sse_chunks(run, first, deadline, body, rid, chat)
                return EventStream(stream, run.cancel, headers={"X-Request-Id": rid})
            answer = await _collect(run, first, deadline, body.model, rid, chat)
            metrics.request_done(body.model, answer.status_code)
            return answer
        finally:
            watcher.cancel()
            if stream is None:
                await run.close()

    async def _sse_chunks(run: Run, first: Event, deadline: float | None, body: Any, rid: str,
                          chat: bool) -> AsyncIterator[bytes]:
        """The stream's SSE lines; closing it closes the run and records the outcome."""
        created, model, status = int(time.time()), body.model, 200
        chunk = schemas.chat_chunk if chat else schemas.completion_chunk
        try:
            if chat:
                yield sse(chunk(rid, model, created, {"role": "assistant", "content": ""}))
            event: Any = first
            while True:
                if isinstance(event, Event) and event.kind == "wait":
                    yield _comment(event)
                elif isinstance(event, Event) and event.kind == "token":
                    if event.text:
                        content = {"content": event.text} if chat else event.text
                        yield sse(chunk(rid, model, created, content))
                elif isinstance(event, Event) and event.kind == "done":
                    yield sse(chunk(rid, model, created, {} if chat else "",
                                    finish_reason=event.finish_reason))
                    if body.include_usage:
                        yield sse(chunk(rid, model, created, None, usage=schemas.usage(event)))
                    yield DONE_LINE
                    return
                elif event is CANCELLED:
                    status = 499  # the client went away: nobody to write to
                    return
                else:
                    status, message, code = _failure(event)
                    yield sse(schemas.error_body(status, message, code=code))
                    yield DONE_LINE
                    return
                event = await _next(run, deadline)
        except GeneratorExit:  # closed early: the client's write failed
            status = 499
            raise
        finally:
            await run.close()
            metrics.request_done(model, status)

    return app


async def _next(run: Run, deadline: float | None) -> Any:
    """The run's next item, or TIMEOUT (the run then cancelled) once deadline (loop time;
    None: never) has passed."""
    try:
        async with asyncio.timeout_at(deadline):
            return await run.next()
    except TimeoutError:
        await run.close()
        return TIMEOUT


def _early_answer(first: Any) -> JSONResponse | None:
    """The response for a request that failed before its first token, else None."""
    if isinstance(first, ServingError):
        return refused(first)
    if isinstance(first, Event) and first.kind == "error":
        return refused(ServingError(first.status or 500, first.message,
                                     retry_after=first.retry_after))
    if first is CANCELLED:
        return Response(status_code=499)  # the client has gone; uvicorn drops it
    if isinstance(first, Event):
        return None
    status, message, code = _failure(first)
    return error(status, message, code=code)


async def _collect(run: Run, event: Any, deadline: float | None, model: str, rid: str,
                   chat: bool) -> Response:
    """A non-streaming request's response: its tokens joined, or its error."""
    texts = []
    while True:
        if isinstance(event, Event) and event.kind == "token":
            texts.append(event.text)
        elif isinstance(event, Event) and event.kind == "done":
            build = schemas.chat_object if chat else schemas.completion_object
            return JSONResponse(build(rid, model, "".join(texts), event),
                                headers={"X-Request-Id": rid})
        elif not isinstance(event, Event) or event.kind != "wait":
            answer = _early_answer(event)
            if answer is not None:
                return answer
        event = await _next(run, deadline)


def _failure(item: Any) -> tuple[int, str, str | None]:
    """(status, message, code) of an item that ends a request other than "done"."""
    if item is TIMEOUT:
        return 504, "the request took longer than the server's request_timeout", "timeout"
    if isinstance(item, ServingError):
        return item.status, item.message, None
    if isinstance(item, Event):  # kind "error"
        return item.status or 500, item.message, None
    if item is END:
        log.error("controller.generate ended without a done or error event")
        return 500, "the request ended without a result (server bug)", "internal_error"
    return 500, "internal server error", "internal_error"  # logged by Run


def _comment(event: Event) -> bytes:
    reason = str(event.info.get("reason", "")).replace("\r", " ").replace("\n", " ")
    return f": waiting ({reason})\n\n".encode()


def _model(controller: Any, model_id: str) -> dict | None:
    return next((m for m in controller.models() if m.get("id") == model_id), None)


def _default_max_tokens(model: dict) -> int:
    """A chat request's max_tokens when it gives none: the deployment's cap, if the model
    object tells it, else OpenAI's completions default."""
    cap = model.get("max_tokens")
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else 16


def _deployments(status: dict) -> list[dict]:
    found = status.get("deployments", [])
    if isinstance(found, dict):
        return [{"name": name, **info} for name, info in found.items()]
    return list(found)
