"""Plays a Jupyter user against a real server, for nbidle's end-to-end tests.

    python jupyter_user.py BASE_URL TOKEN ACTION [SECONDS]

Actions:
  compute-silently  start a kernel, run `time.sleep(3600)` (no output) and
                    leave with the kernel busy, as when the browser is closed
  compute-printing  the same, but the cell prints every second

The compute actions leave only once the server itself reports the kernel
busy. Jupyter Server 1.x sometimes records a wrong execution state (its
activity watcher misses the kernel's status messages, or takes the status of
a kernel_info reply on the control channel for the kernel's), and then no
client of its REST API can tell the kernel is working; when that happens the
kernel is shut down and the computation started again in a new one, and the
number of attempts is printed.
  execute-every N   run a trivial cell every N seconds, until killed
  terminal-every N  type into a terminal every N seconds, until killed
  open-tab N        keep a kernel's websocket open and poll the REST API
                    every N seconds, executing nothing, until killed
  rest-kernel       start a kernel over REST and never connect to it

Uses websocket-client, a dependency of jupyter_server.
"""
import json
import sys
import time
import urllib.request
import uuid

import websocket


def rest(base, token, method, path, body=None):
    req = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "token " + token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def ws_url(base, path, token):
    return base.replace("http://", "ws://", 1) + path + "?token=" + token


def kernel_ws(base, token):
    kernel = rest(base, token, "POST", "api/kernels", {"name": "python3"})
    ws = websocket.create_connection(ws_url(base, "api/kernels/%s/channels" % kernel["id"], token), timeout=30,
                                     header=["Authorization: token " + token])
    return kernel, ws


def execute(ws, code, session):
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": session,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    return msg_id


def wait_status(ws, msg_id, state):
    while True:
        msg = json.loads(ws.recv())
        if (msg.get("msg_type") == "status" and msg.get("parent_header", {}).get("msg_id") == msg_id
                and msg["content"]["execution_state"] == state):
            return


def server_state(base, token, kernel_id, want, seconds):
    """The execution state the server reports, once it is `want` or after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        state = rest(base, token, "GET", "api/kernels/%s?no_track_activity=1" % kernel_id)["execution_state"]
        if state == want or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def main():
    base, token, action = sys.argv[1], sys.argv[2], sys.argv[3]
    every = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    base = base if base.endswith("/") else base + "/"
    session = uuid.uuid4().hex
    if action in ("compute-silently", "compute-printing"):
        code = "import time\ntime.sleep(3600)" if action == "compute-silently" else \
            "import time\nfor i in range(3600):\n    print(i, flush=True)\n    time.sleep(1)"
        for attempt in range(1, 6):
            kernel, ws = kernel_ws(base, token)
            wait_status(ws, execute(ws, code, session), "busy")
            ws.close()  # the browser is gone; the kernel keeps computing
            state = server_state(base, token, kernel["id"], "busy", 5)
            if state == "busy":
                print("busy after %d attempt(s)" % attempt, flush=True)
                return
            print("server reports %s for a busy kernel; again" % state, file=sys.stderr, flush=True)
            rest(base, token, "DELETE", "api/kernels/" + kernel["id"])
        sys.exit("the server never reported a busy kernel")
    elif action == "execute-every":
        _, ws = kernel_ws(base, token)
        while True:
            wait_status(ws, execute(ws, "1 + 1", session), "idle")
            time.sleep(every)
    elif action == "terminal-every":
        term = rest(base, token, "POST", "api/terminals")
        ws = websocket.create_connection(ws_url(base, "terminals/websocket/" + term["name"], token), timeout=30)
        while True:
            ws.send(json.dumps(["stdin", "echo working\r"]))
            time.sleep(every)
    elif action == "open-tab":
        kernel, ws = kernel_ws(base, token)
        ws.settimeout(every)
        while True:
            for path in ("api/kernels", "api/sessions", "api/contents", "api/status"):
                rest(base, token, "GET", path)
            try:
                ws.recv()  # drain whatever the kernel says; we send nothing
            except websocket.WebSocketTimeoutException:
                pass
    elif action == "rest-kernel":
        rest(base, token, "POST", "api/kernels", {"name": "python3"})
        print("started", flush=True)
    else:
        sys.exit("unknown action " + action)


if __name__ == "__main__":
    main()
