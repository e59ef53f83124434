"""Reserved concurrency, the unreserved minimum and GetAccountSettings,
against the real server."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError
from stratus_harness import ROLE, expect_error, new_server, remove_data_dir, unique_name, wait_active

RESERVED_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"


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
