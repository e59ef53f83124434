#!/usr/bin/env python3
"""Stratus invoke latency benchmark: warm invoke latency and cold start per runtime.

    cargo build --release -p stratus            # and, for the Rust cold start:
    cargo build --release -p stratus-test-fn-rust
    sudo python3 bench/invoke_latency.py --out bench-results.json

Options: --server-args '--isolation gvisor' passes flags to the server started
here (e.g. to measure the gVisor tier); --endpoint http://127.0.0.1:9000 to use
a running server instead of starting one (as root) from --bin (default target/release/stratus, else
target/debug/stratus); -n 1000 warm invokes; --cold-runs 10; --cpu-limit
weight|quota, the server's CPU mode (default weight: CPU in proportion to
MemorySize as a scheduling weight only; quota adds a hard CFS quota, so the
128 MB functions measured here get 128/1,769 of one CPU). The mode is passed
to the server the benchmark starts, and printed and recorded with the results;
with --endpoint it is recorded as given, or as unknown.

What it measures, all client-side wall time on the same machine as the server:
  warm   1,000 sequential RequestResponse invokes of a trivial Python function
         (returns {}) after 20 warm-up invokes, over ONE keep-alive connection,
         twice: (a) "raw": http.client with a SigV4 Authorization header from
         botocore's SigV4Auth, signed before the timer starts, so the figure is
         request + server + sandbox round trip; (b) "boto3": client.invoke() +
         reading the payload, i.e. what a boto3 user sees including boto3's own
         overhead. p50/p90/p99/mean/max and invokes/s for each.
  cold   for python3.12, nodejs20.x and (if built) provided.al2023 with the Rust
         lambda_runtime fixture: a fresh function each run, first invoke timed
         end to end (N = --cold-runs); median/p90, plus the server's
         "Init Duration" from the REPORT line of the log tail.
  bare   the same trivial handler run by the bare interpreter, no Stratus:
         `/usr/bin/python3 -c 'import app; app.handler({}, None)'` and
         `/usr/bin/node -e 'require("./index.js").handler({}, {})'`, in a clean
         environment (PATH, LANG, TZ only, as in a sandbox), as a floor for the
         cold start.
Results are printed and written as JSON to --out.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

from stratus_harness import (  # noqa: E402
    ACCESS_KEY_ID,
    ROLE,
    SECRET_ACCESS_KEY,
    Server,
    make_client,
    wait_active,
    zip_files,
)

PY_TRIVIAL = "def handler(event, context):\n    return {}\n"
NODE_TRIVIAL = "exports.handler = async (event, context) => ({});\n"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(samples_s: list[float], wall_s: float | None = None) -> dict:
    ms = [x * 1000 for x in samples_s]
    out = {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 3),
        "p90_ms": round(pct(ms, 90), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }
    if wall_s:
        out["invokes_per_s"] = round(len(ms) / wall_s, 1)
    return out


class RawInvoker:
    """Invoke over one persistent http.client connection with a SigV4 header."""

    def __init__(self, endpoint: str, region: str = "us-east-1"):
        u = urllib.parse.urlsplit(endpoint)
        self.endpoint = endpoint.rstrip("/")
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.signer = SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "lambda", region)

    def prepare(self, name: str, payload: bytes) -> tuple[str, dict]:
        path = f"/2015-03-31/functions/{name}/invocations"
        req = AWSRequest(method="POST", url=self.endpoint + path, data=payload,
                         headers={"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"})
        self.signer.add_auth(req)
        return path, dict(req.headers.items())

    def invoke(self, path: str, headers: dict, payload: bytes) -> tuple[int, bytes]:
        self.conn.request("POST", path, body=payload, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()


def bench_warm(client, endpoint: str, n: int, modes: list[str]) -> dict:
    name = f"bench-warm-{uuid.uuid4().hex[:8]}"
    client.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                           Code={"ZipFile": zip_files({"app.py": PY_TRIVIAL})})
    wait_active(client, name)
    results = {}
    try:
        for _ in range(20):
            r = client.invoke(FunctionName=name, Payload=b"{}")
            assert r["StatusCode"] == 200 and r["Payload"].read() == b"{}", r
        if "raw" in modes:
            raw = RawInvoker(endpoint)
            payload = b"{}"
            for _ in range(20):
                path, headers = raw.prepare(name, payload)
                raw.invoke(path, headers, payload)
            samples = []
            t_all = time.perf_counter()
            for _ in range(n):
                path, headers = raw.prepare(name, payload)  # signing is outside the timed window
                t0 = time.perf_counter()
                status, body = raw.invoke(path, headers, payload)
                samples.append(time.perf_counter() - t0)
                if status != 200 or body != b"{}":
                    raise RuntimeError(f"raw invoke failed: {status} {body[:200]!r}")
            wall = time.perf_counter() - t_all
            results["raw_http_keepalive"] = summary_ms(samples, wall)
        if "boto3" in modes:
            samples = []
            t_all = time.perf_counter()
            for _ in range(n):
                t0 = time.perf_counter()
                r = client.invoke(FunctionName=name, Payload=b"{}")
                body = r["Payload"].read()
                samples.append(time.perf_counter() - t0)
                if r["StatusCode"] != 200 or body != b"{}":
                    raise RuntimeError(f"boto3 invoke failed: {r}")
            wall = time.perf_counter() - t_all
            results["boto3"] = summary_ms(samples, wall)
    finally:
        client.delete_function(FunctionName=name)
    return results


INIT_RE = re.compile(r"Init Duration: ([0-9.]+) ms")
DURATION_RE = re.compile(r"\tDuration: ([0-9.]+) ms")


def bench_cold(client, runtime: str, code: bytes, handler: str, runs: int) -> dict:
    e2e, init, dur = [], [], []
    for i in range(runs):
        name = f"bench-cold-{runtime.replace('.', '')}-{uuid.uuid4().hex[:8]}"
        client.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                               Code={"ZipFile": code})
        wait_active(client, name)
        try:
            t0 = time.perf_counter()
            r = client.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
            body = r["Payload"].read()
            e2e.append(time.perf_counter() - t0)
            if r["StatusCode"] != 200 or "FunctionError" in r:
                raise RuntimeError(f"cold invoke of {runtime} failed: {body[:300]!r}")
            log = base64.b64decode(r.get("LogResult", "")).decode(errors="replace")
            m = INIT_RE.search(log)
            if m:
                init.append(float(m.group(1)) / 1000)
            m = DURATION_RE.search(log)
            if m:
                dur.append(float(m.group(1)) / 1000)
        finally:
            client.delete_function(FunctionName=name)
    out = {"first_invoke_end_to_end": summary_ms(e2e)}
    out["first_invoke_end_to_end"]["median_ms"] = round(statistics.median(e2e) * 1000, 3)
    out["samples_ms"] = [round(x * 1000, 3) for x in e2e]
    out["init_samples_ms"] = [round(x * 1000, 3) for x in init]
    if init:
        out["server_reported_init_duration"] = summary_ms(init)
    if dur:
        out["server_reported_duration"] = summary_ms(dur)
    return out


# A clean environment like the sandbox's: the host's own variables can cost a
# lot (NODE_EXTRA_CA_CERTS alone adds ~40 ms to every node start here).
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC"}


def bench_bare(runs: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix="stratus-bench-bare-") as d:
        Path(d, "app.py").write_text(PY_TRIVIAL)
        Path(d, "index.js").write_text(NODE_TRIVIAL)
        cmds = {
            "python3": ["/usr/bin/python3", "-c", "import app; app.handler({}, None)"],
            "node": ["/usr/bin/node", "-e", "require('./index.js').handler({}, {}).then(() => {})"],
        }
        for label, cmd in cmds.items():
            if not Path(cmd[0]).exists():
                continue
            subprocess.run(cmd, cwd=d, check=True, env=BARE_ENV)  # page cache warm
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=d, check=True, env=BARE_ENV)
                samples.append(time.perf_counter() - t0)
            s = summary_ms(samples)
            s["median_ms"] = round(statistics.median(samples) * 1000, 3)
            s["command"] = " ".join(cmd)
            s["env"] = BARE_ENV
            out[label] = s
    return out


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


COLD_START_LINE = re.compile(r"cold_start\{function=bench-cold-([a-z0-9]+)-[0-9a-f]+ .*sandbox started")


def pooled_cold_starts(log: Path) -> dict:
    """Per runtime, in order: whether each cold start was made from a pre-initialised sandbox."""
    out: dict = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        m = COLD_START_LINE.search(line)
        if m:
            out.setdefault(m.group(1), []).append("pooled_runtime=true" in line)
    return out


RUNTIME_KEYS = {"python3.12": "python312", "nodejs20.x": "nodejs20x", "provided.al2023-rust": "providedal2023"}


def split_by_pool(results: dict) -> None:
    """Adds, per runtime, the medians of the cold starts that took a pooled sandbox and of those that did not."""
    flags = results.get("pooled_cold_starts") or {}
    for rt, c in results.get("cold_start", {}).items():
        seq = flags.get(RUNTIME_KEYS.get(rt, ""), [])
        samples = c.get("samples_ms", [])
        inits = c.get("init_samples_ms", [])
        if len(seq) != len(samples):
            continue
        for label, want in (("pooled", True), ("from_scratch", False)):
            e = [x for x, f in zip(samples, seq) if f == want]
            i = [x for x, f in zip(inits, seq) if f == want] if len(inits) == len(seq) else []
            if e:
                c[label] = {"n": len(e), "median_ms": statistics.median(e),
                            "init_median_ms": statistics.median(i) if i else None}


def rust_bootstrap() -> Path | None:
    for cand in (REPO / "target" / "release" / "bootstrap", REPO / "target-fixtures" / "release" / "bootstrap"):
        if cand.exists():
            return cand
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", help="use a running server instead of starting one")
    ap.add_argument("--bin", help="stratus binary to start (default target/release/stratus, else target/debug)")
    ap.add_argument("-n", type=int, default=1000, help="sequential warm invokes (default 1000)")
    ap.add_argument("--cold-runs", type=int, default=10)
    ap.add_argument("--modes", default="raw,boto3", help="warm client modes: raw,boto3")
    ap.add_argument("--runtimes", default="python,node,rust")
    ap.add_argument("--out", default="bench-results.json")
    ap.add_argument("--server-args", default="",
                    help="more flags for the server started here, e.g. "
                         "'--isolation gvisor --gvisor-platform ptrace --runsc /path/runsc'")
    ap.add_argument("--cpu-limit", choices=["weight", "quota"],
                    help="the server's --cpu-limit (default weight for a server started here)")
    args = ap.parse_args()

    server = None
    if args.endpoint:
        endpoint = args.endpoint
        binary = None
        cpu_limit = args.cpu_limit or "unknown (server not started by the benchmark; pass --cpu-limit to state it)"
    else:
        cpu_limit = args.cpu_limit or "weight"
        binary = Path(args.bin) if args.bin else (REPO / "target" / "release" / "stratus")
        if not binary.exists():
            binary = REPO / "target" / "debug" / "stratus"
        os.environ["STRATUS_BIN"] = str(binary)
        tmp = Path(tempfile.mkdtemp(prefix="stratus-bench-"))
        # Its own cgroup parent and uid range, away from other servers on the host.
        own = ["--cgroup-parent", f"stratus-bench-{os.getpid()}",
               "--uid-base", os.environ.get("STRATUS_E2E_UID_BASE", "1500000")]
        # Debug logs of the sandbox backend: which cold starts took a
        # pre-initialised runtime sandbox (`pooled_runtime=true`).
        server = Server(data_dir=tmp / "data", log_path=tmp / "server.log",
                        extra_args=own + ["--cpu-limit", cpu_limit, *shlex.split(args.server_args)],
                        env={"STRATUS_LOG": "info,stratus_sandbox_process=debug"}).start()
        endpoint = server.endpoint
        print(f"started {binary} --cpu-limit {cpu_limit} on {endpoint} (log {tmp / 'server.log'})",
              file=sys.stderr)

    client = make_client(endpoint)
    results: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": load_average(),
        "binary": str(binary) if binary else None,
        "endpoint": endpoint,
        "server_cpu_limit": cpu_limit,
        "function_memory_mb": 128,
        "host": {"nproc": os.cpu_count(), "kernel": os.uname().release},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "server_args": args.server_args,
    }
    try:
        modes = [m for m in args.modes.split(",") if m]
        print(f"warm: {args.n} sequential invokes ({', '.join(modes)})...", file=sys.stderr)
        results["warm_python"] = bench_warm(client, endpoint, args.n, modes)

        runtimes = args.runtimes.split(",")
        cold = {}
        if "python" in runtimes:
            print("cold: python3.12...", file=sys.stderr)
            cold["python3.12"] = bench_cold(client, "python3.12", zip_files({"app.py": PY_TRIVIAL}), "app.handler",
                                            args.cold_runs)
        if "node" in runtimes:
            print("cold: nodejs20.x...", file=sys.stderr)
            cold["nodejs20.x"] = bench_cold(client, "nodejs20.x", zip_files({"index.js": NODE_TRIVIAL}),
                                            "index.handler", args.cold_runs)
        if "rust" in runtimes:
            rb = rust_bootstrap()
            if rb is None:
                cold["provided.al2023-rust"] = {"skipped": "rust fixture not built (cargo build --release -p stratus-test-fn-rust)"}
            else:
                print("cold: provided.al2023 (rust lambda_runtime)...", file=sys.stderr)
                code = zip_files({"bootstrap": rb.read_bytes()}, executable=("bootstrap",))
                cold["provided.al2023-rust"] = bench_cold(client, "provided.al2023", code, "bootstrap", args.cold_runs)
        results["cold_start"] = cold
        print("bare interpreter starts...", file=sys.stderr)
        results["bare_interpreter"] = bench_bare(args.cold_runs)
        results["load_average_at_end"] = load_average()
    finally:
        if server is not None:
            server.stop()
            results["pooled_cold_starts"] = pooled_cold_starts(server.log_path)
            split_by_pool(results)

    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    w = results["warm_python"]
    print(f"\nLoad average (1, 5, 15 min) at start: {results['load_average_at_start']}, "
          f"at end: {results.get('load_average_at_end')} on {os.cpu_count()} CPUs")
    print(f"\nServer CPU mode (--cpu-limit): {cpu_limit}; every function measured has MemorySize 128")
    print(f"\nWarm invoke latency, trivial python3.12 function, {args.n} sequential invokes, one keep-alive connection:")
    for mode, s in w.items():
        print(f"  {mode:20s} p50 {s['p50_ms']:.2f} ms  p90 {s['p90_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  "
              f"mean {s['mean_ms']:.2f} ms  max {s['max_ms']:.2f} ms  {s['invokes_per_s']:.0f} invokes/s")
    print(f"\nCold start (fresh function, first invoke end to end, N={args.cold_runs}):")
    for rt, c in results["cold_start"].items():
        if "skipped" in c:
            print(f"  {rt:22s} skipped: {c['skipped']}")
            continue
        e = c["first_invoke_end_to_end"]
        line = f"  {rt:22s} median {e['median_ms']:.1f} ms  p90 {e['p90_ms']:.1f} ms"
        if "server_reported_init_duration" in c:
            line += f"  (server Init Duration p50 {c['server_reported_init_duration']['p50_ms']:.1f} ms)"
        print(line)
        for label in ("pooled", "from_scratch"):
            if label in c:
                p = c[label]
                init = f", Init Duration median {p['init_median_ms']:.1f} ms" if p["init_median_ms"] is not None else ""
                print(f"      {label:12s} n={p['n']:2d} median {p['median_ms']:.1f} ms{init}")
    if results.get("pooled_cold_starts"):
        print("  cold starts that took a pre-initialised runtime sandbox (server debug log): " +
              ", ".join(f"{rt} {sum(n)}/{len(n)}" for rt, n in results["pooled_cold_starts"].items()))
    print("\nBare interpreter start + trivial handler, no Stratus:")
    for k, s in results["bare_interpreter"].items():
        print(f"  {k:22s} median {s['median_ms']:.1f} ms  p90 {s['p90_ms']:.1f} ms")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
