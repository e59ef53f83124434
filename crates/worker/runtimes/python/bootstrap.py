"""Stratus Python runtime: a Lambda Runtime API (2018-06-01) client.

Behaves like AWS's Python runtime interface client (awslambdaric) as far as
the function code and the invoker can see: handler resolution, context
object, error documents, log format.  Standard library only, and it imports
as little as possible before the first invoke (cold start matters).

Run as:  /usr/bin/python3 /var/runtime/python/bootstrap.py

Pre-initialised (the sandbox backend's runtime pool): started with
_STRATUS_PREINIT_FD=<n> and no function yet, it does its imports, then
blocks reading descriptor n until EOF: one JSON document
{"env": {...}, "cwd": "/var/task"} with the function's environment.  From
there on it is the same as a runtime started for that function.
"""

import os
import socket
import sys
import time

import json

# ---------------------------------------------------------------------------
# Logging sink: stdout, unbuffered, UTF-8, so every line reaches the log
# before the response is posted.
# ---------------------------------------------------------------------------


def _unbuffered(fd):
    import io

    return io.TextIOWrapper(
        io.FileIO(fd, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
        line_buffering=False,
    )


try:
    sys.stdout.flush()
    sys.stderr.flush()
except Exception:
    pass
sys.stdout = sys.__stdout__ = _unbuffered(1)
sys.stderr = sys.__stderr__ = _unbuffered(2)

ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
ERROR_LOG_LINE_TERMINATE = "\r"
ERROR_LOG_IDENT = "\u00a0"  # AWS indents traceback lines with NO-BREAK SPACE

_current_request_id = None

# ---------------------------------------------------------------------------
# Minimal HTTP/1.1 client over one persistent TCP connection.
# (http.client costs ~25 ms of imports; this costs nothing.)
# ---------------------------------------------------------------------------


class RuntimeAPIError(Exception):
    pass


class RuntimeClient:
    def __init__(self, address):
        host, _, port = address.rpartition(":")
        if not host:
            host, port = address, "80"
        self.host = host.strip("[]")
        self.port = int(port)
        self.host_header = address
        self.sock = None
        self.rfile = None

    def _connect(self):
        self.close()
        s = socket.create_connection((self.host, self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.rfile = s.makefile("rb")

    def close(self):
        if self.rfile is not None:
            try:
                self.rfile.close()
            except Exception:
                pass
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:
                pass
        self.sock = None
        self.rfile = None

    def request(self, method, path, body=None, headers=None):
        """Returns (status, {lowercase header: value}, body bytes)."""
        for attempt in (0, 1):
            fresh = self.sock is None
            if fresh:
                self._connect()
            try:
                return self._do(method, path, body, headers)
            except (ConnectionError, BrokenPipeError, RuntimeAPIError, OSError):
                self.close()
                # A kept-alive connection may have been closed by the server
                # between requests: retry once on a fresh connection.
                if fresh or attempt:
                    raise
        raise RuntimeAPIError("unreachable")

    def _do(self, method, path, body, headers):
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + self.host_header]
        if headers:
            for k, v in headers.items():
                lines.append("%s: %s" % (k, v))
        if body is not None or method == "POST":
            body = body or b""
            lines.append("Content-Length: %d" % len(body))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body:
            if len(body) < 65536:
                self.sock.sendall(head + body)
            else:
                self.sock.sendall(head)
                self.sock.sendall(body)
        else:
            self.sock.sendall(head)

        rfile = self.rfile
        status_line = rfile.readline(65537)
        if not status_line:
            raise RuntimeAPIError("connection closed by Runtime API")
        parts = status_line.split(None, 2)
        if len(parts) < 2:
            raise RuntimeAPIError("bad status line %r" % status_line)
        status = int(parts[1])
        hdrs = {}
        while True:
            line = rfile.readline(65537)
            if not line:
                raise RuntimeAPIError("connection closed in headers")
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = rfile.readline(65537)
                if not size_line:
                    raise RuntimeAPIError("connection closed in chunked body")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers
                    while True:
                        t = rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(rfile.read(size))
                rfile.readline(3)
            data = b"".join(chunks)
        elif "content-length" in hdrs:
            n = int(hdrs["content-length"])
            data = rfile.read(n) if n else b""
            if len(data) != n:
                raise RuntimeAPIError("short body")
        elif status in (204, 304) or 100 <= status < 200:
            data = b""
        else:
            data = rfile.read()
            self.close()
            return status, hdrs, data
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, data


# ---------------------------------------------------------------------------
# Context object (same attributes as awslambdaric's LambdaContext)
# ---------------------------------------------------------------------------


class CognitoIdentity(object):
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id=%s,cognito_identity_pool_id=%s])" % (
            self.cognito_identity_id,
            self.cognito_identity_pool_id,
        )


