"""GET /metrics against the real server: read with plain urllib (no
credentials), after invoking with boto3. Every function here is new, so its
series start from nothing; the shared server's sandbox gauges are checked
with bounds only.

Invokes go through a client that sends each request exactly once: every
attempt the server sees is an invocation, and the harness's client retries a
429 once (botocore's `max_attempts` counts retries, not attempts)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from stratus_harness import DEFAULT_REGION

ACCOUNT = "000000000000"
OPENMETRICS = "application/openmetrics-text"
RESERVED_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def once(server):
    """A Lambda client that never retries."""
    return boto3.client(
        "lambda", endpoint_url=server.endpoint, region_name=DEFAULT_REGION,
        aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=5),
    )


def scrape(server) -> dict:
    """Every sample of one scrape: {(name, frozenset(labels)): value}."""
    req = urllib.request.Request(server.endpoint + "/metrics")
    assert "Authorization" not in req.headers
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith(OPENMETRICS), r.headers["Content-Type"]
        text = r.read().decode()
    assert text.endswith("# EOF\n"), text[-200:]
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not an OpenMetrics sample: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def of(samples: dict, name: str, function: str | None = None, **labels) -> float | None:
    """One sample's value (None when the series does not exist)."""
    if function is not None:
        labels = {"account": ACCOUNT, "function": function, **labels}
    return samples.get((name, frozenset(labels.items())))


def invoke(client, name: str, event: dict) -> dict:
    resp = client.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    resp["Payload"] = resp["Payload"].read()
    resp["Log"] = base64.b64decode(resp.get("LogResult", "")).decode()
    return resp


def report_ms(log: str, field: str) -> float | None:
    m = re.search(rf"\t{field}: ([0-9.]+) ms", "\t" + log.split("REPORT ", 1)[-1])
    return float(m.group(1)) if m else None


def test_invokes_errors_cold_starts_and_durations(server, once, fns, py_zip):
    name = fns.create(py_zip, handler="app.dispatch", Timeout=1)
    before = scrape(server)
    assert of(before, "stratus_invocations_total", name, outcome="success") is None

    first = invoke(once, name, {"action": "noop"})
    assert "FunctionError" not in first
    init_ms = report_ms(first["Log"], "Init Duration")
    run_ms = report_ms(first["Log"], "Duration")
    assert init_ms is not None and run_ms is not None, first["Log"]
    s = scrape(server)
    assert of(s, "stratus_invocations_total", name, outcome="success") == 1
    assert of(s, "stratus_cold_starts_total", name) == 1
    assert of(s, "stratus_init_duration_seconds_count", name) == 1
    # The histograms hold what the REPORT line says (printed to 0.01 ms).
    assert abs(of(s, "stratus_init_duration_seconds_sum", name) - init_ms / 1000) < 1e-5
    assert abs(of(s, "stratus_invocation_duration_seconds_sum", name) - run_ms / 1000) < 1e-5

    warm = invoke(once, name, {"action": "noop"})
    assert report_ms(warm["Log"], "Init Duration") is None, "a warm invoke"
    assert invoke(once, name, {"action": "fail"})["FunctionError"] == "Unhandled"
    timed_out = invoke(once, name, {"action": "sleep", "seconds": 3})
    assert json.loads(timed_out["Payload"])["errorType"] == "Sandbox.Timedout"
    # The timed-out sandbox was killed: this one starts a new sandbox.
    again = invoke(once, name, {"action": "noop"})
    assert report_ms(again["Log"], "Init Duration") is not None

    s = scrape(server)
    assert of(s, "stratus_invocations_total", name, outcome="success") == 3
    assert of(s, "stratus_invocations_total", name, outcome="function_error") == 2
    assert of(s, "stratus_invocations_total", name, outcome="throttled") is None
    assert of(s, "stratus_invocation_errors_total", name, error_type="Unhandled") == 1
    assert of(s, "stratus_invocation_errors_total", name, error_type="Sandbox.Timedout") == 1
    assert of(s, "stratus_invocation_duration_seconds_count", name) == 5
    # The timed-out invoke ran for its whole 1 s timeout.
    assert of(s, "stratus_invocation_duration_seconds_sum", name) >= 0.9
    assert of(s, "stratus_invocation_duration_seconds_bucket", name, le="+Inf") == 5
    assert of(s, "stratus_cold_starts_total", name) == 2
    assert of(s, "stratus_init_duration_seconds_count", name) == 2
    assert of(s, "stratus_init_duration_seconds_sum", name) > init_ms / 1000


