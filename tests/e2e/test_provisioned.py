"""Provisioned concurrency end to end: configs on versions and aliases,
sandboxes initialised before any invoke, warm invokes with no Init Duration,
spill-over to on-demand sandboxes, keep-alive sparing them, deletion,
validation errors, a restart re-provisioning them, and the AWS CLI.

Own servers (short keep-alive), so that the shared server's sandboxes and
metrics are not disturbed."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from stratus_harness import (
    FUNCTIONS,
    ROLE,
    FunctionFactory,
    expect_error,
    new_server,
    remove_data_dir,
    unique_name,
    wait_active,
    wait_updated,
    zip_dir,
)

KEEP_ALIVE = 2


@pytest.fixture(scope="module")
def srv():
    s = new_server("provisioned", ["--keep-alive-secs", str(KEEP_ALIVE)])
    s.start()
    yield s
    s.stop()
    remove_data_dir(s.data_dir)


@pytest.fixture(scope="module")
def plam(srv):
    return srv.client()


@pytest.fixture
def pfns(plam, request):
    f = FunctionFactory(plam, request.node.name[:20])
    yield f
    f.cleanup()


def cli_sandboxes(srv, name: str) -> list[dict]:
    from stratus_harness import stratus_bin
    env = dict(os.environ, STRATUS_ENDPOINT=srv.endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
    env.pop("AWS_PROFILE", None)
    p = subprocess.run([str(stratus_bin()), "function", "sandboxes", name, "--output", "json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["Sandboxes"]


def wait_status(lam, name: str, qualifier: str, want: str = "READY", timeout: float = 60.0) -> tuple[dict, list[str]]:
    seen = []
    deadline = time.time() + timeout
    while True:
        got = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if not seen or seen[-1] != got["Status"]:
            seen.append(got["Status"])
        if got["Status"] == want:
            return got, seen
        assert got["Status"] != "FAILED" or want == "FAILED", got
        assert time.time() < deadline, f"still {got}"
        time.sleep(0.05)


def invoke(lam, name: str, qualifier: str, payload: dict | None = None) -> tuple[dict, str]:
    r = lam.invoke(FunctionName=name, Qualifier=qualifier, LogType="Tail",
                   Payload=json.dumps(payload or {}).encode())
    body = json.loads(r["Payload"].read())
    log = base64.b64decode(r["LogResult"]).decode()
    return body, log


def metrics(srv) -> str:
    with urllib.request.urlopen(srv.endpoint + "/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text: str, name: str, fn: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'function="{fn}"' in line and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def publish(lam, name: str) -> str:
    return lam.publish_version(FunctionName=name)["Version"]


def test_version_config_warm_invokes_spill_over_keep_alive_and_delete(srv, plam, pfns, py_zip):
    name = pfns.create(py_zip, Timeout=30)
    v = publish(plam, name)
    put = plam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=v,
                                                  ProvisionedConcurrentExecutions=2)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] in ("IN_PROGRESS", "READY")
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$", put["LastModified"]), put
    got, seen = wait_status(plam, name, v)
    assert got["AvailableProvisionedConcurrentExecutions"] == 2
    assert got["AllocatedProvisionedConcurrentExecutions"] == 2
    assert seen[-1] == "READY"

    # The sandboxes exist before any invoke, marked provisioned.
    sbx = cli_sandboxes(srv, name)
    assert len(sbx) == 2 and all(s["Provisioned"] and s["State"] == "idle" and s["Version"] == v for s in sbx), sbx
    m = metrics(srv)
    assert metric(m, "stratus_provisioned_sandboxes", name, state="idle") == 2, m

    # First invoke: warm, no Init Duration, the provisioned init type.
    t0 = time.monotonic()
    body, log = invoke(plam, name, v)
    warm_ms = (time.monotonic() - t0) * 1000
    assert body["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"
    assert body["count"] == 1 and body["function_version"] == v
    assert "REPORT RequestId" in log and "Init Duration" not in log, log
    provisioned_ids = {s["Id"] for s in sbx}

    # $LATEST is on demand: a cold start with an Init Duration.
    t0 = time.monotonic()
    body, log = invoke(plam, name, "$LATEST")
    cold_ms = (time.monotonic() - t0) * 1000
    assert body["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert "Init Duration" in log, log
    print(f"\n[provisioned] first invoke: provisioned {warm_ms:.1f} ms, on-demand cold {cold_ms:.1f} ms")

    m = metrics(srv)
    assert metric(m, "stratus_provisioned_invocations_total", name) == 1, m

    # Keep-alive (2 s) does not reap them.
    time.sleep(KEEP_ALIVE * 2 + 1)
    after = cli_sandboxes(srv, name)
    assert provisioned_ids <= {s["Id"] for s in after}, after
    assert all(s["Provisioned"] for s in after), after

    # Deleting the config stops them.
    plam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=v)
    expect_error(lambda: plam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=v),
                 404, "ProvisionedConcurrencyConfigNotFoundException")
    deadline = time.time() + 10
    while cli_sandboxes(srv, name) and time.time() < deadline:
        time.sleep(0.2)
    assert not [s for s in cli_sandboxes(srv, name) if s["Provisioned"]]


def test_spill_over_beyond_the_provisioned_count(srv, plam, pfns, py_zip):
    name = pfns.create(py_zip, handler="app.dispatch", Timeout=30)
    v = publish(plam, name)
    plam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=v, ProvisionedConcurrentExecutions=2)
    wait_status(plam, name, v)
    results: list[dict] = []
    lock = threading.Lock()

    def one():
        r = plam.invoke(FunctionName=name, Qualifier=v, LogType="Tail",
                        Payload=json.dumps({"action": "sleep", "seconds": 2}).encode())
        log = base64.b64decode(r["LogResult"]).decode()
        with lock:
            results.append({"log": log, "status": r["StatusCode"]})

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r["status"] == 200 for r in results), results
    with_init = [r for r in results if "Init Duration" in r["log"]]
    assert len(with_init) == 1, [r["log"] for r in results]
    sbx = cli_sandboxes(srv, name)
    assert sum(1 for s in sbx if s["Provisioned"]) == 2 and sum(1 for s in sbx if not s["Provisioned"]) == 1, sbx
    # The on-demand one goes after the keep-alive; the provisioned stay.
    time.sleep(KEEP_ALIVE + 2)
    sbx = cli_sandboxes(srv, name)
    assert len(sbx) == 2 and all(s["Provisioned"] for s in sbx), sbx


def test_alias_config_and_checks(srv, plam, pfns, py_zip):
    name = pfns.create(py_zip)
    v1 = publish(plam, name)
    plam.update_function_configuration(FunctionName=name, Environment={"Variables": {"V": "2"}})
    wait_updated(plam, name)
    v2 = publish(plam, name)
    assert v2 != v1
    plam.create_alias(FunctionName=name, Name="live", FunctionVersion=v1)

    # Validation, as Lambda.
    expect_error(lambda: plam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1),
        400, "InvalidParameterValueException", "unpublished")
    expect_error(lambda: plam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="99", ProvisionedConcurrentExecutions=1),
        404, "ResourceNotFoundException")
    expect_error(lambda: plam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="nope", ProvisionedConcurrentExecutions=1),
        404, "ResourceNotFoundException")
    expect_error(lambda: plam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=v1, ProvisionedConcurrentExecutions=0),
        400, "ValidationException", "greater than or equal to 1")
    expect_error(lambda: plam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=v1),
                 404, "ProvisionedConcurrencyConfigNotFoundException")
    expect_error(lambda: plam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=v1, ProvisionedConcurrentExecutions=950),
        400, "InvalidParameterValueException", "minimum value of [100]")

    # On the alias: the sandboxes are version 1's, and invokes through the
    # alias use them.
    plam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    wait_status(plam, name, "live")
    sbx = cli_sandboxes(srv, name)
    assert [s["Version"] for s in sbx] == [v1] and sbx[0]["Provisioned"], sbx
    body, log = invoke(plam, name, "live")
    assert body["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"
    assert "Init Duration" not in log
    # The version the alias points to cannot have its own config too.
    expect_error(lambda: plam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=v1, ProvisionedConcurrentExecutions=1),
        409, "ResourceConflictException")
    # Reserved concurrency bounds the total.
    expect_error(lambda: plam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0),
                 400, "InvalidParameterValueException")
    plam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    plam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=v2, ProvisionedConcurrentExecutions=1)
    expect_error(lambda: plam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=v2, ProvisionedConcurrentExecutions=2),
        400, "InvalidParameterValueException", "reservedConcurrentExecution")
    # A weighted alias cannot have one.
    expect_error(lambda: plam.update_alias(FunctionName=name, Name="live",
                                           RoutingConfig={"AdditionalVersionWeights": {v2: 0.5}}),
                 400, "InvalidParameterValueException", "weights")

    # List pages with MaxItems / Marker.
    page = plam.list_provisioned_concurrency_configs(FunctionName=name, MaxItems=1)
    assert len(page["ProvisionedConcurrencyConfigs"]) == 1 and "NextMarker" in page
    rest = plam.list_provisioned_concurrency_configs(FunctionName=name, Marker=page["NextMarker"])
    arns = [c["FunctionArn"] for c in page["ProvisionedConcurrencyConfigs"] + rest["ProvisionedConcurrencyConfigs"]]
    assert sorted(a.rsplit(":", 1)[1] for a in arns) == sorted([v2, "live"]), arns

    # Moving the alias moves its sandboxes to the new version.
    plam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=v2)
    plam.update_alias(FunctionName=name, Name="live", FunctionVersion=v2)
    wait_status(plam, name, "live")
    deadline = time.time() + 10
    while time.time() < deadline:
        prov = [s for s in cli_sandboxes(srv, name) if s["Provisioned"]]
        if [s["Version"] for s in prov] == [v2]:
            break
        time.sleep(0.2)
    assert [s["Version"] for s in prov] == [v2], prov

    # Deleting the alias removes its config and its sandboxes.
    plam.delete_alias(FunctionName=name, Name="live")
    assert plam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []
    assert not [s for s in cli_sandboxes(srv, name) if s["Provisioned"]]


def test_init_failure_is_reported(plam, pfns):
    from stratus_harness import zip_files
    code = zip_files({"app.py": "raise RuntimeError('no init for you')\ndef handler(e, c):\n    return 1\n"})
    name = pfns.create(code)
    v = publish(plam, name)
    plam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=v, ProvisionedConcurrentExecutions=1)
    got, _ = wait_status(plam, name, v, want="FAILED")
    assert "FUNCTION_ERROR_INIT_FAILURE" in got["StatusReason"], got


def test_restart_reprovisions(py_zip):
    srv = new_server("provisioned-restart")
    srv.start()
    data_dir = srv.data_dir
    try:
        lam = srv.client()
        name = unique_name("prov-restart")
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": py_zip})
        wait_active(lam, name)
        v = publish(lam, name)
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=v, ProvisionedConcurrentExecutions=2)
        wait_status(lam, name, v)
        assert srv.stop() == 0
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()
    second = new_server("provisioned-restarted", data_dir=data_dir)
    second.start()
    try:
        lam = second.client()
        got, _ = wait_status(lam, name, v)
        assert got["AvailableProvisionedConcurrentExecutions"] == 2
        sbx = cli_sandboxes(second, name)
        assert len(sbx) == 2 and all(s["Provisioned"] for s in sbx), sbx
        body, log = invoke(lam, name, v)
        assert "Init Duration" not in log
        # Deleting the function removes the config and its sandboxes.
        lam.delete_function(FunctionName=name)
        assert cli_sandboxes_gone(second, name)
    finally:
        second.stop()
        remove_data_dir(data_dir)


def cli_sandboxes_gone(srv, name: str) -> bool:
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if not cli_sandboxes(srv, name):
                return True
        except AssertionError:
            return True  # the function is gone: the listing is refused
        time.sleep(0.2)
    return False


def test_aws_cli(srv, plam, pfns, py_zip, tmp_path):
    exe = shutil.which("aws")
    if exe is None:
        pytest.skip("aws CLI not installed")
    name = pfns.create(py_zip)
    v = publish(plam, name)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
               AWS_MAX_ATTEMPTS="1", AWS_PAGER="", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    env.pop("AWS_PROFILE", None)

    def aws(*args):
        p = subprocess.run([exe, "--endpoint-url", srv.endpoint, "--output", "json", "lambda", *args],
                           capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else None

    put = aws("put-provisioned-concurrency-config", "--function-name", name, "--qualifier", v,
              "--provisioned-concurrent-executions", "1")
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    wait_status(plam, name, v)
    got = aws("get-provisioned-concurrency-config", "--function-name", name, "--qualifier", v)
    assert got["Status"] == "READY" and got["AvailableProvisionedConcurrentExecutions"] == 1
    listed = aws("list-provisioned-concurrency-configs", "--function-name", name)
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed["ProvisionedConcurrencyConfigs"]] == [v]
    aws("delete-provisioned-concurrency-config", "--function-name", name, "--qualifier", v)


def test_stratus_cli_provision(srv, plam, pfns, py_zip):
    from stratus_harness import stratus_bin
    name = pfns.create(py_zip)
    v = publish(plam, name)
    env = dict(os.environ, STRATUS_ENDPOINT=srv.endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
    env.pop("AWS_PROFILE", None)

    def cli(*args, ok=True):
        p = subprocess.run([str(stratus_bin()), "function", "provision", name, *args], capture_output=True,
                           text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        assert (p.returncode == 0) == ok, p.stderr
        return p

    put = json.loads(cli("--qualifier", v, "--count", "1", "--output", "json").stdout)
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    wait_status(plam, name, v)
    table = cli("--qualifier", v).stdout
    assert any(line.split() == ["Status", "READY"] for line in table.splitlines()), table
    assert "InvalidParameterValueException" in cli("--qualifier", "$LATEST", "--count", "1", ok=False).stderr
    cli("--qualifier", v, "--delete")
    assert "ProvisionedConcurrencyConfigNotFoundException" in cli("--qualifier", v, ok=False).stderr
