"""Asynchronous invocation (InvocationType Event): 202 and the request id,
the event queued durably (it survives a kill -9 of the server), retries
counted exactly, event age, destinations, dead-letter targets, the event
invoke configuration API and its validation, and the payload limit.

Evidence that an event ran comes from a "recorder" destination function
that prints what it receives (`RECORD {...}`) to its log, read back with
`stratus logs`.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from stratus_harness import (
    ROLE,
    UUID_RE,
    Server,
    arn,
    expect_error,
    new_server,
    remove_data_dir,
    stratus_bin,
    unique_name,
    wait_active,
    wait_updated,
    zip_files,
)

RECORDER = zip_files({"app.py": (
    "import json\n"
    "def handler(event, context):\n"
    "    print('RECORD ' + json.dumps(event, separators=(',', ':')))\n"
    "    return {'recorded': True}\n"
)})


def _log_lines(server, name: str) -> list[str]:
    proc = subprocess.run([str(stratus_bin()), "logs", name], capture_output=True, text=True,
                          env=dict(os.environ, STRATUS_ENDPOINT=server.endpoint), timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def records(server, recorder: str) -> list[dict]:
    out = []
    for line in _log_lines(server, recorder):
        i = line.find("RECORD ")
        if i >= 0:
            out.append(json.loads(line[i + len("RECORD "):]))
    return out


def wait_records(server, recorder: str, n: int = 1, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    got: list[dict] = []
    while time.monotonic() < deadline:
        got = records(server, recorder)
        if len(got) >= n:
            return got
        time.sleep(0.5)
    raise AssertionError(f"{recorder} got {len(got)} records, not {n}, in {timeout}s; log tail:\n{server.log_tail()}")


def event(lam, name: str, payload, **kw) -> str:
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(payload), **kw)
    assert resp["StatusCode"] == 202, resp
    assert resp["Payload"].read() == b""
    rid = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert UUID_RE.match(rid), rid
    return rid


def test_event_invoke_is_accepted_and_runs(server, lam, fns, py_zip):
    recorder = fns.create(RECORDER)
    name = fns.create(py_zip)
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": arn(recorder)}})
    rid = event(lam, name, {"k": "v"})
    [rec] = wait_records(server, recorder)
    ctx = rec["requestContext"]
    assert ctx["requestId"] == rid
    assert ctx["condition"] == "Success"
    assert ctx["approximateInvokeCount"] == 1
    assert ctx["functionArn"] == arn(name) + ":$LATEST"
    assert rec["version"] == "1.0" and rec["timestamp"].endswith("Z")
    assert rec["requestPayload"] == {"k": "v"}
    assert rec["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    # The handler saw the 202's request id as its own.
    assert rec["responsePayload"]["request_id"] == rid
    assert rec["responsePayload"]["event"] == {"k": "v"}


def test_event_invoke_configs_are_listed_in_pages(lam, fns, py_zip):
    name = fns.create(py_zip)
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Timeout=7)
    wait_updated(lam, name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    for q in ("$LATEST", "1", "2"):
        lam.put_function_event_invoke_config(FunctionName=name, Qualifier=q, MaximumRetryAttempts=0)
    seen, marker, pages = [], None, 0
    while True:
        kw = {"Marker": marker} if marker else {}
        page = lam.list_function_event_invoke_configs(FunctionName=name, MaxItems=2, **kw)
        pages += 1
        assert len(page["FunctionEventInvokeConfigs"]) <= 2
        seen += [c["FunctionArn"] for c in page["FunctionEventInvokeConfigs"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert pages == 2
    assert sorted(seen) == sorted(arn(name) + f":{q}" for q in ("$LATEST", "1", "2"))
    expect_error(lam.list_function_event_invoke_configs, 400, "InvalidParameterValueException",
                 "Invalid Marker", FunctionName=name, Marker="!!not-a-marker!!")


def test_event_invoke_config_api_and_validation(lam, fns, py_zip):
    dest = fns.create(RECORDER)
    name = fns.create(py_zip)
    latest = arn(name) + ":$LATEST"
    expect_error(lam.get_function_event_invoke_config, 404, "ResourceNotFoundException",
                 f"The function {latest} doesn't have an EventInvokeConfig", FunctionName=name)
    expect_error(lam.put_function_event_invoke_config, 400, "InvalidParameterValueException",
                 "You must specify at least one of error handling or destination setting.",
                 FunctionName=name)
    expect_error(lam.put_function_event_invoke_config, 400, "ValidationException",
                 "maximumRetryAttempts", FunctionName=name, MaximumRetryAttempts=3)
    expect_error(lam.put_function_event_invoke_config, 400, "ValidationException",
                 "maximumEventAgeInSeconds", FunctionName=name, MaximumEventAgeInSeconds=59)
    expect_error(lam.put_function_event_invoke_config, 400, "ValidationException",
                 "maximumEventAgeInSeconds", FunctionName=name, MaximumEventAgeInSeconds=21601)
    expect_error(lam.put_function_event_invoke_config, 400, "InvalidParameterValueException",
                 "itself", FunctionName=name,
                 DestinationConfig={"OnFailure": {"Destination": arn(name)}})
    for foreign in ("arn:aws:sqs:us-east-1:000000000000:q", "arn:aws:sns:us-east-1:000000000000:t",
                    "arn:aws:events:us-east-1:000000000000:event-bus/default", "arn:aws:s3:::bucket"):
        expect_error(lam.put_function_event_invoke_config, 400, "InvalidParameterValueException",
                     "Stratus does not run", FunctionName=name,
                     DestinationConfig={"OnSuccess": {"Destination": foreign}})
    put = lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": arn(dest)}})
    assert put["FunctionArn"] == latest
    assert put["MaximumRetryAttempts"] == 1
    assert put["DestinationConfig"]["OnFailure"]["Destination"] == arn(dest)
    assert "MaximumEventAgeInSeconds" not in put
    # Update merges; Put replaces.
    upd = lam.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=120)
    assert (upd["MaximumRetryAttempts"], upd["MaximumEventAgeInSeconds"]) == (1, 120)
    assert upd["DestinationConfig"]["OnFailure"]["Destination"] == arn(dest)
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["MaximumEventAgeInSeconds"] == 120 and got["LastModified"]
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [latest]
    rep = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert "MaximumEventAgeInSeconds" not in rep and rep["DestinationConfig"]["OnFailure"] == {}
    lam.delete_function_event_invoke_config(FunctionName=name)
    expect_error(lam.delete_function_event_invoke_config, 404, "ResourceNotFoundException",
                 "doesn't have an EventInvokeConfig", FunctionName=name)
    assert lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"] == []
    # Dead-letter targets: a Stratus function, nothing else.
    expect_error(lam.update_function_configuration, 400, "InvalidParameterValueException",
                 "Stratus does not run", FunctionName=name,
                 DeadLetterConfig={"TargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq"})
    cfg = lam.update_function_configuration(FunctionName=name, DeadLetterConfig={"TargetArn": arn(dest)})
    assert cfg["DeadLetterConfig"] == {"TargetArn": arn(dest)}
    expect_error(lam.create_function, 400, "InvalidParameterValueException", "Stratus does not run",
                 FunctionName=unique_name("dlq"), Runtime="python3.12", Role=ROLE, Handler="app.handler",
                 Code={"ZipFile": py_zip},
                 DeadLetterConfig={"TargetArn": "arn:aws:sns:us-east-1:000000000000:topic"})


def test_event_payload_limits(lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.noop")
    # Over the old 256 KB limit, under 1 MB: accepted.
    event(lam, name, {"pad": "x" * 300_000})
    expect_error(lam.invoke, 413, "RequestEntityTooLargeException",
                 "Request must be smaller than 1048576 bytes for the InvokeFunction operation",
                 FunctionName=name, InvocationType="Event",
                 Payload=json.dumps({"pad": "x" * 1_048_576}))
    expect_error(lam.invoke, 400, "InvalidRequestContentException", "Could not parse request body into json",
                 FunctionName=name, InvocationType="Event", Payload=b"{not json")


def test_zero_reserved_concurrency_fails_the_event(server, lam, fns, py_zip):
    recorder = fns.create(RECORDER)
    name = fns.create(py_zip)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": arn(recorder)}})
    rid = event(lam, name, {"n": 0})
    [rec] = wait_records(server, recorder)
    assert rec["requestContext"]["requestId"] == rid
    assert rec["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert rec["requestContext"]["approximateInvokeCount"] == 0


def test_zero_reserved_concurrency_set_after_publish_fails_a_versions_event(server, lam, fns, py_zip):
    recorder = fns.create(RECORDER)
    name = fns.create(py_zip)
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    # Reserved concurrency is the function's, whatever the version's snapshot says.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    lam.put_function_event_invoke_config(
        FunctionName=name, Qualifier="1", DestinationConfig={"OnFailure": {"Destination": arn(recorder)}})
    rid = event(lam, name, {"n": 0}, Qualifier="1")
    [rec] = wait_records(server, recorder)
    assert rec["requestContext"]["requestId"] == rid
    assert rec["requestContext"]["condition"] == "ZeroReservedConcurrency"


@pytest.fixture(scope="module")
def fast_retries():
    """A server whose async retries wait 1 s, then 2 s (not 1, then 2 minutes)."""
    srv = new_server("async-fast-retries", ["--async-retry-delay-secs", "1"])
    srv.start()
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


def _starts(server, name: str, rid: str) -> int:
    return sum(1 for line in _log_lines(server, name) if line.startswith(f"START RequestId: {rid}"))


@pytest.mark.parametrize("retries", [2, 0])
def test_retries_are_counted_exactly(fast_retries, py_zip, retries):
    lam = fast_retries.client()
    recorder = unique_name("recorder")
    name = unique_name(f"fails-{retries}")
    lam.create_function(FunctionName=recorder, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": RECORDER})
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.fail",
                        Code={"ZipFile": py_zip})
    wait_active(lam, recorder)
    wait_active(lam, name)
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=retries,
        DestinationConfig={"OnFailure": {"Destination": arn(recorder)}})
    started = time.monotonic()
    rid = event(lam, name, {"msg": "async"})
    [rec] = wait_records(fast_retries, recorder, timeout=60)
    took = time.monotonic() - started
    ctx = rec["requestContext"]
    assert ctx["requestId"] == rid
    assert ctx["condition"] == "RetriesExhausted"
    assert ctx["approximateInvokeCount"] == retries + 1
    assert rec["responseContext"]["functionError"] == "Unhandled"
    assert rec["responsePayload"]["errorType"] == "ValueError"
    assert rec["responsePayload"]["errorMessage"] == "boom: async"
    # Every attempt ran with the same request id; no attempt more.
    assert _starts(fast_retries, name, rid) == retries + 1
    # 1 s, then 2 s between attempts.
    if retries == 2:
        assert took >= 3.0, took
    time.sleep(1.5)
    assert len(records(fast_retries, recorder)) == 1
    for n in (name, recorder):
        lam.delete_function(FunctionName=n)


def test_dead_letter_target_gets_the_failed_event(fast_retries, py_zip):
    lam = fast_retries.client()
    dlq = unique_name("dlq")
    name = unique_name("dlq-src")
    lam.create_function(FunctionName=dlq, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": RECORDER})
    wait_active(lam, dlq)
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.fail",
                        Code={"ZipFile": py_zip}, DeadLetterConfig={"TargetArn": arn(dlq)})
    wait_active(lam, name)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    event(lam, name, {"msg": "to the dlq"})
    [rec] = wait_records(fast_retries, dlq)
    assert rec == {"msg": "to the dlq"}
    for n in (name, dlq):
        lam.delete_function(FunctionName=n)


@pytest.mark.timeout(200)
def test_event_age_exceeded_while_throttled(server, fns, py_zip):
    lam = server.client(read_timeout=150)
    recorder = fns.create(RECORDER)
    name = fns.create(py_zip, handler="app.sleep", Timeout=120)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=60, MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": arn(recorder)}})
    # A synchronous invoke holds the only slot for longer than the event may wait.
    holder = threading.Thread(
        target=lambda: lam.invoke(FunctionName=name, Payload=json.dumps({"seconds": 80}))["Payload"].read())
    holder.start()
    time.sleep(2)
    started = time.monotonic()
    rid = event(lam, name, {"seconds": 0})
    [rec] = wait_records(server, recorder, timeout=90)
    waited = time.monotonic() - started
    assert rec["requestContext"]["requestId"] == rid
    assert rec["requestContext"]["condition"] == "EventAgeExceeded"
    assert rec["requestContext"]["approximateInvokeCount"] == 0
    assert 59 <= waited <= 75, waited
    assert _starts(server, name, rid) == 0
    holder.join(timeout=60)


@pytest.mark.timeout(200)
def test_a_queued_event_survives_kill_9(py_zip):
    """The event is durable once the 202 is sent: the server is killed
    (SIGKILL) while the event waits (its function's only slot is taken), and
    the restarted server runs it."""
    first = new_server("async-kill")
    first.start()
    data_dir = first.data_dir
    lam = first.client(read_timeout=90)
    recorder, name = unique_name("recorder"), unique_name("survivor")
    lam.create_function(FunctionName=recorder, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": RECORDER})
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.sleep",
                        Code={"ZipFile": py_zip}, Timeout=60)
    wait_active(lam, recorder)
    wait_active(lam, name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": arn(recorder)}})

    def hold():
        try:
            lam.invoke(FunctionName=name, Payload=json.dumps({"seconds": 50}))["Payload"].read()
        except Exception:  # the server is killed under it
            pass

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    time.sleep(2)
    rid = event(lam, name, {"seconds": 0, "mark": "survivor"})
    time.sleep(0.5)
    first.proc.kill()
    first.proc.wait()
    first.stop()
    # The same data dir, cgroup parent and uid range: the restart cleans up
    # what the killed server left.
    second = Server(data_dir=data_dir, log_path=first.log_path.with_name("server-async-kill-restarted.log"),
                    extra_args=list(first.extra_args))
    second.start()
    try:
        [rec] = wait_records(second, recorder, timeout=60)
        assert rec["requestContext"]["requestId"] == rid
        assert rec["requestContext"]["condition"] == "Success"
        assert rec["requestPayload"] == {"seconds": 0, "mark": "survivor"}
        assert rec["responsePayload"]["request_id"] == rid
    finally:
        second.stop()
        remove_data_dir(data_dir)
