"""A hostile Jupyter server stand-in, for nbidle's exporter limits.

    python3 hostile_jupyter.py PORT [SECONDS]

Answers like a Jupyter server with no kernels and no terminals. Under the
path prefix `/hostile/`, `GET /_mode/MODE` changes how every later
`/hostile/api/kernels` is answered (any other prefix stays quiet):

  quiet         []  (the start)
  huge          400 MB of kernels, with its Content-Length, streamed
  huge-chunked  the same without a Content-Length (chunked encoding)
  endless       a chunked array of kernels that never ends
  trickle       a valid array, one byte every 200 ms (about a minute)
  many          100,000 tiny kernels ({}), about 300 kB in all

`GET /_requests` answers how many `/hostile/api/kernels` requests came in.
Bodies are written from one 64 KiB block, never held whole, so the stand-in
stays small whatever it sends. It exits by itself after SECONDS (default
600); a body stops when the client hangs up.
"""
import http.server
import sys
import threading
import time

BLOCK = (
    b'{"id":"k","name":"python3","execution_state":"idle",'
    b'"last_activity":"2026-01-01T10:00:00.000000Z","connections":1},'
)
BLOCK = BLOCK * (65536 // len(BLOCK))
HUGE_BYTES = 400 * 1000 * 1000
MANY = 100_000

state = {"mode": "quiet", "requests": 0}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def plain(self, body, code=200):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def start_chunked(self):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        try:
            if path.startswith("/_mode/"):
                with lock:
                    state["mode"] = path[len("/_mode/"):]
                return self.plain(b"ok")
            if path == "/_requests":
                with lock:
                    return self.plain(str(state["requests"]).encode())
            if path == "/hostile/api/kernels":
                with lock:
                    state["requests"] += 1
                    mode = state["mode"]
                return self.kernels(mode)
            if path.endswith("/api/kernels"):
                return self.plain(b"[]")
            if path.endswith("/api/terminals"):
                return self.plain(b"[]")
            if path.endswith("/api/status"):
                return self.plain(b'{"started":"2026-01-01T08:00:00.000000Z"}')
            return self.plain(b'{"version":"2.0.0"}')
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def kernels(self, mode):
        if mode == "quiet":
            return self.plain(b"[]")
        if mode == "many":
            return self.plain(b"[" + b",".join([b"{}"] * MANY) + b"]")
        if mode == "huge":
            blocks = HUGE_BYTES // len(BLOCK)
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(1 + blocks * len(BLOCK) + 3))
            self.end_headers()
            self.wfile.write(b"[")
            for _ in range(blocks):
                self.wfile.write(BLOCK)
            self.wfile.write(b"{}]")
            return
        if mode == "huge-chunked":
            self.start_chunked()
            self.chunk(b"[")
            for _ in range(HUGE_BYTES // len(BLOCK)):
                self.chunk(BLOCK)
            self.chunk(b"{}]")
            self.wfile.write(b"0\r\n\r\n")
            return
        if mode == "endless":
            self.start_chunked()
            self.chunk(b"[")
            while True:
                self.chunk(BLOCK)
        if mode == "trickle":
            self.start_chunked()
            for b in b"[" + b"{}," * 100 + b"{}]":
                self.chunk(bytes([b]))
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
            return
        return self.plain(b'{"message":"unknown mode"}', code=500)


def main():
    port = int(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 600
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(seconds)


if __name__ == "__main__":
    main()
