"""A small client of a running server's management routes, standard library only (urllib).

    client = Client("http://127.0.0.1:8343", api_key=None)
    client.deploy("tiny", "/models/tiny", max_instances=2)
    client.status()
    client.delete("tiny")

Every method returns the decoded JSON answer, raises ServerError (with the HTTP status and
the server's message) for a 4xx/5xx answer, and Unreachable when nothing answers at url.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["Client", "ServerError", "Unreachable"]


class ServerError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Unreachable(Exception):
    """Nothing answered at the server's URL (not running, wrong port, no network)."""


class Client:
    """The management routes of one server."""

    def __init__(self, url: str = "http://127.0.0.1:8343", api_key: str | None = None,
                 timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def deploy(self, name: str, path: str, **spec: Any) -> dict:
        """Deploy the checkpoint or model directory at path (on the server) as name."""
        body = {"name": name, "path": path, **{k: v for k, v in spec.items() if v is not None}}
        return self._call("POST", "/v1/deployments", body)

    def delete(self, name: str) -> dict:
        """Delete the deployment name (its instances stop)."""
        return self._call("DELETE", "/v1/deployments/" + urllib.parse.quote(name, safe="/"))

    def deployments(self) -> list[dict]:
        return self._call("GET", "/v1/deployments")["data"]

    def status(self) -> dict:
        """The controller's status (deployments, instances, workers)."""
        return self._call("GET", "/v1/status")

    def health(self) -> bool:
        """Whether the server accepts requests (False while it shuts down)."""
        try:
            self._call("GET", "/health")
        except ServerError as exc:
            if exc.status == 503:
                return False
            raise
        return True

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = response.read()
        except urllib.error.HTTPError as exc:
            raise ServerError(exc.code, _message(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"no server answers at {self.url} ({reason})") from None
        try:
            return json.loads(answer or b"null")
        except ValueError:
            raise ServerError(response.status, "the answer is not JSON: is this a serving "
                              "server?") from None


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body["error"]["message"])
    except Exception:  # not our JSON error body: a proxy's page, or nothing
        return exc.reason or "error"
