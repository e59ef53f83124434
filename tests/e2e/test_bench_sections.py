"""Smoke test of the benchmark suite's creation, density and burst sections:
each script (bench/creation.py, bench/density.py, bench/burst.py) runs with
--quick against the binary the suite tests (STRATUS_BIN, default the debug
build), starting its own server, and writes the section's JSON document.
Checks the shape the suite's driver relies on and that the figures are
sane, not that targets are met (a debug build on a shared CI machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stratus_harness import REPO, stratus_bin

KEYS = {"section", "figures", "baselines", "ratios", "targets", "notes", "load_avg"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("gcc") is None,
                                reason="needs root (sandboxes) and gcc (the static provided runtime)")


def run_section(script: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{script}.json"
    env = dict(os.environ)
    # Apart from the suite's own servers' uid ranges (STRATUS_E2E_UID_BASE + i * 10,000).
    env["STRATUS_E2E_UID_BASE"] = str(int(os.environ.get("STRATUS_E2E_UID_BASE", "1600000")) + 900_000)
    r = subprocess.run([sys.executable, str(REPO / "bench" / f"{script}.py"), "--quick", "--bin", str(stratus_bin()),
                        "--out", str(out)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "==" in r.stdout, "prints its table"
    doc = json.loads(out.read_text())
    assert KEYS <= set(doc), sorted(doc)
    assert doc["section"] == script
    assert len(doc["load_avg"]) == 2 and all(len(x) == 3 for x in doc["load_avg"])
    assert doc["targets"], "states its targets"
    for t in doc["targets"]:
        assert {"name", "target", "measured", "met"} <= set(t) and isinstance(t["met"], bool), t
    return doc


def test_creation_quick(tmp_path):
    doc = run_section("creation", tmp_path)
    e2e = doc["figures"]["end_to_end"][0]
    assert e2e["burst"] == 10
    assert e2e["cold_starts_counted_by_server"] == 10
    assert e2e["server_rate_per_s"] > 0 and e2e["client_rate_per_s"] > 0
    assert e2e["init_duration_ms"]["p50"] > 0
    assert e2e["phases"]["started_ms"]["p50"] > 0


def test_density_quick(tmp_path):
    doc = run_section("density", tmp_path)
    m = doc["figures"]["runtimes"]["provided"]
    assert m["idle_sandboxes_seen"] == m["n"] == m["sandboxes_with_processes_found"] == 5
    assert m["outside_sandbox_rss_mib"] > 0
    assert m["bottom_up_per_sandbox_mib"] > 0
    assert m["pss_per_sandbox_kib"]["runtime"] > 0
    fit = doc["figures"]["fit"]
    assert fit["idle_after_k"] == 3 and fit["evictions_logged"] >= 1
    assert fit["refusal"]["status"] == 429 and fit["refusal"]["error"] == "TooManyRequestsException"


def test_burst_quick(tmp_path):
    doc = run_section("burst", tmp_path)
    d, o = doc["figures"]["distinct"], doc["figures"]["one_function"]
    assert d["errors"] == 0 and o["errors"] == 0
    assert d["cold_starts_metrics"] == d["cold_starts_tail_init_duration"] == 20
    assert 1 <= o["cold_starts_metrics"] <= 10
    assert d["latency_ms"]["p50"] > 0 and o["latency_ms"]["max"] >= o["latency_ms"]["p99"] > 0
