"""Rootless mode: `stratus server` run by an unprivileged user.

The suite runs as root (CI: a fresh Debian 12), so it makes the users it
needs and leaves them in place for the next run (they own nothing but the
temporary dirs each test removes):
- `stratus-e2e-rootless`, a normal user; `useradd` gives it a range in
  /etc/subuid and /etc/subgid (added with `usermod` if not), so with
  `newuidmap` (package uidmap) every sandbox gets its own subordinate uid;
- `stratus-e2e-nosubid`, a system user without such a range: every sandbox
  runs as the server's own uid.
Each server runs from a copy of the binary in a world-readable temp dir,
with a data dir the user owns.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stratus_harness import (
    FUNCTIONS,
    REPO,
    FunctionFactory,
    host_pids_of,
    new_server,
    remove_data_dir,
    stratus_bin,
    wait_no_pids,
    zip_dir,
)

SUBID_USER = "stratus-e2e-rootless"
SHARED_USER = "stratus-e2e-nosubid"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"),
    reason="needs root (to make an unprivileged user), setpriv and useradd",
)


def _subid_range(path: str, user: str) -> tuple[int, int] | None:
    try:
        for line in Path(path).read_text().splitlines():
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] in (user, str(pwd.getpwnam(user).pw_uid)):
                return int(parts[1]), int(parts[2])
    except (OSError, KeyError, ValueError):
        pass
    return None


def _ensure_user(name: str, system: bool) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    cmd = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    if system:
        cmd.append("--system")
    subprocess.run([*cmd, name], check=True, capture_output=True, timeout=30)
    return pwd.getpwnam(name)


def _ensure_subids(user: str) -> tuple[int, int]:
    for path in ("/etc/subuid", "/etc/subgid"):
        Path(path).touch(exist_ok=True)
    if _subid_range("/etc/subuid", user) is None or _subid_range("/etc/subgid", user) is None:
        # Past every range already given out, from 100,000 (useradd's default).
        ends = [100_000]
        for path in ("/etc/subuid", "/etc/subgid"):
            for line in Path(path).read_text().splitlines():
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    ends.append(int(parts[1]) + int(parts[2]))
        start = max(ends)
        span = f"{start}-{start + 65_535}"
        subprocess.run(["usermod", "--add-subuids", span, "--add-subgids", span, user],
                       check=True, capture_output=True, timeout=30)
    found = _subid_range("/etc/subuid", user)
    assert found is not None, f"no /etc/subuid range for {user}"
    return found


@pytest.fixture(scope="module")
def binary_copy():
    """The stratus binary where an unprivileged user can run it."""
    d = Path(tempfile.mkdtemp(prefix="stratus-e2e-rootless-bin-"))
    d.chmod(0o755)
    dst = d / "stratus"
    shutil.copy2(stratus_bin(), dst)
    dst.chmod(0o755)
    yield dst
    shutil.rmtree(d, ignore_errors=True)


def _start(user: str, binary: Path, tag: str):
    data = Path(tempfile.mkdtemp(prefix=f"stratus-e2e-{tag}-"))
    pw = pwd.getpwnam(user)
    os.chown(data, pw.pw_uid, pw.pw_gid)
    srv = new_server(tag, ["--keep-alive-secs", "30"], data_dir=data, run_as=user, binary=binary)
    srv.start()
    return srv


@pytest.fixture(scope="module")
def subid_server(binary_copy):
    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        pytest.fail("newuidmap/newgidmap missing: install the Debian package uidmap (.ci/run does)")
    _ensure_user(SUBID_USER, system=False)
    _ensure_subids(SUBID_USER)
    srv = _start(SUBID_USER, binary_copy, "rootless-subid")
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


@pytest.fixture(scope="module")
def shared_server(binary_copy):
    _ensure_user(SHARED_USER, system=True)
    if _subid_range("/etc/subuid", SHARED_USER):
        pytest.fail(f"{SHARED_USER} has a /etc/subuid range; this test needs a user without one")
    srv = _start(SHARED_USER, binary_copy, "rootless-shared")
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


@pytest.fixture
def host_marker():
    path = Path(f"/tmp/stratus-host-marker-{uuid.uuid4().hex}")
    path.write_text("host secret")
    yield path
    path.unlink(missing_ok=True)


def _invoke(lam, name, event):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    body = resp["Payload"].read()
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body[:2000]
    return json.loads(body)


def _log(srv) -> str:
    return srv.log_path.read_text(errors="replace")


def _cgroup_v1_host() -> bool:
    return not Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _assert_says_what_it_lacks(log: str):
    assert "rootless mode: the server is not root" in log, log[-3000:]
    assert "protection NOT applied: cgroups: rootless: no cgroup limits (" in log, log[-3000:]
    if _cgroup_v1_host():
        assert ("protection NOT applied: cgroups: rootless: no cgroup limits (cgroup v1 without delegation): "
                "memory, pids and CPU are not limited") in log
    assert "protection applied: /tmp: rootless: a tmpfs of EphemeralStorage's size" in log


def _assert_isolated(out: dict, host_marker: Path):
    # Own pid namespace: only the sandbox's init and runtime.
    assert len(out["procs"]) <= 5, out["procs"]
    cmdlines = " | ".join(c or "" for c in out["procs"].values())
    for host_proc in ("stratus", "pytest", "systemd", "cargo"):
        assert host_proc not in cmdlines.replace("/var/task", ""), cmdlines
    st = out["status"]
    assert st.get("Seccomp") == "2", st
    assert st.get("NoNewPrivs") == "1", st
    assert st.get("CapEff") == "0000000000000000", st
    assert out["uid"] == 993 and out["euid"] == 993, out
    paths = out["paths"]
    assert paths["/work"]["exists"] is False
    assert paths[str(REPO)]["exists"] is False
    assert paths[str(host_marker)]["exists"] is False, "host /tmp is visible"
    assert paths["/etc/shadow"].get("readable") is not True
    assert paths["/var/task/app.py"].get("readable") is True
    assert out["writable"] == {"/var/task": False, "/tmp": True, "/usr": False, "/": False}, out["writable"]
    assert out["interfaces"] == ["lo"], out["interfaces"]


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _host_uids(name: str) -> set[int]:
    return {os.stat(f"/proc/{pid}").st_uid for pid in host_pids_of(name)}


def _inspect_event(host_marker):
    return {"paths": ["/work", str(REPO), "/etc/shadow", str(host_marker), "/var/task/app.py"]}


def test_subordinate_uids_each_sandbox_its_own_uid(subid_server, host_marker):
    srv = subid_server
    log = _log(srv)
    _assert_says_what_it_lacks(log)
    assert "protection applied: sandbox uids: rootless: one subordinate uid per sandbox" in log
    lam = srv.client()
    fns = FunctionFactory(lam, "rootless-subid")
    try:
        code = zip_dir(FUNCTIONS / "python")
        a = fns.create(code, handler="app.inspect")
        b = fns.create(code, handler="app.inspect")
        out = _invoke(lam, a, _inspect_event(host_marker))
        _assert_isolated(out, host_marker)
        _invoke(lam, b, {})
        start, count = _subid_range("/etc/subuid", SUBID_USER)
        server_uid = pwd.getpwnam(SUBID_USER).pw_uid
        ua, ub = _host_uids(a), _host_uids(b)
        assert len(ua) == 1 and len(ub) == 1, (ua, ub)
        assert ua != ub, "two sandboxes share a host uid"
        for uid in ua | ub:
            assert start <= uid < start + count and uid != server_uid, (uid, start, count)
    finally:
        fns.cleanup()


def test_tmp_is_a_capped_tmpfs_and_cgroup_limits_are_absent(subid_server):
    """What rootless mode gives and lacks here, measured: /tmp is a tmpfs
    capped at EphemeralStorage; RLIMIT_NPROC still stops forking below
    1,024; without cgroups MemorySize is not enforced."""
    lam = subid_server.client()
    fns = FunctionFactory(lam, "rootless-limits")
    try:
        code = zip_dir(FUNCTIONS / "python")
        fill = fns.create(code, handler="app.fill_tmp", MemorySize=256, Timeout=60)
        out = _invoke(lam, fill, {"mb": 600})
        assert out["tmp_fs"] == ["tmpfs"], out
        assert 500 <= out["tmp_mb"] <= 512, out
        assert out["error"] == "ENOSPC" and out["written_mb"] <= 512, out

        d = fns.create(code, handler="app.dispatch", MemorySize=128, Timeout=60)
        forks = _invoke(lam, d, {"action": "fork_count"})
        assert forks["error"] is not None and forks["error"]["errno"] == 11, forks  # EAGAIN
        assert 900 <= forks["forked"] < 1024, forks
        if _cgroup_v1_host():
            # No memory cgroup: 256 MiB in a 128 MB function is not stopped.
            assert _invoke(lam, d, {"action": "oom", "mb": 256}) == {"allocated_mb": 256}
    finally:
        fns.cleanup()


def test_shared_uid_without_subordinate_ids(shared_server, host_marker):
    srv = shared_server
    log = _log(srv)
    _assert_says_what_it_lacks(log)
    user = pwd.getpwnam(SHARED_USER)
    assert f"protection NOT applied: sandbox uids: rootless: every sandbox runs as the server's own uid {user.pw_uid}" in log
    lam = srv.client()
    fns = FunctionFactory(lam, "rootless-shared")
    try:
        code = zip_dir(FUNCTIONS / "python")
        a = fns.create(code, handler="app.inspect")
        event = _inspect_event(host_marker)
        event["paths"] += ["/proc/1/mem", "/proc/1/environ"]
        out = _invoke(lam, a, event)
        _assert_isolated(out, host_marker)
        assert _host_uids(a) == {user.pw_uid}
        # The sandbox init runs as the same host uid here, so it must not be
        # open to its runtime: not dumpable (its /proc files are not the
        # runtime's) and no capability but CAP_SETFCAP (bit 31).
        for p in ("/proc/1/mem", "/proc/1/environ"):
            assert out["paths"][p].get("readable") is not True, (p, out["paths"][p])
        (runtime,) = host_pids_of(a)
        init = int(_status(runtime)["PPid"])
        assert _status(init)["CapEff"] == "0000000080000000", _status(init)
        assert _status(init)["CapPrm"] == "0000000080000000", _status(init)
        # RLIMIT_NPROC is counted per user namespace: two sandboxes of one
        # host uid each get their own ~1,024, at the same time.
        f1 = fns.create(code, handler="app.dispatch", MemorySize=1024, Timeout=60)
        f2 = fns.create(code, handler="app.dispatch", MemorySize=1024, Timeout=60)
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda n: _invoke(lam, n, {"action": "fork_count"}), [f1, f2]))
        for r in results:
            assert r["error"] is not None and r["error"]["errno"] == 11, r
            assert 900 <= r["forked"] < 1024, r
    finally:
        fns.cleanup()


def test_crash_and_graceful_shutdown(binary_copy):
    """kill -9 of a rootless server leaves no sandbox process and no
    directory (a tmpfs /tmp; the root is assembled on the state dir's shared
    `.root`); the next start works; SIGTERM stops it cleanly."""
    _ensure_user(SUBID_USER, system=False)
    _ensure_subids(SUBID_USER)
    srv = _start(SUBID_USER, binary_copy, "rootless-crash")
    try:
        lam = srv.client()
        fns = FunctionFactory(lam, "rootless-crash")
        name = fns.create(zip_dir(FUNCTIONS / "python"), handler="app.handler")
        _invoke(lam, name, {})
        assert host_pids_of(name)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
        srv.stop()
        assert wait_no_pids(name, timeout=5) == [], "sandbox processes outlived the killed server"
        sandboxes = srv.data_dir / "sandboxes"
        assert sorted(p.name for p in sandboxes.iterdir()) == [".root"]
        assert not any((sandboxes / ".root").iterdir())

        srv.start()
        lam = srv.client()
        _invoke(lam, name, {})
        assert srv.stop() == 0
        assert wait_no_pids(name, timeout=5) == []
        assert sorted(p.name for p in sandboxes.iterdir()) == [".root"]
        assert not any((sandboxes / ".root").iterdir())
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)


def test_doctor_as_a_normal_user(binary_copy):
    _ensure_user(SUBID_USER, system=False)
    data = Path(tempfile.mkdtemp(prefix="stratus-e2e-doctor-"))
    try:
        out = subprocess.run(
            ["setpriv", "--reuid", SUBID_USER, "--regid", SUBID_USER, "--init-groups", "--",
             str(binary_copy), "doctor", "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(data)},
        )
        assert out.returncode == 0, out.stdout + out.stderr
        text = out.stdout
        assert re.search(r"^root\s+WARN\s+not root: rootless mode", text, re.M), text
        assert re.search(r"^cgroups\s+(WARN|ok)\s+rootless: ", text, re.M), text
        if _cgroup_v1_host():
            assert re.search(r"^cgroups\s+WARN\s+rootless: no cgroup limits \(cgroup v1 without delegation\)", text, re.M), text
        assert re.search(r"^sandbox uids\s+ok\s+rootless: one subordinate uid per sandbox", text, re.M), text
        assert re.search(r"^/tmp size\s+ok\s+rootless: a tmpfs", text, re.M), text
    finally:
        shutil.rmtree(data, ignore_errors=True)
