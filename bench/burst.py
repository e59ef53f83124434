#!/usr/bin/env python3
"""Section 5 of the benchmark suite: burst.

    cargo build --release -p stratus
    sudo python3 bench/burst.py --out burst.json          # 500 functions, then 200 clients on one
    sudo python3 bench/burst.py --quick                    # CI smoke test

Two bursts against a server of its own, static `provided` functions
(bench/static_bootstrap.c), MemorySize 128:

distinct   500 distinct functions (same code), each invoked once: 200 client
           threads take the 500 invokes from one queue as fast as they can.
           Every invoke is a cold start.
one        1 function (never invoked before) invoked by 200 concurrent
           clients, each --rounds times back to back (default 5): the first
           round starts up to 200 sandboxes, later rounds reuse them.

Clients: Python threads, each with ONE keep-alive HTTP/1.1 connection
(http.client, connected before the start), every request SigV4-signed with
botocore's SigV4Auth before the timer starts and released by one barrier;
latency is request sent -> response read. Cold starts are counted from the
server's evidence: the REPORT line's Init Duration in each response's
LogType=Tail log, and the delta of `stratus_cold_starts_total` on /metrics
(both are given; they must agree).

The server is started with --worker-memory-mb raised to room for every
sandbox of the run (placement reserves MemorySize per sandbox whatever it
uses; at the default, half the host's RAM, placement would refuse part of the
burst with 429), --account-concurrency 1000 (Lambda's default; above the
200 clients) and a keep-alive longer than the run.

What the client costs: Python threads on the same 2 cores as the server, one
GIL. The figures record the client process's CPU time and the server's
(utime+stime of the server process; the sandboxes' runtimes are in their own
cgroups and not counted) over each burst, and a single-client warm p50 of the
same harness for reference: every figure here includes the client's queueing.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sandboxlib as bl  # noqa: E402

MEMORY_MB = 128


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick  # utime, stime


def cold_metric(endpoint: str) -> float:
    return bl.metric_sum(bl.metrics(endpoint), "stratus_cold_starts_total")


def run_clients(endpoint: str, clients: int, jobs: list[list[str]] | None, shared: list[str] | None) -> dict:
    """`clients` threads with a keep-alive connection each. Either each thread
    runs its own list of function names (`jobs`), or all take from one queue
    of names (`shared`). Returns latencies, cold starts, errors, wall time."""
    invokers = [bl.RawInvoker(endpoint) for _ in range(clients)]
    if jobs is not None:
        plans = [[inv.prepare(n) for n in job] for inv, job in zip(invokers, jobs)]
        q = None
    else:
        plans = None
        q = queue.SimpleQueue()
        for i, n in enumerate(shared):
            # Signed up front; any client may send it (the signature holds no connection detail).
            q.put(invokers[i % clients].prepare(n))
    for inv in invokers:
        inv.connect()
    lat: list[float] = []
    inits: list[float] = []
    errors: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        inv = invokers[i]
        mine_lat, mine_init, mine_err = [], [], []
        barrier.wait()
        while True:
            if plans is not None:
                if not plans[i]:
                    break
                req = plans[i].pop(0)
            else:
                try:
                    req = q.get_nowait()
                except queue.Empty:
                    break
            t0 = time.perf_counter()
            try:
                status, body, headers = inv.invoke(req)
            except Exception as e:  # counted as an error
                mine_err.append(repr(e)[:200])
                inv.close()
                continue
            mine_lat.append((time.perf_counter() - t0) * 1000)
            if status != 200 or "x-amz-function-error" in headers:
                mine_err.append((status, body[:200]))
            d = bl.init_duration_ms(headers)
            if d is not None:
                mine_init.append(d)
        with lock:
            lat.extend(mine_lat)
            inits.extend(mine_init)
            errors.extend(mine_err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    for inv in invokers:
        inv.close()
    return {"lat": lat, "inits": inits, "errors": errors, "wall": wall}


def burst(srv: bl.OwnServer, label: str, clients: int, jobs=None, shared=None) -> dict:
    cold0 = cold_metric(srv.endpoint)
    cpu_server0 = cpu_seconds(srv.pid)
    cpu_client0 = time.process_time()
    r = run_clients(srv.endpoint, clients, jobs, shared)
    cpu_client = time.process_time() - cpu_client0
    cpu_server = cpu_seconds(srv.pid) - cpu_server0
    cold = cold_metric(srv.endpoint) - cold0
    n = len(r["lat"])
    return {
        "burst": label,
        "clients": clients,
        "invokes": n + len([e for e in r["errors"] if isinstance(e, str)]),
        "errors": len(r["errors"]),
        "error_examples": [str(e) for e in r["errors"][:3]],
        "latency_ms": bl.summary(r["lat"]),
        "wall_s": round(r["wall"], 3),
        "invokes_per_s": round(n / r["wall"], 1) if r["wall"] else None,
        "cold_starts_tail_init_duration": len(r["inits"]),
        "cold_starts_metrics": int(cold),
        "init_duration_ms": bl.summary(r["inits"]),
        "client_cpu_s": round(cpu_client, 2),
        "server_cpu_s": round(cpu_server, 2),
    }


def single_client_warm(srv: bl.OwnServer, name: str, n: int) -> dict:
    inv = bl.RawInvoker(srv.endpoint)
    reqs = [inv.prepare(name) for _ in range(n + 10)]
    inv.connect()
    lat = []
    for i, req in enumerate(reqs):
        t0 = time.perf_counter()
        status, _, _ = inv.invoke(req)
        if i >= 10:
            lat.append((time.perf_counter() - t0) * 1000)
    inv.close()
    return bl.summary(lat)


def main() -> int:
    ap = bl.arg_parser(__doc__, "burst")
    ap.add_argument("--functions", type=int, default=500, help="distinct functions (default 500; --quick 20)")
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200; --quick 10)")
    ap.add_argument("--rounds", type=int, default=5, help="invokes per client on the one function (--quick 2)")
    args = ap.parse_args()
    nfun, clients, rounds = (20, 10, 2) if args.quick else (args.functions, args.clients, args.rounds)
    binary = bl.resolve_bin(args.bin)
    load = [bl.load_avg()]
    worker_mb = (nfun + clients + 16) * MEMORY_MB
    server_args = ["--worker-memory-mb", str(worker_mb), "--account-concurrency", str(max(1000, clients + 100)),
                   "--keep-alive-secs", "900"]
    code = bl.static_zip()
    figures: dict = {"memory_mb": MEMORY_MB, "runtime": "provided.al2023, bench/static_bootstrap.c"}
    print(f"burst: {binary}, {nfun} functions, then 1 function x {clients} clients x {rounds}", file=sys.stderr)
    with bl.OwnServer(binary, server_args, tag="burst") as srv:
        tag = uuid.uuid4().hex[:6]
        names = [f"burst-{tag}-{i}" for i in range(nfun)]
        one = f"burst-one-{tag}"
        t = time.perf_counter()
        bl.create_functions(srv.endpoint, names + [one], "provided.al2023", code, "bootstrap")
        figures["setup_s"] = round(time.perf_counter() - t, 1)
        print(f"  {nfun} distinct functions, {min(clients, nfun)} clients...", file=sys.stderr)
        figures["distinct"] = burst(srv, f"{nfun} distinct functions once each", min(clients, nfun), shared=names)
        print(f"  one function, {clients} clients x {rounds}...", file=sys.stderr)
        figures["one_function"] = burst(srv, f"1 function, {clients} clients x {rounds}", clients,
                                        jobs=[[one] * rounds for _ in range(clients)])
        figures["single_client_warm_reference_ms"] = single_client_warm(srv, one, 200)
    load.append(bl.load_avg())

    d, o = figures["distinct"], figures["one_function"]
    targets = [
        bl.target("every invoke of the distinct-functions burst succeeds", "0 errors", d["errors"], d["errors"] == 0),
        bl.target("every invoke of the one-function burst succeeds", "0 errors", o["errors"], o["errors"] == 0),
        bl.target("one function, 200 clients: cold starts at most the number of clients",
                  f"<= {clients}", o["cold_starts_metrics"], o["cold_starts_metrics"] <= clients),
        bl.target("cold starts counted by /metrics and by the Tail Init Duration agree", "equal",
                  f"{d['cold_starts_metrics'] + o['cold_starts_metrics']} / "
                  f"{d['cold_starts_tail_init_duration'] + o['cold_starts_tail_init_duration']}",
                  d["cold_starts_metrics"] == d["cold_starts_tail_init_duration"]
                  and o["cold_starts_metrics"] == o["cold_starts_tail_init_duration"]),
    ]
    baselines = {"Lambda scaling quota": "1,000 new execution environments per 10 s per function",
                 "single client, warm, same harness (p50 ms)": figures["single_client_warm_reference_ms"].get("p50")}
    ratios = {}
    if figures["single_client_warm_reference_ms"].get("p50"):
        ratios["one_function_p50_vs_single_client_warm_p50"] = round(
            o["latency_ms"]["p50"] / figures["single_client_warm_reference_ms"]["p50"], 1)
    notes = [
        "clients are Python threads (one GIL) on the same 2 cores as the server: client_cpu_s vs server_cpu_s "
        "shows how much of the machine the client took; latency includes the client's own queueing",
        f"--worker-memory-mb {worker_mb}: placement reserves 128 MB per sandbox; at the default (half the RAM) "
        "it would refuse part of the burst",
        "the machine is shared (2 cores, other engineers building): see load_avg",
    ]
    meta = {"binary": str(binary), "server_args": server_args, "functions": nfun, "clients": clients,
            "rounds": rounds, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    bl.write_result(args.out, "burst", figures, baselines, ratios, targets, notes, load, meta)
    rows = []
    for b in (d, o):
        lat = b["latency_ms"]
        rows.append((b["burst"], f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, max {lat.get('max')} ms; "
                     f"{b['invokes_per_s']}/s; cold starts {b['cold_starts_metrics']} (metrics) / "
                     f"{b['cold_starts_tail_init_duration']} (Init Duration); errors {b['errors']}; "
                     f"CPU client {b['client_cpu_s']} s, server {b['server_cpu_s']} s, wall {b['wall_s']} s"))
    rows.append(("single client warm", f"p50 {figures['single_client_warm_reference_ms'].get('p50')} ms"))
    bl.print_table("Burst", rows, targets, notes, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
