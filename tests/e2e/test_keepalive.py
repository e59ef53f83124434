"""The adaptive keep-alive (`--keep-alive-policy adaptive`): a function called
more rarely than the fixed keep-alive is cold every time under the fixed
timer; the adaptive policy learns its idle times and, once ten of them are
known, keeps its sandbox (idle times in the histogram's first bin) or
releases it at once and pre-warms a new one just before the next call
(docs/design/keepalive.md)."""

from __future__ import annotations

import base64
import re
import time
import urllib.request

import pytest

from stratus_harness import FunctionFactory, new_server, remove_data_dir, zip_files

APP = "def handler(event, context):\n    return 'ok'\n"
GAP_S = 2.5  # past the 1 s fixed keep-alive plus the reaper's 1 s period


def invoke_is_cold(lam, name: str) -> bool:
    resp = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    assert resp["Payload"].read() == b'"ok"'
    return "Init Duration" in base64.b64decode(resp["LogResult"]).decode()


def cold_starts(srv, tag: str, invokes: int) -> list[bool]:
    fns = FunctionFactory(srv.client(), tag)
    try:
        lam = srv.client()
        name = fns.create(zip_files({"app.py": APP}))
        cold = []
        for _ in range(invokes):
            cold.append(invoke_is_cold(lam, name))
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
        # Cold while fewer than ten idle times are known, then warm. The
        # 2.5 s idle times fall in the first one-minute bin: no pre-warm,
        # the sandbox stays loaded.
        assert all(cold[:10]), cold
        assert not any(cold[11:]), cold


# The pre-warm, with one-second histogram bins (`--keep-alive-bin-ms`, an
# option for tests and experiments) so that it shows within minutes: idle
# times of 8 s put the pre-warm at 7.2 s after an invoke ends (the 8 s bin
# less 10%) and the tail at 9.9 s.
PREWARM_GAP_S = 8.0
MID_GAP_S = 3.0  # after the release (within 0.5 s), before the pre-warm


def live_sandboxes(srv) -> int:
    """Sandboxes starting, idle or busy, from the server's /metrics."""
    with urllib.request.urlopen(srv.endpoint + "/metrics", timeout=10) as r:
        text = r.read().decode()
    values = re.findall(r'^stratus_sandboxes\{state="(?:starting|idle|busy)"\} ([0-9.]+)$', text, re.M)
    assert len(values) == 3, text
    return int(sum(float(v) for v in values))


def test_adaptive_keep_alive_prewarms_before_the_next_call():
    srv = new_server(
        "keepalive-prewarm",
        ["--keep-alive-secs", "1", "--keep-alive-policy", "adaptive", "--keep-alive-bin-ms", "1000"],
        env={"STRATUS_LOG": "info,stratus_assignment=debug"},
    )
    srv.start()
    fns = FunctionFactory(srv.client(), "keepalive-prewarm")
    try:
        lam = srv.client()
        name = fns.create(zip_files({"app.py": APP}))
        cold, held = [], []
        for _ in range(14):
            cold.append(invoke_is_cold(lam, name))
            ended = time.monotonic()
            time.sleep(MID_GAP_S)
            held.append(live_sandboxes(srv))
            time.sleep(max(0.0, ended + PREWARM_GAP_S - time.monotonic()))
        log = srv.log_path.read_text(errors="replace")
        with urllib.request.urlopen(srv.endpoint + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
    finally:
        fns.cleanup()
        srv.stop()
        remove_data_dir(srv.data_dir)
    # Cold while learning (the 11th invoke is the first the histogram
    # decides, and nothing was kept for it), warm after.
    assert all(cold[:11]), cold
    assert not any(cold[11:]), cold
    # Yet no sandbox was held in the middle of the gaps: each warm invoke
    # ran on a sandbox pre-warmed after the previous one was released.
    assert held[10:] == [0] * 4, held
    assert log.count("released an idle sandbox until its pre-warm") >= 4, srv.log_tail()
    assert log.count("a pre-warmed sandbox serves an invoke") >= 3, srv.log_tail()
    # The same counts on /metrics.
    prewarms = {k: int(float(v)) for k, v in
                re.findall(r'^stratus_prewarms_total\{outcome="(\w+)"\} ([0-9.]+)$', metrics, re.M)}
    assert set(prewarms) == {"started", "failed", "used", "no_room"}, metrics
    assert prewarms["used"] == log.count("a pre-warmed sandbox serves an invoke"), (prewarms, metrics)
    assert prewarms["started"] >= prewarms["used"] >= 3 and prewarms["failed"] == 0, prewarms


def test_a_sandbox_past_its_lease_is_recycled_and_counted():
    """`--sandbox-lease-secs 2`: a warm sandbox older than its lease is shut
    down instead of reused (the next invoke is cold, though the keep-alive
    would have kept it) and counted by `stratus_sandbox_lease_expiries_total`."""
    srv = new_server("lease", ["--sandbox-lease-secs", "2", "--keep-alive-secs", "600"])
    srv.start()
    fns = FunctionFactory(srv.client(), "lease")
    try:
        lam = srv.client()
        name = fns.create(zip_files({"app.py": APP}))

        def expiries() -> int:
            with urllib.request.urlopen(srv.endpoint + "/metrics", timeout=10) as r:
                text = r.read().decode()
            (line,) = [ln for ln in text.splitlines() if ln.startswith("stratus_sandbox_lease_expiries_total ")]
            return int(line.split()[1])

        assert expiries() == 0
        assert invoke_is_cold(lam, name)
        assert not invoke_is_cold(lam, name), "within its lease the sandbox is reused"
        time.sleep(2.5)  # past the 2 s lease, well within the keep-alive
        assert invoke_is_cold(lam, name), "a sandbox past its lease served an invoke"
        assert expiries() == 1
    finally:
        fns.cleanup()
        srv.stop()
        remove_data_dir(srv.data_dir)
