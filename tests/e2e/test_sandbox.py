"""Isolation claims of the process sandbox, checked from inside a sandbox."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from stratus_harness import (
    REPO,
    ROLE,
    host_pids_of,
    new_server,
    remove_data_dir,
    unique_name,
    wait_active,
    wait_no_pids,
)


def _host_ips() -> list[str]:
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    return [ip for ip in out if ":" not in ip][:3]


def _inspect(lam, name, event):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    body = resp["Payload"].read()
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body
    return json.loads(body)


@pytest.fixture
def host_marker():
    path = Path(f"/tmp/stratus-host-marker-{uuid.uuid4().hex}")
    path.write_text("host secret")
    yield path
    path.unlink(missing_ok=True)


def test_isolation_from_inside(lam, fns, py_zip, server, host_marker):
    name = fns.create(py_zip, handler="app.inspect")
    targets = [["127.0.0.1", server.port]] + [[ip, server.port] for ip in _host_ips()]
    out = _inspect(lam, name, {
        "paths": ["/work", str(REPO), "/home", "/root", "/etc/shadow", str(host_marker), "/var/task/app.py"],
        "connect": targets,
    })

    # Private pid namespace: only the sandbox's own few processes.
    assert len(out["procs"]) <= 5, out["procs"]
    cmdlines = " | ".join(c or "" for c in out["procs"].values())
    for host_proc in ("stratus", "pytest", "sshd", "systemd", "cargo"):
        assert host_proc not in cmdlines.replace("/var/task", ""), cmdlines

    # Not root, no new privileges, seccomp filter in force.
    assert out["uid"] != 0 and out["euid"] != 0, out
    assert out["status"].get("NoNewPrivs") == "1", out["status"]
    assert out["status"].get("Seccomp") == "2", out["status"]

    # Own uts namespace.
    assert out["hostname"] != socket.gethostname()

    # Host files are not there.
    paths = out["paths"]
    assert paths["/work"]["exists"] is False, paths["/work"]
    assert paths[str(REPO)]["exists"] is False
    assert paths[str(host_marker)]["exists"] is False, "host /tmp is visible in the sandbox"
    for d in ("/home", "/root"):
        assert not paths[d].get("entries"), f"{d} lists host content: {paths[d]}"
    shadow = paths["/etc/shadow"]
    assert not shadow.get("readable"), shadow
    assert paths["/var/task/app.py"].get("readable") is True

    # Read-only code and system, private writable /tmp.
    assert out["writable"]["/var/task"] is False
    assert out["writable"]["/usr"] is False
    assert out["writable"]["/tmp"] is True
    assert out["bin_sh"] is True

    # The Runtime API is reachable (the handler is running), but the server's
    # public port is not, on loopback nor on the host's addresses.
    assert out["runtime_api"]
    for target, result in out["connects"].items():
        assert result != "connected", f"sandbox reached host service {target}"
    api_host = out["runtime_api"].rsplit(":", 1)[0].strip("[]")
    if api_host not in ("127.0.0.1", "localhost"):
        extra = _inspect(lam, name, {"connect": [[api_host, server.port], [api_host, 22]]})
        for target, result in extra["connects"].items():
            assert result != "connected", f"sandbox reached host service {target} via the runtime API address"


def test_tmp_is_private_per_sandbox(lam, fns, py_zip):
    writer = fns.create(py_zip, handler="app.write_tmp")
    reader = fns.create(py_zip, handler="app.inspect")
    fname = f"secret-{uuid.uuid4().hex}"
    resp = lam.invoke(FunctionName=writer, Payload=json.dumps({"file": fname}))
    written = json.loads(resp["Payload"].read())
    assert fname in written["tmp"]
    out = _inspect(lam, reader, {})
    assert fname not in out["tmp"], out["tmp"]
    assert not any(f.startswith("secret-") for f in out["tmp"]), out["tmp"]


def _fill(lam, name, mb, remove=True, file="fill"):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"mb": mb, "remove": remove, "file": file}))
    assert "FunctionError" not in resp, resp["Payload"].read()
    return json.loads(resp["Payload"].read())


def test_tmp_is_capped_at_ephemeral_storage(lam, fns, py_zip):
    """/tmp holds EphemeralStorage and no more: the next write gets ENOSPC,
    the function keeps working, and the space comes back when freed."""
    name = fns.create(py_zip, handler="app.fill_tmp", MemorySize=256, Timeout=60)
    out = _fill(lam, name, 600, remove=False)
    assert out["tmp_fs"] == ["ext4"], out
    assert 480 <= out["tmp_mb"] <= 512, out
    assert out["error"] == "ENOSPC", out
    assert 480 <= out["written_mb"] < 512, out
    # Still full in this warm sandbox (same /tmp); replacing the file frees it.
    again = _fill(lam, name, 1, file="more")
    assert again["error"] == "ENOSPC", again
    freed = _fill(lam, name, 100)
    assert freed["error"] is None and freed["written_mb"] == 100, freed


def test_tmp_size_follows_ephemeral_storage(lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.fill_tmp", EphemeralStorage={"Size": 1024})
    out = _fill(lam, name, 1)
    assert 1000 <= out["tmp_mb"] <= 1024, out


def test_tmp_is_not_charged_against_memory_size(lam, fns, py_zip):
    """Files in /tmp live on disk: a 128 MB function writes 400 MB to /tmp
    without being killed (a tmpfs would be charged to its memory cgroup)."""
    name = fns.create(py_zip, handler="app.fill_tmp", MemorySize=128, Timeout=60)
    out = _fill(lam, name, 400)
    assert out["error"] is None and out["written_mb"] == 400, out


def test_sandboxes_of_one_function_do_not_see_each_other(lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.dispatch")
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        resp = lam.invoke(FunctionName=name, Payload=json.dumps({"action": "sleep", "seconds": 1}))
        return json.loads(resp["Payload"].read())

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(one, range(2))
    assert a["sandbox"] != b["sandbox"]
    # Each one's process tree is its own: the other sandbox's python is not listed.
    insp = fns.create(py_zip, handler="app.inspect")
    out = _inspect(lam, insp, {})
    pythons = [c for c in out["procs"].values() if c and "python" in c]
    assert len(pythons) <= 1, out["procs"]


def _cgroup_memory_limit(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if controllers == "" and hid == "0":  # cgroup v2 (unified, or hybrid under /unified)
            f = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max"
            if not f.exists():
                f = Path("/sys/fs/cgroup/unified") / path.lstrip("/") / "memory.max"
        elif "memory" in controllers.split(","):  # cgroup v1
            f = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes"
        else:
            continue
        if f.exists():
            v = f.read_text().strip()
            if v != "max" and int(v) < (1 << 50):
                return int(v)
    return None


def test_namespaces_and_memory_cgroup_seen_from_host(lam, fns, py_zip):
    """From the host: the runtime lives in its own namespaces under a MemorySize cgroup limit."""
    name = fns.create(py_zip, handler="app.inspect", MemorySize=192)
    _inspect(lam, name, {})  # leaves a warm sandbox behind
    pids = host_pids_of(name)
    assert pids, f"no host process carries AWS_LAMBDA_FUNCTION_NAME={name}"
    for pid in pids:
        for ns in ("pid", "mnt", "net", "uts", "ipc", "user"):
            mine = os.readlink(f"/proc/self/ns/{ns}")
            theirs = os.readlink(f"/proc/{pid}/ns/{ns}")
            assert mine != theirs, f"sandbox process {pid} shares the host's {ns} namespace"
        limit = _cgroup_memory_limit(pid)
        assert limit is not None, f"sandbox process {pid} has no memory cgroup limit"
        assert 192 * 2**20 <= limit <= 256 * 2**20, f"memory limit {limit} for MemorySize=192"


def _cgroup_cpu_weight(pid: int) -> tuple[str, int] | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):  # cgroup v1
            for base in ("cpu", "cpu,cpuacct"):
                f = Path("/sys/fs/cgroup") / base / path.lstrip("/") / "cpu.shares"
                if f.exists():
                    return "v1", int(f.read_text())
        elif controllers == "" and hid == "0":  # cgroup v2
            f = Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.weight"
            if f.exists():
                return "v2", int(f.read_text())
    return None


def _cgroup_cpu_quota(pid: int) -> tuple[str, str] | None:
    """("v1", "<cfs_quota_us> <cfs_period_us>") or ("v2", <cpu.max>) of the process's cgroup."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):  # cgroup v1
            for base in ("cpu", "cpu,cpuacct"):
                d = Path("/sys/fs/cgroup") / base / path.lstrip("/")
                if (d / "cpu.cfs_quota_us").exists():
                    quota = (d / "cpu.cfs_quota_us").read_text().strip()
                    period = (d / "cpu.cfs_period_us").read_text().strip()
                    return "v1", f"{quota} {period}"
        elif controllers == "" and hid == "0":  # cgroup v2
            f = Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.max"
            if f.exists():
                return "v2", f.read_text().strip()
    return None


