"""Function logs kept per function and read with `stratus logs [--follow]`."""

from __future__ import annotations

import json
import os
import subprocess
import time

from stratus_harness import stratus_bin


def _env(server) -> dict:
    return dict(os.environ, STRATUS_ENDPOINT=server.endpoint)


def _logs(server, name: str, *extra: str) -> str:
    proc = subprocess.run([str(stratus_bin()), "logs", name, *extra], capture_output=True, text=True,
                          env=_env(server), timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _invoke(lam, name: str, event: dict | None = None) -> str:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}))
    resp["Payload"].read()
    assert "FunctionError" not in resp
    return resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_logs_keep_every_invocation_in_order(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.handler")
    ids = [_invoke(lam, name) for _ in range(3)]
    lines = _logs(server, name).splitlines()
    for rid in ids:
        start = lines.index(f"START RequestId: {rid} Version: $LATEST")
        assert lines[start + 1] == f"hello-from-handler {rid}", lines[start:start + 3]
        assert lines[start + 2] == f"END RequestId: {rid}"
        assert lines[start + 3].startswith(f"REPORT RequestId: {rid}\tDuration: ")
    starts = [i for i, line in enumerate(lines) if line.startswith("START RequestId: ")]
    assert [lines[i].split()[2] for i in starts] == ids, "invocations in order"
    verbose = _logs(server, name, "--verbose").splitlines()
    assert all("/[$LATEST]" in line.split(" ", 2)[1] for line in verbose), verbose[:2]


def test_follow_prints_new_lines_as_they_come(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.handler")
    proc = subprocess.Popen([str(stratus_bin()), "logs", name, "--follow"], stdout=subprocess.PIPE,
                            text=True, env=_env(server), stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        rid = _invoke(lam, name)
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if line.startswith(f"REPORT RequestId: {rid}"):
                break
        else:
            raise AssertionError(f"--follow did not print the invocation: {seen}")
        assert f"START RequestId: {rid} Version: $LATEST\n" in seen
    finally:
        proc.kill()
        proc.wait()


def test_a_chatty_function_keeps_a_bounded_log(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.chatty")
    for _ in range(4):
        _invoke(lam, name, {"lines": 5000})  # ~350 KB of output per invoke
    text = _logs(server, name)
    # At most 1 MiB of messages per function is kept, the newest.
    assert len(text.encode()) < 1024 * 1024 + 5000 * 20, len(text)
    assert "line 04999" in text.splitlines()[-3], text.splitlines()[-4:]


def test_logs_of_a_deleted_function_are_gone(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.handler")
    _invoke(lam, name)
    assert "START RequestId" in _logs(server, name)
    lam.delete_function(FunctionName=name)
    proc = subprocess.run([str(stratus_bin()), "logs", name], capture_output=True, text=True,
                          env=_env(server), timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert "ResourceNotFoundException" in proc.stderr
