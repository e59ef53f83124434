"""The attack suite: a hostile tenant against the sandbox and the server.

Each case is one test; after each, the server must still be healthy (the
`healthy_after` fixture). Cases of the suite covered elsewhere, so as not to
run them twice:

- fork bomb: test_sandbox.py::test_fork_bomb_is_contained
- memory bomb: test_invoke.py (OOM tests: Runtime.OutOfMemory, next invoke works)
- disk fill: test_sandbox.py::test_tmp_is_capped_at_ephemeral_storage
- zip with path traversal or symlinks: test_control_plane.py (the
  dotdot/absolute/symlink-abs/symlink-rel cases)
- unsigned, wrong-signature, replayed and other-account requests: the
  authentication tests (test_auth.py)
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from stratus_harness import FUNCTIONS, host_pids_of, zip_dir

ATTACKER = Path(__file__).resolve().parent / "functions" / "attacker"


@pytest.fixture(scope="module")
def attacker_zip() -> bytes:
    return zip_dir(ATTACKER)


@pytest.fixture(autouse=True)
def healthy_after(server):
    yield
    assert server.proc.poll() is None, "the server died"
    with urllib.request.urlopen(server.endpoint + "/health", timeout=10) as r:
        assert r.status == 200


def _attack(lam, name, case, **event):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"case": case, **event}))
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    return body


def test_denied_syscalls_answer_eperm_from_the_filter(lam, fns, attacker_zip):
    """Invalid arguments everywhere: a syscall the filter let through would
    fail with EINVAL, EFAULT or EBADF, so EPERM is the filter's answer."""
    name = fns.create(attacker_zip, handler="app.attack")
    r = _attack(lam, name, "syscalls")
    status = r.pop("status")
    assert status["NoNewPrivs"] == "1", status
    assert status["Seccomp"] == "2", status
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[key] == "0000000000000000", status
    assert r.pop("clone3") == "ENOSYS", "clone3 must look absent so libc falls back to clone"
    not_eperm = {k: v for k, v in r.items() if v != "EPERM"}
    assert not not_eperm, f"syscalls the sandbox let through: {not_eperm}"
    # And the runtime still works after every refusal.
    assert _attack(lam, name, "fds")["error"] == "EMFILE"


def test_other_sandboxes_tmp_and_code_are_out_of_reach(lam, fns, attacker_zip, server, tmp_path):
    marker = f"secret-{uuid.uuid4().hex}"
    victim_zip = zip_dir(ATTACKER, {f"{marker}.txt": marker})
    victim = fns.create(victim_zip, handler="app.victim")
    out = json.loads(lam.invoke(FunctionName=victim, Payload=json.dumps({"marker": marker}))["Payload"].read())
    assert marker in out["tmp"], out
    attacker = fns.create(attacker_zip, handler="app.attack")
    data_dir = str(server.data_dir)
    r = _attack(lam, attacker, "find_secrets", marker=marker,
                host_paths=[data_dir, f"{data_dir}/code", f"{data_dir}/blobs", "/var/lib/stratus"])
    assert r["found"] == [], r["found"]
    assert not any(r["host_paths_visible"].values()), r["host_paths_visible"]
    for link, seen in r["through_proc"].items():
        assert seen == [] or isinstance(seen, str), (link, seen)
    # The victim's secret is still there, untouched.
    out = json.loads(lam.invoke(FunctionName=victim, Payload=json.dumps({}))["Payload"].read())
    assert marker in out["tmp"], out


def test_other_sandboxes_processes_cannot_be_signalled_or_seen(lam, fns, attacker_zip):
    victim = fns.create(attacker_zip, handler="app.victim")
    first = json.loads(lam.invoke(FunctionName=victim, Payload=b"{}")["Payload"].read())
    pids = host_pids_of(victim)
    assert pids, "the victim's runtime is not visible from the host"
    attacker = fns.create(attacker_zip, handler="app.attack")
    r = _attack(lam, attacker, "signals", pids=pids)
    for pid in pids:
        # Host pids do not exist in the attacker's pid namespace (or are its own init/runtime).
        assert pid in (1, 2) or r[str(pid)] == "ESRCH", r
        assert pid in (1, 2) or r["pidfd_open"][str(pid)] == "ESRCH", r
    assert len(r["visible_pids"]) <= 3 and r["visible_pids"][:2] == [1, 2], r["visible_pids"]
    # The victim's sandbox lives on: same process, next invoke is warm.
    again = json.loads(lam.invoke(FunctionName=victim, Payload=b"{}")["Payload"].read())
    assert again["pid"] == first["pid"]
    assert host_pids_of(victim) == pids


def test_the_host_filesystem_cannot_be_written(lam, fns, attacker_zip):
    name = fns.create(attacker_zip, handler="app.attack")
    r = _attack(lam, name, "write_host")
    written = {p: v for p, v in r["results"].items() if v == "ok"}
    assert not written, f"written from inside the sandbox: {written}"
    for d in ["/", "/usr", "/usr/bin", "/etc", "/var", "/opt", "/root", "/home"]:
        assert not os.path.exists(os.path.join(d, r["name"])), d


def test_fd_exhaustion_stops_at_the_limit(lam, fns, attacker_zip):
    name = fns.create(attacker_zip, handler="app.attack")
    r = _attack(lam, name, "fds")
    assert r["error"] == "EMFILE", r
    assert 900 <= r["opened"] <= 1024, r
    # The server still serves this function (and its own fds are untouched).
    assert _attack(lam, name, "fds")["error"] == "EMFILE"


def _host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])
            if not a["local"].startswith("127.")]


def test_the_servers_ports_and_other_sandboxes_are_unreachable(lam, fns, attacker_zip, server):
    # Another sandbox, busy or idle, with its own Runtime API listener.
    other = fns.create(attacker_zip, handler="app.victim")
    lam.invoke(FunctionName=other, Payload=b"{}")
    name = fns.create(attacker_zip, handler="app.attack")
    targets = [["127.0.0.1", server.port], ["::1", server.port]]
    targets += [[a, server.port] for a in _host_addresses()]
    # Where a sandbox's Runtime API would be, were the namespaces shared.
    targets += [["10.0.0.1", 9001], ["172.17.0.1", 9001], ["169.254.169.254", 80]]
    r = _attack(lam, name, "connect", targets=targets)
    assert r.pop("interfaces") == ["lo"]
    connected = {t: v for t, v in r.items() if v == "connected"}
    assert not connected, f"reached from inside the sandbox: {connected}"


def test_the_runtime_api_refuses_forged_answers(lam, fns, attacker_zip):
    name = fns.create(attacker_zip, handler="app.attack")
    r = _attack(lam, name, "runtime_api")
    # Answers for an invocation that is not this one's.
    assert r["other_id_response"]["status"] == 400, r
    assert "InvalidRequestID" in r["other_id_response"]["body"], r
    assert r["other_id_error"]["status"] == 400, r
    # No second event while one is open; no init error after init.
    assert r["next_while_open"]["status"] == 403, r
    assert r["init_error_mid_invoke"]["status"] in (403, 400), r
    # The Runtime API serves nothing else.
    assert r["not_an_api"].get("status") in (400, 404), r
    # And the invoke itself completed normally (the forged answers changed nothing).
    again = _attack(lam, name, "fds")
    assert again["error"] == "EMFILE"
