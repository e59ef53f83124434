"""Reserved concurrency, the unreserved minimum and GetAccountSettings,
against the real server."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError
from stratus_harness import (
    ROLE,
    expect_error,
    new_server,
    remove_data_dir,
    stratus_bin,
    unique_name,
    wait_active,
)

RESERVED_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"
SCALING_REASON = "FunctionInvocationRateLimitExceeded"


def test_put_get_delete_round_trip(lam, fns, py_zip):
    name = fns.create(py_zip)
    assert {k: v for k, v in lam.get_function_concurrency(FunctionName=name).items()
            if k != "ResponseMetadata"} == {}
    assert "Concurrency" not in lam.get_function(FunctionName=name)

    resp = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}

    # The full ARN works as well as the name.
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    lam.put_function_concurrency(FunctionName=arn, ReservedConcurrentExecutions=6)
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 6

    resp = lam.delete_function_concurrency(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    assert "Concurrency" not in lam.get_function(FunctionName=name)


def test_concurrency_errors(lam, fns, py_zip):
    name = fns.create(py_zip)
    missing = unique_name("missing")
    expect_error(lam.put_function_concurrency, 404, "ResourceNotFoundException", "Function not found",
                 FunctionName=missing, ReservedConcurrentExecutions=1)
    expect_error(lam.get_function_concurrency, 404, "ResourceNotFoundException", FunctionName=missing)
    expect_error(lam.delete_function_concurrency, 404, "ResourceNotFoundException", FunctionName=missing)
    expect_error(lam.put_function_concurrency, 400, "ValidationException",
                 "Member must have value greater than or equal to 0",
                 FunctionName=name, ReservedConcurrentExecutions=-1)
    for qualified in (f"{name}:1", f"{name}:$LATEST"):
        expect_error(lam.put_function_concurrency, 400, "InvalidParameterValueException",
                     "This operation is permitted on Lambda functions only",
                     FunctionName=qualified, ReservedConcurrentExecutions=1)
    # 1000 (default account limit) - 901 < 100.
    expect_error(lam.put_function_concurrency, 400, "InvalidParameterValueException",
                 "decreases account's UnreservedConcurrentExecution below its minimum value of [100]",
                 FunctionName=name, ReservedConcurrentExecutions=901)


def _throttled(call, **kwargs) -> dict:
    try:
        call(**kwargs)
    except ClientError as e:
        return e.response
    raise AssertionError("expected a 429")


def test_reserved_zero_throttles_every_invoke(lam, fns, py_zip):
    name = fns.create(py_zip)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for _ in range(3):
        err = _throttled(lam.invoke, FunctionName=name, Payload=b"{}")
        meta = err["ResponseMetadata"]
        assert meta["HTTPStatusCode"] == 429
        assert err["Error"]["Code"] == "TooManyRequestsException"
        assert err["Reason"] == RESERVED_REASON, err
        assert err["Error"]["Message"] == "Rate Exceeded."
        assert "retry-after" in meta["HTTPHeaders"]
    lam.delete_function_concurrency(FunctionName=name)
    assert lam.invoke(FunctionName=name, Payload=b"{}")["StatusCode"] == 200


def test_reserved_one_admits_one_invoke_at_a_time(lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.sleep", Timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lam.invoke, FunctionName=name, Payload=json.dumps({"seconds": 3}).encode())
        # Wait until the long invoke is admitted (it is in flight for 3 s).
        time.sleep(1.0)
        err = _throttled(lam.invoke, FunctionName=name, Payload=json.dumps({"seconds": 0}).encode())
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert err["Reason"] == RESERVED_REASON, err
        first = slow.result(timeout=30)
    assert first["StatusCode"] == 200 and "FunctionError" not in first
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"seconds": 0}).encode())
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp


def _settings(client) -> dict:
    s = client.get_account_settings()
    s.pop("ResponseMetadata")
    return s


def test_account_settings_and_the_unreserved_minimum(py_zip):
    srv = new_server("concurrency-150", extra_args=["--account-concurrency", "150"])
    srv.start()
    data_dir = srv.data_dir
    try:
        lam = srv.client()
        s = _settings(lam)
        assert s["AccountLimit"] == {
            "TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
            "ConcurrentExecutions": 150, "UnreservedConcurrentExecutions": 150,
        }
        assert s["AccountUsage"] == {"TotalCodeSize": 0, "FunctionCount": 0}

        names = [unique_name("acct"), unique_name("acct")]
        sizes = []
        for n in names:
            resp = lam.create_function(FunctionName=n, Runtime="python3.12", Role=ROLE,
                                       Handler="app.handler", Code={"ZipFile": py_zip})
            sizes.append(resp["CodeSize"])
            wait_active(lam, n)
        expect_error(lam.put_function_concurrency, 400, "InvalidParameterValueException",
                     "Specified ReservedConcurrentExecutions for function decreases account's "
                     "UnreservedConcurrentExecution below its minimum value of [100].",
                     FunctionName=names[0], ReservedConcurrentExecutions=60)
        lam.put_function_concurrency(FunctionName=names[0], ReservedConcurrentExecutions=30)
        # The sum counts: 30 + 30 would leave 90.
        expect_error(lam.put_function_concurrency, 400, "InvalidParameterValueException",
                     FunctionName=names[1], ReservedConcurrentExecutions=30)
        lam.put_function_concurrency(FunctionName=names[1], ReservedConcurrentExecutions=20)
        s = _settings(lam)
        assert s["AccountLimit"]["ConcurrentExecutions"] == 150
        assert s["AccountLimit"]["UnreservedConcurrentExecutions"] == 100
        assert s["AccountUsage"] == {"TotalCodeSize": sum(sizes), "FunctionCount": 2}
        # Deleting a function gives its reservation back.
        lam.delete_function(FunctionName=names[1])
        assert _settings(lam)["AccountLimit"]["UnreservedConcurrentExecutions"] == 120
    finally:
        srv.stop()
        remove_data_dir(data_dir)


def test_reservation_survives_a_restart(py_zip):
    first = new_server("concurrency-restart")
    first.start()
    data_dir = first.data_dir
    name = unique_name("reserved-restart")
    try:
        lam = first.client()
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE,
                            Handler="app.handler", Code={"ZipFile": py_zip})
        wait_active(lam, name)
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    finally:
        first.stop()
    second = new_server("concurrency-restarted", data_dir=data_dir)
    second.start()
    try:
        lam = second.client()
        assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 0
        assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 0}
        assert _settings(lam)["AccountLimit"]["UnreservedConcurrentExecutions"] == 1000
        # Enforced after the restart, not only remembered.
        err = _throttled(lam.invoke, FunctionName=name, Payload=b"{}")
        assert err["Reason"] == RESERVED_REASON, err
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=900)
        assert _settings(lam)["AccountLimit"]["UnreservedConcurrentExecutions"] == 100
        lam.delete_function(FunctionName=name)
    finally:
        second.stop()
        remove_data_dir(data_dir)


def _together(lam, name, payloads) -> list[tuple[str, object, object]]:
    """Invokes `name` once per payload, all released at the same instant by a
    barrier. Returns ("ok", response, body) or ("error", error response, None)."""
    barrier = threading.Barrier(len(payloads))

    def one(payload):
        barrier.wait()
        try:
            resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
            return "ok", resp, resp["Payload"].read()
        except ClientError as e:
            return "error", e.response, None

    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(one, payloads))


def _assert_throttled(err: dict, reason: str) -> None:
    meta = err["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 429, err
    assert err["Error"]["Code"] == "TooManyRequestsException", err
    assert err["Reason"] == reason, err
    assert err["Error"]["Message"] == "Rate Exceeded.", err
    assert "retry-after" in meta["HTTPHeaders"], meta


def test_reserved_n_admits_n_of_n_plus_one_concurrent_invokes(lam, fns, py_zip):
    """Reserved concurrency 3, four invokes started together: exactly one 429."""
    name = fns.create(py_zip, handler="app.sleep", Timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    results = _together(lam, name, [{"seconds": 3}] * 4)
    ok = [r for r in results if r[0] == "ok"]
    throttled = [r[1] for r in results if r[0] == "error"]
    assert len(ok) == 3 and len(throttled) == 1, [(r[0], r[1].get("Error") if r[0] == "error" else r[2][:200])
                                                 for r in results]
    _assert_throttled(throttled[0], RESERVED_REASON)
    for _, resp, body in ok:
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body
    assert len({json.loads(body)["sandbox"] for _, _, body in ok}) == 3
    # Once they are done, the slots are free again.
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"seconds": 0}).encode())
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp


def test_scaling_bucket_throttles_cold_starts_not_warm_invokes(py_zip):
    """--scale-burst 2 with a refill of one token per 1,000 s: the third
    concurrent cold start is refused with Lambda's scaling Reason, while the
    two sandboxes already started keep serving warm invokes."""
    srv = new_server("scale-burst-2", extra_args=["--scale-burst", "2", "--scale-refill-per-sec", "0.001"])
    srv.start()
    data_dir = srv.data_dir
    try:
        lam = srv.client()
        name = unique_name("scaling")
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.sleep",
                            Code={"ZipFile": py_zip}, Timeout=30)
        wait_active(lam, name)

        results = _together(lam, name, [{"seconds": 2}] * 3)
        ok = [r for r in results if r[0] == "ok"]
        throttled = [r[1] for r in results if r[0] == "error"]
        assert len(ok) == 2 and len(throttled) == 1, [r[1].get("Error") if r[0] == "error" else r[2][:200]
                                                     for r in results]
        _assert_throttled(throttled[0], SCALING_REASON)
        sandboxes = {json.loads(body)["sandbox"] for _, _, body in ok}
        assert len(sandboxes) == 2

        # Warm invokes take no token: one at a time and two at once all run,
        # in the two sandboxes started above.
        for _ in range(4):
            resp = lam.invoke(FunctionName=name, Payload=json.dumps({"seconds": 0}).encode())
            body = resp["Payload"].read()
            assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body
            assert json.loads(body)["sandbox"] in sandboxes
        both = _together(lam, name, [{"seconds": 1}] * 2)
        assert [r[0] for r in both] == ["ok", "ok"], both
        assert {json.loads(r[2])["sandbox"] for r in both} == sandboxes

        # A third at once needs a new sandbox, and the bucket is still empty.
        again = _together(lam, name, [{"seconds": 1}] * 3)
        assert sorted(r[0] for r in again) == ["error", "ok", "ok"], again
        _assert_throttled(next(r[1] for r in again if r[0] == "error"), SCALING_REASON)
        lam.delete_function(FunctionName=name)
    finally:
        srv.stop()
        remove_data_dir(data_dir)


def test_scaling_flags_refuse_zero_and_nonsense(tmp_path):
    for flag, value in (("--scale-burst", "0"), ("--scale-refill-per-sec", "0"),
                        ("--scale-refill-per-sec", "-2"), ("--scale-refill-per-sec", "fast")):
        proc = subprocess.run([str(stratus_bin()), "server", "--data-dir", str(tmp_path), f"{flag}={value}"],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (flag, value, proc.returncode, proc.stderr)
        assert f"invalid value '{value}' for '{flag}" in proc.stderr, proc.stderr
