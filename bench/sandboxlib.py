"""Helpers shared by the creation, density and burst sections
(bench/creation.py, bench/density.py, bench/burst.py) of the benchmark suite.

Servers and boto3 clients come from tests/e2e/stratus_harness.py; what is here
is what only these three scripts need: the section contract (options, the
JSON document, the printed table), a server of their own, the static
`provided` runtime (bench/static_bootstrap.c, compiled with `gcc -static`),
raw SigV4-signed invokes over one keep-alive connection, the server's
/metrics and log lines, host memory and load average, and `perf` profiles
(creation.py --profile; warm.py --profile, which also takes the machine's
busy CPU from here).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import errno
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
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
    remove_data_dir,
    zip_files,
)

PY_TRIVIAL = "def handler(event, context):\n    return {}\n"
NODE_TRIVIAL = "exports.handler = async (event, context) => ({});\n"
STATIC_SOURCE = REPO / "bench" / "static_bootstrap.c"


# ---------------------------------------------------------------- the contract

def arg_parser(doc: str, section: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="stratus binary (default target/release/stratus, else target/debug/stratus)")
    ap.add_argument("--out", default=f"bench-{section}.json", help="JSON result file")
    ap.add_argument("--quick", action="store_true", help="small N, for a CI smoke test (~30 s on a debug build)")
    return ap


def resolve_bin(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    release = REPO / "target" / "release" / "stratus"
    return release if release.exists() else REPO / "target" / "debug" / "stratus"


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_busy_s() -> float:
    """CPU time the whole machine has spent busy (all CPUs, /proc/stat:
    everything but idle and iowait), in seconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:7]) - fields[3] - fields[4]  # user..softirq, minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float], digits: int = 3) -> dict:
    """n, p50, p90, p99, max, mean of values (already in the unit wanted)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(pct(values, 50), digits),
        "p90": round(pct(values, 90), digits),
        "p99": round(pct(values, 99), digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }


def target(name: str, goal: str, measured, met: bool) -> dict:
    return {"name": name, "target": goal, "measured": measured, "met": bool(met)}


def write_result(out: str, section: str, figures: dict, baselines: dict, ratios: dict,
                 targets: list[dict], notes: list[str], load: list[list[float]], meta: dict) -> dict:
    doc = {
        "section": section,
        "figures": figures,
        "baselines": baselines,
        "ratios": ratios,
        "targets": targets,
        "notes": notes,
        "load_avg": load,
        "meta": meta,
    }
    Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def print_table(title: str, rows: list[tuple[str, str]], targets: list[dict], notes: list[str],
                load: list[list[float]]) -> None:
    print(f"\n== {title} ==")
    width = max((len(k) for k, _ in rows), default=10)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if targets:
        print("  targets:")
        for t in targets:
            print(f"    [{'met' if t['met'] else 'NOT met'}] {t['name']}: {t['measured']} (target {t['target']})")
    print(f"  load average (1/5/15 min) before {load[0]}, after {load[1]}")
    for n in notes:
        print(f"  note: {n}")


# ---------------------------------------------------------------- the server

class OwnServer:
    """A `stratus server` of the script's own: temp data dir, its own cgroup
    parent and uid range (`STRATUS_E2E_UID_BASE`), stopped and checked for
    leftovers (processes, loop devices) on exit."""

    def __init__(self, binary: Path, extra_args: list[str], log_filter: str = "info", tag: str = "bench"):
        self.binary = binary
        self.tmp = Path(tempfile.mkdtemp(prefix=f"stratus-bench-{tag}-"))
        self.cgroup_parent = f"stratus-bench-{os.getpid()}"
        own = ["--cgroup-parent", self.cgroup_parent,
               "--uid-base", os.environ.get("STRATUS_E2E_UID_BASE", "60000000")]
        self.log_path = self.tmp / "server.log"
        self.server = Server(data_dir=self.tmp / "data", log_path=self.log_path, binary=binary,
                             extra_args=own + extra_args, env={"STRATUS_LOG": log_filter})

    def __enter__(self) -> "OwnServer":
        self.server.start()
        return self

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    def stop(self) -> list[str]:
        """Stops the server; returns what it left behind (should be nothing)."""
        self.server.stop(timeout=120)
        left = []
        data = str((self.tmp / "data").resolve())
        try:
            out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, timeout=10).stdout
            left += [f"loop device: {line}" for line in out.splitlines() if data in line]
        except (OSError, subprocess.SubprocessError):
            pass
        parents = [*Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"),
                   *Path("/sys/fs/cgroup").glob(self.cgroup_parent)]
        for cg in parents:
            if any(p.is_dir() for p in cg.iterdir()):
                left.append(f"cgroups under {cg}")
            else:
                # The server leaves its (empty) cgroup parent; this one is ours.
                try:
                    cg.rmdir()
                except OSError:
                    pass
        return left

    def __exit__(self, *exc) -> None:
        left = self.stop()
        if left:
            print(f"WARNING: the server left behind: {left}", file=sys.stderr)
        if os.environ.get("STRATUS_BENCH_KEEP"):
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            remove_data_dir(self.tmp)

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []


def client_for(endpoint: str, pool: int = 20):
    return make_client(endpoint, max_pool_connections=pool, read_timeout=120)


def create_functions(endpoint: str, names: list[str], runtime: str, code: bytes, handler: str,
                     memory_mb: int = 128, threads: int = 4, **extra) -> None:
    """Creates the functions (a few at a time) and waits until all are Active."""
    local = threading.local()

    def one(name: str) -> None:
        if not hasattr(local, "c"):
            local.c = client_for(endpoint)
        local.c.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                                Code={"ZipFile": code}, MemorySize=memory_mb, Timeout=30, **extra)

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, names))
    c = client_for(endpoint)
    deadline = time.monotonic() + 120
    pending = list(names)
    while pending:
        pending = [n for n in pending if c.get_function_configuration(FunctionName=n)["State"] != "Active"]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} functions not Active after 120 s")
        if pending:
            time.sleep(0.05)


# ---------------------------------------------------------------- runtimes

_STATIC: Path | None = None


def static_runtime() -> Path:
    """bench/static_bootstrap.c built with `gcc -static -O2` (once per run)."""
    global _STATIC
    if _STATIC is None:
        d = Path(tempfile.mkdtemp(prefix="stratus-bench-static-"))
        atexit.register(shutil.rmtree, d, True)
        out = d / "bootstrap"
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise RuntimeError("no C compiler: the static provided runtime needs gcc (and libc.a)")
        subprocess.run([cc, "-static", "-O2", "-o", str(out), str(STATIC_SOURCE)], check=True)
        _STATIC = out
    return _STATIC


def static_zip() -> bytes:
    return zip_files({"bootstrap": static_runtime().read_bytes()}, executable=("bootstrap",))


# ---------------------------------------------------------------- invokes

class RawInvoker:
    """Invokes over ONE persistent http.client connection, SigV4-signed with
    botocore's SigV4Auth before the timer starts (as bench/invoke_latency.py)."""

    def __init__(self, endpoint: str, region: str = "us-east-1"):
        u = urllib.parse.urlsplit(endpoint)
        self.endpoint = endpoint.rstrip("/")
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        self.signer = SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "lambda", region)

    def prepare(self, name: str, payload: bytes = b"{}", tail: bool = True) -> tuple[str, dict, bytes]:
        path = f"/2015-03-31/functions/{name}/invocations"
        headers = {"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"}
        if tail:
            headers["X-Amz-Log-Type"] = "Tail"
        req = AWSRequest(method="POST", url=self.endpoint + path, data=payload, headers=headers)
        self.signer.add_auth(req)
        return path, dict(req.headers.items()), payload

    def connect(self) -> None:
        self.conn.connect()

    def invoke(self, prepared: tuple[str, dict, bytes]) -> tuple[int, bytes, dict]:
        path, headers, payload = prepared
        self.conn.request("POST", path, body=payload, headers=headers)
        resp = self.conn.getresponse()
        body = resp.read()
        return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}

    def close(self) -> None:
        self.conn.close()


