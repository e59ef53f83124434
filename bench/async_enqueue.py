#!/usr/bin/env python3
"""Stratus asynchronous invocation benchmark.

    cargo build --release -p stratus
    sudo python3 bench/async_enqueue.py [--bin target/release/stratus] [-n 1000] [--threads 8]

What it measures, client-side wall time on the same machine as the server:
  enqueue  N Event invokes (boto3, `--threads` clients at once) of a trivial
           Python function: events accepted per second. Each 202 is sent only
           after the event is durably written (a redb transaction committed
           with fsync), so this is the durable enqueue rate. The dispatcher
           runs the events meanwhile, competing for the same CPUs.
  latency  `--latency-runs` Event invokes one at a time (the function warm,
           nothing else queued): request sent -> 202 received, 202 -> handler
           start, and request sent -> handler start (the handler prints
           time.time() first thing; read back from the function's log). The
           dispatcher is woken by the enqueue, so the handler often starts
           before the client has read the 202 (a negative 202 -> start).
Results are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from stratus_harness import ROLE, new_server, remove_data_dir, stratus_bin, unique_name, wait_active, zip_files  # noqa: E402

STAMP = zip_files({"app.py": (
    "import time\n"
    "def handler(event, context):\n"
    "    print('STARTED %s %.6f' % (context.aws_request_id, time.time()))\n"
    "    return {}\n"
)})


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def started_at(endpoint: str, name: str) -> dict[str, float]:
    out = subprocess.run([str(stratus_bin()), "logs", name], capture_output=True, text=True,
                         env=dict(os.environ, STRATUS_ENDPOINT=endpoint), timeout=120, check=True).stdout
    got = {}
    for line in out.splitlines():
        i = line.find("STARTED ")
        if i >= 0:
            rid, t = line[i + 8:].split()
            got[rid] = float(t)
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=None)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--latency-runs", type=int, default=50)
    a = ap.parse_args()
    if a.bin:
        os.environ["STRATUS_BIN"] = a.bin
    elif not os.environ.get("STRATUS_BIN") and (REPO / "target" / "release" / "stratus").exists():
        os.environ["STRATUS_BIN"] = str(REPO / "target" / "release" / "stratus")
    srv = new_server("bench-async")
    srv.start()
    try:
        lam = srv.client(max_pool_connections=a.threads + 2)
        name = unique_name("async-bench")
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": STAMP})
        wait_active(lam, name)
        lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()  # warm

        # Latency first, with nothing else queued.
        accepted: dict[str, float] = {}
        sent: dict[str, float] = {}
        for i in range(a.latency_runs):
            t_send = time.time()
            r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"i": i}))
            rid = r["ResponseMetadata"]["RequestId"]
            accepted[rid] = time.time()
            sent[rid] = t_send
            time.sleep(0.2)
        deadline = time.monotonic() + 60
        starts = {}
        while time.monotonic() < deadline:
            starts = started_at(srv.endpoint, name)
            if all(rid in starts for rid in accepted):
                break
            time.sleep(0.5)
        lat_ms = [(starts[rid] - t) * 1000 for rid, t in accepted.items() if rid in starts]
        send_ms = [(starts[rid] - t) * 1000 for rid, t in sent.items() if rid in starts]
        ack_ms = [(accepted[rid] - sent[rid]) * 1000 for rid in sent]

        # Enqueue throughput.
        def one(i: int) -> None:
            r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"i": i}))
            assert r["StatusCode"] == 202

        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.threads) as pool:
            list(pool.map(one, range(a.n)))
        elapsed = time.perf_counter() - t0
        result = {
            "enqueue": {"events": a.n, "threads": a.threads, "seconds": round(elapsed, 3),
                        "events_per_s": round(a.n / elapsed, 1)},
            "latency_202_to_handler_start_ms": {
                "runs": len(lat_ms), "missing": a.latency_runs - len(lat_ms),
                "p50": round(statistics.median(lat_ms), 2) if lat_ms else None,
                "p90": round(pct(lat_ms, 90), 2) if lat_ms else None,
                "max": round(max(lat_ms), 2) if lat_ms else None,
            },
            # From before the request is sent (the handler may start before
            # the client has read the 202: the dispatcher is woken by the enqueue).
            "latency_send_to_handler_start_ms": {
                "p50": round(statistics.median(send_ms), 2) if send_ms else None,
                "p90": round(pct(send_ms, 90), 2) if send_ms else None,
                "max": round(max(send_ms), 2) if send_ms else None,
            },
            "latency_send_to_202_ms": {
                "p50": round(statistics.median(ack_ms), 2),
                "p90": round(pct(ack_ms, 90), 2),
                "max": round(max(ack_ms), 2),
            },
        }
        print(json.dumps(result, indent=2))
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)


if __name__ == "__main__":
    main()
