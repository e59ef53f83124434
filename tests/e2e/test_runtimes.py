"""Runtimes: Python ids mapped onto the host interpreter, Node.js, and custom
runtimes (provided.al2023) built with AWS's own clients: the Rust
`lambda_runtime` crate and Python `awslambdaric`, plus a plain shell+curl
bootstrap speaking the Runtime API by hand."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from stratus_harness import (
    FUNCTIONS,
    REPO,
    SHARED_FUNCTIONS,
    arn,
    expect_error,
    unique_name,
    ROLE,
    zip_dir,
    zip_files,
)


def _invoke(lam, name, payload=None, **kw):
    args = {"FunctionName": name, **kw}
    if payload is not None:
        args["Payload"] = json.dumps(payload)
    resp = lam.invoke(**args)
    return resp, resp["Payload"].read()


def _ok(lam, name, payload=None, **kw):
    resp, body = _invoke(lam, name, payload, **kw)
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, (resp.get("FunctionError"), body)
    return resp, json.loads(body)


@pytest.mark.parametrize("runtime", ["python3.9", "python3.11", "python3.12", "python3.13"])
def test_python_runtime_ids(lam, fns, py_zip, runtime):
    name = fns.create(py_zip, runtime=runtime)
    _, out = _ok(lam, name, {})
    assert out["env"]["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{runtime}"
    assert out["hello"] == "python"


def test_node_function(lam, fns, node_zip):
    name = fns.create(node_zip, handler="index.handler", runtime="nodejs20.x")
    resp, out = _ok(lam, name, {"x": 1}, LogType="Tail")
    rid = resp["ResponseMetadata"]["RequestId"]
    assert out["hello"] == "node" and out["count"] == 1
    assert out["event"] == {"x": 1}
    assert out["request_id"] == rid
    assert out["function_name"] == name
    assert str(out["memory_limit_in_mb"]) == "128"
    assert 0 < out["remaining_ms"] <= 3000
    assert out["env"]["AWS_EXECUTION_ENV"] == "AWS_Lambda_nodejs20.x"
    assert out["env"]["AWS_REGION"] == "us-east-1"
    assert out["env"]["_HANDLER"] == "index.handler"
    assert out["cwd"] == "/var/task"
    log = base64.b64decode(resp["LogResult"]).decode()
    assert f"hello-from-node {rid}" in log and f"END RequestId: {rid}" in log, log
    _, out2 = _ok(lam, name, {})
    assert out2["count"] == 2 and out2["sandbox"] == out["sandbox"]


def test_node_runtime_id_mapping(lam, fns, node_zip):
    name = fns.create(node_zip, handler="index.handler", runtime="nodejs22.x")
    _, out = _ok(lam, name, {})
    assert out["env"]["AWS_EXECUTION_ENV"] == "AWS_Lambda_nodejs22.x"


def test_node_error_and_callback(lam, fns, node_zip):
    name = fns.create(node_zip, handler="index.fail", runtime="nodejs20.x")
    resp, body = _invoke(lam, name, {})
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled", body
    err = json.loads(body)
    assert err["errorType"] == "TypeError" and err["errorMessage"] == "node boom", err
    cb = fns.create(node_zip, handler="index.callback", runtime="nodejs20.x")
    _, out = _ok(lam, cb, {"y": 2})
    assert out == {"via": "callback", "event": {"y": 2}}


def test_node_missing_handler(lam, fns, node_zip):
    name = fns.create(node_zip, handler="index.nope", runtime="nodejs20.x")
    resp, body = _invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled", body
    assert json.loads(body)["errorType"] == "Runtime.HandlerNotFound", body


def test_shared_fixtures_python_and_node_hello(lam, fns):
    """The fixtures under tests/functions (written for the runtime tests) run on the server too."""
    py_dir, node_dir = SHARED_FUNCTIONS / "python-hello", SHARED_FUNCTIONS / "node-hello"
    if not (py_dir / "app.py").exists() or not (node_dir / "index.js").exists():
        pytest.skip("tests/functions/python-hello or node-hello not present")
    for code, handler, runtime in ((zip_dir(py_dir), "app.handler", "python3.12"),
                                   (zip_dir(node_dir), "index.handler", "nodejs20.x")):
        name = fns.create(code, handler=handler, runtime=runtime)
        resp, out = _ok(lam, name, {"name": "stratus"})
        assert out["hello"] == "stratus", out
        assert out["count"] == 1
        assert out["request_id"] == resp["ResponseMetadata"]["RequestId"]
        _, out2 = _ok(lam, name, {})
        assert out2["count"] == 2


@pytest.mark.parametrize("runtime", ["java21", "ruby3.3", "dotnet8"])
def test_runtime_stratus_cannot_serve_is_refused(lam, py_zip, runtime):
    """Valid AWS runtime ids without an interpreter behind them are refused at create, naming the runtime."""
    name = unique_name("unserved")
    expect_error(lam.create_function, 400, "InvalidParameterValueException", runtime,
                 FunctionName=name, Runtime=runtime, Role=ROLE, Handler="a.handler",
                 Code={"ZipFile": py_zip})
    expect_error(lam.get_function, 404, "ResourceNotFoundException", FunctionName=name)


def test_missing_interpreter_refused_at_create(py_zip, node_zip):
    """A server whose python interpreter does not exist refuses python functions, still serves node."""
    from stratus_harness import new_server, remove_data_dir, wait_active

    srv = new_server("no-python", ["--python", "/nonexistent/bin/python3"])
    srv.start()
    try:
        c = srv.client()
        expect_error(c.create_function, 400, "InvalidParameterValueException", "python3.12",
                     FunctionName=unique_name("nopy"), Runtime="python3.12", Role=ROLE, Handler="app.handler",
                     Code={"ZipFile": py_zip})
        name = unique_name("stillnode")
        c.create_function(FunctionName=name, Runtime="nodejs20.x", Role=ROLE, Handler="index.handler",
                          Code={"ZipFile": node_zip})
        wait_active(c, name)
        resp = c.invoke(FunctionName=name, Payload=b"{}")
        assert "FunctionError" not in resp and json.loads(resp["Payload"].read())["hello"] == "node"
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)


SHELL_BOOTSTRAP = r"""#!/bin/sh
# A custom runtime in sh + curl, speaking the Runtime API by hand.
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
COUNT=0
while true; do
  HDRS=$(mktemp)
  EVENT=$(curl -sS -D "$HDRS" "$API/invocation/next")
  RID=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$HDRS" | cut -d' ' -f2 | tr -d '\r\n')
  DEADLINE=$(grep -i '^Lambda-Runtime-Deadline-Ms:' "$HDRS" | cut -d' ' -f2 | tr -d '\r\n')
  FARN=$(grep -i '^Lambda-Runtime-Invoked-Function-Arn:' "$HDRS" | cut -d' ' -f2 | tr -d '\r\n')
  TRACE=$(grep -i '^Lambda-Runtime-Trace-Id:' "$HDRS" | cut -d' ' -f2 | tr -d '\r\n')
  COUNT=$((COUNT + 1))
  echo "shell-runtime got $RID"
  case "$EVENT" in
  *fail*)
    curl -sS -X POST -H 'Lambda-Runtime-Function-Error-Type: Runtime.ShellFailure' \
      -d '{"errorMessage":"shell says no","errorType":"Runtime.ShellFailure"}' "$API/invocation/$RID/error" >/dev/null ;;
  *)
    printf '{"rid":"%s","deadline":"%s","arn":"%s","trace":"%s","count":%d,"event":%s,"handler":"%s","cwd":"%s"}' \
      "$RID" "$DEADLINE" "$FARN" "$TRACE" "$COUNT" "$EVENT" "$_HANDLER" "$(pwd)" > /tmp/resp.json
    curl -sS -X POST --data-binary @/tmp/resp.json "$API/invocation/$RID/response" >/dev/null ;;
  esac
  rm -f "$HDRS"