INIT_RE = re.compile(r"Init Duration: ([0-9.]+) ms")


def init_duration_ms(headers: dict) -> float | None:
    """The REPORT line's Init Duration from a LogType=Tail response (cold start), else None."""
    raw = headers.get("x-amz-log-result")
    if not raw:
        return None
    m = INIT_RE.search(base64.b64decode(raw).decode(errors="replace"))
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------- server evidence

def metrics(endpoint: str) -> str:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=10) as r:
        return r.read().decode()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples (optionally only those with these labels)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head != name and not head.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            try:
                total += float(value)
            except ValueError:
                pass
    return total


_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")
_FIELD_RE = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")


def log_events(lines: list[str], message: str) -> list[dict]:
    """The server's log lines with `message`, as {"ts": epoch seconds, fields..., "line": ...}."""
    out = []
    for line in lines:
        if message not in line:
            continue
        m = _TS_RE.match(line)
        if not m:
            continue
        ts = datetime.fromisoformat(m.group(1)[:26] + "+00:00").timestamp()
        fields = {k: v.strip('"') for k, v in _FIELD_RE.findall(line)}
        fields["ts"] = ts
        fields["line"] = line
        out.append(fields)
    return out


# ---------------------------------------------------------------- host memory

def meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, rest = line.partition(":")
            out[k] = int(rest.split()[0]) * 1024
    return out


