"""Two servers cannot share a data directory or a cgroup parent: the second
is refused before it cleans up anything, naming the first one's pid, and the
first one's sandboxes keep working. A server killed with SIGKILL leaves no
lock behind (own server instances)."""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stratus_harness import (
    _LOG_DIR,
    _UID_BASE,
    Server,
    arg_of,
    free_port,
    new_server,
    remove_data_dir,
    stratus_bin,
)
from stratus_harness import ROLE, unique_name, wait_active, wait_no_pids


def start_refused(data_dir: Path, cgroup_parent: str, uid_base: int) -> subprocess.CompletedProcess:
    """Runs a server that must exit at once (a server that starts is killed
    at the timeout, and the test fails)."""
    cmd = [str(stratus_bin()), "server", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data_dir),
           "--cgroup-parent", cgroup_parent, "--uid-base", str(uid_base)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_a_second_server_is_refused_and_the_first_keeps_running(py_zip):
    first = new_server("lock-first")
    first.start()
    lam = first.client()
    name = unique_name("lock")
    other_data = Path(tempfile.mkdtemp(prefix="stratus-e2e-lock-other-"))
    try:
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.sleep",
                            Code={"ZipFile": py_zip}, Timeout=30)
        wait_active(lam, name)
        assert lam.invoke(FunctionName=name, Payload=b'{"seconds": 0}')["StatusCode"] == 200
        pid = first.proc.pid
        parent = arg_of(first, "--cgroup-parent")
        with ThreadPoolExecutor(1) as pool:
            # An invoke runs in a sandbox while the others try to start.
            busy = pool.submit(lam.invoke, FunctionName=name, Payload=json.dumps({"seconds": 3}).encode())

            # Same data directory (own cgroup parent and uids).
            same_data = start_refused(first.data_dir, f"{parent}-other", _UID_BASE + 900_000)
            assert same_data.returncode != 0, same_data
            assert f"the data directory {first.data_dir} is in use by another stratus server (pid {pid})" in same_data.stderr, same_data.stderr
            assert "--data-dir" in same_data.stderr, same_data.stderr

            # Same cgroup parent (own data directory).
            same_parent = start_refused(other_data, parent, _UID_BASE + 910_000)
            assert same_parent.returncode != 0, same_parent
            assert f"the cgroup parent `{parent}` is in use by another stratus server (pid {pid})" in same_parent.stderr, same_parent.stderr
            assert "--cgroup-parent" in same_parent.stderr, same_parent.stderr
            # Refused before touching the other data directory's contents.
            assert not (other_data / "meta.redb").exists()

            resp = busy.result(timeout=30)
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp, resp
        out = json.loads(resp["Payload"].read())
        assert out["count"] == 2, out  # the same warm sandbox, not a new one
        again = lam.invoke(FunctionName=name, Payload=b'{"seconds": 0}')
        assert "FunctionError" not in again and json.loads(again["Payload"].read())["count"] == 3
        # Nothing of the first server's code was removed.
        assert any((first.data_dir / "blobs").glob("*/*.zip"))
    finally:
        first.stop()
        remove_data_dir(other_data)

    # SIGKILL leaves no lock: a server on the same data directory and cgroup
    # parent starts, and removes what the killed one left.
    killed = Server(data_dir=first.data_dir, log_path=_LOG_DIR / "server-lock-killed.log",
                    extra_args=list(first.extra_args))
    killed.start()
    try:
        killed_lam = killed.client()
        assert killed_lam.invoke(FunctionName=name, Payload=b'{"seconds": 0}')["StatusCode"] == 200
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(timeout=10)
    finally:
        killed.stop()
    assert not wait_no_pids(name, 10), "sandbox processes outlived the killed server"
    after = Server(data_dir=first.data_dir, log_path=_LOG_DIR / "server-lock-after-kill.log",
                   extra_args=list(first.extra_args))
    after.start()
    try:
        resp = after.client().invoke(FunctionName=name, Payload=b'{"seconds": 0}')
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp, resp
        after.client().delete_function(FunctionName=name)
    finally:
        assert after.stop() == 0
        remove_data_dir(first.data_dir)
