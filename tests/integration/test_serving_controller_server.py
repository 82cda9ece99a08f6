"""serving.run: the whole server (uvicorn, controller, a worker process) behind the OpenAI
client, and the command line's refusals."""

import subprocess
import sys

import openai
import pytest

import serving
from serving.config import load_config
from tests.servingctl import tiny_model

pytestmark = pytest.mark.slow


def test_the_openai_client_streams_from_a_cold_start(tmp_path):
    tiny = tiny_model(tmp_path / "models")
    config = load_config(None, port=0, workers=1, store=str(tmp_path / "store"),
                         dram_per_worker="64MiB", threads_per_worker=1, shutdown_grace=5,
                         heartbeat=0.1, models=[f"tiny={tiny}"])
    with serving.run.Server(config) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == ["tiny"]
        stream = client.completions.create(model="tiny", prompt="Once upon a time",
                                           max_tokens=5, temperature=0, stream=True)
        chunks = list(stream)
        assert chunks[-1].choices[0].finish_reason == "length"
        status = server.call(server.controller.status)
        assert status["deployments"][0]["instances"][0]["tier"] == "registry"


def test_the_command_line_names_a_bad_setting(tmp_path):
    bad = tmp_path / "deploy.yaml"
    bad.write_text("workers: many\n")
    out = subprocess.run([sys.executable, "-m", "serving.run", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "workers" in out.stderr and "many" in out.stderr
    assert "RuntimeWarning" not in out.stderr


def test_serving_run_is_the_module_and_callable():
    import serving.run as module

    assert serving.run is module and callable(serving.run)
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0


def test_sigterm_stops_the_server_and_its_workers(tmp_path):
    import json
    import os
    import signal
    import socket
    import time
    import urllib.request

    tiny = tiny_model(tmp_path / "models")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "serving.run", "--port", str(port),
                             "--workers", "1", "--store", str(tmp_path / "store"),
                             "--model", f"tiny={tiny}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        status = None
        while status is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status") as r:
                    status = json.load(r)
            except OSError:
                time.sleep(0.2)
        worker = status["workers"][0]["pid"]
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down gracefully
        assert proc.wait(60) in (0, -signal.SIGTERM)
        err = proc.stderr.read()
        assert "stopped" in err and "RuntimeWarning" not in err
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
