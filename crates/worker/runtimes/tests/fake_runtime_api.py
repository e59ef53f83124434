"""A small fake of the Lambda Runtime API (2018-06-01) for driving bootstraps.

Implements GET /runtime/invocation/next, POST /runtime/invocation/{id}/response,
POST /runtime/invocation/{id}/error and POST /runtime/init/error, sends the
`next` headers AWS sends, and records everything it receives.

Usage:
    api = FakeRuntimeAPI(); api.start()
    proc = launch(...)  # with AWS_LAMBDA_RUNTIME_API=api.address
    outcome = api.invoke({"name": "x"})   # -> Outcome(kind, request_id, headers, body)
"""

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


class Outcome:
    def __init__(self, kind, request_id, headers, body):
        self.kind = kind  # "response" | "error" | "init_error"
        self.request_id = request_id
        self.headers = headers  # dict, lowercase names
        self.body = body  # bytes

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Outcome(%s, %s, %r, %r)" % (self.kind, self.request_id, self.headers, self.body[:300])


class FakeRuntimeAPI:
    def __init__(self, function_name="test-fn", region="us-east-1", account="123456789012"):
        self.function_name = function_name
        self.arn = "arn:aws:lambda:%s:%s:function:%s" % (region, account, function_name)
        self.pending = queue.Queue()
        self.lock = threading.Condition()
        self.outcomes = {}  # request id -> Outcome
        self.init_errors = []  # list of Outcome
        self.next_calls = 0
        self.connections = set()  # client ports seen (keep-alive check)
        self.requests = []  # (method, path, headers)
        self.server = None
        # Like rapid: a response body over 6 MiB + 100 bytes is refused with
        # 413 (here without reading it, and closing the connection).
        self.max_response_bytes = 6 * 1024 * 1024 + 100
        self.too_large = []  # request ids refused with 413

    # -- server ------------------------------------------------------------
    def start(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _reply(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _read_body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_GET(self):
                api.connections.add(self.client_address[1])
                api.requests.append(("GET", self.path, dict(self.headers)))
                if self.path != PREFIX + "/invocation/next":
                    return self._reply(404, {"errorType": "NotFound", "errorMessage": self.path})
                with api.lock:
                    api.next_calls += 1
                    api.lock.notify_all()
                while True:
                    try:
                        inv = api.pending.get(timeout=0.5)
                        break
                    except queue.Empty:
                        if getattr(api, "_stopping", False):
                            return
                request_id, body, headers = inv
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                api.connections.add(self.client_address[1])
                n = int(self.headers.get("Content-Length") or 0)
                if self.path.endswith("/response") and n > api.max_response_bytes:
                    rid = self.path.rsplit("/", 2)[-2]
                    with api.lock:
                        api.too_large.append(rid)
                        api.lock.notify_all()
                    self.close_connection = True
                    data = json.dumps({"errorType": "RequestEntityTooLarge", "errorMessage": "too large"}).encode()
                    self.send_response(413)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    return
                body = self._read_body()
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                api.requests.append(("POST", self.path, hdrs))
                p = self.path
                if p == PREFIX + "/init/error":
                    with api.lock:
                        api.init_errors.append(Outcome("init_error", "", hdrs, body))
                        api.lock.notify_all()
                    return self._reply(202, {"status": "OK"})
                if p.startswith(PREFIX + "/invocation/"):
                    rest = p[len(PREFIX + "/invocation/"):]
                    rid, _, kind = rest.partition("/")
                    if kind in ("response", "error"):
                        with api.lock:
                            api.outcomes[rid] = Outcome(kind, rid, hdrs, body)
                            api.lock.notify_all()
                        return self._reply(202, {"status": "OK"})
                return self._reply(404, {"errorType": "NotFound", "errorMessage": p})

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # runtimes that exit or are killed reset their connection

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        t = threading.Thread(target=self.server.serve_forever, daemon=True)
        t.start()
        return self

    def stop(self):
        self._stopping = True
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.server.server_address[1]

    # -- driving -------------------------------------------------------------
    def submit(self, event, timeout_ms=3000, raw=None, request_id=None, extra_headers=None,
               trace_id=None, client_context=None, identity=None):
        request_id = request_id or str(uuid.uuid4())
        body = raw if raw is not None else json.dumps(event).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + timeout_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.arn,
            "Lambda-Runtime-Trace-Id": trace_id
            or "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
        }
        if client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = json.dumps(client_context)
        if identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = json.dumps(identity)
        if extra_headers:
            headers.update(extra_headers)
        self.pending.put((request_id, body, headers))
        return request_id

    def wait(self, request_id, timeout=15):
        end = time.time() + timeout
        with self.lock:
            while request_id not in self.outcomes:
                left = end - time.time()
                if left <= 0:
                    raise TimeoutError("no outcome for %s" % request_id)
                self.lock.wait(left)
            return self.outcomes[request_id]

    def invoke(self, event=None, timeout=15, **kw):
        rid = self.submit(event if event is not None else {}, **kw)
        return self.wait(rid, timeout)

    def wait_too_large(self, request_id, timeout=15):
        end = time.time() + timeout
        with self.lock:
            while request_id not in self.too_large:
                left = end - time.time()
                if left <= 0:
                    raise TimeoutError("no oversized response for %s" % request_id)
                self.lock.wait(left)

    def wait_init_error(self, timeout=15):
        end = time.time() + timeout
        with self.lock:
            while not self.init_errors:
                left = end - time.time()
                if left <= 0:
                    raise TimeoutError("no init error")
                self.lock.wait(left)
            return self.init_errors[0]

    def wait_next_calls(self, n, timeout=15):
        end = time.time() + timeout
        with self.lock:
            while self.next_calls < n:
                left = end - time.time()
                if left <= 0:
                    raise TimeoutError("runtime did not call next %d times" % n)
                self.lock.wait(left)