done
"""


def test_shell_custom_runtime_sees_runtime_api_headers(lam, fns):
    import time

    code = zip_files({"bootstrap": SHELL_BOOTSTRAP}, executable=("bootstrap",))
    name = fns.create(code, handler="whatever.handler", runtime="provided.al2023", Timeout=5)
    t0 = time.time()
    resp, out = _ok(lam, name, {"a": 1}, LogType="Tail")
    rid = resp["ResponseMetadata"]["RequestId"]
    assert out["rid"] == rid
    assert out["arn"] == arn(name)
    assert out["event"] == {"a": 1}
    assert out["handler"] == "whatever.handler"
    assert out["cwd"] == "/var/task"
    deadline_ms = int(out["deadline"])
    assert t0 * 1000 + 3000 < deadline_ms < t0 * 1000 + 5000 + 2000, (t0, deadline_ms)
    assert re.match(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", out["trace"]), out["trace"]
    assert f"shell-runtime got {rid}" in base64.b64decode(resp["LogResult"]).decode()
    _, out2 = _ok(lam, name, {})
    assert out2["count"] == 2
    resp3, body3 = _invoke(lam, name, {"fail": True})
    assert resp3["FunctionError"] == "Unhandled"
    assert json.loads(body3) == {"errorMessage": "shell says no", "errorType": "Runtime.ShellFailure"}


def test_provided_without_bootstrap_fails_cleanly(lam, fns):
    name = fns.create(zip_files({"README": "no bootstrap here"}), handler="x", runtime="provided.al2023")
    resp, body = _invoke(lam, name, {})
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled", body
    err = json.loads(body)
    assert err["errorType"].startswith("Runtime."), err


# ------------------------------------------------------------ official clients


def _rust_bootstrap() -> Path | None:
    env = os.environ.get("STRATUS_TEST_FN_RUST")
    if env:
        return Path(env)
    for cand in (REPO / "target" / "release" / "bootstrap", REPO / "target-fixtures" / "release" / "bootstrap"):
        if cand.exists():
            return cand
    return None


@pytest.fixture(scope="session")
def rust_zip():
    if not (SHARED_FUNCTIONS / "rust-hello" / "Cargo.toml").exists():
        pytest.skip("tests/functions/rust-hello (package stratus-test-fn-rust) is not in the tree")
    binary = _rust_bootstrap()
    assert binary is not None, (
        "rust fixture not built: run `cargo build -p stratus-test-fn-rust --release` (scripts/test does)"
    )
    return zip_files({"bootstrap": binary.read_bytes()}, executable=("bootstrap",))


def test_rust_lambda_runtime_function(lam, fns, rust_zip):
    name = fns.create(rust_zip, handler="bootstrap", runtime="provided.al2023", Timeout=5)
    resp, out = _ok(lam, name, {"name": "stratus"}, LogType="Tail")
    rid = resp["ResponseMetadata"]["RequestId"]
    assert out["hello"] == "stratus" and out["count"] == 1, out
    assert out["request_id"] == rid
    assert out["invoked_function_arn"] == arn(name)
    assert out["function_name"] == name
    assert out["memory_limit_in_mb"] == 128
    assert 0 < out["remaining_ms"] <= 5000
    log = base64.b64decode(resp["LogResult"]).decode()
    assert f"START RequestId: {rid}" in log and f"REPORT RequestId: {rid}" in log, log
    assert f"hello from rust-hello: name=stratus count=1 request_id={rid}" in log, log
    _, out2 = _ok(lam, name, {})
    assert out2["count"] == 2 and out2["hello"] == "world"
    # provided.al2 is the same contract.
    name2 = fns.create(rust_zip, handler="bootstrap", runtime="provided.al2")
    _, out3 = _ok(lam, name2, {"name": "al2"})
    assert out3["hello"] == "al2" and out3["function_name"] == name2


@pytest.fixture(scope="session")
def ric_zip():
    script = SHARED_FUNCTIONS / "build_python_ric.sh"
    if not script.exists():
        pytest.skip("tests/functions/build_python_ric.sh is not in the tree")
    with tempfile.TemporaryDirectory(prefix="stratus-e2e-ric-") as tmp:
        out = Path(tmp)
        proc = subprocess.run(["bash", str(script), str(out / "fn")], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"build_python_ric.sh failed:\n{proc.stdout}\n{proc.stderr}"
        return zip_dir(out / "fn")


def test_awslambdaric_custom_runtime(lam, fns, ric_zip):
    name = fns.create(ric_zip, handler="app.handler", runtime="provided.al2023")
    resp, out = _ok(lam, name, {"name": "ric"}, LogType="Tail")
    rid = resp["ResponseMetadata"]["RequestId"]
    assert out["hello"] == "ric" and out["count"] == 1 and out["runtime"] == "awslambdaric"
    assert out["request_id"] == rid
    assert 0 < out["remaining_ms"] <= 3000
    assert "hello from python-ric: name=ric count=1" in base64.b64decode(resp["LogResult"]).decode()
    _, out2 = _ok(lam, name, {})
    assert out2["count"] == 2

    failing = fns.create(ric_zip, handler="app.fail", runtime="provided.al2023")
    resp, body = _invoke(lam, failing, {})
    assert resp["FunctionError"] == "Unhandled", body
    err = json.loads(body)
    assert err["errorType"] == "ValueError" and err["errorMessage"] == "boom", err

    missing = fns.create(ric_zip, handler="nomodule.handler", runtime="provided.al2023")
    resp, body = _invoke(lam, missing, {})
    assert resp["FunctionError"] == "Unhandled", body
    assert json.loads(body)["errorType"] == "Runtime.ImportModuleError", body


# A custom runtime that breaks the Runtime API's rules on purpose and keeps
# what each refused call was answered, reporting all of it in every response.
MISBEHAVING_BOOTSTRAP = r'''#!/usr/bin/python3
import http.client
import json
import os
import uuid

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)


def call(method, path, body=b""):
    conn = http.client.HTTPConnection(HOST, int(PORT), timeout=60)
    conn.request(method, "/2018-06-01/runtime" + path, body=body)
    resp = conn.getresponse()
    data = resp.read()
    headers = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    try:
        doc = json.loads(data)
    except ValueError:
        doc = data.decode(errors="replace")
    return resp.status, headers, doc


seen = {}


def note(case, answer):
    status, _, doc = answer
    seen[case] = {"status": status, "errorType": doc.get("errorType") if isinstance(doc, dict) else None,
                  "body": doc}


ERROR = json.dumps({"errorType": "Runtime.Misbehaving", "errorMessage": "on purpose"}).encode()
note("response_before_next", call("POST", "/invocation/%s/response" % uuid.uuid4(), b'{"early": true}'))
note("error_before_next", call("POST", "/invocation/%s/error" % uuid.uuid4(), ERROR))
previous = None
while True:
    _, headers, event = call("GET", "/invocation/next")
    rid = headers["lambda-runtime-aws-request-id"]
    case = event.get("case") if isinstance(event, dict) else None
    if case == "unknown_id":
        note("unknown_id", call("POST", "/invocation/%s/response" % uuid.uuid4(), b'{"wrong": true}'))
    elif case == "finished_id":
        note("finished_id", call("POST", "/invocation/%s/response" % previous, b'{"stale": true}'))
    elif case == "next_while_open":
        note("next_while_open", call("GET", "/invocation/next"))
    if case == "twice":
        note("first_response", call("POST", "/invocation/%s/response" % rid, json.dumps({"first": rid}).encode()))
        note("second_response", call("POST", "/invocation/%s/response" % rid, b'{"second": true}'))
    elif case == "error_then_response":
        note("error_first", call("POST", "/invocation/%s/error" % rid, ERROR))
        note("response_after_error", call("POST", "/invocation/%s/response" % rid, b'{"late": true}'))
    else:
        call("POST", "/invocation/%s/response" % rid, json.dumps({"rid": rid, "case": case, "seen": seen}).encode())
    previous = rid
'''


def test_runtime_api_refuses_misbehaving_runtimes_like_lambda(lam, fns, py_zip, server):
    """Answers out of order are 403 InvalidStateTransition; an id that is not
    the open invocation's is 400 InvalidRequestID (as AWS's runtime API server
    checks them: state first, then id). The misbehaving sandbox keeps working,
    and so do other functions and the server."""
    code = zip_files({"bootstrap": MISBEHAVING_BOOTSTRAP}, executable=("bootstrap",))
    name = fns.create(code, handler="none", runtime="provided.al2023", Timeout=10)
    other = fns.create(py_zip)

    def other_works():
        resp, out = _ok(lam, other, {})
        assert out["function_name"] == other

    def report():
        resp, out = _ok(lam, name, {"case": "report"})
        assert out["rid"] == resp["ResponseMetadata"]["RequestId"], out
        return out["seen"]

    # The two calls before the first `next` happened during the cold start.
    for case in ("unknown_id", "next_while_open", "finished_id"):
        resp, out = _ok(lam, name, {"case": case})
        assert out["rid"] == resp["ResponseMetadata"]["RequestId"], out  # the invocation itself went through
        other_works()

    resp, out = _ok(lam, name, {"case": "twice"})
    assert out == {"first": resp["ResponseMetadata"]["RequestId"]}, out  # the first answer wins
    other_works()

    resp, body = _invoke(lam, name, {"case": "error_then_response"})
    assert resp["FunctionError"] == "Unhandled", body
    assert json.loads(body) == {"errorType": "Runtime.Misbehaving", "errorMessage": "on purpose"}
    other_works()

    seen = report()
    got = {case: (v["status"], v["errorType"]) for case, v in seen.items()}
    assert got == {
        "response_before_next": (403, "InvalidStateTransition"),
        "error_before_next": (403, "InvalidStateTransition"),
        "unknown_id": (400, "InvalidRequestID"),
        "next_while_open": (403, "InvalidStateTransition"),
        "finished_id": (400, "InvalidRequestID"),
        "first_response": (202, None),
        "second_response": (403, "InvalidStateTransition"),
        "error_first": (202, None),
        "response_after_error": (403, "InvalidStateTransition"),
    }, seen
    for case in ("unknown_id", "finished_id"):
        assert seen[case]["body"] == {"errorType": "InvalidRequestID", "errorMessage": "Invalid request ID"}, seen
    # All of it in one sandbox that never restarted, and the server is fine.
    assert server.proc.poll() is None
    other_works()
