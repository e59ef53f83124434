"""Shared by the benchmark suite's section scripts (bench/warm.py,
bench/cold.py, ...) and bench/suite.py: finding the binaries, starting a
server, running the load client, describing the machine, and the section
result format.

A section writes one JSON document:

    {"section": "warm", "figures": {key: value}, "baselines": {key: value},
     "ratios": {key: figure / baseline}, "targets": [...], "notes": [...], ...}

where a key is flat (`provided.c1.p50_us`), every baseline and ratio key is
also a figure key, and `targets` lists
`{"name", "figure", "value", "limit", "met"}` (limit in words, e.g. "< 200").
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
# The harness makes a new log directory on import unless told one; the
# benchmark's servers log into their own temp dirs, so one fixed dir will do.
os.environ.setdefault("STRATUS_E2E_LOG_DIR", str(Path(tempfile.gettempdir()) / "stratus-bench-harness-logs"))

from stratus_harness import ACCESS_KEY_ID, SECRET_ACCESS_KEY, Server, remove_data_dir  # noqa: E402

BUILD_HINT = "cargo build --release -p stratus -p stratus-bench-loadgen -p stratus-bench-fixtures"

PY_NOOP = "def handler(event, context):\n    return {}\n"
NODE_NOOP = "exports.handler = async (event, context) => ({});\n"
MEMORY_MB = 1024

# A clean environment like a sandbox's for the bare baselines: the host's own
# variables can cost a lot (NODE_EXTRA_CA_CERTS alone adds ~40 ms to a node start).
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC"}


def target_dir() -> Path:
    env = os.environ.get("CARGO_TARGET_DIR")
    return Path(env) if env else REPO / "target"


def default_bin() -> Path:
    return target_dir() / "release" / "stratus"


def tool(binary: Path, name: str) -> Path:
    """A benchmark tool (`stratus-loadgen`, `stratus-bench-*`) built with the
    server: looked up next to the server binary, so a release server is
    measured with a release client and release fixtures."""
    p = binary.resolve().parent / name
    if not p.exists():
        profile = "--release " if binary.resolve().parent.name == "release" else ""
        raise SystemExit(
            f"{p} not found: build the benchmark tools next to {binary}: "
            f"cargo build {profile}-p stratus-bench-loadgen -p stratus-bench-fixtures"
        )
    return p


def check_bin(binary: Path) -> Path:
    if not binary.exists():
        raise SystemExit(f"server binary {binary} not found: build it with\n    {BUILD_HINT}\n(or pass --bin)")
    return binary


def uid_base() -> int:
    """Sandbox uids of the benchmark's servers: STRATUS_BENCH_UID_BASE, or
    500,000 above STRATUS_E2E_UID_BASE (inside that checkout's million, past
    the e2e suite's own servers, which take 10,000 each from its base), so a
    smoke run beside the e2e suite never shares a uid with its sandboxes."""
    if os.environ.get("STRATUS_BENCH_UID_BASE"):
        return int(os.environ["STRATUS_BENCH_UID_BASE"])
    return int(os.environ.get("STRATUS_E2E_UID_BASE", "1600000")) + 500_000


def start_server(binary: Path, tag: str, extra: list[str] | None = None) -> tuple[Server, Path]:
    """A server of our own: its own cgroup parent and sandbox uid range
    (STRATUS_E2E_UID_BASE), room for 32+ sandboxes of 1,024 MB."""
    tmp = Path(tempfile.mkdtemp(prefix=f"stratus-bench-{tag}-"))
    args = [
        "--cgroup-parent", f"stratus-bench-{tag}-{os.getpid()}",
        "--uid-base", str(uid_base()),
        # A reservation, not a use: 40 idle no-op sandboxes of 1,024 MB use
        # a few MB each, but placement counts their MemorySize.
        "--worker-memory-mb", str(48 * 1024),
        *(extra or []),
    ]
    srv = Server(data_dir=tmp / "data", log_path=tmp / "server.log", extra_args=args, binary=binary)
    srv.start()
    print(f"[bench] started {binary} on {srv.endpoint} (log {srv.log_path})", file=sys.stderr)
    return srv, tmp


def stop_server(srv: Server | None, tmp: Path | None) -> None:
    if srv is not None:
        srv.stop()
        remove_data_dir(srv.data_dir)
    if tmp is not None and srv is not None and not list(tmp.glob("data")):
        shutil.rmtree(tmp, ignore_errors=True)


def wait_active(client, name: str, timeout: float = 60.0) -> None:
    """Polls every 20 ms (boto3's waiter polls once a second, which would
    make a run of 60 cold starts a minute longer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get_function_configuration(FunctionName=name).get("State")
        if state == "Active":
            return
        if state == "Failed":
            raise RuntimeError(f"function {name} failed to become Active")
        time.sleep(0.02)
    raise RuntimeError(f"function {name} not Active after {timeout} s")


def invoke_url(endpoint: str, name: str) -> str:
    return f"{endpoint.rstrip('/')}/2015-03-31/functions/{name}/invocations"


def loadgen(exe: Path, url: str, *, concurrency: int = 1, requests: int | None = None,
            duration: float | None = None, warmup: int = 0, sigv4: bool = True,
            expect_body: str | None = "{}", payload: str = "{}") -> dict:
    cmd = [str(exe), "--url", url, "-c", str(concurrency), "--warmup", str(warmup), "--payload", payload]
    if duration is not None:
        cmd += ["--duration", str(duration)]
    else:
        cmd += ["-n", str(requests or 1000)]
    if sigv4:
        cmd += ["--sigv4", "--access-key-id", ACCESS_KEY_ID, "--secret-access-key", SECRET_ACCESS_KEY]
    if expect_body is not None:
        cmd += ["--expect-body", expect_body]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def start_listening(cmd: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Starts a baseline server that prints `listening HOST:PORT`."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("listening "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{shlex.join(cmd)} did not start: {line!r}")
    return proc, line.split()[1]


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        stat = _read(f"/proc/{d.name}/stat")
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            kids.setdefault(int(fields[1]), []).append(int(d.name))
    return kids


def cpu_snapshot(root: int) -> dict[str, list[int]]:
    """CPU time (ns; utime + stime from /proc/<pid>/stat, which includes
    threads that have ended, at clock-tick resolution) and context switches
    (voluntary + involuntary, of the threads alive now) of process `root`
    ("server") and of all its descendants together ("sandboxes": the
    sandboxes' init, jailers and runtimes). A timed phase's cost per request
    is the difference of two snapshots divided by its requests: it is not
    disturbed by other load on the machine, as latency is."""
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    out = {"server": [0, 0], "sandboxes": [0, 0]}
    for who, pids in (("server", [root]), ("sandboxes", descendants(root))):
        for pid in pids:
            stat = _read(f"/proc/{pid}/stat")
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 12:
                out[who][0] += (int(fields[11]) + int(fields[12])) * tick_ns
            for task in Path(f"/proc/{pid}/task").glob("*"):
                for line in _read(f"{task}/status").splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        out[who][1] += int(line.split()[1])
    return out


def descendants(root: int) -> list[int]:
    """Every process below `root` now (for a server: its sandboxes' init,
    jailer and runtime processes)."""
    kids, out, todo = _children(), [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def cpu_per_request(before: dict, after: dict, requests: int) -> dict[str, dict[str, float]]:
    return {who: {"cpu_us": round((after[who][0] - before[who][0]) / requests / 1000, 1),
                  "switches": round((after[who][1] - before[who][1]) / requests, 2)}
            for who in before}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpuidle() -> dict:
    """The cpuidle governor and, where the haltpoll governor is loaded, its
    guest_halt_poll_ns (how long an idle vCPU polls before it halts)."""
    out = {"governor": _read("/sys/devices/system/cpu/cpuidle/current_governor_ro").strip()
           or _read("/sys/devices/system/cpu/cpuidle/current_governor").strip() or None}
    poll = _read("/sys/module/haltpoll/parameters/guest_halt_poll_ns").strip()
    if poll:
        out["guest_halt_poll_ns"] = int(poll) if poll.isdigit() else poll
    return out


def machine(binary: Path | None) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        cgroup = "v2"
    elif Path("/sys/fs/cgroup/unified").exists():
        cgroup = "v1 (hybrid: a cgroup2 mount at /sys/fs/cgroup/unified)"
    else:
        cgroup = "v1"

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip()

    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "memory_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "cgroup": cgroup,
        "python": sys.version.split()[0],
        "git_commit": git("rev-parse", "HEAD"),
        # Changes to tracked files, results of earlier runs aside.
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")),
        # How an idle CPU waits: on a VM guest whose cpuidle governor is
        # haltpoll with guest_halt_poll_ns 0, every wake-up of an idle vCPU
        # goes through the hypervisor, which dominates warm-invoke latency.
        "cpuidle": cpuidle(),
        "binary": str(binary) if binary else None,
        "binary_mtime": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(binary.stat().st_mtime))
                         if binary and binary.exists() else None),
    }


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 3)


def write_section(out: Path | None, doc: dict) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"[bench] {doc['section']}: written to {out}", file=sys.stderr)


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def section_table(doc: dict, prefix: str = "") -> str:
    """Figures with their baseline, ratio and target (Markdown table)."""
    targets = {t["figure"]: t for t in doc.get("targets", [])}
    rows = []
    for key, value in doc.get("figures", {}).items():
        t = targets.get(key)
        rows.append([prefix + key, fmt(value), fmt(doc.get("baselines", {}).get(key)),
                     fmt(doc.get("ratios", {}).get(key)),
                     f"{t['limit']}: {'met' if t['met'] else 'NOT met'}" if t else ""])
    return table(rows, ["figure", "Stratus", "baseline", "ratio", "target"])


def target(name: str, figure: str, value: float | None, limit: str, met: bool | None) -> dict:
    return {"name": name, "figure": figure, "value": value, "limit": limit, "met": met}
