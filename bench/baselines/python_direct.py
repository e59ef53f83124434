#!/usr/bin/env python3
"""The warm-invoke baseline for Python: the benchmark's handler served
directly by the standard library's http.server, no platform in between.

    python3 bench/baselines/python_direct.py --app-dir DIR [--port 0]

Imports `app` from DIR (the same app.py that is deployed to Stratus) and, for
every POST, parses the body as the JSON event, calls `app.handler(event,
None)` and answers the result as JSON, as the runtime's bootstrap does.
ThreadingHTTPServer (a thread per connection), HTTP/1.1 keep-alive, Nagle off
on every accepted socket. Prints `listening HOST:PORT` once it accepts.
"""

from __future__ import annotations

import argparse
import http.server
import importlib
import json
import socket
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    app = None

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            event = json.loads(body) if body else {}
            out = json.dumps(self.app.handler(event, None)).encode()
            status = 200
        except Exception as e:  # the baseline reports, never dies
            out, status = json.dumps({"errorMessage": str(e)}).encode(), 500
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format, *args) -> None:  # noqa: A002 (stdlib signature)
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app-dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, args.app_dir)
    Handler.app = importlib.import_module("app")
    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening {host}:{port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
