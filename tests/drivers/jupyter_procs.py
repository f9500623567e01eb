"""Plays a Jupyter user who starts processes, for nbidle's process tests.

    python jupyter_procs.py BASE_URL TOKEN ACTION [ARG]

Actions:
  terminal-type FILE  open a terminal, type each line of FILE into it, wait
                      until FILE.done exists (the lines' last job is to
                      create it), then delete the terminal, as a user closing
                      the terminal's tab and choosing to end it
  two-kernels         start two kernels: one left idle after a kernel_info,
                      one running a silent CPU-bound loop (no output). Then a
                      kernel_info request on the busy kernel's control
                      channel, as a reconnecting JupyterLab sends: Jupyter
                      Server 1.x takes the status messages of its reply for
                      the kernel's and reads the busy kernel `idle`. Prints
                      the states the server reports, and leaves.

Uses websocket-client, a dependency of jupyter_server.
"""
import json
import os
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


def message(msg_type, channel, session, content):
    return {
        "header": {"msg_id": uuid.uuid4().hex, "username": "test", "session": session,
                   "msg_type": msg_type, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": channel, "buffers": [],
        "content": content,
    }


def send(ws, msg):
    ws.send(json.dumps(msg))
    return msg["header"]["msg_id"]


def wait_reply(ws, msg_id, msg_type, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("msg_type") == msg_type and msg.get("parent_header", {}).get("msg_id") == msg_id:
            return msg
    sys.exit("no %s for %s" % (msg_type, msg_id))


def kernel_ready(ws, session, seconds=90):
    """Until the kernel answers a kernel_info request on its shell channel.

    Asked again every few seconds: a request sent while the kernel is still
    starting may go unanswered.
    """
    deadline = time.monotonic() + seconds
    ws.settimeout(5)
    try:
        while time.monotonic() < deadline:
            msg_id = send(ws, message("kernel_info_request", "shell", session, {}))
            try:
                while True:
                    msg = json.loads(ws.recv())
                    if (msg.get("msg_type") == "kernel_info_reply"
                            and msg.get("parent_header", {}).get("msg_id") == msg_id):
                        return
            except websocket.WebSocketTimeoutException:
                continue
        sys.exit("the kernel never answered kernel_info")
    finally:
        ws.settimeout(60)


def wait_status(ws, msg_id, state, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if (msg.get("msg_type") == "status" and msg.get("parent_header", {}).get("msg_id") == msg_id
                and msg["content"]["execution_state"] == state):
            return
    sys.exit("kernel never %s for %s" % (state, msg_id))


def state(base, token, kernel_id):
    return rest(base, token, "GET", "api/kernels/%s?no_track_activity=1" % kernel_id)["execution_state"]


def terminal_type(base, token, script):
    lines = open(script).read().splitlines()
    term = rest(base, token, "POST", "api/terminals")
    ws = websocket.create_connection(ws_url(base, "terminals/websocket/" + term["name"], token), timeout=30)
    time.sleep(1)  # the shell's prompt
    for line in lines:
        ws.send(json.dumps(["stdin", line + "\r"]))
        time.sleep(0.2)
    deadline = time.monotonic() + 60
    while not os.path.exists(script + ".done"):
        if time.monotonic() > deadline:
            sys.exit("the terminal never ran " + script)
        time.sleep(0.2)
    ws.close()
    rest(base, token, "DELETE", "api/terminals/" + term["name"])
    print("typed %d lines into terminal %s, then deleted it" % (len(lines), term["name"]), flush=True)


def two_kernels(base, token):
    session = uuid.uuid4().hex
    idle = rest(base, token, "POST", "api/kernels", {"name": "python3"})
    ws = websocket.create_connection(ws_url(base, "api/kernels/%s/channels" % idle["id"], token), timeout=60)
    kernel_ready(ws, session)
    ws.close()
    busy = rest(base, token, "POST", "api/kernels", {"name": "python3"})
    ws = websocket.create_connection(ws_url(base, "api/kernels/%s/channels" % busy["id"], token), timeout=60)
    kernel_ready(ws, session)
    code = "x = 0\nwhile True:\n    x += 1"
    run = send(ws, message("execute_request", "shell", session, {
        "code": code, "silent": False, "store_history": True, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True}))
    wait_status(ws, run, "busy")
    time.sleep(1)
    before = state(base, token, busy["id"])
    # Answered from ipykernel's control thread while the shell computes.
    info = send(ws, message("kernel_info_request", "control", session, {}))
    wait_reply(ws, info, "kernel_info_reply")
    time.sleep(1)
    after = state(base, token, busy["id"])
    ws.close()
    print(json.dumps({"idle": state(base, token, idle["id"]), "busy_before": before,
                      "busy_after_control_kernel_info": after}), flush=True)


def main():
    base, token, action = sys.argv[1], sys.argv[2], sys.argv[3]
    base = base if base.endswith("/") else base + "/"
    if action == "terminal-type":
        terminal_type(base, token, sys.argv[4])
    elif action == "two-kernels":
        two_kernels(base, token)
    else:
        sys.exit("unknown action " + action)


if __name__ == "__main__":
    main()
