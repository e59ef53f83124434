#!/usr/bin/env python3
"""Benchmark section 2, cold start: time from invoke to first response for a
function with no warm sandbox, per runtime, against starting the same code
outside any sandbox.

    python3 bench/cold.py [--bin target/release/stratus] [--out cold.json] [--quick]

Stratus: for each run a new function (MemorySize 1,024; the same code, so its
unpacked copy may be cached, as for any function after its first start), and
its first invoke sent by `stratus-loadgen` (one connection opened beforehand,
SigV4 signed before the timer): from sending the request to reading the whole
response. Runtimes: `provided.al2023` with `stratus-bench-noop` (AWS's
`lambda_runtime`), `python3.12` and `nodejs20.x`, each a handler returning
`{}`; on request (`--runtimes provided-static`) `provided.al2023` with
bench/static_bootstrap.c (`gcc -static -O2`).

Baselines, by `stratus-bench-cold-baseline`, after one untimed run, in a clean
environment (PATH, LANG, TZ):
  python    `/usr/bin/python3 -c 'import app; app.handler({}, None)'`, spawn → exit
  node      `/usr/bin/node -e "require('./index.js').handler({}, {}).then(() => {})"`, spawn → exit
  provided  the same `stratus-bench-noop` binary, spawned against a stub Runtime
            API on loopback that serves one event: spawn → its response posted
            (provided-static: the same with the static C binary)

Figures: `<runtime>.median_ms`, `<runtime>.p90_ms`, `<runtime>.overhead_ms`
(Stratus median minus baseline median). Targets: provided under 10 ms end to
end; python and node within 3 ms of their bare start.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import benchlib as bl
from stratus_harness import ROLE, make_client, zip_files


def pctl(samples: list[float], p: float) -> float:
    s = sorted(samples)
    rank = max(1, min(len(s), int(-(-p * len(s) // 100))))
    return s[rank - 1]


def stratus_cold(client, loadgen: Path, endpoint: str, runtime: str, code: bytes, handler: str,
                 runs: int, gap_s: float = 0.0) -> list[float]:
    """First invokes of `runs` new functions. `gap_s`: a pause before each,
    so each is an isolated cold start (the server's runtime pool has
    refilled); 0: back to back, as in a burst of new functions."""
    out = []
    for _ in range(runs):
        name = f"bench-cold-{runtime.replace('.', '')}-{uuid.uuid4().hex[:8]}"
        client.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                               MemorySize=bl.MEMORY_MB, Timeout=30, Code={"ZipFile": code})
        try:
            bl.wait_active(client, name)
            if gap_s:
                time.sleep(gap_s)
            r = bl.loadgen(loadgen, bl.invoke_url(endpoint, name), requests=1, warmup=0)
            if r["errors"] or not r["latency_us"]:
                raise RuntimeError(f"cold invoke of {runtime} failed: {r['error_samples']}")
            out.append(r["latency_us"]["max"] / 1000)
        finally:
            client.delete_function(FunctionName=name)
    return out


def bare(tool: Path, runs: int, cmd: list[str], cwd: Path, runtime_api: bool = False) -> dict:
    args = [str(tool), "--runs", str(runs), "--cwd", str(cwd)]
    args += [f"--env={k}={v}" for k, v in bl.BARE_ENV.items()]
    if runtime_api:
        args.append("--runtime-api")
    r = subprocess.run([*args, "--", *cmd], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=bl.default_bin(), help="stratus server binary (default %(default)s)")
    ap.add_argument("--endpoint", help="use this running server instead of starting one from --bin")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--quick", action="store_true", help="a short run for CI (3 runs each)")
    ap.add_argument("--runs", type=int, help="cold starts per runtime (default 20, quick 3)")
    ap.add_argument("--gap-ms", type=int, default=1000,
                    help="pause before each timed cold start, so each is isolated (default 1000)")
    ap.add_argument("--runtimes", default="provided,python,node",
                    help="comma-separated: provided, python, node, provided-static (default %(default)s)")
    args = ap.parse_args()

    binary = bl.check_bin(args.bin)
    loadgen = bl.tool(binary, "stratus-loadgen")
    noop = bl.tool(binary, "stratus-bench-noop")
    cold_tool = bl.tool(binary, "stratus-bench-cold-baseline")
    runs = args.runs or (3 if args.quick else 20)
    runtimes = [r for r in args.runtimes.split(",") if r]

    load_before = bl.loadavg()
    doc: dict = {"section": "cold", "figures": {}, "baselines": {}, "ratios": {}, "targets": [], "notes": [],
                 "params": {"runs": runs, "gap_ms": args.gap_ms, "memory_mb": bl.MEMORY_MB, "quick": args.quick, "binary": str(binary),
                            "endpoint": args.endpoint or "a server started from binary",
                            "bare_env": bl.BARE_ENV},
                 "samples_ms": {}, "baseline_runs": {}, "load_before": load_before}
    fig, base, rat = doc["figures"], doc["baselines"], doc["ratios"]
    srv = tmp = None
    work = Path(tempfile.mkdtemp(prefix="stratus-bench-cold-"))
    try:
        (work / "app.py").write_text(bl.PY_NOOP)
        (work / "index.js").write_text(bl.NODE_NOOP)
        setups = {
            "provided": ("provided.al2023", zip_files({"bootstrap": noop.read_bytes()}, executable=("bootstrap",)),
                         "bootstrap", [str(noop)], True),
            "python": ("python3.12", zip_files({"app.py": bl.PY_NOOP}), "app.handler",
                       ["/usr/bin/python3", "-c", "import app; app.handler({}, None)"], False),
            "node": ("nodejs20.x", zip_files({"index.js": bl.NODE_NOOP}), "index.handler",
                     ["/usr/bin/node", "-e", "require('./index.js').handler({}, {}).then(() => {})"], False),
        }
        if "provided-static" in runtimes:
            import sandboxlib

            static = sandboxlib.static_runtime()
            setups["provided-static"] = ("provided.al2023", sandboxlib.static_zip(), "bootstrap",
                                         [str(static)], True)
        # Baselines first, while no server competes for the CPUs.
        for rt in runtimes:
            _, _, _, cmd, runtime_api = setups[rt]
            print(f"[bench] cold {rt} baseline...", file=sys.stderr)
            doc["baseline_runs"][rt] = bare(cold_tool, runs, cmd, work, runtime_api)
        if args.endpoint:
            endpoint = args.endpoint
        else:
            srv, tmp = bl.start_server(binary, "cold")
            endpoint = srv.endpoint
        client = make_client(endpoint)
        for rt in runtimes:
            runtime, code, handler, cmd, _ = setups[rt]
            print(f"[bench] cold {rt} Stratus...", file=sys.stderr)
            samples = stratus_cold(client, loadgen, endpoint, runtime, code, handler, runs, args.gap_ms / 1000)
            doc["samples_ms"][rt] = [round(x, 3) for x in samples]
            # The same, back to back: a cold start may find the runtime pool
            # not refilled yet and start from scratch.
            burst = stratus_cold(client, loadgen, endpoint, runtime, code, handler, runs)
            doc["samples_ms"][f"{rt}.back_to_back"] = [round(x, 3) for x in burst]
            fig[f"{rt}.back_to_back_median_ms"] = round(pctl(burst, 50), 3)
            b = doc["baseline_runs"][rt]
            fig[f"{rt}.median_ms"], base[f"{rt}.median_ms"] = round(pctl(samples, 50), 3), b["median_ms"]
            fig[f"{rt}.p90_ms"], base[f"{rt}.p90_ms"] = round(pctl(samples, 90), 3), b["p90_ms"]
            for k in ("median_ms", "p90_ms"):
                rat[f"{rt}.{k}"] = bl.ratio(fig[f"{rt}.{k}"], base[f"{rt}.{k}"])
            over = round(fig[f"{rt}.median_ms"] - b["median_ms"], 3)
            fig[f"{rt}.overhead_ms"] = over
            doc["notes"].append(f"{rt}: baseline `{' '.join(cmd)}`, {b['mode']}")
            if rt.startswith("provided"):
                v = fig[f"{rt}.median_ms"]
                doc["targets"].append(bl.target(f"cold {rt}: first response < 10 ms end to end",
                                                f"{rt}.median_ms", v, "< 10", v < 10))
            else:
                doc["targets"].append(bl.target(f"cold {rt}: within 3 ms of the bare interpreter start",
                                                f"{rt}.overhead_ms", over, "< 3", over < 3))
        doc["notes"].append("Stratus: a new function per run, its first invoke timed by stratus-loadgen "
                            "(connection open and request signed before the timer); medians of the runs")
        doc["notes"].append(f"each run waits {args.gap_ms} ms after its function is Active (an isolated cold "
                            "start: the runtime pool has refilled); *.back_to_back_median_ms: the same with no "
                            "pause, so a cold start may find the pool empty and start from scratch")
    finally:
        bl.stop_server(srv, tmp)
        shutil.rmtree(work, ignore_errors=True)
    doc["load_after"] = bl.loadavg()
    bl.write_section(args.out, doc)
    print(f"\ncold start (load average before {load_before}, after {doc['load_after']}):")
    print(bl.section_table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
