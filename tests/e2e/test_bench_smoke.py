"""Smoke test of the benchmark suite (bench/suite.py): the warm and cold
sections, --quick, against the binary under test (debug in CI), so a change
that breaks the suite fails CI. The figures of such a run mean nothing; only
that the suite runs, writes its JSON and finds every figure."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from stratus_harness import REPO, stratus_bin


@pytest.mark.timeout(180)
def test_suite_quick_warm_and_cold(tmp_path):
    out = tmp_path / "suite.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "suite.py"), "--quick", "--sections", "warm,cold,nosuch",
         "--bin", str(stratus_bin()), "--out", str(out)],
        capture_output=True, text=True, timeout=170,
    )
    assert r.returncode == 0, f"suite failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    doc = json.loads(out.read_text())
    assert set(doc) >= {"suite", "machine", "load_before", "load_after", "sections", "skipped"}
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["git_commit"]
    assert "nosuch" in doc["skipped"]
    assert "| figure" in r.stdout

    warm = doc["sections"]["warm"]
    assert warm["section"] == "warm"
    for rt in ("provided", "python"):
        for c in (1, 2):
            for k in ("p50_us", "p99_us", "throughput_rps"):
                key = f"{rt}.c{c}.{k}"
                assert warm["figures"][key] > 0, key
                assert warm["baselines"][key] > 0, key
                assert warm["ratios"][key] > 0, key
        assert warm["ratios"][f"{rt}.max_throughput_rps"] > 0
        # Where the time goes: the server and the function's sandbox both
        # spent CPU and switched context on every request.
        for k in ("server_cpu_us", "sandbox_cpu_us", "server_switches", "sandbox_switches"):
            assert warm["figures"][f"{rt}.c1.{k}"] > 0, k
        # (The direct baseline may spend less than one 10 ms clock tick on
        # a quick run's requests.)
        assert warm["figures"][f"{rt}.c1.baseline_cpu_us"] >= 0
    # The same lambda_runtime function on Tokio's current-thread runtime: no
    # targets, but measured like the others, and with its one thread it
    # switches context less per event than on the multi-thread runtime.
    for k in ("c1.p50_us", "c2.throughput_rps", "max_throughput_rps"):
        assert warm["figures"][f"provided_st.{k}"] > 0 and warm["ratios"][f"provided_st.{k}"] > 0, k
    assert 0 < warm["figures"]["provided_st.c1.sandbox_switches"] < warm["figures"]["provided.c1.sandbox_switches"]
    assert any("BENCH_TOKIO_FLAVOR" in n for n in warm["notes"])
    names = [t["name"] for t in warm["targets"]]
    assert len(names) == 6, names
    assert not any("provided_st" in n for n in names)
    assert all(isinstance(t["met"], bool) for t in warm["targets"])
    for run in warm["runs"].values():
        for side in ("stratus", "baseline"):
            assert run[side]["errors"] == 0 and run[side]["signing"]["in_timed_window"] is False

    cold = doc["sections"]["cold"]
    for rt in ("provided", "python", "node"):
        assert cold["figures"][f"{rt}.median_ms"] > 0
        assert cold["baselines"][f"{rt}.median_ms"] > 0
        assert cold["ratios"][f"{rt}.median_ms"] > 0
        assert len(cold["samples_ms"][rt]) == 3
    assert len(cold["targets"]) == 3


@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("perf") is None, reason="needs perf (.ci/run installs linux-perf)")
def test_warm_profile_names_where_the_sandbox_time_goes(tmp_path):
    """bench/warm.py --profile: a perf profile at the highest client count,
    split into the server, the function's sandboxes and the baseline server,
    each with its samples, its kernel share, the kernel paths' inclusive
    shares and its top symbols. The function runtime's event loop sleeps and wakes for every
    event, so the sandboxes' samples include the scheduler."""
    out = tmp_path / "warm.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "warm.py"), "--quick", "--profile", "--runtimes", "provided",
         "--levels", "2", "--bin", str(stratus_bin()), "--out", str(out)],
        capture_output=True, text=True, timeout=230,
    )
    assert r.returncode == 0, f"warm --profile failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    doc = json.loads(out.read_text())
    prof = doc["profile"]
    assert set(prof) == {"provided.server", "provided.sandboxes", "provided.baseline"}, sorted(prof)
    for group, p in prof.items():
        assert p["samples"] > 0, group
        assert set(p["inclusive_pct"]) >= {"schedule", "__x64_sys_futex", "handle_softirqs"}, group
        assert 0 < p["kernel_pct"] <= 100, (group, p["kernel_pct"])
        assert all(0 <= v <= 100 for v in p["inclusive_pct"].values()), (group, p["inclusive_pct"])
        assert p["top_self"] and all("%" in row for row in p["top_self"]), group
    assert prof["provided.sandboxes"]["inclusive_pct"]["schedule"] > 0, prof["provided.sandboxes"]
    figures = doc["figures"]
    assert figures["provided.c2.sandboxes_kernel_pct"] == prof["provided.sandboxes"]["kernel_pct"]
    assert figures["provided.c2.server_schedule_pct"] == prof["provided.server"]["inclusive_pct"]["schedule"]


@pytest.mark.timeout(600)
def test_decision_section_quick(tmp_path):
    """bench/decision.py builds the decision_bench example (in the profile of
    the binary under test) and reports both scenarios with the target."""
    out = tmp_path / "decision.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "decision.py"), "--quick", "--bin", str(stratus_bin()),
         "--out", str(out)],
        capture_output=True, text=True, timeout=590,
    )
    assert r.returncode == 0, f"decision failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    doc = json.loads(out.read_text())
    assert doc["section"] == "decision"
    for scenario in ("sequential", "concurrent_8"):
        assert doc["runs"][scenario]["n"] == 20_000
        f = doc["figures"]
        assert 0 < f[f"{scenario}.p50_us"] <= f[f"{scenario}.p99_us"] <= f[f"{scenario}.max_us"]
        assert f[f"{scenario}.decisions_per_s"] > 0
    [t] = doc["targets"]
    assert t["figure"] == "sequential.p99_us" and isinstance(t["met"], bool)


@pytest.mark.timeout(120)
def test_upload_stall_runs(tmp_path):
    """bench/upload_stall.py, small: one 2 MB upload during 2 s of invokes."""
    out = tmp_path / "stall.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "upload_stall.py"), "--bin", str(stratus_bin()), "--mb", "2",
         "--uploads", "1", "--duration", "2", "--lead", "0.5", "--out", str(out)],
        capture_output=True, text=True, timeout=110,
    )
    assert r.returncode == 0, f"upload_stall failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    assert doc["invokes"] > 0 and len(doc["upload_wall_s"]) == 1
    assert doc["invoke_max_us"] >= doc["invoke_p99_us"] >= doc["invoke_p50_us"] > 0
