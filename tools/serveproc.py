"""The serving benchmarks' servers: ours (python -m serving.run) and transformers serve, each in
its own process group, on a free port of 127.0.0.1, logging to a file read incrementally.

    server = Ours(workdir, store, registry, {"workers": 1}, {"keep_alive": 1.0}).start()
    server.url; server.status(); server.metrics(); server.wait_unloaded("dram"); server.memory()
    server.stop()          # SIGTERM to the group, SIGKILL to what is left

Every started server is stopped on the harness's exit too (atexit; SIGTERM is turned into
SystemExit so that finally blocks and atexit run): none may outlive the harness, it would
skew every later measurement.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from loadgen import http_json, parse_metrics, process_tree, tree_memory

__all__ = ["MODEL", "HFServe", "Ours"]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MODEL = "bench"  # the deployment's name on our server
WAIT = 300.0  # seconds to wait for a server to start or unload
# Every server still running, so that an error, SIGTERM or the harness's exit stops it: a
# process group must never outlive the harness (it would skew every later measurement).
_LIVE: set[_Process] = set()
_HANDLERS = threading.Lock()
_handlers_installed = False


def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop(grace=5.0)


def _install_handlers() -> None:
    global _handlers_installed
    with _HANDLERS:
        if _handlers_installed:
            return
        _handlers_installed = True
        atexit.register(_stop_all)
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs finally and atexit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(argv_for, log_for) -> tuple[int, _Process]:
    """(port, healthy server) of argv_for(port), logging to log_for(port), on a free port;
    tried again on another port when someone took it in between (three times)."""
    for attempt in range(3):
        port = _free_port()
        server = _Process(argv_for(port), log_for(port))
        server.start()
        try:
            server.wait_healthy(f"http://127.0.0.1:{port}")
            return port, server
        except BaseException as exc:
            server.stop(grace=5.0)
            if attempt == 2 or "address already in use" not in str(exc).lower():
                raise
    raise AssertionError("unreachable")


class _Process:
    """A server in its own process group, its output in a log file read incrementally."""

    def __init__(self, argv: list[str], log: str):
        self.argv = argv
        self.log = log
        self.proc: subprocess.Popen | None = None
        self._offset = 0

    def start(self) -> None:
        _install_handlers()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=REPO,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                         start_new_session=True)
        _LIVE.add(self)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever of it is left after grace."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers too, if the leader left them
        proc.wait()
        _LIVE.discard(self)

    def new_output(self) -> str:
        """The whole lines the server logged since the last call (a line still being written
        is left for the next)."""
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]
        self._offset += len(data)
        return data.decode(errors="replace")

    def tail(self, n: int = 3000) -> str:
        with open(self.log, "rb") as f:
            f.seek(max(0, os.path.getsize(self.log) - n))
            return f.read().decode(errors="replace")

    def wait_healthy(self, url: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                if http_json(url + "/health", timeout=2.0).get("status") == "ok":
                    return
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout:.0f} s: {self.tail()}")


@dataclass
class Ours:
    """python -m serving.run with a YAML config: defaults except `settings` and the one model's
    `model` settings; the model comes from the registry at `registry` (no path: no deploy).
    models: every deployment's settings instead (several models; `model` is then unused)."""

    workdir: str
    store: str
    registry: str
    settings: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    models: list[dict] | None = None
    port: int = 0
    server: _Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Ours:
        import yaml

        def argv(port: int) -> list[str]:
            config = {"host": "127.0.0.1", "port": port, "store": self.store,
                      "registry": self.registry, **self.settings,
                      "models": self.models or [{"name": MODEL, **self.model}]}
            path = os.path.join(self.workdir, f"serving-{port}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(config, f)
            return [sys.executable, "-m", "serving.run", "--config", path]

        self.port, self.server = _launch(
            argv, lambda port: os.path.join(self.workdir, f"serving-{port}.log"))
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def status(self) -> dict:
        return http_json(self.url + "/v1/status")

    def metrics(self) -> dict:
        return parse_metrics(http_json(self.url + "/metrics"))

    def wait_unloaded(self, tier: str | None = None, timeout: float = WAIT) -> dict:
        """Wait until no instance of MODEL is loaded (and, with tier, a worker's tier of that
        name holds it); the status then."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            dep = next(d for d in status["deployments"] if d["name"] == MODEL)
            held = tier is None or any(MODEL in w["tiers"].get(tier, ())
                                       for w in status["workers"])
            if dep["state"] == "cold" and not dep["instances"] and held:
                return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"{MODEL} still loaded (or not in tier {tier}) after "
                                   f"{timeout:.0f} s: {json.dumps(status)[:1000]}")
            time.sleep(0.1)

    def memory(self) -> dict:
        """RSS and PSS of every process of the server, and of the workers alone."""
        whole = tree_memory(process_tree(self.server.proc.pid))
        workers = [p for w in self.status()["workers"] if w.get("pid")
                   for p in process_tree(w["pid"])]
        alone = tree_memory(workers)
        return dict(rss=whole["rss"], pss=whole["pss"], processes=whole["processes"],
                    rss_workers=alone["rss"], pss_workers=alone["pss"])


@dataclass
class HFServe:
    """transformers serve (through tools/servepeer.py, which logs its loads) on the CPU."""

    workdir: str
    model_timeout: int
    continuous_batching: bool = False
    port: int = 0
    server: _Process | None = None
    loaded: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HFServe:
        def argv(port: int) -> list[str]:
            return [sys.executable, os.path.join(HERE, "servepeer.py"), "hf-serve", "--host",
                    "127.0.0.1", "--port", str(port), "--device", "cpu", "--model-timeout",
                    str(self.model_timeout)] + (
                        ["--continuous-batching"] if self.continuous_batching else [])

        self.port, self.server = _launch(
            argv, lambda port: os.path.join(self.workdir, f"hf-serve-{port}.log"))
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def events(self) -> list[tuple[str, dict]]:
        """The loads and unloads logged since the last call, in order; tracks `loaded`."""
        out = []
        for line in self.server.new_output().splitlines():
            tag, _, doc = line.partition(" ")
            if tag in ("BENCH-LOAD", "BENCH-UNLOAD"):
                out.append((tag, json.loads(doc)))
                self.loaded = tag == "BENCH-LOAD"
        return out

    def wait_unloaded(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        self.events()
        while self.loaded:
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve kept the model {timeout:.0f} s")
            time.sleep(0.1)
            self.events()

    def memory(self) -> dict:
        whole = tree_memory(process_tree(self.server.proc.pid))
        return dict(rss=whole["rss"], pss=whole["pss"], processes=whole["processes"],
                    rss_workers=None, pss_workers=None)
