#!/usr/bin/env python3
"""The Stratus benchmark suite: one command, one table, one JSON file.

    cargo build --release -p stratus -p stratus-bench-loadgen -p stratus-bench-fixtures
    sudo python3 bench/suite.py            # --quick for a smoke run

Runs each section script present, in order: warm, cold, creation, density,
burst, decision (`bench/<section>.py`; a missing one is skipped with a note). Every
section is a standalone script taking `--bin PATH` (the server binary; it
starts its own server), `--out FILE` and `--quick`, writes
`{"section", "figures", "baselines", "ratios", "notes", ...}` and prints its
own table. The suite merges them with a description of the machine (CPU,
memory, kernel, cgroup version, load average before and after, git commit,
binary) into `bench/results/<UTC date>-<hostname>.json` (or --out), and
prints one combined table: each figure, its baseline, the ratio, and each
target met or not. Ratios are what count: the machines are noisy.

Options: --bin (default $CARGO_TARGET_DIR or target, /release/stratus; the
load client and fixtures are taken from the same directory), --sections
warm,cold to run some, --endpoint URL to measure a running server in the
sections that accept it (the others still start their own from --bin),
--quick, --out FILE.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl

SECTIONS = ["warm", "cold", "creation", "density", "burst", "decision"]
HERE = Path(__file__).resolve().parent


def accepts(script: Path, flag: str) -> bool:
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    return flag in r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=bl.default_bin(), help="stratus server binary (default %(default)s)")
    ap.add_argument("--endpoint", help="a running server, for the sections that accept --endpoint")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="short runs (CI smoke test); figures not comparable")
    ap.add_argument("--out", type=Path, help="result file (default bench/results/<UTC date>-<hostname>.json)")
    args = ap.parse_args()

    binary = bl.check_bin(args.bin.resolve())
    started = time.gmtime()
    doc: dict = {
        "suite": {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", started), "quick": args.quick,
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "format": 1},
        "machine": bl.machine(binary),
        "load_before": bl.loadavg(),
        "sections": {},
        "skipped": {},
    }
    out = args.out or HERE / "results" / f"{time.strftime('%Y-%m-%d', started)}-{doc['machine']['hostname']}.json"
    tmp = Path(tempfile.mkdtemp(prefix="stratus-bench-suite-"))
    failed = []
    for name in [s for s in args.sections.split(",") if s]:
        script = HERE / f"{name}.py"
        if not script.exists():
            doc["skipped"][name] = f"bench/{name}.py not present"
            print(f"[suite] {name}: skipped (bench/{name}.py not present)", file=sys.stderr)
            continue
        cmd = [sys.executable, str(script), "--bin", str(binary), "--out", str(tmp / f"{name}.json")]
        if args.quick:
            cmd.append("--quick")
        if args.endpoint and accepts(script, "--endpoint"):
            cmd += ["--endpoint", args.endpoint]
        print(f"\n[suite] {name}: {' '.join(cmd)}", file=sys.stderr)
        t0 = time.monotonic()
        rc = subprocess.run(cmd).returncode
        took = round(time.monotonic() - t0, 1)
        result = tmp / f"{name}.json"
        if rc != 0 or not result.exists():
            failed.append(name)
            doc["skipped"][name] = f"failed (exit status {rc}, {took} s)"
            continue
        section = json.loads(result.read_text())
        section["seconds"] = took
        doc["sections"][name] = section
    doc["load_after"] = bl.loadavg()
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()

    m = doc["machine"]
    print(f"\n## Stratus benchmark suite, {doc['suite']['started']}{' (--quick)' if args.quick else ''}")
    print(f"{m['hostname']}: {m['cpu_model']}, {m['nproc']} CPUs, {m['memory_mb']:,} MB, kernel {m['kernel']}, "
          f"cgroup {m['cgroup']}; cpuidle {m.get('cpuidle')}; commit {m['git_commit'][:12]}{' (dirty)' if m['git_dirty'] else ''}; "
          f"load average before {doc['load_before']}, after {doc['load_after']}\n")
    rows = []
    for name, s in doc["sections"].items():
        targets = {t["figure"]: t for t in s.get("targets", []) if "figure" in t}
        for key, value in flatten(s.get("figures", {})):
            t = targets.get(key)
            rows.append([f"{name}.{key}", bl.fmt(value), bl.fmt(lookup(s.get("baselines", {}), key)),
                         bl.fmt(lookup(s.get("ratios", {}), key)),
                         f"{t['limit']}: {met_word(t['met'])}" if t else ""])
    print(bl.table(rows, ["figure", "Stratus", "baseline", "ratio", "target"]))
    targets = [t for s in doc["sections"].values() for t in s.get("targets", [])]
    if targets:
        print("\nTargets:")
        for t in targets:
            # Sections 1-2 say figure/value/limit; 3-5 say target/measured.
            value = t.get("value", t.get("measured"))
            limit = t.get("limit", t.get("target", ""))
            print(f"  [{met_word(t['met'])}] {t['name']}: {bl.fmt(value)} (target {limit})")
    for name, why in doc["skipped"].items():
        print(f"  {name}: {why}")
    print(f"\nwritten to {out}")
    return 1 if failed else 0


def flatten(figures: dict, prefix: str = "", depth: int = 0):
    """(dotted key, scalar) pairs of a section's figures, one level deep
    (the JSON file has the rest)."""
    for key, value in figures.items():
        if isinstance(value, dict) and depth < 1:
            yield from flatten(value, f"{prefix}{key}.", depth + 1)
        elif not isinstance(value, (dict, list)):
            yield prefix + key, value


def lookup(doc: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return None if isinstance(doc, (dict, list)) else doc


def met_word(met) -> str:
    return "met" if met else ("not measured" if met is None else "NOT met")


if __name__ == "__main__":
    sys.exit(main())
