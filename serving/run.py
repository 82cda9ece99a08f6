"""Run the server: the controller in uvicorn's event loop, N pre-warmed worker processes.

    python -m serving.run --model tiny=/models/tiny --workers 2 --port 8343
    python -m serving.run --config deploy.yaml --api-key KEY
    python -m serving.run --demo          # `make run`: the demo model, built on the first run
    python -m serving.run --backend ray --address auto --model tiny=/shared/tiny  # Ray actors

    import serving
    serving.run(port=8343, models=["tiny=/models/tiny"])    # blocks until Ctrl-C / SIGTERM
    with serving.run.Server(config) as server:               # in a thread, for tests
        requests.post(f"{server.url}/v1/completions", ...)

This module is callable (`serving.run(...)` is `serving.run.run(...)`), so the package's
`run` and `python -m serving.run` are one thing. SIGTERM or Ctrl-C stops gracefully: new
requests get 503, running ones finish for up to shutdown_grace seconds, then the workers stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
import types
from typing import Any

from serving.config import Config, ConfigError, ModelSpec, load_config

__all__ = ["Server", "build_app", "main", "run"]

log = logging.getLogger("serving.run")


def build_app(config: Config, *, announce: bool = False):
    """(FastAPI app, Controller): the controller starts and stops with the app's lifespan.
    announce: print ready-to-paste client examples once the server is ready."""
    from serving.api import make_app
    from serving.controller import Controller

    controller = Controller(config)
    app = make_app(controller, config)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await controller.start()
        if announce:
            print(_examples(config, controller.models()), flush=True)
        try:
            yield
        finally:
            await controller.stop(config.shutdown_grace)

    app.router.lifespan_context = lifespan
    return app, controller


def _uvicorn(config: Config, app, controller):
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            controller.drain()  # new requests get 503 from now on
            super().handle_exit(sig, frame)

    return _Server(uvicorn.Config(app, host=config.host, port=config.port, lifespan="on",
                                  log_level="info", timeout_graceful_shutdown=max(
                                      1, int(config.shutdown_grace)), access_log=False))


def run(config: Config | str | None = None, **overrides: Any) -> None:
    """Serve until Ctrl-C or SIGTERM. config: a Config, a YAML file's path or None;
    overrides: Config fields (models as "NAME=PATH" strings, dicts or ModelSpecs)."""
    if not isinstance(config, Config):
        config = load_config(config, **overrides)
    elif overrides:
        raise TypeError("pass overrides with a config file's path, not with a Config")
    _logging()
    app, controller = build_app(config, announce=True)
    try:
        _uvicorn(config, app, controller).run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C once its graceful shutdown is done: nothing left to do


class Server:
    """The whole server in a background thread (uvicorn, controller, workers).

    with Server(config) as server: server.url, server.port, server.controller (touch it
    only through server.call(coro), which runs in the server's loop). Port 0 picks a free
    port. Exiting stops everything (graceful, config.shutdown_grace).
    """

    def __init__(self, config: Config, *, start_timeout: float = 300.0):
        self.config = config
        self.start_timeout = start_timeout
        self.app, self.controller = build_app(config)
        self.port: int | None = None
        self._server = _uvicorn(config, self.app, self.controller)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def __enter__(self) -> Server:
        self._thread = threading.Thread(target=self._serve, name="serving-server",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while (not self._server.started and self._thread.is_alive()
               and time.monotonic() < deadline):
            time.sleep(0.05)  # start-up only: uvicorn offers no event to wait on
        if not self._server.started:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the server did not start: {self._error!r}")
        sock = self._server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.controller.drain)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.config.shutdown_grace + 30)

    def call(self, coro_or_fn, timeout: float = 60.0):
        """Run a coroutine (or a plain function) in the server's loop; its result."""
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self._loop).result(timeout)

        async def call():
            return coro_or_fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._server.serve())
        except BaseException as exc:  # noqa: BLE001 - reported by __enter__
            self._error = exc
        finally:
            loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.run",
                                     description="Serve deployed models (OpenAI-compatible).")
    parser.add_argument("--config", help="a YAML file of settings (serving/config.py)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="deploy the model directory PATH as NAME (repeatable)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--api-key", dest="api_key")
    parser.add_argument("--store", help="directory of the registry and the workers' tiers")
    parser.add_argument("--policy", help="where cold starts go: locality (default), "
                        "locality+migration, random or least-loaded")
    parser.add_argument("--backend", choices=["local", "ray"],
                        help="where workers run: local processes (default) or Ray actors, "
                             "one per server slot (resource bas_server_slot) of a node")
    parser.add_argument("--address", help="--backend ray: the Ray cluster's address (auto, "
                        "HOST:6379, ray://...); none starts a Ray instance on this machine")
    parser.add_argument("--demo", action="store_true",
                        help="also serve the demo model as 'demo' (a ~98 M-parameter Llama "
                             "with RANDOM weights, built in STORE/demo-model on the first run)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, host=args.host, port=args.port,
                             workers=args.workers, api_key=args.api_key, store=args.store,
                             policy=args.policy, backend=args.backend,
                             address=args.address, models=args.model)
        if args.demo and config.model("demo") is None:
            config.models.append(ModelSpec("demo", _demo_model(config.store)))
    except ConfigError as exc:
        print(f"serving.run: {exc}", file=sys.stderr)
        return 2
    run(config)
    return 0


def _demo_model(store: str) -> str:
    from serving.demo import make_demo

    where = os.path.join(store, "demo-model")
    if not os.path.isdir(where):
        print(f"serving.run: building the demo model in {where} (first run only: a Llama of "
              f"~98 M parameters with random weights and a BPE tokenizer trained on this "
              f"machine's text)", flush=True)
    return make_demo(where)


def _examples(config: Config, models: list[dict]) -> str:
    """Ready-to-paste client calls against this server (the first deployed model)."""
    if not models:
        return (f"serving on http://{config.host}:{config.port} with no models: deploy one "
                f"with `python -m serving deploy NAME PATH`")
    model = models[0]["id"]
    base = f"http://{config.host}:{config.port}"
    key = config.api_key or "none"
    auth = f" -H 'Authorization: Bearer {config.api_key}'" if config.api_key else ""
    body = json.dumps({"model": model, "max_tokens": 32, "stream": True,
                       "messages": [{"role": "user", "content": "Hello"}]})
    return f"""
serving {[m["id"] for m in models]} on {base}  (Ctrl-C stops; the first request is a cold start)

  curl -sN {base}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\
    -d '{body}'

  .venv/bin/python -c "
from openai import OpenAI
client = OpenAI(base_url='{base}/v1', api_key='{key}')
out = client.chat.completions.create(model='{model}', max_tokens=32,
    messages=[{{'role': 'user', 'content': 'Hello'}}])
print(out.choices[0].message.content)"
"""


def _logging() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _CallableModule(types.ModuleType):
    """`serving.run(...)` calls run(): the package's `run` is this module."""

    def __call__(self, config: Config | str | None = None, **overrides: Any) -> None:
        run(config, **overrides)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
