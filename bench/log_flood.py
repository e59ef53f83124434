#!/usr/bin/env python3
"""Stratus log flood benchmark: the server's memory and log disk while one function prints without end.

    cargo build --release -p stratus
    sudo python3 bench/log_flood.py --minutes 10 --out log-flood.json

Options: --bin (default $STRATUS_BIN, else target/release/stratus, else
target/debug/stratus); --minutes N (default 10); --interval S (seconds
between samples, default 5); --mode block|lines (64 KiB writes of 100-byte
lines, or one print() per line; default block); --invoke-seconds S (each
invoke floods this long, default 60; the function's Timeout is S + 30);
--log-max-bytes-per-function / --log-max-bytes-total (passed to the server,
default: the server's defaults, 16MiB / 1GiB); --uid-base N (first sandbox
uid, passed to the server; keep it apart from other servers on the host).

What it does: starts `stratus server` (as root) on a fresh data dir, deploys
the e2e Python function's `app.flood` handler (tests/e2e/functions/python),
and keeps it flooding for --minutes with back-to-back invokes from one
client. Every --interval seconds it samples:
  rss, hwm   the server's VmRSS and VmHWM from /proc/<pid>/status (the
             server process only; sandboxes are other processes)
  logs_disk  bytes allocated (st_blocks) under <data>/logs
  fn_disk    the same for the flooding function's directory
  segments   segment files under <data>/logs
  probe_ms   one invoke of a quiet function, end to end (the flood must not
             stall other functions)
At the end it reports what the flood printed (from each invoke's result),
its rate, and reads the whole log back with `stratus logs NAME` (time, lines,
bytes). Printed as a table and written as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from stratus_harness import FUNCTIONS, ROLE, Server, make_client, remove_data_dir, wait_active, zip_dir  # noqa: E402

ACCOUNT = "000000000000"
MIB = 1024 * 1024


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes allocated, segment files) under `path`."""
    total, segments = 0, 0
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                total += os.lstat(os.path.join(root, n)).st_blocks * 512
            except FileNotFoundError:
                continue  # trimmed while we walked
            if n.endswith(".log"):
                segments += 1
    return total, segments


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Flood(threading.Thread):
    """Invokes the flooding function back to back until `deadline`."""

    def __init__(self, client, name: str, mode: str, invoke_seconds: float, deadline: float):
        super().__init__(daemon=True)
        self.client, self.name, self.mode = client, name, mode
        self.invoke_seconds, self.deadline = invoke_seconds, deadline
        self.invokes: list[dict] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            while True:
                left = self.deadline - time.monotonic()
                if left < 1:
                    return
                seconds = min(self.invoke_seconds, left)
                t0 = time.monotonic()
                r = self.client.invoke(FunctionName=self.name,
                                       Payload=json.dumps({"seconds": seconds, "mode": self.mode}).encode())
                body = json.loads(r["Payload"].read())
                wall = time.monotonic() - t0
                if "FunctionError" in r:
                    self.invokes.append({"error": body, "wall_s": round(wall, 3)})
                    continue
                self.invokes.append({"bytes": body["bytes"], "seconds": seconds, "wall_s": round(wall, 3)})
        except Exception as e:  # reported with the results
            self.error = repr(e)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="stratus binary (default $STRATUS_BIN, target/release/stratus, target/debug/stratus)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--mode", choices=("block", "lines"), default="block")
    ap.add_argument("--invoke-seconds", type=float, default=60.0)
    ap.add_argument("--log-max-bytes-per-function")
    ap.add_argument("--log-max-bytes-total")
    ap.add_argument("--uid-base", type=int)
    ap.add_argument("--out", default="log-flood.json")
    args = ap.parse_args()

    if args.bin:
        binary = Path(args.bin)
    elif os.environ.get("STRATUS_BIN"):
        binary = Path(os.environ["STRATUS_BIN"])
    else:
        binary = REPO / "target" / "release" / "stratus"
        if not binary.exists():
            binary = REPO / "target" / "debug" / "stratus"
    binary = binary.resolve()
    os.environ["STRATUS_BIN"] = str(binary)

    tmp = Path(tempfile.mkdtemp(prefix="stratus-bench-flood-"))
    extra = ["--cgroup-parent", f"stratus-bench-flood-{os.getpid()}", "--keep-alive-secs", "600"]
    if args.uid_base is not None:
        extra += ["--uid-base", str(args.uid_base)]
    if args.log_max_bytes_per_function:
        extra += ["--log-max-bytes-per-function", args.log_max_bytes_per_function]
    if args.log_max_bytes_total:
        extra += ["--log-max-bytes-total", args.log_max_bytes_total]
    server = Server(data_dir=tmp / "data", log_path=tmp / "server.log", extra_args=extra).start()
    pid = server.proc.pid
    print(f"started {binary} (pid {pid}) on {server.endpoint}; data {tmp / 'data'}, log {tmp / 'server.log'}",
          file=sys.stderr)

    client = make_client(server.endpoint, read_timeout=int(args.invoke_seconds) + 120)
    code = zip_dir(FUNCTIONS / "python")
    flood_name = f"bench-flood-{uuid.uuid4().hex[:8]}"
    probe_name = f"bench-probe-{uuid.uuid4().hex[:8]}"
    client.create_function(FunctionName=flood_name, Runtime="python3.12", Role=ROLE, Handler="app.flood",
                           Code={"ZipFile": code}, Timeout=int(args.invoke_seconds) + 30, MemorySize=256)
    client.create_function(FunctionName=probe_name, Runtime="python3.12", Role=ROLE, Handler="app.noop",
                           Code={"ZipFile": code})
    wait_active(client, flood_name)
    wait_active(client, probe_name)
    logs_dir = server.data_dir / "logs"
    fn_dir = logs_dir / ACCOUNT / flood_name

    # Steady state before the flood: both functions warm.
    client.invoke(FunctionName=flood_name, Payload=json.dumps({"seconds": 0}).encode())["Payload"].read()
    client.invoke(FunctionName=probe_name, Payload=b"{}")["Payload"].read()
    start_status = proc_status(pid)

    results: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "binary": str(binary),
        "host": {"nproc": os.cpu_count(), "kernel": os.uname().release},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "server_args": extra,
        "mode": args.mode,
        "minutes": args.minutes,
        "before_flood": {"rss": start_status["VmRSS"], "hwm": start_status["VmHWM"]},
    }
    samples = []
    t_start = time.monotonic()
    flood = Flood(make_client(server.endpoint, read_timeout=int(args.invoke_seconds) + 120), flood_name,
                  args.mode, args.invoke_seconds, t_start + args.minutes * 60)
    flood.start()
    print(f"flooding for {args.minutes:g} min, sampling every {args.interval:g} s...", file=sys.stderr)
    print(f"{'t(s)':>6} {'VmRSS MiB':>10} {'VmHWM MiB':>10} {'logs MiB':>9} {'fn MiB':>7} {'segs':>5} {'probe ms':>9}")
    try:
        while flood.is_alive():
            st = proc_status(pid)
            logs_disk, segments = disk_usage(logs_dir)
            fn_disk, _ = disk_usage(fn_dir)
            t0 = time.monotonic()
            r = client.invoke(FunctionName=probe_name, Payload=b"{}")
            r["Payload"].read()
            probe_ms = (time.monotonic() - t0) * 1000
            s = {"t": round(time.monotonic() - t_start, 1), "rss": st["VmRSS"], "hwm": st["VmHWM"],
                 "logs_disk": logs_disk, "fn_disk": fn_disk, "segments": segments,
                 "probe_ms": round(probe_ms, 2), "probe_ok": "FunctionError" not in r}
            samples.append(s)
            print(f"{s['t']:>6.0f} {s['rss'] / MIB:>10.1f} {s['hwm'] / MIB:>10.1f} {logs_disk / MIB:>9.2f} "
                  f"{fn_disk / MIB:>7.2f} {segments:>5} {probe_ms:>9.1f}", flush=True)
            flood.join(timeout=max(0.0, args.interval - (time.monotonic() - t0)))
        flood.join()
        end_status = proc_status(pid)
        # Read the whole log back, as a user would.
        t0 = time.monotonic()
        proc = subprocess.run([str(binary), "logs", flood_name], capture_output=True,
                              env=dict(os.environ, STRATUS_ENDPOINT=server.endpoint), timeout=300,
                              stdin=subprocess.DEVNULL)
        read_s = time.monotonic() - t0
        after_read = proc_status(pid)
        final_disk, final_segments = disk_usage(logs_dir)
    finally:
        server.stop()
        remove_data_dir(server.data_dir)  # the server's own log stays in tmp

    printed = sum(i.get("bytes", 0) for i in flood.invokes)
    flood_s = sum(i.get("wall_s", 0) for i in flood.invokes)
    probes = [s["probe_ms"] for s in samples]
    results["samples"] = samples
    results["flood"] = {
        "invokes": len(flood.invokes),
        "failed_invokes": sum(1 for i in flood.invokes if "error" in i),
        "bytes_printed": printed,
        "mb_per_s": round(printed / 1e6 / flood_s, 1) if flood_s else None,
        "client_error": flood.error,
    }
    results["summary"] = {
        "rss_start": start_status["VmRSS"],
        "rss_max_sampled": max(s["rss"] for s in samples),
        "rss_end": end_status["VmRSS"],
        "hwm_end": end_status["VmHWM"],
        "logs_disk_max": max(s["logs_disk"] for s in samples),
        "fn_disk_max": max(s["fn_disk"] for s in samples),
        "logs_disk_end": final_disk,
        "segments_end": final_segments,
        "probe_ms": {"n": len(probes), "p50": round(pct(probes, 50), 2), "p99": round(pct(probes, 99), 2),
                     "max": round(max(probes), 2), "mean": round(statistics.fmean(probes), 2),
                     "failed": sum(1 for s in samples if not s["probe_ok"])},
        "read_back": {"exit": proc.returncode, "seconds": round(read_s, 2), "bytes": len(proc.stdout),
                      "lines": proc.stdout.count(b"\n"), "rss_after": after_read["VmRSS"],
                      "hwm_after": after_read["VmHWM"]},
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    m = results["summary"]
    f = results["flood"]
    print(f"\nFlood: {f['invokes']} invokes ({f['failed_invokes']} failed), {printed / 1e9:.2f} GB printed, "
          f"{f['mb_per_s']} MB/s" + (f"; client error: {f['client_error']}" if f["client_error"] else ""))
    print(f"Server memory: VmRSS {m['rss_start'] / MIB:.1f} MiB before, max sampled {m['rss_max_sampled'] / MIB:.1f} MiB, "
          f"{m['rss_end'] / MIB:.1f} MiB at the end; VmHWM {m['hwm_end'] / MIB:.1f} MiB")
    print(f"Log disk: max {m['logs_disk_max'] / MIB:.2f} MiB under logs/ (function: max {m['fn_disk_max'] / MIB:.2f} MiB), "
          f"{m['logs_disk_end'] / MIB:.2f} MiB in {m['segments_end']} segments at the end")
    p = m["probe_ms"]
    print(f"Quiet function during the flood: {p['n']} invokes, p50 {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms, "
          f"max {p['max']:.1f} ms, {p['failed']} failed")
    rb = m["read_back"]
    print(f"stratus logs read-back: exit {rb['exit']}, {rb['lines']} lines, {rb['bytes'] / MIB:.2f} MiB in "
          f"{rb['seconds']:.2f} s; server VmRSS after {rb['rss_after'] / MIB:.1f} MiB, VmHWM {rb['hwm_after'] / MIB:.1f} MiB")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
