"""nbidle_jupyterlab's handlers in a real jupyter_server on loopback.

The venv's jupyter_server 2.x runs every test; Debian's jupyter-server 1.23
(/usr/bin/python3) runs the round trip too when it is installed. Servers
are started as subprocesses with a token; nothing is mocked.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import nbidle_jupyterlab

OLD_PYTHON = "/usr/bin/python3"
METRIC = "http_request_duration_seconds_count"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A jupyter_server subprocess and an HTTP client for it."""

    def __init__(self, tmp, python=sys.executable, env_extra=None, enable_flag=True):
        self.token = uuid.uuid4().hex
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        root = tmp / "root"
        root.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(tmp / "config"),
            JUPYTER_DATA_DIR=str(tmp / "data"),
            JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
            JUPYTER_PLATFORM_DIRS="1",
        )
        env.update(env_extra or {})
        args = [
            python,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={root}",
        ]
        if os.geteuid() == 0:
            args.append("--allow-root")
        if enable_flag:
            args.append("--ServerApp.jpserver_extensions=nbidle_jupyterlab=True")
        self.log_path = tmp / f"server-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter_server exited: {self.log_path.read_text()}")
            try:
                if self.request("GET", "api/status")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter_server did not answer in 60 s: {self.log_path.read_text()}")
            time.sleep(0.2)

    def request(self, method, path, body=None, token=True, raw=None, headers=None):
        """(status, parsed JSON or text or None)"""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, payload, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        if not payload:
            return status, None
        if "json" in ctype:
            return status, json.loads(payload)
        return status, payload.decode()

    def last_activity(self):
        status, body = self.request("GET", "api/status")
        assert status == 200, body
        return body["last_activity"]

    def metric(self, handler, method):
        """Sum of the request counts of `handler` and `method` in /metrics."""
        status, text = self.request("GET", "metrics")
        assert status == 200, text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(METRIC + "{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.index("}")]))
            if labels.get("handler") == handler and labels.get("method") == method:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def state(**overrides):
    now = time.time()
    body = {
        "version": 1,
        "notebook": {"namespace": "local", "name": "alpha"},
        "phase": "warning",
        "sent_at": now,
        "stops_at": now + 290,
        "warn_before_seconds": 300,
        "idle_after_seconds": 1800,
        "warning_since": now - 10,
        "kept_running": None,
        "keep_running_for": "4h",
        "page_url": "http://127.0.0.1:9877/",
        "reason": None,
        "results": [],
    }
    body.update(overrides)
    return body


PUT = "nbidle/state?no_track_activity=1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("jupyter"))
    yield s
    s.stop()


def test_put_then_get_round_trip(server):
    body = state(extra_field={"ignored": True})
    status, answer = server.request("PUT", PUT, body)
    assert status == 200, answer
    assert answer == {"requests": []}
    status, view = server.request("GET", "nbidle/state")
    assert status == 200, view
    expected = {k: v for k, v in body.items() if k != "results"}
    assert view["state"] == expected
    assert abs(view["received_at"] - time.time()) < 5
    assert isinstance(view["requests"], list)


def test_state_and_keep_never_move_last_activity(server):
    assert server.request("PUT", PUT, state())[0] == 200
    before = server.last_activity()
    time.sleep(1.1)  # last_activity has sub-second resolution; make a move visible
    for _ in range(20):
        assert server.request("GET", "nbidle/state")[0] == 200
        assert server.request("PUT", "nbidle/state", state())[0] == 200
    assert server.request("POST", "nbidle/keep", {"for": "4h"})[0] == 202
    assert server.last_activity() == before


def test_activity_counts_in_metrics_and_last_activity(server):
    handler = "nbidle_jupyterlab.handlers.ActivityHandler"
    before = server.metric(handler, "POST")
    activity_before = server.last_activity()
    time.sleep(1.1)
    status, body = server.request("POST", "nbidle/activity", raw=b"")
    assert status == 204, body
    assert server.metric(handler, "POST") == before + 1
    assert server.last_activity() > activity_before