def host_used_bytes(samples: int = 5, drop_caches: bool = True, gap: float = 0.3) -> dict:
    """Host memory in use (MemTotal - MemAvailable), median of `samples`
    after `sync; echo 3 > /proc/sys/vm/drop_caches` (root) before each."""
    values = []
    for _ in range(samples):
        if drop_caches:
            os.sync()
            try:
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
            except OSError:
                drop_caches = False
        time.sleep(gap)
        m = meminfo()
        values.append(m["MemTotal"] - m["MemAvailable"])
    return {"median_bytes": int(statistics.median(values)), "samples_bytes": values,
            "spread_bytes": max(values) - min(values), "dropped_caches": drop_caches}


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmPTE")):
                k, _, rest = line.partition(":")
                out[k] = int(rest.split()[0])
    return out


def pss_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Pss", "Private_")):
                    k, _, rest = line.partition(":")
                    out[k] = int(rest.split()[0])
    except OSError:
        pass
    return out


class PerfRecording:
    """`with PerfRecording(data):` records the whole machine (`perf record -a
    -g`) into `data` while the block runs. perf starts when the object is
    made, with its events off, so that it can be made ahead of a timed
    phase; entering switches them on and leaving switches them off and ends
    perf (through perf's control fifos, which answer once the switch is
    made)."""

    def __init__(self, data: Path, freq: int = 999):
        ctl, ack = data.with_suffix(".ctl"), data.with_suffix(".ack")
        for f in (ctl, ack):
            os.mkfifo(f)
        self.log = data.with_suffix(".log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["perf", "record", "-a", "-g", "-F", str(freq), "-D", "-1",
                                          "--control", f"fifo:{ctl},{ack}", "-o", str(data)],
                                         stdout=log, stderr=subprocess.STDOUT)
        # Opening a fifo to write waits for its reader: wait for perf without
        # blocking, so that a perf that fails to start is an error, not a hang.
        deadline = time.monotonic() + 30
        while True:
            try:
                fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"perf record did not start (exit {self.proc.poll()}): "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.01)
        os.set_blocking(fd, True)
        self.ctl, self.ack = os.fdopen(fd, "w"), open(ack)

    def _command(self, cmd: str) -> None:
        self.ctl.write(cmd + "\n")
        self.ctl.flush()
        self.ack.readline()

    def __enter__(self) -> "PerfRecording":
        self._command("enable")
        return self

    def __exit__(self, *exc) -> None:
        self._command("disable")
        for f in (self.ctl, self.ack):
            f.close()
        self.proc.send_signal(2)
        if self.proc.wait(timeout=60) not in (0, -2):
            raise RuntimeError(f"perf record failed ({self.proc.returncode}): "
                               f"{self.log.read_text(errors='replace')[-2000:]}")


def perf_report(data: Path, *args: str) -> list[str]:
    """The rows of `perf report --stdio` (header and blank lines dropped)."""
    r = subprocess.run(["perf", "report", "-i", str(data), "--stdio", *args], capture_output=True, text=True)
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")
            and "%" in ln.split()[0]]


def perf_breakdown(data: Path, groups: dict[str, list[int]], paths: list[str], top: int = 12) -> dict:
    """Where each group of processes (name: pids) spent its samples in a
    `perf record -a -g` profile: its samples, the share (percent of its own
    samples) whose leaf is in the kernel, the share with each kernel function
    of `paths` on the stack (callees included), and its `top` leaf symbols.
    Read from `perf script`, one stack per sample."""
    r = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,ip,sym,dso"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"perf script -i {data} failed ({r.returncode}): {r.stderr[-2000:]}")
    group_of = {pid: g for g, pids in groups.items() for pid in pids}
    counts = {g: {"samples": 0, "kernel": 0, "paths": dict.fromkeys(paths, 0), "leaf": {}} for g in groups}
    wanted = set(paths)
    for block in r.stdout.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if not lines or not lines[0].strip().isdigit():
            continue
        g = group_of.get(int(lines[0].strip()))
        if g is None or len(lines) < 2:
            continue
        c = counts[g]
        c["samples"] += 1
        # "\tffffffff813ae293 finish_task_switch.isra.0 ([kernel.kallsyms])"
        frames = [ln.strip().split(" ", 1)[-1] for ln in lines[1:]]
        leaf = frames[0]
        c["leaf"][leaf] = c["leaf"].get(leaf, 0) + 1
        if leaf.endswith("([kernel.kallsyms])"):
            c["kernel"] += 1
        for sym in {f.rsplit(" (", 1)[0] for f in frames} & wanted:
            c["paths"][sym] += 1
    out = {}
    for g, c in counts.items():
        n = c["samples"]
        pct = (lambda k: round(100.0 * k / n, 1)) if n else (lambda k: 0.0)
        out[g] = {"samples": n, "kernel_pct": pct(c["kernel"]),
                  "inclusive_pct": {p: pct(k) for p, k in c["paths"].items()},
                  "top_self": [f"{pct(k)}% {sym}" for sym, k in
                               sorted(c["leaf"].items(), key=lambda kv: -kv[1])[:top]]}
    return out
