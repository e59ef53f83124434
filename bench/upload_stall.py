#!/usr/bin/env python3
"""Do large uploads hold up warm invokes?

    cargo build --release -p stratus -p stratus-bench-loadgen -p stratus-bench-fixtures
    sudo python3 bench/upload_stall.py [--bin target/release/stratus] [--server-args '--worker-threads 2']

A server of its own; a no-op `provided` function (`stratus-bench-noop`,
MemorySize 1,024) invoked sequentially by `stratus-loadgen` for --duration
seconds; after --lead seconds, --uploads CreateFunction calls (boto3, one
after the other) each carrying a --mb MB archive of random bytes (a python
function), each deleted before the next. Prints the invokes' latency over
the whole run (p50, p99, max) and the uploads' wall time, as JSON.

The server's async threads serve every invoke and every Runtime API call;
if an upload's hashing, parsing or decoding ran on one of them, the
invokes would wait for it, and max shows it (with one worker thread, the
default on a 2-CPU host, 449 ms for two 45 MB uploads before that work
moved to the blocking pool). Compare runs A/B in the same hour: the max of
a few thousand invokes on a noisy machine varies by tens of ms anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))

import benchlib as bl  # noqa: E402
from stratus_harness import ROLE, make_client, zip_files  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=bl.default_bin())
    ap.add_argument("--server-args", default="", help="extra `stratus server` flags, shell-quoted")
    ap.add_argument("--mb", type=int, default=45, help="archive size in MB (at most 50)")
    ap.add_argument("--uploads", type=int, default=2)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--lead", type=float, default=2.0, help="seconds of invokes before the first upload")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    binary = bl.check_bin(args.bin)
    loadgen = bl.tool(binary, "stratus-loadgen")
    noop = bl.tool(binary, "stratus-bench-noop")
    srv = tmp = None
    try:
        srv, tmp = bl.start_server(binary, "stall", shlex.split(args.server_args))
        client = make_client(srv.endpoint)
        name = "stall-noop"
        client.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="x",
                               MemorySize=bl.MEMORY_MB, Timeout=30,
                               Code={"ZipFile": zip_files({"bootstrap": noop.read_bytes()}, executable=("bootstrap",))})
        bl.wait_active(client, name)
        big = zip_files({"app.py": bl.PY_NOOP, "filler.bin": os.urandom(args.mb << 20)})
        result: dict = {}

        def invokes() -> None:
            try:
                result["invokes"] = bl.loadgen(loadgen, bl.invoke_url(srv.endpoint, name),
                                               duration=args.duration, warmup=200)
            except Exception as e:  # reported below, not lost in the thread
                result["error"] = repr(e)

        t = threading.Thread(target=invokes)
        t.start()
        time.sleep(args.lead)
        walls = []
        for i in range(args.uploads):
            start = time.monotonic()
            client.create_function(FunctionName=f"stall-big-{i}", Runtime="python3.12", Role=ROLE,
                                   Handler="app.handler", MemorySize=128, Code={"ZipFile": big})
            walls.append(round(time.monotonic() - start, 3))
            client.delete_function(FunctionName=f"stall-big-{i}")
        t.join()
        if "error" in result:
            raise RuntimeError(result["error"])
        inv = result["invokes"]
        if inv["errors"]:
            raise RuntimeError(f"{inv['errors']} invokes failed: {inv['error_samples'][:3]}")
        lat = inv["latency_us"]
        doc = {
            "server_args": args.server_args,
            "archive_mb": args.mb,
            "uploads": args.uploads,
            "upload_wall_s": walls,
            "invokes": inv["n"],
            "invoke_p50_us": lat["p50"],
            "invoke_p99_us": lat["p99"],
            "invoke_max_us": lat["max"],
            "load_avg": bl.loadavg(),
            "machine": bl.machine(binary),
        }
    finally:
        bl.stop_server(srv, tmp)
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
