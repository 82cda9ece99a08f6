"""The deployment routes, and `python -m serving deploy/delete/status` against a real server."""

import json
import os
import subprocess
import sys

import pytest

from tests.servinghttp import raw, serve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "cli-key"


@pytest.fixture(scope="module")
def server():
    with serve(api_key=KEY) as s:
        yield s


def _auth():
    return {"Authorization": f"Bearer {KEY}"}


def _cli(*args, key=KEY):
    env = {k: v for k, v in os.environ.items() if k != "BAS_API_KEY"}
    if key is not None:
        env["BAS_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "serving", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_deployment_routes(server):
    body = {"name": "org/tiny", "path": "/models/tiny", "max_instances": 2, "keep_alive": 5}
    status, _, answer = raw(server.port, "POST", "/v1/deployments", body, _auth())
    assert status == 201
    assert json.loads(answer) == {"name": "org/tiny", "path": "/models/tiny", "instances": 0,
                                  "max_instances": 2, "keep_alive": 5.0}
    status, _, answer = raw(server.port, "GET", "/v1/deployments", headers=_auth())
    assert status == 200 and "org/tiny" in [d["name"] for d in json.loads(answer)["data"]]
    status, _, answer = raw(server.port, "GET", "/v1/deployments/org/tiny", headers=_auth())
    assert status == 200 and json.loads(answer)["max_instances"] == 2
    assert raw(server.port, "GET", "/v1/models/org/tiny", headers=_auth())[0] == 200
    status, _, answer = raw(server.port, "DELETE", "/v1/deployments/org/tiny", headers=_auth())
    assert status == 200 and json.loads(answer)["deleted"] is True
    assert raw(server.port, "GET", "/v1/deployments/org/tiny", headers=_auth())[0] == 404
    status, _, answer = raw(server.port, "DELETE", "/v1/deployments/org/tiny", headers=_auth())
    assert status == 404 and "no deployment" in json.loads(answer)["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({"name": "x"}, "path"),
    ({"name": "x", "path": "/p", "max_instance": 2}, "max_instance"),
    ({"name": "x", "path": "/p", "min_instances": 3, "max_instances": 1}, None),
    ({"name": "x", "path": "/p", "keep_alive": -1}, "keep_alive"),
    ({"name": "x", "path": "/p", "queue_limit": "10"}, "queue_limit"),
    ({"name": "../x", "path": "/p"}, "name"),
    ({"name": "a//b", "path": "/p"}, "name"),
    ({"name": "", "path": "/p"}, "name"),
])
def test_bad_deployments_are_400(server, body, param):
    status, _, answer = raw(server.port, "POST", "/v1/deployments", body, _auth())
    assert status == 400, answer
    assert json.loads(answer)["error"]["param"] == param


def test_controller_refusal_keeps_its_status(server):
    status, _, answer = raw(server.port, "POST", "/v1/deployments",
                            {"name": "conflict", "path": "/p"}, _auth())
    assert status == 409 and "exists" in json.loads(answer)["error"]["message"]


def test_cli_deploy_status_delete(server, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    done = _cli("deploy", "cli-model", str(model), "--max-instances", "3", "--keep-alive",
                "1.5", "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert "deployed cli-model" in done.stdout
    spec = server.controller.deployments["cli-model"]
    assert spec == {"name": "cli-model", "path": str(model), "instances": 0,
                    "max_instances": 3, "keep_alive": 1.5}
    done = _cli("status", "--url", server.url)
    assert done.returncode == 0
    status = json.loads(done.stdout)
    assert "cli-model" in [d["name"] for d in status["deployments"]]
    done = _cli("delete", "cli-model", "--url", server.url)
    assert done.returncode == 0 and "cli-model" not in server.controller.deployments


def test_cli_errors(server):
    done = _cli("delete", "never-deployed", "--url", server.url)
    assert done.returncode == 1 and "(404)" in done.stderr and "never-deployed" in done.stderr
    done = _cli("status", "--url", server.url, key=None)
    assert done.returncode == 1 and "(401)" in done.stderr
    done = _cli("status", "--url", server.url, "--api-key", "wrong", key=None)
    assert done.returncode == 1 and "API key" in done.stderr
    done = _cli("deploy", "x", "/p", "--max-instances", "two", "--url", server.url)
    assert done.returncode == 2
    done = _cli("status", "--url", "http://127.0.0.1:9")
    assert done.returncode == 3 and "is the server running" in done.stderr
    done = _cli()
    assert done.returncode == 2


def test_cli_run_is_serving_run():
    done = _cli("run", "--help")
    assert done.returncode == 0 and "--model" in done.stdout