class Client(object):
    __slots__ = [
        "installation_id",
        "app_title",
        "app_version_name",
        "app_version_code",
        "app_package_name",
    ]


class ClientContext(object):
    __slots__ = ["custom", "env", "client"]


def _obj_from_dict(cls, d):
    if d is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, d.get(field) if isinstance(d, dict) else None)
    return obj


class LambdaContext(object):
    def __init__(self, request_id, client_context, identity, deadline_ms, arn, tenant_id=None):
        env = os.environ
        self.aws_request_id = request_id
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = arn
        self.tenant_id = tenant_id
        w3c = {}
        if isinstance(client_context, dict) and "w3c" in client_context:
            raw = client_context.pop("w3c")
            if isinstance(raw, dict):
                for k in ("traceparent", "tracestate", "baggage"):
                    if isinstance(raw.get(k), str):
                        w3c[k] = raw[k]
        self._w3c_fields = w3c
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if isinstance(identity, dict):
            self.identity.cognito_identity_id = identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")
        self._epoch_deadline_time_in_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        delta = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta if delta > 0 else 0

    def w3c(self):
        return dict(self._w3c_fields)

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,"
            "function_name=%s,memory_limit_in_mb=%s,function_version=%s,"
            "invoked_function_arn=%s,client_context=%s,identity=%s,tenant_id=%s])"
            % (
                self.aws_request_id,
                self.log_group_name,
                self.log_stream_name,
                self.function_name,
                self.memory_limit_in_mb,
                self.function_version,
                self.invoked_function_arn,
                self.client_context,
                self.identity,
                self.tenant_id,
            )
        )


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class FaultException(Exception):
    MARSHAL_ERROR = "Runtime.MarshalError"
    UNMARSHAL_ERROR = "Runtime.UnmarshalError"
    USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
    HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
    IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
    BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
    MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
    LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"

    def __init__(self, exception_type, msg, trace=None):
        Exception.__init__(self, msg)
        self.msg = msg
        self.exception_type = exception_type
        self.trace = trace


def make_error(message, error_type, stack_trace, request_id=None):
    return {
        "errorMessage": message if message else "",
        "errorType": error_type if error_type else "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def build_fault_result(exc_info, request_id=None):
    import traceback

    etype, value, tb = exc_info
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    # Drop the runtime's own frames (everything up to the first user frame).
    me = __file__
    for i in range(len(frames)):
        if frames[i][0] != me and not frames[i][0].startswith("<frozen importlib"):
            frames = frames[i:]
            break
    else:
        frames = []
    return make_error(str(value), etype.__name__, traceback.format_list(frames), request_id)


def log_error(error_result):
    desc = "[ERROR]"
    etype = error_result.get("errorType")
    if etype:
        desc += " " + etype
    emsg = error_result.get("errorMessage")
    if emsg:
        if etype:
            desc += ":"
        desc += " " + emsg
    lines = [desc]
    st = error_result.get("stackTrace")
    if st is not None:
        lines.append("Traceback (most recent call last):")
        for element in st:
            if element == "":
                lines.append("")
                continue
            for line in element.splitlines():
                n = len(line) - len(line.lstrip(" "))
                lines.append(ERROR_LOG_IDENT * n + line[n:])
    sys.stdout.write(ERROR_LOG_LINE_TERMINATE.join(lines) + "\n")


def _decimal_default(obj):
    # Same leniency as awslambdaric for Decimal (common with DynamoDB).
    import decimal

    if isinstance(obj, decimal.Decimal):
        if obj.is_nan():
            return float("nan")
        if obj == obj.to_integral_value():
            return int(obj)
        return float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _ensure_ascii():
    return os.environ.get("AWS_EXECUTION_ENV") not in (
        "AWS_Lambda_python3.12",
        "AWS_Lambda_python3.13",
        "AWS_Lambda_python3.14",
        "AWS_Lambda_python3.15",
    )


_ENSURE_ASCII = _ensure_ascii()


def to_json(obj):
    return json.dumps(obj, default=_decimal_default, ensure_ascii=_ENSURE_ASCII, allow_nan=True)


# ---------------------------------------------------------------------------
# Handler resolution
# ---------------------------------------------------------------------------


def _setup_sys_path():
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or "/var/task"
    here = os.path.dirname(os.path.abspath(__file__))
    # Running a script puts its directory first; user code must not see it.
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    ver = "python%d.%d" % sys.version_info[:2]
    front = [task_root, "/opt/python/lib/%s/site-packages" % ver, "/opt/python"]
    sys.path[:0] = [p for p in front if p not in sys.path]
    return task_root


def get_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException(
            FaultException.MALFORMED_HANDLER_NAME,
            "Bad handler '{}': {}".format(handler, str(e)),
        )
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                FaultException.BUILT_IN_MODULE_CONFLICT,
                "Cannot use built-in module {} as a handler module".format(modname),
            )
        import importlib

        m = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultException(
            FaultException.IMPORT_MODULE_ERROR,
            "Unable to import module '{}': {}".format(modname, str(e)),
        )
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(
            FaultException.USER_CODE_SYNTAX_ERROR,
            "Syntax error in module '{}': {}".format(modname, str(e)),
            trace,
        )
    try:
        return getattr(m, fname)
    except AttributeError:
        raise FaultException(
            FaultException.HANDLER_NOT_FOUND,
            "Handler '{}' missing on module '{}'".format(fname, modname),
            None,
        )


