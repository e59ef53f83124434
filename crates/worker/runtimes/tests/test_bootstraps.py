"""Drive the Stratus Python and Node bootstraps (and AWS's own awslambdaric)
against a fake Runtime API, for real, as subprocesses.

Run:  python3 -m pytest crates/worker/runtimes/tests -q
The bootstraps run under /usr/bin/python3 and /usr/bin/node (what sandboxes use).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fake_runtime_api import FakeRuntimeAPI

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIMES = os.path.dirname(HERE)
REPO = os.path.abspath(os.path.join(RUNTIMES, "..", "..", ".."))
PY_BOOTSTRAP = os.path.join(RUNTIMES, "python", "bootstrap.py")
NODE_BOOTSTRAP = os.path.join(RUNTIMES, "node", "bootstrap.js")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
NODE = "/usr/bin/node" if os.path.exists("/usr/bin/node") else shutil.which("node")
FUNCTIONS = os.path.join(REPO, "tests", "functions")


class Runtime:
    """A bootstrap subprocess plus its fake Runtime API and collected log."""

    def __init__(self, cmd, task_root, handler, execution_env=None, extra_env=None):
        self.api = FakeRuntimeAPI().start()
        env = {
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": task_root,
            "LAMBDA_RUNTIME_DIR": RUNTIMES,
            "AWS_LAMBDA_FUNCTION_NAME": "test-fn",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/test-fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_SESSION_TOKEN": "token",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "TZ": ":UTC",
            "LANG": "en_US.UTF-8",
        }
        if execution_env:
            env["AWS_EXECUTION_ENV"] = execution_env
        if extra_env:
            env.update(extra_env)
        self.started = time.time()
        self.proc = subprocess.Popen(
            cmd,
            cwd=task_root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._log = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, b""):
            self._log.append(line)

    @property
    def log(self):
        return b"".join(self._log).decode("utf-8", "replace")

    def wait_log(self, needle, timeout=5):
        end = time.time() + timeout
        while time.time() < end:
            if needle in self.log:
                return True
            time.sleep(0.02)
        return False

    def exit_code(self, timeout=10):
        return self.proc.wait(timeout)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.api.stop()


def write_files(root, files):
    for name, text in files.items():
        p = os.path.join(root, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))


@pytest.fixture
def runtimes():
    started = []
    yield started
    for r in started:
        r.close()


def py_runtime(runtimes, tmp_path, files, handler, **kw):
    write_files(str(tmp_path), files)
    r = Runtime([PYTHON, PY_BOOTSTRAP], str(tmp_path), handler, "AWS_Lambda_python3.11", **kw)
    runtimes.append(r)
    return r


def node_runtime(runtimes, tmp_path, files, handler, **kw):
    write_files(str(tmp_path), files)
    r = Runtime([NODE, NODE_BOOTSTRAP], str(tmp_path), handler, "AWS_Lambda_nodejs20.x", **kw)
    runtimes.append(r)
    return r


# ===========================================================================
# Python
# ===========================================================================

PY_APP = '''
import os, time
count = 0

def handler(event, context):
    global count
    count += 1
    print("log line from handler", count)
    r1 = context.get_remaining_time_in_millis()
    time.sleep(0.05)
    r2 = context.get_remaining_time_in_millis()
    return {
        "event": event,
        "count": count,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory": context.memory_limit_in_mb,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "remaining": [r1, r2],
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "cwd": os.getcwd(),
        "client_custom": context.client_context.custom if context.client_context else None,
        "identity_id": context.identity.cognito_identity_id,
    }

def none(event, context):
    return None

def echo(event, context):
    return event

def fail(event, context):
    raise ValueError("boom")

def unserialisable(event, context):
    return {"s": {1, 2}}

def uses_logging(event, context):
    import logging
    logging.getLogger().warning("warned %s", "here")
    return "ok"
'''


def test_python_result_context_and_state(runtimes, tmp_path):
    r = py_runtime(runtimes, tmp_path, {"app.py": PY_APP}, "app.handler")
    out = r.api.invoke(
        {"name": "x"},
        timeout_ms=5000,
        client_context={"custom": {"k": "v"}},
        identity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"},
    )
    assert out.kind == "response", (out, r.log)
    body = out.json()
    assert body["event"] == {"name": "x"}
    assert body["count"] == 1
    assert body["request_id"] == out.request_id
    assert body["arn"] == r.api.arn
    assert body["function_name"] == "test-fn"
    assert body["function_version"] == "$LATEST"
    assert body["memory"] == "128"
    assert body["log_group"] == "/aws/lambda/test-fn"
    assert body["log_stream"].startswith("2026/01/01/[$LATEST]")
    r1, r2 = body["remaining"]
    assert 4000 < r1 <= 5000 and r2 < r1
    assert body["trace"].startswith("Root=1-")
    assert body["cwd"] == str(tmp_path)
    assert body["client_custom"] == {"k": "v"}
    assert body["identity_id"] == "id-1"
    out2 = r.api.invoke({})
    assert out2.json()["count"] == 2
    assert r.wait_log("log line from handler 2")
    # one persistent connection for every call
    assert len(r.api.connections) == 1, r.api.connections
    assert r.proc.poll() is None


def test_python_none_unicode_large(runtimes, tmp_path):
    r = py_runtime(runtimes, tmp_path, {"app.py": PY_APP}, "app.none")
    out = r.api.invoke({"a": 1})
    assert out.kind == "response" and out.body == b"null"
    r2 = py_runtime(runtimes, tmp_path, {}, "app.echo")
    ev = {"text": "héllo wörld ☃ 😀 中文"}
    out = r2.api.invoke(ev)
    assert out.json() == ev
    big = {"data": "x" * (1024 * 1024), "n": list(range(1000))}
    out = r2.api.invoke(big)
    assert out.kind == "response"
    assert out.json() == big
    # empty payload -> {} (what AWS hands the handler for an empty body)
    out = r2.api.invoke(raw=b"")
    assert out.json() == {}


def test_python_handler_exception(runtimes, tmp_path):
    r = py_runtime(runtimes, tmp_path, {"app.py": PY_APP}, "app.fail")
    out = r.api.invoke({})
    assert out.kind == "error"
    doc = out.json()
    assert doc["errorType"] == "ValueError"
    assert doc["errorMessage"] == "boom"
    assert doc["requestId"] == out.request_id
    assert isinstance(doc["stackTrace"], list) and doc["stackTrace"]
    last = doc["stackTrace"][-1]
    assert last.startswith('  File "%s/app.py", line ' % tmp_path), last
    assert "in fail\n" in last and 'raise ValueError("boom")' in last
    assert not any("bootstrap.py" in f for f in doc["stackTrace"])
    assert out.headers["lambda-runtime-function-error-type"] == "ValueError"
    assert r.wait_log("[ERROR] ValueError: boom")
    # the runtime survives and serves the next invoke
    out = r.api.invoke({})
    assert out.kind == "error"


def test_python_marshal_error_and_logging(runtimes, tmp_path):
    r = py_runtime(runtimes, tmp_path, {"app.py": PY_APP}, "app.unserialisable")
    doc = r.api.invoke({}).json()
    assert doc["errorType"] == "Runtime.MarshalError"
    assert doc["errorMessage"].startswith("Unable to marshal response:")
    r2 = py_runtime(runtimes, tmp_path, {}, "app.uses_logging")
    out = r2.api.invoke({})
    assert out.json() == "ok"
    assert r2.wait_log("[WARNING]\t")
    assert "\t%s\twarned here" % out.request_id in r2.log


@pytest.mark.parametrize("handler", ["pkg/sub/mod.fn", "pkg.sub.mod.fn"])
def test_python_nested_handler(runtimes, tmp_path, handler):
    files = {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/mod.py": "def fn(event, context):\n    return {'nested': True}\n",
    }
    r = py_runtime(runtimes, tmp_path, files, handler)
    assert r.api.invoke({}).json() == {"nested": True}


@pytest.mark.parametrize(
    "files,handler,etype,message",
    [
        ({}, "missing.handler", "Runtime.ImportModuleError",
         "Unable to import module 'missing': No module named 'missing'"),
        ({"app.py": "x = 1\n"}, "app.nothere", "Runtime.HandlerNotFound",
         "Handler 'nothere' missing on module 'app'"),
        ({"app.py": "raise Exception('init failed')\n"}, "app.handler", "Exception", "init failed"),
        ({"app.py": "import not_a_real_dependency\n"}, "app.handler", "Runtime.ImportModuleError",
         "Unable to import module 'app': No module named 'not_a_real_dependency'"),
        ({"app.py": "def handler(:\n"}, "app.handler", "Runtime.UserCodeSyntaxError", None),
        ({"app.py": ""}, "nodot", "Runtime.MalformedHandlerName", None),
    ],
)
def test_python_init_errors(runtimes, tmp_path, files, handler, etype, message):
    r = py_runtime(runtimes, tmp_path, files, handler)
    err = r.api.wait_init_error()
    doc = err.json()
    assert doc["errorType"] == etype, (doc, r.log)
    if message is not None:
        assert doc["errorMessage"] == message
    assert doc["requestId"] == ""
    assert isinstance(doc["stackTrace"], list)
    assert err.headers["lambda-runtime-function-error-type"] == etype
    assert r.exit_code() != 0
    assert "[ERROR] %s" % etype in r.log
    if etype == "Exception":
        assert any("app.py" in f and "raise Exception('init failed')" in f for f in doc["stackTrace"]), doc
    assert r.api.next_calls == 0


def test_python_print_reaches_log_before_response(runtimes, tmp_path):
    files = {"app.py": "def handler(e, c):\n    print('partial', end='')\n    print(' line')\n    return 1\n"}
    r = py_runtime(runtimes, tmp_path, files, "app.handler")
    out = r.api.invoke({})
    assert out.body == b"1"
    assert r.wait_log("partial line", timeout=2)


# ===========================================================================
# Node
# ===========================================================================

NODE_CJS = r'''
let count = 0;
exports.handler = async (event, context) => {
  count += 1;
  console.log("log line from handler", count);
  const r1 = context.getRemainingTimeInMillis();
  await new Promise((r) => setTimeout(r, 50));
  const r2 = context.getRemainingTimeInMillis();
  return {
    event, count,
    requestId: context.awsRequestId,
    arn: context.invokedFunctionArn,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    memory: context.memoryLimitInMB,
    logGroup: context.logGroupName,
    logStream: context.logStreamName,
    remaining: [r1, r2],
    trace: process.env._X_AMZN_TRACE_ID,
    waits: context.callbackWaitsForEmptyEventLoop,
    cwd: process.cwd(),
  };
};
exports.callback = (event, context, callback) => {
  setTimeout(() => callback(null, { via: "callback", event }), 10);
};
exports.callbackError = (event, context, callback) => callback(new TypeError("bad type"));
exports.fail = async () => { throw new Error("boom"); };
exports.none = async () => undefined;
exports.echo = async (event) => event;
exports.notfn = 42;
exports.nested = { inner: async () => "inner" };
exports.syncReturn = (event) => ({ ignored: true });
exports.waits = (event, context, callback) => {
  setTimeout(() => { globalThis.late = "timer ran"; }, 200);
  callback(null, "cb");
};
exports.noWait = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  setTimeout(() => {}, 3000);
  callback(null, "fast");
};
exports.seeLate = async () => globalThis.late || "no";
exports.legacySucceed = (event, context) => { setTimeout(() => context.succeed("legacy"), 20); };
'''


def test_node_async_context_and_state(runtimes, tmp_path):
    r = node_runtime(runtimes, tmp_path, {"index.js": NODE_CJS}, "index.handler")
    out = r.api.invoke({"name": "x"}, timeout_ms=5000)
    assert out.kind == "response", (out, r.log)
    b = out.json()
    assert b["event"] == {"name": "x"}
    assert b["count"] == 1
    assert b["requestId"] == out.request_id
    assert b["arn"] == r.api.arn
    assert b["functionName"] == "test-fn"
    assert b["functionVersion"] == "$LATEST"
    assert b["memory"] == "128"
    assert b["logGroup"] == "/aws/lambda/test-fn"
    assert b["logStream"].startswith("2026/01/01/")
    r1, r2 = b["remaining"]
    assert 4000 < r1 <= 5000 and r2 < r1
    assert b["trace"].startswith("Root=1-")
    assert b["waits"] is True
    assert b["cwd"] == str(tmp_path)
    assert r.api.invoke({}).json()["count"] == 2
    assert r.wait_log("\tINFO\tlog line from handler 2")
    assert "\t%s\tINFO\tlog line from handler 1" % out.request_id in r.log
    assert len(r.api.connections) == 1


def test_node_callback_none_unicode_large(runtimes, tmp_path):
    r = node_runtime(runtimes, tmp_path, {"index.js": NODE_CJS}, "index.callback")
    assert r.api.invoke({"a": 1}).json() == {"via": "callback", "event": {"a": 1}}
    r2 = node_runtime(runtimes, tmp_path, {}, "index.none")
    assert r2.api.invoke({}).body == b"null"
    r3 = node_runtime(runtimes, tmp_path, {}, "index.echo")
    ev = {"text": "héllo wörld ☃ 😀 中文"}
    assert r3.api.invoke(ev).json() == ev
    big = {"data": "y" * (1024 * 1024)}
    assert r3.api.invoke(big).json() == big
    r4 = node_runtime(runtimes, tmp_path, {}, "index.nested.inner")
    assert r4.api.invoke({}).json() == "inner"


def test_node_callback_semantics(runtimes, tmp_path):
    write_files(str(tmp_path), {"index.js": NODE_CJS})
    # non-async handler: its return value is ignored, null once the loop is empty
    r = node_runtime(runtimes, tmp_path, {}, "index.syncReturn")
    assert r.api.invoke({}).body == b"null"
    # callbackWaitsForEmptyEventLoop=true: the result is posted after pending timers ran
    r = node_runtime(runtimes, tmp_path, {}, "index.waits")
    t = time.time()
    assert r.api.invoke({}).json() == "cb"
    assert time.time() - t >= 0.18
    # =false: posted at once although a 3 s timer is pending
    r = node_runtime(runtimes, tmp_path, {}, "index.noWait")
    t = time.time()
    assert r.api.invoke({}).json() == "fast"
    assert time.time() - t < 2
    r = node_runtime(runtimes, tmp_path, {}, "index.legacySucceed")
    assert r.api.invoke({}).json() == "legacy"
    assert r.api.invoke({}).json() == "legacy"


def test_node_errors(runtimes, tmp_path):
    r = node_runtime(runtimes, tmp_path, {"index.js": NODE_CJS}, "index.fail")
    out = r.api.invoke({})
    assert out.kind == "error"
    doc = out.json()
    assert doc["errorType"] == "Error"
    assert doc["errorMessage"] == "boom"
    assert doc["trace"][0] == "Error: boom"
    assert any("index.js" in line for line in doc["trace"])
    assert out.headers["lambda-runtime-function-error-type"] == "Error"
    assert r.wait_log("\tERROR\tInvoke Error")
    r2 = node_runtime(runtimes, tmp_path, {}, "index.callbackError")
    doc = r2.api.invoke({}).json()
    assert doc["errorType"] == "TypeError" and doc["errorMessage"] == "bad type"


def test_node_uncaught_exception_and_rejection(runtimes, tmp_path):
    files = {
        "crash.js": """
            exports.throwLater = async () => { setTimeout(() => { throw new RangeError('late'); }, 10); await new Promise(() => {}); };
            exports.reject = async () => { Promise.reject(new Error('nobody caught me')); await new Promise(() => {}); };
        """,
    }
    r = node_runtime(runtimes, tmp_path, files, "crash.throwLater")
    out = r.api.invoke({})
    assert out.kind == "error"
    doc = out.json()
    assert doc["errorType"] == "RangeError" and doc["errorMessage"] == "late"
    assert r.exit_code() == 129
    r2 = node_runtime(runtimes, tmp_path, {}, "crash.reject")
    out = r2.api.invoke({})
    doc = out.json()
    assert doc["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert doc["errorMessage"] == "Error: nobody caught me"
    assert r2.exit_code() == 128


def test_node_esm(runtimes, tmp_path):
    files = {
        "app.mjs": """
            import { hostname } from 'node:os';
            let count = 0;
            export const handler = async (event, context) => {
              count += 1;
              return { esm: true, count, id: context.awsRequestId, h: typeof hostname() };
            };
        """,
        "lib/util.cjs": "module.exports.run = async () => ({ cjs: true });\n",
    }
    r = node_runtime(runtimes, tmp_path, files, "app.handler")
    out = r.api.invoke({})
    assert out.json() == {"esm": True, "count": 1, "id": out.request_id, "h": "string"}
    assert r.api.invoke({}).json()["count"] == 2
    r2 = node_runtime(runtimes, tmp_path, {}, "lib/util.run")
    assert r2.api.invoke({}).json() == {"cjs": True}


def test_node_esm_js_type_module(runtimes, tmp_path):
    files = {
        "package.json": '{"type": "module"}',
        "index.js": "export const handler = async (e) => ({ typeModule: true, e });\n",
    }
    r = node_runtime(runtimes, tmp_path, files, "index.handler")
    assert r.api.invoke({"q": 1}).json() == {"typeModule": True, "e": {"q": 1}}


@pytest.mark.parametrize(
    "files,handler,etype,msg_start",
    [
        ({}, "missing.handler", "Runtime.ImportModuleError", "Error: Cannot find module 'missing'"),
        ({"index.js": "exports.x = 1;\n"}, "index.handler", "Runtime.HandlerNotFound",
         "index.handler is undefined or not exported"),
        ({"index.js": "exports.handler = 42;\n"}, "index.handler", "Runtime.HandlerNotFound",
         "index.handler is not a function"),
        ({"index.js": "throw new Error('init failed');\n"}, "index.handler", "Error", "init failed"),
        ({"index.js": "require('not-a-real-dep');\n"}, "index.handler", "Runtime.ImportModuleError",
         "Error: Cannot find module 'not-a-real-dep'"),
        ({"index.js": "exports.handler = (;\n"}, "index.handler", "Runtime.UserCodeSyntaxError", "SyntaxError:"),
        ({"index.js": ""}, "nodot", "Runtime.MalformedHandlerName", "Bad handler"),
    ],
)
def test_node_init_errors(runtimes, tmp_path, files, handler, etype, msg_start):
    r = node_runtime(runtimes, tmp_path, files, handler)
    err = r.api.wait_init_error()
    doc = err.json()
    assert doc["errorType"] == etype, (doc, r.log)
    assert doc["errorMessage"].startswith(msg_start), doc
    assert isinstance(doc["trace"], list)
    assert err.headers["lambda-runtime-function-error-type"] == etype
    assert r.exit_code() != 0
    assert r.api.next_calls == 0


@pytest.mark.parametrize("lang", ["python", "node"])
def test_oversized_response_then_next_invoke(runtimes, tmp_path, lang):
    if lang == "python":
        files = {"app.py": "def handler(e, c):\n    return 'x' * e['n']\n"}
        r = py_runtime(runtimes, tmp_path, files, "app.handler")
    else:
        files = {"app.js": "exports.handler = async (e) => 'x'.repeat(e.n);\n"}
        r = node_runtime(runtimes, tmp_path, files, "app.handler")
    rid = r.api.submit({"n": 7 * 1024 * 1024})
    r.api.wait_too_large(rid)
    out = r.api.invoke({"n": 3})
    assert out.json() == "xxx", r.log
    assert r.proc.poll() is None


# ===========================================================================
# Fixtures under tests/functions
# ===========================================================================


def test_fixture_python_hello(runtimes):
    root = os.path.join(FUNCTIONS, "python-hello")
    r = Runtime([PYTHON, PY_BOOTSTRAP], root, "app.handler", "AWS_Lambda_python3.11",
                extra_env={"GREETING": "hi"})
    runtimes.append(r)
    b = r.api.invoke({"name": "stratus"}).json()
    assert b["hello"] == "stratus" and b["count"] == 1
    assert b["env"]["GREETING"] == "hi"
    assert b["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "test-fn"
    assert r.api.invoke({}).json()["count"] == 2


def test_fixture_python_errors(runtimes):
    root = os.path.join(FUNCTIONS, "python-errors")
    r = Runtime([PYTHON, PY_BOOTSTRAP], root, "app.fail", "AWS_Lambda_python3.11")
    runtimes.append(r)
    doc = r.api.invoke({}).json()
    assert doc["errorType"] == "ValueError" and doc["errorMessage"] == "boom"
    for handler, event, check in [
        ("app.noop", {}, lambda o: o.json() == {}),
        ("app.sleep", {"seconds": 0.1}, lambda o: o.kind == "response"),
        ("app.oom", {"mb": 8}, lambda o: o.kind == "response"),
        ("app.ps", {}, lambda o: "pids" in o.json() and "uid" in o.json()),
    ]:
        rr = Runtime([PYTHON, PY_BOOTSTRAP], root, handler, "AWS_Lambda_python3.11")
        runtimes.append(rr)
        out = rr.api.invoke(event)
        assert check(out), (handler, out, rr.log)
    rx = Runtime([PYTHON, PY_BOOTSTRAP], root, "app.exit", "AWS_Lambda_python3.11")
    runtimes.append(rx)
    rx.api.submit({"code": 3})
    assert rx.exit_code() == 3


def test_fixture_node_hello(runtimes):
    root = os.path.join(FUNCTIONS, "node-hello")
    r = Runtime([NODE, NODE_BOOTSTRAP], root, "index.handler", "AWS_Lambda_nodejs20.x",
                extra_env={"GREETING": "hi"})
    runtimes.append(r)
    out = r.api.invoke({"name": "stratus"})
    b = out.json()
    assert b["hello"] == "stratus" and b["count"] == 1 and b["request_id"] == out.request_id
    assert b["env"]["GREETING"] == "hi"
    assert r.api.invoke({}).json()["count"] == 2


# ===========================================================================
# AWS's own awslambdaric, built by tests/functions/build_python_ric.sh
# ===========================================================================


@pytest.fixture(scope="module")
def ric_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("python-ric")
    script = os.path.join(FUNCTIONS, "build_python_ric.sh")
    p = subprocess.run(["bash", script, str(out)], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        pytest.skip("could not build python-ric (needs pip + network): %s" % p.stderr[-2000:])
    return str(out)


def test_awslambdaric_against_fake_api(runtimes, ric_dir):
    r = Runtime([os.path.join(ric_dir, "bootstrap")], ric_dir, "app.handler", None)
    runtimes.append(r)
    out = r.api.invoke({"name": "ric"}, timeout_ms=5000)
    assert out.kind == "response", (out, r.log)
    b = out.json()
    assert b["hello"] == "ric" and b["count"] == 1
    assert b["request_id"] == out.request_id
    assert 0 < b["remaining_ms"] <= 5000
    assert r.api.invoke({}).json()["count"] == 2
    r2 = Runtime([os.path.join(ric_dir, "bootstrap")], ric_dir, "app.fail", None)
    runtimes.append(r2)
    doc = r2.api.invoke({}).json()
    assert doc["errorType"] == "ValueError" and doc["errorMessage"] == "boom"
    assert doc["requestId"]
    r3 = Runtime([os.path.join(ric_dir, "bootstrap")], ric_dir, "nope.handler", None)
    runtimes.append(r3)
    doc = r3.api.wait_init_error().json()
    assert doc["errorType"] == "Runtime.ImportModuleError"
    assert doc["errorMessage"] == "Unable to import module 'nope': No module named 'nope'"


# ===========================================================================
# The Rust fixture (official lambda_runtime crate), if it has been built:
#   CARGO_TARGET_DIR=target-fixtures cargo build -p stratus-test-fn-rust --release
# ===========================================================================


def _rust_bootstrap():
    for d in (os.environ.get("CARGO_TARGET_DIR"), os.path.join(REPO, "target-fixtures"), os.path.join(REPO, "target")):
        if d:
            p = os.path.join(d, "release", "bootstrap")
            if os.path.exists(p):
                return p
    return None


def test_fixture_rust_hello(runtimes, tmp_path):
    binary = _rust_bootstrap()
    if binary is None:
        pytest.skip("rust-hello not built (cargo build -p stratus-test-fn-rust --release)")
    r = Runtime([binary], str(tmp_path), "bootstrap", None)
    runtimes.append(r)
    out = r.api.invoke({"name": "rust"}, timeout_ms=5000)
    assert out.kind == "response", (out, r.log)
    b = out.json()
    assert b["hello"] == "rust" and b["count"] == 1 and b["request_id"] == out.request_id
    assert 0 < b["remaining_ms"] <= 5000
    assert b["invoked_function_arn"] == r.api.arn
    assert r.api.invoke({}).json()["count"] == 2


# ===========================================================================
# Pre-initialised mode (the sandbox backend's runtime pool)
# ===========================================================================


class PreinitRuntime(Runtime):
    """A bootstrap started with only the pool's generic environment and a
    pipe (_STRATUS_PREINIT_FD), as a pooled sandbox starts it; `specialise`
    then hands it a function, as the sandbox init does."""

    def __init__(self, cmd, wait_dir):
        self.api = FakeRuntimeAPI().start()
        rd, self.pipe = os.pipe()
        env = {
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "LAMBDA_TASK_ROOT": "/nonexistent-task-root",
            "LAMBDA_RUNTIME_DIR": RUNTIMES,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "TZ": ":UTC",
            "LANG": "en_US.UTF-8",
            "_STRATUS_PREINIT_FD": str(rd),
        }
        self.started = time.time()
        self.proc = subprocess.Popen(
            cmd, cwd=wait_dir, env=env, pass_fds=(rd,), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        os.close(rd)
        self._log = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def specialise(self, task_root, handler, execution_env, extra_env=None):
        env = {
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": task_root,
            "LAMBDA_RUNTIME_DIR": RUNTIMES,
            "AWS_LAMBDA_FUNCTION_NAME": "test-fn",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/test-fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
            "AWS_EXECUTION_ENV": execution_env,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "TZ": ":UTC",
            "LANG": "en_US.UTF-8",
        }
        env.update(extra_env or {})
        os.write(self.pipe, json.dumps({"env": env, "cwd": task_root}).encode())
        os.close(self.pipe)
        self.pipe = None

    def close(self):
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        super().close()


PREINIT_PY = '''
import os, sys, time
def handler(event, context):
    return {"env": dict(os.environ), "cwd": os.getcwd(), "tz": time.tzname[0],
            "path0": sys.path[0], "fn": context.function_name}
'''

PREINIT_NODE = '''
exports.handler = async (event, context) => ({
  env: Object.assign({}, process.env), cwd: process.cwd(), fn: context.functionName,
  hour: new Date(Date.UTC(2026, 0, 1, 12)).getHours(),
});
'''


@pytest.mark.parametrize("family", ["python", "node"])
def test_preinit_runtime_takes_its_function_from_the_pipe(runtimes, tmp_path, family):
    wait_dir = tmp_path / "empty"
    wait_dir.mkdir()
    task = tmp_path / "task"
    task.mkdir()
    if family == "python":
        write_files(str(task), {"app.py": PREINIT_PY})
        r = PreinitRuntime([PYTHON, PY_BOOTSTRAP], str(wait_dir))
        handler, exec_env = "app.handler", "AWS_Lambda_python3.12"
    else:
        write_files(str(task), {"index.js": PREINIT_NODE})
        r = PreinitRuntime([NODE, NODE_BOOTSTRAP], str(wait_dir))
        handler, exec_env = "index.handler", "AWS_Lambda_nodejs20.x"
    runtimes.append(r)
    # It waits: no Runtime API call before it has a function.
    time.sleep(0.5)
    assert r.proc.poll() is None, r.log
    assert r.api.next_calls == 0
    r.specialise(str(task), handler, exec_env, {"GREETING": "hi", "TZ": "Asia/Tokyo"})
    out = r.api.invoke({})
    assert out.kind == "response", (out, r.log)
    b = out.json()
    assert b["env"]["GREETING"] == "hi"
    assert b["env"]["_HANDLER"] == handler
    assert "_STRATUS_PREINIT_FD" not in b["env"]
    assert b["cwd"] == str(task)
    assert b["fn"] == "test-fn"
    if family == "python":
        assert b["tz"] == "JST", "TZ of the function must apply"
        assert b["path0"] == str(task)
    else:
        assert b["hour"] == 21, "TZ of the function must apply"


@pytest.mark.parametrize("family", ["python", "node"])
def test_preinit_runtime_discarded_before_a_function_exits_quietly(runtimes, tmp_path, family):
    cmd = [PYTHON, PY_BOOTSTRAP] if family == "python" else [NODE, NODE_BOOTSTRAP]
    r = PreinitRuntime(cmd, str(tmp_path))
    runtimes.append(r)
    os.close(r.pipe)
    r.pipe = None
    assert r.exit_code() == 0, r.log
    assert r.api.next_calls == 0