@pytest.mark.parametrize("memory", [128, 1769, 3538])
def test_cpu_weight_follows_memory_size(lam, fns, py_zip, memory):
    """CPU in proportion to MemorySize (1,769 MB = one vCPU) as a scheduling weight."""
    name = fns.create(py_zip, handler="app.inspect", MemorySize=memory)
    _inspect(lam, name, {})
    pids = host_pids_of(name)
    assert pids, f"no host process carries AWS_LAMBDA_FUNCTION_NAME={name}"
    found = _cgroup_cpu_weight(pids[0])
    assert found is not None, "the sandbox has no cpu cgroup weight"
    version, weight = found
    expected = max(2, memory * 1024 // 1769) if version == "v1" else max(1, memory * 100 // 1769)
    assert weight == expected, (version, weight, expected)
    # The default (--cpu-limit weight) sets no hard quota.
    quota = _cgroup_cpu_quota(pids[0])
    assert quota is not None and quota[1].split()[0] in ("-1", "max"), quota


def _burn(lam, name, seconds: float) -> dict:
    out = _inspect(lam, name, {"seconds": seconds})
    assert out["wall_s"] >= seconds, out
    return out


def test_cpu_quota_option_caps_a_small_function(lam, fns, py_zip):
    """--cpu-limit quota: a 128 MB function's cgroup gets a CFS quota of
    128/1,769 of the period, and a CPU-bound loop gets about that share of one
    CPU even with CPU to spare; the default (weight) server gives the same
    loop most of a CPU."""
    srv = new_server("cpu-quota", ["--cpu-limit", "quota"])
    srv.start()
    data_dir = srv.data_dir
    try:
        q = srv.client()
        name = unique_name("cpu-quota")
        q.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.burn",
                          Code={"ZipFile": py_zip}, MemorySize=128, Timeout=30)
        wait_active(q, name)
        _burn(q, name, 0)  # cold start (slow under the quota too), leaves a warm sandbox
        pids = host_pids_of(name)
        assert pids, f"no host process carries AWS_LAMBDA_FUNCTION_NAME={name}"
        version, value = _cgroup_cpu_quota(pids[0]) or (None, None)
        expected_quota = 100_000 * 128 // 1769  # 7235 us per 100 ms
        assert value == f"{expected_quota} 100000", (version, value)
        assert _cgroup_cpu_weight(pids[0])[1] == (74 if version == "v1" else 7)
        capped = _burn(q, name, 1.0)
        q.delete_function(FunctionName=name)
    finally:
        srv.stop()
        remove_data_dir(data_dir)

    free_name = fns.create(py_zip, handler="app.burn", MemorySize=128, Timeout=30)
    _burn(lam, free_name, 0)
    free = _burn(lam, free_name, 1.0)
    # 7.2% of a CPU for 1 s is ~0.07 s of CPU time; allow for period rounding.
    assert capped["cpu_s"] < 0.2, capped
    # Without the quota the loop runs whenever a CPU is free. The machine is
    # shared, so only ask for a clear multiple of the capped figure.
    assert free["cpu_s"] > 0.3 and free["cpu_s"] > 3 * capped["cpu_s"], (free, capped)


