"""Function logs kept per function on disk, bounded, and read with `stratus logs [--follow]`."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stratus_harness import ROLE, new_server, remove_data_dir, stratus_bin, unique_name, wait_active

STREAM_RE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})/\[\$LATEST\]([0-9a-f]{32})$")
ACCOUNT = "000000000000"


def _env(server) -> dict:
    return dict(os.environ, STRATUS_ENDPOINT=server.endpoint)


def _logs(server, name: str, *extra: str) -> str:
    proc = subprocess.run([str(stratus_bin()), "logs", name, *extra], capture_output=True, text=True,
                          env=_env(server), timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _invoke(lam, name: str, event: dict | None = None) -> str:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}))
    resp["Payload"].read()
    assert "FunctionError" not in resp
    return resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_logs_keep_every_invocation_in_order(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.handler")
    ids = [_invoke(lam, name) for _ in range(3)]
    lines = _logs(server, name).splitlines()
    for rid in ids:
        start = lines.index(f"START RequestId: {rid} Version: $LATEST")
        assert lines[start + 1] == f"hello-from-handler {rid}", lines[start:start + 3]
        assert lines[start + 2] == f"END RequestId: {rid}"
        assert lines[start + 3].startswith(f"REPORT RequestId: {rid}\tDuration: ")
    starts = [i for i, line in enumerate(lines) if line.startswith("START RequestId: ")]
    assert [lines[i].split()[2] for i in starts] == ids, "invocations in order"
    verbose = _logs(server, name, "--verbose").splitlines()
    assert all("/[$LATEST]" in line.split(" ", 2)[1] for line in verbose), verbose[:2]


def test_follow_prints_new_lines_as_they_come(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.handler")
    proc = subprocess.Popen([str(stratus_bin()), "logs", name, "--follow"], stdout=subprocess.PIPE,
                            text=True, env=_env(server), stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        rid = _invoke(lam, name)
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if line.startswith(f"REPORT RequestId: {rid}"):
                break
        else:
            raise AssertionError(f"--follow did not print the invocation: {seen}")
        assert f"START RequestId: {rid} Version: $LATEST\n" in seen
    finally:
        proc.kill()
        proc.wait()


def test_a_chatty_function_keeps_every_line_under_its_cap(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.chatty")
    for _ in range(4):
        _invoke(lam, name, {"lines": 5000})  # ~350 KB of output per invoke, under the 16 MiB default
    lines = _logs(server, name).splitlines()
    printed = [line for line in lines if line.startswith("line ")]
    assert len(printed) == 20000, len(printed)
    assert printed[:2] == [f"line 00000 {'y' * 60}", f"line 00001 {'y' * 60}"]
    assert "line 04999" in lines[-3], lines[-4:]


def test_logs_of_a_deleted_function_are_gone(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.handler")
    _invoke(lam, name)
    assert "START RequestId" in _logs(server, name)
    log_dir = server.data_dir / "logs" / ACCOUNT / name
    assert log_dir.is_dir(), log_dir
    lam.delete_function(FunctionName=name)
    assert not log_dir.exists(), "the function's log directory outlived it"
    proc = subprocess.run([str(stratus_bin()), "logs", name], capture_output=True, text=True,
                          env=_env(server), timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert "ResourceNotFoundException" in proc.stderr


def _stream_dirs(data_dir: Path, name: str) -> list[str]:
    root = data_dir / "logs" / ACCOUNT / name
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*/*/*") if p.is_dir())


def test_streams_are_named_and_stored_as_lambda_names_them(server, lam, fns, py_zip):
    name = fns.create(py_zip, handler="app.dispatch")
    before = datetime.datetime.now(datetime.timezone.utc).date()
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    out = json.loads(resp["Payload"].read())
    after = datetime.datetime.now(datetime.timezone.utc).date()
    stream = out["log_stream_name"]
    m = STREAM_RE.match(stream)
    assert m, stream
    assert datetime.date(int(m[1]), int(m[2]), int(m[3])) in (before, after), stream
    assert out["log_group_name"] == f"/aws/lambda/{name}"
    verbose = _logs(server, name, "--verbose").splitlines()
    # One directory per stream, named as the stream is.
    assert _stream_dirs(server.data_dir, name) == [stream]
    assert verbose and all(line.split(" ", 2)[1] == stream for line in verbose), verbose[:3]
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", verbose[0].split(" ")[0]), verbose[0]
    # A second sandbox (a parallel invoke) writes its own stream; the log merges both in order.
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: json.loads(lam.invoke(
            FunctionName=name, Payload=json.dumps({"action": "sleep", "seconds": 1.5}).encode())["Payload"].read()),
            range(2)))
    streams = {o["log_stream_name"] for o in outs}
    assert len(streams) == 2, streams
    _logs(server, name)  # written by the time a read returns
    assert set(_stream_dirs(server.data_dir, name)) >= streams | {stream}


def _rss_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def _walk_bytes(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                total += os.lstat(os.path.join(root, n)).st_blocks * 512
            except FileNotFoundError:
                pass  # trimmed while we walked
    return total


def _disk_bytes(path: Path) -> int:
    """Bytes on disk (allocated blocks) of everything under `path`.

    A walk is not atomic: while the store writes, it can see a segment
    that is deleted a moment later and the growth that replaced it, so a
    sample is the least of three quick walks."""
    return min(_walk_bytes(path) for _ in range(3))


@pytest.fixture(scope="module")
def capped_server():
    srv = new_server("logcaps", ["--keep-alive-secs", "30", "--log-max-bytes-per-function", "1MiB",
                                 "--log-max-bytes-total", "3MiB"])
    srv.start()
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


def _create(lam, name: str, code: bytes, handler: str, timeout: int = 30) -> None:
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler=handler,
                        Code={"ZipFile": code}, Timeout=timeout, MemorySize=256)
    wait_active(lam, name)


@pytest.mark.timeout(180)
def test_a_flood_stays_within_the_caps_and_the_server_keeps_working(capped_server, py_zip):
    srv = capped_server
    lam = srv.client(read_timeout=120)
    pid = srv.proc.pid
    flood, quiet = unique_name("flood"), unique_name("quiet")
    _create(lam, flood, py_zip, "app.flood")
    _create(lam, quiet, py_zip, "app.handler")
    try:
        # Warm up both (the server's steady state before the flood).
        lam.invoke(FunctionName=flood, Payload=json.dumps({"seconds": 0.2}).encode())["Payload"].read()
        lam.invoke(FunctionName=quiet, Payload=b"{}")["Payload"].read()
        base = _rss_kb(pid)["VmRSS"]
        fdir = srv.data_dir / "logs" / ACCOUNT / flood
        samples, quiet_ms = [], []
        done = threading.Event()

        def sample():
            while not done.is_set():
                samples.append((_rss_kb(pid)["VmRSS"], _disk_bytes(fdir)))
                t0 = time.monotonic()
                r = lam.invoke(FunctionName=quiet, Payload=b"{}")
                r["Payload"].read()
                assert "FunctionError" not in r
                quiet_ms.append((time.monotonic() - t0) * 1000)
                time.sleep(0.25)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda mode: lam.invoke(
                    FunctionName=flood, Payload=json.dumps({"seconds": 8, "mode": mode}).encode()),
                    ["block", "lines"]))
        finally:
            done.set()
            sampler.join()
        wrote = 0
        for r in results:
            body = json.loads(r["Payload"].read())
            assert "FunctionError" not in r, body
            wrote += body["bytes"]
        rss = _rss_kb(pid)
        per_function = 1024 * 1024
        print(f"flood wrote {wrote / 1e6:.0f} MB; server RSS {base} kB before, samples max "
              f"{max(s[0] for s in samples)} kB, VmHWM {rss['VmHWM']} kB; log dir max "
              f"{max(s[1] for s in samples)} B; {len(quiet_ms)} quiet invokes, max {max(quiet_ms):.0f} ms")
        assert wrote > 20 * per_function, f"the function did not flood ({wrote} bytes)"
        assert max(s[1] for s in samples) <= per_function, samples
        assert _disk_bytes(fdir) <= per_function
        # The server's memory does not follow the volume of logs.
        assert max(s[0] for s in samples) - base < 40 * 1024, (base, samples)
        assert rss["VmHWM"] - base < 64 * 1024, (base, rss)
        assert max(quiet_ms) < 5000, quiet_ms
        # The newest lines are kept and readable, up to the flood's REPORT.
        lines = _logs(srv, flood).splitlines()
        assert lines[-1].startswith("REPORT RequestId: "), lines[-3:]
        assert any(line.startswith("flood ") for line in lines[-2000:])
        assert sum(len(line) + 1 for line in lines) <= per_function
        assert _invoke(lam, quiet)
    finally:
        for n in (flood, quiet):
            lam.delete_function(FunctionName=n)


@pytest.mark.timeout(180)
def test_flooding_until_the_timeout_and_hostile_output(capped_server, py_zip):
    srv = capped_server
    lam = srv.client(read_timeout=120)
    names = {mode: unique_name(f"flood-{mode}") for mode in ("giant", "binary", "block")}
    for n in names.values():
        _create(lam, n, py_zip, "app.flood", timeout=3)
    try:
        for mode, n in names.items():
            r = lam.invoke(FunctionName=n, Payload=json.dumps({"mode": mode}).encode())
            err = json.loads(r["Payload"].read())
            assert r.get("FunctionError") == "Unhandled" and err["errorType"] == "Sandbox.Timedout", err
        giant = _logs(srv, names["giant"]).splitlines()
        assert any(len(line) == 256 * 1024 and set(line) == {"g"} for line in giant), \
            [len(line) for line in giant]
        assert max(len(line.encode()) for line in giant) <= 256 * 1024
        binary = _logs(srv, names["binary"]).splitlines()
        assert any("\ufffd" in line for line in binary)
        for n in names.values():
            lines = _logs(srv, n).splitlines()
            assert re.search(r"Task timed out after 3\.00 seconds$", lines[-3]), lines[-3][-200:]
            assert lines[-1].startswith("REPORT RequestId: "), lines[-1][:200]
            assert _disk_bytes(srv.data_dir / "logs" / ACCOUNT / n) <= 1024 * 1024
        # The total cap holds across functions (the least recently written went first).
        assert _disk_bytes(srv.data_dir / "logs") <= 3 * 1024 * 1024
        # At the timeout the runtime was restarted inside the same sandbox:
        # the next invoke works and logs to the same stream (one per sandbox).
        r = lam.invoke(FunctionName=names["block"], Payload=json.dumps({"seconds": 0}).encode())
        assert "FunctionError" not in r, r["Payload"].read()
        assert _logs(srv, names["block"]).splitlines()[-1].startswith("REPORT RequestId: ")
        assert len(_stream_dirs(srv.data_dir, names["block"])) == 1
    finally:
        for n in names.values():
            lam.delete_function(FunctionName=n)


def test_logs_survive_a_restart(py_zip):
    first = new_server("logs-restart")
    first.start()
    data_dir = first.data_dir
    name = unique_name("logs-restart")
    try:
        lam = first.client()
        _create(lam, name, py_zip, "app.handler")
        rid = _invoke(lam, name)
        before = _logs(first, name, "--verbose")
        assert f"START RequestId: {rid}" in before
    finally:
        assert first.stop() == 0
    second = new_server("logs-restarted", data_dir=data_dir)
    second.start()
    try:
        lam = second.client()
        assert _logs(second, name, "--verbose") == before
        rid2 = _invoke(lam, name)
        lines = _logs(second, name).splitlines()
        assert lines.index(f"START RequestId: {rid} Version: $LATEST") < lines.index(f"START RequestId: {rid2} Version: $LATEST")
        assert len(_stream_dirs(data_dir, name)) == 2
        lam.delete_function(FunctionName=name)
    finally:
        second.stop()
        remove_data_dir(data_dir)


def test_logs_older_than_the_max_age_are_deleted(py_zip):
    srv = new_server("logs-age", ["--log-max-age", "2s"])
    srv.start()
    try:
        lam = srv.client()
        name = unique_name("logs-age")
        _create(lam, name, py_zip, "app.handler")
        rid = _invoke(lam, name)
        assert f"START RequestId: {rid}" in _logs(srv, name)
        deadline = time.monotonic() + 15
        while f"START RequestId: {rid}" in _logs(srv, name):
            assert time.monotonic() < deadline, "logs older than --log-max-age were kept"
            time.sleep(0.5)
        assert not (srv.data_dir / "logs" / "000000000000" / name).exists()
        # New lines are kept again.
        rid2 = _invoke(lam, name)
        assert f"START RequestId: {rid2}" in _logs(srv, name)
        lam.delete_function(FunctionName=name)
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)
