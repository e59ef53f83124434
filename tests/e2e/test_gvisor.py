"""The gVisor isolation tier end to end, with boto3: a server whose default
tier is gVisor, a function asking for it with STRATUS_ISOLATION on a default
server, a timeout (the runtime restarted in place under gVisor: /tmp stays),
and the refusals (a bad tier value; a server that requires gVisor without
runsc). Skipped when runsc is not installed (CI installs it: .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from stratus_harness import (
    FunctionFactory,
    expect_error,
    new_server,
    remove_data_dir,
    stratus_bin,
    wait_updated,
    zip_files,
)

RUNSC = os.environ.get("STRATUS_E2E_RUNSC", "/usr/bin/runsc")

pytestmark = pytest.mark.skipif(
    not Path(RUNSC).is_file(), reason=f"runsc is not installed at {RUNSC} (apt-get install runsc)"
)

APP = r'''
import os, time

def handler(event, context):
    action = event.get("action")
    if action == "sleep":
        time.sleep(event["secs"])
    if action == "write_tmp":
        open("/tmp/" + event["file"], "w").write("x")
    return {
        "kernel": open("/proc/version").read(),
        "tier": os.environ.get("STRATUS_ISOLATION"),
        "tmp": sorted(os.listdir("/tmp")),
        "uid": os.getuid(),
    }
'''


def _invoke(lam, name, payload):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload))
    return resp, json.loads(resp["Payload"].read())


def _under_gvisor(out) -> bool:
    # gVisor's Sentry reports its own kernel, not the host's.
    return "4.4.0" in out["kernel"] and os.uname().release not in out["kernel"]


@pytest.fixture(scope="module")
def gvisor_server():
    srv = new_server("gvisor", ["--isolation", "gvisor", "--runsc", RUNSC, "--keep-alive-secs", "30"])
    srv.start()
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


def test_a_gvisor_server_runs_python_under_gvisor(gvisor_server):
    lam = gvisor_server.client()
    fns = FunctionFactory(lam, "gv")
    try:
        name = fns.create(zip_files({"app.py": APP}), Timeout=10)
        resp, out = _invoke(lam, name, {})
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp, out
        assert _under_gvisor(out), out
        assert out["uid"] == 993
        # Warm: the same sandbox answers again.
        resp, again = _invoke(lam, name, {"action": "write_tmp", "file": "a"})
        assert "FunctionError" not in resp and again["tmp"] == ["a"], again
    finally:
        fns.cleanup()


def test_a_timeout_restarts_the_runtime_in_place_under_gvisor(gvisor_server):
    lam = gvisor_server.client()
    fns = FunctionFactory(lam, "gvto")
    try:
        name = fns.create(zip_files({"app.py": APP}), Timeout=2)
        _invoke(lam, name, {"action": "write_tmp", "file": "before-timeout"})
        resp, err = _invoke(lam, name, {"action": "sleep", "secs": 5})
        assert resp.get("FunctionError") == "Unhandled" and err["errorType"] == "Sandbox.Timedout", err
        resp, out = _invoke(lam, name, {"action": "write_tmp", "file": "after-timeout"})
        assert "FunctionError" not in resp, out
        assert out["tmp"] == ["after-timeout", "before-timeout"], out
        assert _under_gvisor(out), out
    finally:
        fns.cleanup()


def test_a_function_asks_for_gvisor_on_a_default_server(lam, fns):
    asks = fns.create(
        zip_files({"app.py": APP}),
        Environment={"Variables": {"STRATUS_ISOLATION": "gvisor"}},
    )
    plain = fns.create(zip_files({"app.py": APP}))
    _, out = _invoke(lam, asks, {})
    assert _under_gvisor(out) and out["tier"] == "gvisor", out
    _, out = _invoke(lam, plain, {})
    assert not _under_gvisor(out), out
    # Asking for process again moves it back (a new revision, new sandboxes).
    lam.update_function_configuration(
        FunctionName=asks, Environment={"Variables": {"STRATUS_ISOLATION": "process"}}
    )
    wait_updated(lam, asks)
    _, out = _invoke(lam, asks, {})
    assert not _under_gvisor(out), out


def test_an_unknown_tier_is_refused(lam, fns):
    expect_error(
        lam.create_function,
        400,
        "InvalidParameterValueException",
        "STRATUS_ISOLATION",
        FunctionName=fns.name(),
        Runtime="python3.12",
        Role="arn:aws:iam::000000000000:role/x",
        Handler="app.handler",
        Code={"ZipFile": zip_files({"app.py": APP})},
        Environment={"Variables": {"STRATUS_ISOLATION": "firecracker"}},
    )


def test_requiring_gvisor_without_runsc_fails_at_start_with_a_clear_error():
    data = Path(tempfile.mkdtemp(prefix="stratus-e2e-norunsc-"))
    try:
        proc = subprocess.run(
            [str(stratus_bin()), "server", "--listen", "127.0.0.1:0", "--data-dir", str(data),
             "--cgroup-parent", f"stratus-e2e-{os.getpid()}-norunsc",
             "--isolation-shared-host", "gvisor", "--runsc", "/nonexistent/runsc"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert proc.returncode != 0
        assert "/nonexistent/runsc" in proc.stderr and "apt-get install runsc" in proc.stderr, proc.stderr
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _runsc_processes(data_dir: Path) -> list[int]:
    """Live processes whose command line names this server's gVisor state dir."""
    needle = str((data_dir / "gvisor").resolve()).encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{d}/cmdline").read_bytes()
            state = Path(f"/proc/{d}/stat").read_text().split(")")[-1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state != "Z":
            found.append(int(d))
    return found


def _gvisor_cgroups(parent: str) -> list[str]:
    return sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{parent}-gvisor/*") if p.is_dir())


def _gvisor_loops(data_dir: Path, keep: str = "") -> list[str]:
    """Loop devices on images under the gVisor disk dir, but the probe and
    those in the directory named `keep` (a live server's pool: its images
    are unnamed, in `disks/server-<pid>/`)."""
    needle = str((data_dir / "gvisor").resolve())
    found = []
    for f in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            backing = f.read_text().strip()
        except OSError:
            continue
        image = Path(backing.removesuffix(" (deleted)"))
        if backing.startswith(needle) and image.name != "probe.img" and not (keep and image.parent.name == keep):
            found.append(backing)
    return found


def test_kill_9_of_a_gvisor_server_leaves_nothing_after_restart():
    from concurrent.futures import ThreadPoolExecutor

    from stratus_harness import Server, arg_of

    first = new_server("gvisor-crash", ["--isolation", "gvisor", "--runsc", RUNSC])
    first.start()
    data_dir = first.data_dir
    parent = arg_of(first, "--cgroup-parent")
    lam = first.client(read_timeout=120)
    fns = FunctionFactory(lam, "gvcrash")
    name = fns.create(zip_files({"app.py": APP}), Timeout=120)
    pool = ThreadPoolExecutor(3)
    try:
        futures = [pool.submit(_invoke, lam, name, {"action": "sleep", "secs": 60}) for _ in range(3)]
        deadline = time.monotonic() + 60
        while len(_gvisor_cgroups(parent)) < 3 * 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # let the runtimes start inside gVisor
        # Each of the three sandboxes holds a /tmp disk (made for it, or taken
        # from the pool); idle pooled disks may add more.
        before = {"runsc": len(_runsc_processes(data_dir)), "cgroups": len(_gvisor_cgroups(parent)),
                  "loops": len(_gvisor_loops(data_dir))}
        assert before["runsc"] >= 3 and before["loops"] >= 3, f"{before}\n{first.log_tail()}"
        first.proc.kill()
        first.proc.wait()
        first.stop()
        for f in futures:
            with pytest.raises(Exception):
                f.result(timeout=30)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if first.proc.poll() is None:  # an assertion failed before the kill
            first.stop()

    # runsc dies with the server (a parent-death signal), its Sentry and gofer with it.
    deadline = time.monotonic() + 10
    while _runsc_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _runsc_processes(data_dir) == []

    second = Server(data_dir=data_dir, log_path=first.log_path.with_name("server-gvisor-crash-restarted.log"),
                    extra_args=list(first.extra_args))
    second.start()
    try:
        after = {"cgroups": _gvisor_cgroups(parent), "loops": _gvisor_loops(data_dir, keep=f"server-{second.proc.pid}"),
                 "bundles": sorted(p.name for p in (data_dir / "gvisor" / "sandboxes").iterdir()),
                 "runsc": sorted(p.name for p in (data_dir / "gvisor" / "runsc").iterdir())}
        assert after == {"cgroups": [], "loops": [], "bundles": [], "runsc": []}, f"{after}\n{second.log_tail()}"
        lam2 = second.client()
        resp, out = _invoke(lam2, name, {})
        assert "FunctionError" not in resp and _under_gvisor(out), out
        lam2.delete_function(FunctionName=name)
    finally:
        assert second.stop() == 0
    remove_data_dir(data_dir)


def test_node_and_rust_run_under_gvisor(gvisor_server, node_zip):
    from stratus_harness import REPO

    lam = gvisor_server.client()
    fns = FunctionFactory(lam, "gvrt")
    try:
        name = fns.create(node_zip, handler="index.handler", runtime="nodejs20.x")
        resp = lam.invoke(FunctionName=name, Payload=b'{"x": 1}')
        out = json.loads(resp["Payload"].read())
        assert "FunctionError" not in resp and out["hello"] == "node", out
        rust = next((p for p in (REPO / "target" / "release" / "bootstrap",
                                 REPO / "target-fixtures" / "release" / "bootstrap") if p.exists()), None)
        if rust is None:
            pytest.skip("rust fixture not built (cargo build -p stratus-test-fn-rust --release)")
        code = zip_files({"bootstrap": rust.read_bytes()}, executable=("bootstrap",))
        name = fns.create(code, handler="bootstrap", runtime="provided.al2023")
        resp = lam.invoke(FunctionName=name, Payload=b'{"name": "gvisor"}')
        body = resp["Payload"].read()
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body
        assert b"gvisor" in body, body
    finally:
        fns.cleanup()


def test_a_second_account_on_the_host_moves_everyone_to_the_shared_host_tier():
    """--isolation-shared-host gvisor: alone on the host, account A runs in the
    process tier; once account B (made with the CLI) has a sandbox, B runs
    under gVisor and A's process sandbox is stopped, so A's next invoke
    starts again, under gVisor too."""
    srv = new_server("shared-host", ["--isolation-shared-host", "gvisor", "--runsc", RUNSC,
                                     "--keep-alive-secs", "60"])
    srv.start()
    lam = srv.client()
    fns = FunctionFactory(lam, "sha")
    try:
        def cli(*args):
            env = dict(os.environ, STRATUS_ENDPOINT=srv.endpoint)
            p = subprocess.run([str(stratus_bin()), *args], capture_output=True, text=True, env=env,
                               timeout=60, stdin=subprocess.DEVNULL)
            assert p.returncode == 0, p.stderr
            return p.stdout
        code = zip_files({"app.py": APP})
        a_fn = fns.create(code, Timeout=10)
        _, alone = _invoke(lam, a_fn, {"action": "write_tmp", "file": "warm"})
        assert not _under_gvisor(alone), "one account alone runs in the process tier"

        account = cli("account", "create").strip()
        key = json.loads(cli("key", "create", "--account", account, "--output", "json"))
        lam_b = srv.client(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        fns_b = FunctionFactory(lam_b, "shb")
        try:
            b_fn = fns_b.create(code, Timeout=10)
            _, b_out = _invoke(lam_b, b_fn, {})
            assert _under_gvisor(b_out), "a second account on the host runs under gVisor"
            # A's process sandbox was stopped: its next invoke is a new sandbox
            # (its /tmp is empty), under gVisor.
            _, a_again = _invoke(lam, a_fn, {})
            assert _under_gvisor(a_again), a_again
            assert a_again["tmp"] == [], a_again
        finally:
            fns_b.cleanup()
    finally:
        fns.cleanup()
        srv.stop()
        remove_data_dir(srv.data_dir)
