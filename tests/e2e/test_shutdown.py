"""SIGTERM drains: requests in flight finish, nothing new is accepted, and the
sandboxes and their kernel objects are gone when the server exits; a request
that outlasts the grace period is stopped (own server instances)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from stratus_harness import ROLE, _mounts_under, cgroup_parents_of, new_server, remove_data_dir, unique_name, wait_active, wait_no_pids


def _sleeper(lam, py_zip, timeout=30):
    name = unique_name("drain")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.dispatch",
                        Code={"ZipFile": py_zip}, Timeout=timeout)
    wait_active(lam, name)
    return name


def test_sigterm_lets_invokes_in_flight_finish(py_zip):
    srv = new_server("drain")
    srv.start()
    try:
        lam = srv.client(read_timeout=60)
        name = _sleeper(lam, py_zip)
        started = threading.Barrier(9)

        def one(i):
            started.wait()
            resp = lam.invoke(FunctionName=name, Payload=json.dumps({"action": "sleep", "seconds": 2, "i": i}))
            return resp.get("FunctionError"), json.loads(resp["Payload"].read())

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, i) for i in range(8)]
            started.wait()
            time.sleep(0.8)  # every invoke is running in its sandbox
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # The listener is closed: no new connection is accepted.
            refused = False
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
            except OSError:
                refused = True
            results = [f.result(timeout=60) for f in futures]
        assert refused, "the server still accepted connections after SIGTERM"
        for i, (err, out) in enumerate(results):
            assert err is None, out
            assert out["event"]["i"] == i, out
        assert srv.proc.wait(timeout=30) == 0
        assert not wait_no_pids(name, 5), "sandbox processes outlived the server"
        assert not cgroup_parents_of(srv), cgroup_parents_of(srv)
        assert not _mounts_under(srv.data_dir)
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)


def test_a_request_longer_than_the_grace_period_is_stopped(py_zip):
    srv = new_server("drain-grace", ["--shutdown-grace-secs", "1"])
    srv.start()
    try:
        lam = srv.client(read_timeout=60)
        name = _sleeper(lam, py_zip, timeout=60)
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(lam.invoke, FunctionName=name, Payload=json.dumps({"action": "sleep", "seconds": 30}))
            time.sleep(1.0)
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            rc = srv.proc.wait(timeout=20)
            took = time.monotonic() - t0
            try:
                resp = long.result(timeout=30)
                # Its sandbox was stopped under it: a Runtime.ExitError.
                outcome = (resp.get("FunctionError"), json.loads(resp["Payload"].read()).get("errorType"))
            except Exception as e:  # or the connection was cut
                outcome = ("cut", type(e).__name__)
        assert rc == 0
        assert 0.9 <= took < 8, took
        assert outcome[0] in ("Unhandled", "cut"), outcome
        if outcome[0] == "Unhandled":
            assert outcome[1] == "Runtime.ExitError", outcome
        assert not wait_no_pids(name, 5), "sandbox processes outlived the server"
        assert not cgroup_parents_of(srv), cgroup_parents_of(srv)
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)