# ---------------------------------------------------------------------------
# logging module integration.  Installed before the function is imported, as
# AWS does: the root logger already has a handler, so a function's
# logging.basicConfig() is a no-op exactly as on AWS (costs ~6 ms of import).
# ---------------------------------------------------------------------------


def _install_logging():
    import logging

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            try:
                sys.stdout.write(self.format(record))
            except Exception:
                self.handleError(record)

    class LambdaLoggerFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _current_request_id or ""
            return True

    logging.Formatter.converter = time.gmtime
    h = LambdaLoggerHandler()
    h.setFormatter(
        logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    h.addFilter(LambdaLoggerFilter())
    root = logging.getLogger()
    root.addHandler(h)
    level = (os.environ.get("AWS_LAMBDA_LOG_LEVEL") or "").upper()
    if level in logging._nameToLevel:
        root.setLevel(level)


# ---------------------------------------------------------------------------
# Main loop
# ---------------------------------------------------------------------------

API = "/2018-06-01/runtime"


def post_init_error(client, error_result):
    body = to_json(error_result).encode("utf-8")
    try:
        client.request(
            "POST",
            API + "/init/error",
            body,
            {ERROR_TYPE_HEADER: error_result["errorType"], "Content-Type": "application/json"},
        )
    except Exception as e:
        sys.stderr.write("Stratus runtime: failed to post init error: %s\n" % e)


def _parse_json_header(value, name):
    try:
        return json.loads(value)
    except Exception as e:
        raise FaultException(
            FaultException.LAMBDA_CONTEXT_UNMARSHAL_ERROR,
            "Unable to parse {} JSON: {}".format(name, str(e)),
            None,
        )


def handle_invoke(client, handler, headers, body):
    global _current_request_id
    request_id = headers.get("lambda-runtime-aws-request-id", "")
    _current_request_id = request_id
    trace_id = headers.get("lambda-runtime-trace-id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)

    error_result = None
    result = None
    content_type = "application/json"
    try:
        cc = headers.get("lambda-runtime-client-context")
        ci = headers.get("lambda-runtime-cognito-identity")
        try:
            deadline = int(headers.get("lambda-runtime-deadline-ms") or 0)
        except ValueError:
            deadline = 0
        context = LambdaContext(
            request_id,
            _parse_json_header(cc, "Client Context") if cc else None,
            _parse_json_header(ci, "Cognito Identity") if ci else None,
            deadline,
            headers.get("lambda-runtime-invoked-function-arn"),
            headers.get("lambda-runtime-aws-tenant-id"),
        )
        ctype = headers.get("content-type", "application/json")
        if ctype and ctype != "application/json":
            event = body
        else:
            try:
                event = json.loads(body) if body else {}
            except Exception as e:
                raise FaultException(
                    FaultException.UNMARSHAL_ERROR,
                    "Unable to unmarshal input: {}".format(str(e)),
                    None,
                )
        response = handler(event, context)
        if isinstance(response, bytes):
            result, content_type = response, "application/unknown"
        else:
            try:
                result = to_json(response).encode("utf-8")
            except Exception as e:
                raise FaultException(
                    FaultException.MARSHAL_ERROR,
                    "Unable to marshal response: {}".format(str(e)),
                    None,
                )
    except FaultException as e:
        error_result = make_error(e.msg, e.exception_type, e.trace, request_id)
    except Exception:
        error_result = build_fault_result(sys.exc_info(), request_id)

    try:
        if error_result is not None:
            log_error(error_result)
            status, _, rbody = client.request(
                "POST",
                API + "/invocation/%s/error" % request_id,
                to_json(error_result).encode("utf-8"),
                {ERROR_TYPE_HEADER: error_result["errorType"], "Content-Type": "application/json"},
            )
        else:
            status, _, rbody = client.request(
                "POST",
                API + "/invocation/%s/response" % request_id,
                result,
                {"Content-Type": content_type},
            )
    except Exception as e:
        # e.g. the server refused an oversized response and closed the
        # connection: the invoker already has its answer; carry on.
        client.close()
        sys.stderr.write("Stratus runtime: failed to post outcome of %s: %s\n" % (request_id, e))
        return
    if status != 202:
        sys.stderr.write(
            "Stratus runtime: Runtime API answered %d for request %s: %s\n"
            % (status, request_id, rbody[:1000].decode("utf-8", "replace"))
        )


PREINIT_FD_ENV = "_STRATUS_PREINIT_FD"


def wait_for_function(fd):
    """Pre-initialised: does the imports every function needs, then waits
    for this sandbox's function on `fd` and takes its environment."""
    global _ENSURE_ASCII
    import encodings.idna  # noqa: F401  (getaddrinfo's host encoding, ~1.5 ms)
    import importlib  # noqa: F401  (get_handler's, ahead of time)
    import logging  # noqa: F401  (_install_logging's, ~6 ms)

    # The Runtime API listener exists before the runtime starts: connect
    # now (the connection waits in its backlog until the API is served).
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    client = None
    if address:
        client = RuntimeClient(address)
        try:
            client._connect()
        except OSError:
            client.close()

    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    if not chunks:
        # The sandbox was discarded before it got a function.
        sys.exit(0)
    spec = json.loads(b"".join(chunks))
    env = spec["env"]
    os.environ.clear()
    os.environ.update(env)
    # TZ may differ from the pre-initialised default.
    time.tzset()
    _ENSURE_ASCII = _ensure_ascii()
    try:
        os.chdir(spec.get("cwd") or "/var/task")
    except OSError:
        pass
    if client is not None and client.host_header != os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        client.close()
        client = None
    return client


def main():
    preinit_fd = os.environ.get(PREINIT_FD_ENV)
    client = None
    if preinit_fd is not None:
        client = wait_for_function(int(preinit_fd))
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        sys.stderr.write("Stratus runtime: AWS_LAMBDA_RUNTIME_API is not set\n")
        sys.exit(1)
    if client is None:
        client = RuntimeClient(address)
    handler_name = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("_HANDLER", "")
    task_root = _setup_sys_path()
    try:
        os.chdir(task_root)
    except OSError:
        pass

    _install_logging()
    error_result = None
    try:
        handler = get_handler(handler_name)
    except FaultException as e:
        error_result = make_error(e.msg, e.exception_type, e.trace)
    except Exception:
        error_result = build_fault_result(sys.exc_info())
    if error_result is not None:
        log_error(error_result)
        post_init_error(client, error_result)
        sys.exit(1)

    while True:
        try:
            status, headers, body = client.request("GET", API + "/invocation/next")
        except Exception as e:
            sys.stderr.write("Stratus runtime: cannot reach Runtime API: %s\n" % e)
            sys.exit(1)
        if status != 200:
            sys.stderr.write(
                "Stratus runtime: next invocation failed with %d: %s\n"
                % (status, body[:1000].decode("utf-8", "replace"))
            )
            sys.exit(1)
        handle_invoke(client, handler, headers, body)


if __name__ == "__main__":
    main()
