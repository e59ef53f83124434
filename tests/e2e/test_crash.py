"""A kill -9 of the server during 20 concurrent invokes leaves no orphan, and a
restart on the same data dir removes what is left (counted from the kernel's
own view: /proc, cgroup directories, the mount table, loop devices, `ip netns`)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stratus_harness import (
    ROLE,
    Server,
    arg_of,
    host_pids_of,
    new_server,
    remove_data_dir,
    unique_name,
    wait_active,
)

INVOKES = 20


def _pids_in_uid_range(base: int, count: int = 10_000) -> list[int]:
    """Live (non-zombie) processes whose real uid is in the server's sandbox range."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields.get("Uid", "0").split()[0])
        if base <= uid < base + count and not fields.get("State", "").strip().startswith("Z"):
            pids.append(int(d))
    return pids


def _cgroups_under(parent: str) -> list[str]:
    """Sandbox (and pre-warm) cgroup directories under the parent, in every hierarchy."""
    return sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{parent}/*") if p.is_dir()) + sorted(
        str(p) for p in Path("/sys/fs/cgroup").glob(f"{parent}/*") if p.is_dir()
    )


def _mounts_referencing(path: Path) -> list[str]:
    needle = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return [line.strip() for line in f if needle in line]


def _loop_backing_files(path: Path) -> list[str]:
    needle = str(path.resolve())
    found = []
    for f in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            backing = f.read_text().strip()
        except OSError:
            continue
        if backing.startswith(needle):
            found.append(backing)
    return found


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout


def _scratch_dirs(data_dir: Path) -> list[str]:
    """Per-sandbox directories: none for a sandbox with a /tmp disk (the
    root is assembled on the shared `.root` mountpoint)."""
    base = data_dir / "sandboxes"
    return sorted(p.name for p in base.iterdir() if p.name not in ("disks", ".root")) if base.exists() else []


def test_kill_9_during_invokes_leaves_no_orphan(py_zip):
    netns_before = _netns()
    first = new_server("crash")
    first.start()
    data_dir = first.data_dir
    parent = arg_of(first, "--cgroup-parent")
    uid_base = int(arg_of(first, "--uid-base"))
    lam = first.client(read_timeout=120, max_pool_connections=INVOKES + 5)
    name = unique_name("crash")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.dispatch",
                        Code={"ZipFile": py_zip}, Timeout=120)
    wait_active(lam, name)

    def invoke(_):
        try:
            lam.invoke(FunctionName=name, Payload=json.dumps({"action": "sleep", "seconds": 60}))
        except Exception as e:  # the server is killed under it
            return e
        return None

    pool = ThreadPoolExecutor(INVOKES)
    try:
        futures = [pool.submit(invoke, i) for i in range(INVOKES)]
        deadline = time.monotonic() + 60
        while len(host_pids_of(name)) < INVOKES and time.monotonic() < deadline:
            time.sleep(0.2)
        running = host_pids_of(name)
        assert len(running) >= INVOKES, f"only {len(running)} runtimes started; log:\n{first.log_tail()}"
        assert len(_cgroups_under(parent)) >= INVOKES
        assert len(_loop_backing_files(data_dir)) >= INVOKES
        assert _scratch_dirs(data_dir) == []

        # kill -9 of the server while all 20 invokes run.
        first.proc.kill()
        first.proc.wait()
        first.stop()
        for f in futures:
            assert f.result(timeout=30) is not None, "an invoke finished although its server was killed"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

    # Nothing runs on: the jailers die with the server, the inits with their
    # jailers, the runtimes with their pid namespaces.
    deadline = time.monotonic() + 5
    while (host_pids_of(name) or _pids_in_uid_range(uid_base)) and time.monotonic() < deadline:
        time.sleep(0.1)
    after_crash = {
        "runtimes": host_pids_of(name),
        "uid_range": _pids_in_uid_range(uid_base),
        "mounts": _mounts_referencing(data_dir),
        "cgroups": len(_cgroups_under(parent)),
        "scratch": len(_scratch_dirs(data_dir)),
        "loops": len(_loop_backing_files(data_dir)),
    }
    print(f"\n[e2e] after kill -9: {after_crash}")
    assert after_crash["runtimes"] == [], after_crash
    assert after_crash["uid_range"] == [], after_crash
    assert after_crash["mounts"] == [], after_crash
    assert _netns() == netns_before, "named network namespaces changed"

    # A restart with the same data dir, cgroup parent and uid range (without
    # a runtime pool of its own, so everything found under them afterwards
    # is a leftover: the first server's pooled sandboxes must be gone too).
    second = Server(data_dir=data_dir, log_path=first.log_path.with_name("server-crash-restarted.log"),
                    extra_args=list(first.extra_args) + ["--runtime-pool", "0"])
    second.start()
    try:
        own = f"pool-{second.proc.pid}-"
        left_cgroups = [c for c in _cgroups_under(parent) if not Path(c).name.startswith(own)]
        # The second server's own ready disks: unnamed images in its
        # `disks/server-<pid>/` directories.
        mine = f"server-{second.proc.pid}"
        left_loops = [b for b in _loop_backing_files(data_dir)
                      if not (Path(b.removesuffix(" (deleted)")).parent.name == mine
                              or Path(b).name.startswith("probe"))]
        after_restart = {
            "cgroups": left_cgroups,
            "scratch": _scratch_dirs(data_dir),
            "loops": left_loops,
            "uid_range": _pids_in_uid_range(uid_base),
            "mounts": _mounts_referencing(data_dir),
        }
        print(f"[e2e] after restart: {after_restart}")
        assert after_restart == {"cgroups": [], "scratch": [], "loops": [], "uid_range": [], "mounts": []}, (
            f"{after_restart}\nlog:\n{second.log_tail()}"
        )
        assert _netns() == netns_before

        lam2 = second.client()
        resp = lam2.invoke(FunctionName=name, Payload=json.dumps({"action": "sleep", "seconds": 0}))
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp, resp["Payload"].read()
        lam2.delete_function(FunctionName=name)
    finally:
        assert second.stop() == 0
    remove_data_dir(data_dir)