def test_throttles_count_their_reason(server, once, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.noop")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for _ in range(3):
        try:
            once.invoke(FunctionName=name, Payload=b"{}")
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            assert e.response["Reason"] == RESERVED_REASON, e.response
        else:
            raise AssertionError("expected a 429")
    s = scrape(server)
    assert of(s, "stratus_throttles_total", name, reason=RESERVED_REASON) == 3
    assert of(s, "stratus_invocations_total", name, outcome="throttled") == 3
    assert of(s, "stratus_invocations_total", name, outcome="success") is None
    assert of(s, "stratus_invocation_duration_seconds_count", name) is None, "nothing ran"
    assert of(s, "stratus_cold_starts_total", name) is None

    lam.delete_function_concurrency(FunctionName=name)
    assert once.invoke(FunctionName=name, Payload=b"{}")["StatusCode"] == 200
    s = scrape(server)
    assert of(s, "stratus_invocations_total", name, outcome="success") == 1
    assert of(s, "stratus_throttles_total", name, reason=RESERVED_REASON) == 3


def test_concurrency_and_sandbox_gauges_follow_a_running_invoke(server, once, fns, py_zip):
    name = fns.create(py_zip, handler="app.sleep", Timeout=30)
    result = {}
    slow = threading.Thread(
        target=lambda: result.update(invoke(once, name, {"seconds": 3})), daemon=True
    )
    slow.start()

    def running(s: dict) -> bool:
        return of(s, "stratus_concurrent_executions", name) is not None and \
            (of(s, "stratus_sandboxes", state="busy") or 0) >= 1

    # Wait until the handler runs (its 3 s sleep leaves time to look).
    deadline = time.monotonic() + 10
    during = scrape(server)
    while not running(during) and time.monotonic() < deadline:
        time.sleep(0.05)
        during = scrape(server)
    assert of(during, "stratus_concurrent_executions", name) == 1, during
    assert of(during, "stratus_account_concurrent_executions", account=ACCOUNT) >= 1
    assert of(during, "stratus_sandboxes", state="busy") >= 1
    assert of(during, "stratus_sandboxes", state="starting") is not None

    slow.join(timeout=30)
    assert result.get("StatusCode") == 200 and "FunctionError" not in result, result
    after = scrape(server)
    assert of(after, "stratus_concurrent_executions", name) is None, "nothing of it runs now"
    # Its sandbox stays warm (keep-alive) and is idle now.
    assert of(after, "stratus_sandboxes", state="idle") >= 1


def test_async_events_received_aged_and_dropped(server, once, fns, py_zip):
    ok = fns.create(py_zip)
    blocked = fns.create(py_zip)
    once.put_function_concurrency(FunctionName=blocked, ReservedConcurrentExecutions=0)
    for name in (ok, ok, blocked):
        assert once.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    deadline = time.time() + 30
    while True:
        s = scrape(server)
        done = (of(s, "stratus_async_event_age_seconds_count", ok) == 2
                and of(s, "stratus_async_events_dropped_total", blocked,
                       condition="ZeroReservedConcurrency") == 1)
        if done or time.time() > deadline:
            break
        time.sleep(0.2)
    assert of(s, "stratus_async_events_received_total", ok) == 2
    assert of(s, "stratus_async_events_received_total", blocked) == 1
    assert of(s, "stratus_async_event_age_seconds_count", ok) == 2
    assert of(s, "stratus_async_event_age_seconds_sum", ok) < 30
    assert of(s, "stratus_async_events_dropped_total", blocked, condition="ZeroReservedConcurrency") == 1
    assert of(s, "stratus_async_events_dropped_total", ok, condition="ZeroReservedConcurrency") is None