def test_delete_stops_the_functions_sandboxes(lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.dispatch")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: lam.invoke(FunctionName=name, Payload=b'{"action": "sleep", "seconds": 0.5}'),
                      range(2)))
    assert len(host_pids_of(name)) >= 2, "expected two warm sandboxes"
    lam.delete_function(FunctionName=name)
    left = wait_no_pids(name, 10)
    assert not left, f"sandbox processes {left} outlived the deletion of {name}"


def test_code_update_retires_old_sandboxes(lam, fns, py_zip):
    from stratus_harness import wait_updated

    name = fns.create(py_zip)
    lam.invoke(FunctionName=name, Payload=b"{}")
    old = set(host_pids_of(name))
    assert old
    lam.update_function_configuration(FunctionName=name, Description="retire")
    wait_updated(lam, name)
    lam.invoke(FunctionName=name, Payload=b"{}")
    import time as _t
    deadline = _t.monotonic() + 10
    while old & set(host_pids_of(name)) and _t.monotonic() < deadline:
        _t.sleep(0.2)
    assert not (old & set(host_pids_of(name))), "stale sandbox still running after a configuration change"


def test_fork_bomb_is_contained(lam, fns, py_zip, server):
    """A handler that forks without end: the invoke ends Lambda-like (200 with
    X-Amz-Function-Error), nothing of it outlives the invoke, another
    function keeps working meanwhile, and the same function works after."""
    import base64
    import errno
    import time
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    # Memory enough for a thousand python processes, so the pids cap, not
    # the memory limit, is what stops the forking.
    name = fns.create(py_zip, handler="app.dispatch", MemorySize=2048, Timeout=3)
    other = fns.create(py_zip, handler="app.handler")
    assert _inspect(lam, other, {})["count"] == 1  # warm before the bomb goes off

    # The cap first: forking children that only wait stops below 1,024 processes.
    counted = _inspect(lam, name, {"action": "fork_count"})
    assert counted["error"] is not None and counted["error"]["errno"] == errno.EAGAIN, counted
    assert 900 <= counted["forked"] < 1024, counted

    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        bomb = pool.submit(lam.invoke, FunctionName=name, Payload=json.dumps({"action": "fork_bomb"}),
                           LogType="Tail")
        time.sleep(1.0)
        assert not bomb.done(), "the fork bomb returned early"
        during = _inspect(lam, other, {})
        assert during["count"] == 2, during
        resp = bomb.result(timeout=60)
        elapsed = time.monotonic() - t0
    body = resp["Payload"].read()
    assert resp["StatusCode"] == 200, resp
    assert resp["FunctionError"] == "Unhandled", body[:500]
    err = json.loads(body)
    assert err["errorType"] in ("Sandbox.Timedout", "Runtime.ExitError"), err
    assert f"RequestId: {resp['ResponseMetadata']['RequestId']}" in err["errorMessage"], err
    assert elapsed < 20, elapsed
    assert "REPORT RequestId" in base64.b64decode(resp["LogResult"]).decode(errors="replace")

    # The other function was not disturbed (checked before its keep-alive runs out).
    assert _inspect(lam, other, {})["count"] == 3
    # Every process of the bomb is gone: after the timeout the runtime was
    # restarted in the same sandbox, so exactly one process (the fresh
    # runtime) carries the function's environment.
    deadline = time.monotonic() + 15
    while len(left := host_pids_of(name)) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(left) == 1, f"{len(left)} processes of the fork bomb outlived its invoke"
    after = _inspect(lam, name, {"action": "handler"})
    assert after["count"] == 1, after  # module state reset by the restart
    assert server.proc.poll() is None
    with urllib.request.urlopen(server.endpoint + "/health", timeout=5) as r:
        assert r.status == 200
