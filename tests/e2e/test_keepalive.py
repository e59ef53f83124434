"""The adaptive keep-alive (`--keep-alive-policy adaptive`): a function called
more rarely than the fixed keep-alive is cold every time under the fixed
timer; the adaptive policy learns its idle times and keeps its sandbox once
ten of them are known (docs/design/keepalive.md)."""

from __future__ import annotations

import base64
import time

import pytest

from stratus_harness import FunctionFactory, new_server, remove_data_dir, zip_files

APP = "def handler(event, context):\n    return 'ok'\n"
GAP_S = 2.5  # past the 1 s fixed keep-alive plus the reaper's 1 s period


def cold_starts(srv, tag: str, invokes: int) -> list[bool]:
    fns = FunctionFactory(srv.client(), tag)
    try:
        lam = srv.client()
        name = fns.create(zip_files({"app.py": APP}))
        cold = []
        for _ in range(invokes):
            resp = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
            assert resp["Payload"].read() == b'"ok"'
            cold.append("Init Duration" in base64.b64decode(resp["LogResult"]).decode())
            time.sleep(GAP_S)
        return cold
    finally:
        fns.cleanup()


@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
def test_adaptive_keep_alive_learns_idle_times(policy):
    srv = new_server(f"keepalive-{policy}", ["--keep-alive-secs", "1", "--keep-alive-policy", policy])
    srv.start()
    try:
        cold = cold_starts(srv, f"keepalive-{policy}", 5 if policy == "fixed" else 13)
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)
    if policy == "fixed":
        assert all(cold), cold
    else:
        # Cold while fewer than ten idle times are known, then warm.
        assert all(cold[:10]), cold
        assert not any(cold[11:]), cold
