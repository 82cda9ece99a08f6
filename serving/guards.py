"""What the HTTP layer refuses before a route runs, and how every refusal looks.

_Auth (API key), _BodyLimit (413), and the exception handlers that turn bad input into 4xx
OpenAI error JSON (never a 500; a 500 only for a bug of this server, logged).
"""

from __future__ import annotations

import hmac
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.protocol import ServingError
from serving.schemas import error_body

__all__ = ["Auth", "BodyLimit", "error", "install_handlers", "refused"]

log = logging.getLogger("serving.api")

_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}  # in pydantic error locs


def error(status: int, message: str, *, param: str | None = None, code: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param, code=code),
                        status_code=status, headers=headers)


def refused(exc: ServingError) -> JSONResponse:
    headers = None
    if exc.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    status = exc.status if 400 <= exc.status <= 599 else 500
    return error(status, exc.message, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error(400, "the request body is not valid JSON", code="invalid_json")
        if tuple(first.get("loc", ())) == ("body",) and not _is_json(request):
            # FastAPI reads a body as JSON only when its Content-Type says so (no CSRF by
            # forms), so say that instead of "not an object"
            return error(415, "send the body as JSON with Content-Type: application/json",
                         code="unsupported_media_type")
        loc = [p for p in first.get("loc", ()) if not _is_tag(p)]
        where = loc[0] if loc else None
        param = ".".join(str(p) for p in loc[1:]) or None
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if where == "body" and param is None and first.get("type") == "missing":
            message = "the request needs a JSON body"
        elif param:
            message = f"{param}: {message}"
        return error(400, message, param=param, code=first.get("type"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "bad request"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return error(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(ServingError)
    async def refusal(request: Request, exc: ServingError) -> JSONResponse:
        return refused(exc)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, "internal server error", code="internal_error")


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


def _is_tag(part: Any) -> bool:
    """Whether part of an error's loc names a branch of a union type ("str", "list[str]")."""
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part)


class Auth:
    """Every route but /health needs `Authorization: Bearer KEY` (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            given = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                answer = error(401, "missing or wrong API key (Authorization: Bearer KEY)",
                               code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse bodies over limit bytes with 413: by Content-Length before reading, and while
    reading a chunked body; the app then gets the whole body in one message."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.strip().isdigit():
                    await error(400, "bad Content-Length")(scope, receive, send)
                    return
                if int(value) > self.limit:
                    await self._too_large(scope, receive, send)
                    return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone before its body arrived: nothing to answer
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        first: list[dict] = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay() -> dict:
            return first.pop() if first else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = error(413, f"the request body is over the limit of {self.limit} bytes",
                       code="request_too_large", headers={"Connection": "close"})
        await answer(scope, receive, send)
