"""Plays a Jupyter user who only works on files, for nbidle's file-work tests.

    python file_user.py BASE_URL TOKEN ACTION SECONDS

Actions:
  save-every N  write a text file through the contents API every N seconds,
                as JupyterLab's autosave does (the modification check, the
                PUT, the reads after it), until killed; nothing is executed
  poll-every N  what an open, untouched JupyterLab tab does every N seconds:
                GETs of the directory, kernels, sessions and terminals, and a
                PUT of its workspace where the server has JupyterLab; no file
                is written, until killed

Each round prints one line. Errors (a stopped server) are printed and the
round is tried again N seconds later.
"""
import json
import sys
import time
import urllib.error
import urllib.request

FILE = "notes.md"


def call(base, token, method, path, body=None):
    """The status of one request; 4xx and 5xx answers are statuses too."""
    req = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "token " + token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def save(base, token, n):
    text = "".join("line %d of the notes\n" % i for i in range(n))
    statuses = [
        call(base, token, "GET", "api/contents/%s?content=0&hash=1" % FILE),
        call(base, token, "PUT", "api/contents/" + FILE,
             {"type": "file", "format": "text", "content": text}),
        call(base, token, "GET", "api/contents/%s?content=0" % FILE),
        call(base, token, "GET", "api/contents?content=1"),
        call(base, token, "GET", "api/contents/%s/checkpoints" % FILE),
    ]
    return "saved %d lines (PUT %d): %s" % (n, statuses[1], statuses)


def poll(base, token, lab):
    statuses = [call(base, token, "GET", p) for p in
                ("api/contents?content=1", "api/kernels", "api/sessions", "api/terminals", "api/kernelspecs")]
    if lab[0]:
        s = call(base, token, "PUT", "lab/api/workspaces/default",
                 {"data": {}, "metadata": {"id": "default"}})
        statuses.append(s)
        # A server without JupyterLab has no workspaces: stop asking.
        lab[0] = s != 404
    return "polled: %s" % statuses


def main():
    base, token, action, every = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    lab = [True]
    n = 0
    while True:
        n += 1
        try:
            if action == "save-every":
                line = save(base, token, n)
            elif action == "poll-every":
                line = poll(base, token, lab)
            else:
                sys.exit("unknown action " + action)
        except OSError as e:
            line = "error: %s" % e
        print("%.3f %s" % (time.time(), line), flush=True)
        time.sleep(every)


if __name__ == "__main__":
    main()