def test_keep_request_handed_out_once_then_result_shown(server):
    assert server.request("PUT", PUT, state(keep_running_for="4h"))[0] == 200
    status, answer = server.request("POST", "nbidle/keep", {"for": "4h"})
    assert status == 202, answer
    request_id = answer["id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    # A second click while it waits is the same request.
    assert server.request("POST", "nbidle/keep", {"for": "4h"}) == (202, {"id": request_id})
    view = server.request("GET", "nbidle/state")[1]
    assert [r["status"] for r in view["requests"] if r["id"] == request_id] == ["pending"]

    status, answer = server.request("PUT", PUT, state())
    assert status == 200
    mine = [r for r in answer["requests"] if r["id"] == request_id]
    assert len(mine) == 1
    assert mine[0]["kind"] == "keep_running"
    assert mine[0]["for"] == "4h"
    assert isinstance(mine[0]["by"], str) and mine[0]["by"]
    assert abs(mine[0]["at"] - time.time()) < 10
    view = server.request("GET", "nbidle/state")[1]
    assert [r["status"] for r in view["requests"] if r["id"] == request_id] == ["in_flight"]

    # Handed out once: the next PUT does not carry it again.
    status, answer = server.request("PUT", PUT, state())
    assert status == 200
    assert request_id not in [r["id"] for r in answer["requests"]]

    result = {"id": request_id, "ok": True, "message": "Kept running until 16:05 UTC"}
    assert server.request("PUT", PUT, state(results=[result]))[0] == 200
    view = server.request("GET", "nbidle/state")[1]
    mine = [r for r in view["requests"] if r["id"] == request_id]
    assert mine == [
        {
            "id": request_id,
            "kind": "keep_running",
            "for": "4h",
            "at": mine[0]["at"],
            "status": "done",
            "message": "Kept running until 16:05 UTC",
        }
    ]
    assert "results" not in view["state"]


def test_failed_result_shown(server):
    assert server.request("PUT", PUT, state())[0] == 200
    # In flight already? Let it be handed out first.
    request_id = server.request("POST", "nbidle/keep", {"for": "4h"})[1]["id"]
    server.request("PUT", PUT, state())
    result = {"id": request_id, "ok": False, "message": "Alertmanager did not answer"}
    assert server.request("PUT", PUT, state(results=[result]))[0] == 200
    mine = [r for r in server.request("GET", "nbidle/state")[1]["requests"] if r["id"] == request_id]
    assert [(r["status"], r["message"]) for r in mine] == [("failed", "Alertmanager did not answer")]


def test_too_big_body_is_413(server):
    body = state(reason="x" * (16 * 1024))
    status, answer = server.request("PUT", PUT, body)
    assert status == 413, answer
    assert server.request("POST", "nbidle/keep", raw=b" " * (16 * 1024 + 1))[0] == 413


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"phase": "asleep"}, "phase"),
        ({"sent_at": "yesterday"}, "sent_at"),
        ({"stops_at": "soon"}, "stops_at"),
        ({"stops_at": True}, "stops_at"),
        ({"kept_running": {"until": "later"}}, "kept_running.until"),
        ({"keep_running_for": 4}, "keep_running_for"),
        ({"results": [{"id": "a", "ok": "yes"}]}, "results[0].ok"),
        ({"notebook": {"name": 7}}, "notebook.name"),
        ({"version": "1"}, "version"),
    ],
)
def test_wrong_type_is_400_naming_the_field(server, overrides, field):
    status, answer = server.request("PUT", PUT, state(**overrides))
    assert status == 400, answer
    assert answer["message"].startswith(field + ":"), answer


def test_not_json_is_400(server):
    status, answer = server.request("PUT", PUT, raw=b"{not json")
    assert status == 400
    assert answer["message"].startswith("body:")
    status, answer = server.request("PUT", PUT, [1, 2])
    assert status == 400
    assert answer["message"].startswith("body:")


def test_keep_with_wrong_for_is_409(server):
    assert server.request("PUT", PUT, state(keep_running_for="4h"))[0] == 200
    status, answer = server.request("POST", "nbidle/keep", {"for": "8h"})
    assert status == 409, answer
    assert answer["message"].startswith("for:")
    status, answer = server.request("POST", "nbidle/keep", {"for": 4})
    assert status == 400, answer
    assert answer["message"].startswith("for:")
    assert server.request("PUT", PUT, state(keep_running_for=None))[0] == 200
    status, answer = server.request("POST", "nbidle/keep", {"for": "4h"})
    assert status == 409, answer
    assert answer["message"].startswith("for:")


def test_unauthenticated_is_403(server):
    for method, path, body in [
        ("GET", "nbidle/state", None),
        ("PUT", "nbidle/state", state()),
        ("POST", "nbidle/keep", {"for": "4h"}),
        ("POST", "nbidle/activity", {}),
    ]:
        status, _ = server.request(method, path, body, token=False)
        assert status == 403, (method, path, status)
    status, _ = server.request("GET", "nbidle/state", headers={"Authorization": "token wrong"}, token=False)
    assert status == 403


def test_installed_wheel_enables_the_server_extension(tmp_path):
    config = Path(sys.prefix) / "etc/jupyter/jupyter_server_config.d/nbidle_jupyterlab.json"
    if not config.exists():
        pytest.skip(f"nbidle_jupyterlab is not installed in {sys.prefix}")
    s = Server(tmp_path, enable_flag=False)
    try:
        status, view = s.request("GET", "nbidle/state")
        assert status == 200, view
        assert view == {"state": None, "received_at": None, "requests": []}
    finally:
        s.stop()


def _old_server_available():
    if not os.access(OLD_PYTHON, os.X_OK):
        return False
    probe = subprocess.run(
        [OLD_PYTHON, "-c", "import jupyter_server; print(jupyter_server.__version__)"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0 and probe.stdout.startswith("1.")


@pytest.mark.skipif(not _old_server_available(), reason="Debian's jupyter-server 1.x is not installed")
def test_jupyter_server_1_23(tmp_path):
    # Only the package itself on the path: Debian's Python brings its own
    # jupyter_server 1.23 and tornado.
    package = Path(nbidle_jupyterlab.__file__).parent
    path = tmp_path / "pythonpath"
    shutil.copytree(package, path / "nbidle_jupyterlab", ignore=shutil.ignore_patterns("labextension", "__pycache__"))
    s = Server(tmp_path, python=OLD_PYTHON, env_extra={"PYTHONPATH": str(path)})
    try:
        status, answer = s.request("PUT", PUT, state())
        assert status == 200, (answer, s.log_path.read_text())
        before = s.last_activity()
        time.sleep(1.1)
        status, view = s.request("GET", "nbidle/state")
        assert status == 200
        assert view["state"]["phase"] == "warning"
        status, answer = s.request("POST", "nbidle/keep", {"for": "4h"})
        assert status == 202, answer
        assert s.last_activity() == before
        answer = s.request("PUT", PUT, state())[1]
        assert [r["id"] for r in answer["requests"]] == [s.request("GET", "nbidle/state")[1]["requests"][0]["id"]]
        assert s.request("PUT", PUT, state(sent_at="x"))[0] == 400
        assert s.request("GET", "nbidle/state", token=False)[0] == 403
        handler = "nbidle_jupyterlab.handlers.ActivityHandler"
        count = s.metric(handler, "POST")
        assert s.request("POST", "nbidle/activity", raw=b"")[0] == 204
        assert s.metric(handler, "POST") == count + 1
        assert s.last_activity() > before
    finally:
        s.stop()
