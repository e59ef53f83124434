"""Operating a server: the configuration file (`--config`, flags over the
file, unknown keys warn, `--print-config`), the readiness probe `/ready`, and
the version (`stratus version`, the `Server` header).

Starts its own servers: one configured by a file (with an unknown key and a
worker of 128 MB, so that one busy sandbox fills it), one with the same file
and a flag that overrides it."""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stratus_harness import FunctionFactory, new_server, remove_data_dir, stratus_bin

CONFIG = """\
# e2e: test_operations.py
account-concurrency = 37
keep-alive-secs = 120
worker-memory-mb = 128
scale-burst = 5
worker-threads = 3
frobnicate-the-widgets = true
"""


def write_config(tmp_path_factory, text: str = CONFIG):
    path = tmp_path_factory.mktemp("config") / "stratus.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return write_config(tmp_path_factory)


@pytest.fixture(scope="module")
def configured(config_file):
    srv = new_server("configured", ["--config", str(config_file)])
    srv.start()
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


@pytest.fixture
def cfns(configured, request):
    f = FunctionFactory(configured.client(), request.node.name)
    yield f
    f.cleanup()


def get(url: str):
    """(status, headers, JSON or text body) of a GET without credentials."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status, headers, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers, e.read()
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, body.decode(errors="replace")


def run_stratus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(stratus_bin()), *args], capture_output=True, text=True, timeout=60)


def stratus_version() -> str:
    out = run_stratus("version")
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[0] == "stratus", out.stdout
    return words[1]


def runtime_workers(srv) -> int:
    """The worker threads the server's async runtime reports at start."""
    for line in srv.log_path.read_text(errors="replace").splitlines():
        if "async runtime ready" in line:
            return int(line.split("worker_threads=")[1].split()[0])
    raise AssertionError(f"no 'async runtime ready' line:\n{srv.log_tail()}")


def test_config_file_values_take_effect(configured):
    settings = configured.client().get_account_settings()
    assert settings["AccountLimit"]["ConcurrentExecutions"] == 37, settings
    assert runtime_workers(configured) == 3


def test_unknown_key_warns_and_the_server_runs(configured, config_file):
    log = configured.log_path.read_text(errors="replace")
    warnings = [l for l in log.splitlines() if "frobnicate-the-widgets" in l]
    assert warnings, configured.log_tail()
    assert "WARN" in warnings[0] and str(config_file) in warnings[0], warnings


def test_a_flag_overrides_the_file(tmp_path_factory, config_file):
    srv = new_server(
        "config-flag",
        ["--config", str(config_file), "--account-concurrency", "41", "--worker-threads", "1"],
    )
    srv.start()
    try:
        settings = srv.client().get_account_settings()
        assert settings["AccountLimit"]["ConcurrentExecutions"] == 41, settings
        assert runtime_workers(srv) == 1
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)


def test_print_config_shows_the_effective_configuration(config_file):
    out = run_stratus("server", "--print-config", "--config", str(config_file), "--keep-alive-secs", "7")
    assert out.returncode == 0, out.stderr
    cfg = tomllib.loads(out.stdout)
    assert cfg["keep-alive-secs"] == 7  # the flag
    assert cfg["account-concurrency"] == 37  # the file
    assert cfg["worker-memory-mb"] == 128
    assert cfg["cpu-limit"] == "weight"  # the default
    assert cfg["worker-threads"] == 3
    assert cfg["log-max-bytes-total"] == "1GiB"
    assert "frobnicate-the-widgets" not in cfg
    assert "frobnicate-the-widgets" in out.stderr and "warning" in out.stderr, out.stderr


def test_print_config_output_is_a_valid_config_file(tmp_path_factory, config_file):
    first = run_stratus("server", "--print-config", "--config", str(config_file), "--uid-base", "12345")
    assert first.returncode == 0, first.stderr
    again = run_stratus("server", "--print-config", "--config", str(write_config(tmp_path_factory, first.stdout)))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert again.stderr == ""


def test_a_bad_value_is_an_error_naming_key_and_file(tmp_path_factory):
    path = write_config(tmp_path_factory, 'account-concurrency = "lots"\n')
    out = run_stratus("server", "--config", str(path))
    assert out.returncode != 0
    assert "`account-concurrency`" in out.stderr and str(path) in out.stderr, out.stderr
    # A zero is refused like the flag refuses it.
    path = write_config(tmp_path_factory, "account-concurrency = 0\n")
    out = run_stratus("server", "--print-config", "--config", str(path))
    assert out.returncode != 0
    assert "`account-concurrency`" in out.stderr, out.stderr
    path = write_config(tmp_path_factory, "worker-threads = 0\n")
    out = run_stratus("server", "--config", str(path))
    assert out.returncode != 0
    assert "`worker-threads`" in out.stderr and str(path) in out.stderr, out.stderr


def test_ready_without_credentials(configured):
    status, _, body = get(configured.endpoint + "/ready")
    assert status == 200, body
    checks = {"store": "ok", "sandbox-backend": "ok", "capacity": "ok"}
    if Path("/usr/bin/runsc").is_file():
        # The gVisor tier is started when runsc is installed, and checked too.
        checks["sandbox-backend-gvisor"] = "ok"
    assert body == {"ready": True, "checks": checks}
    status, _, body = get(configured.endpoint + "/health")
    assert status == 200, body


def wait_ready(srv, want: int, within: float = 15):
    """The last (status, body) of /ready, polled until its status is `want`."""
    deadline = time.monotonic() + within
    while True:
        status, _, body = get(srv.endpoint + "/ready")
        if status == want or time.monotonic() > deadline:
            return status, body
        time.sleep(0.1)


def test_ready_counts_idle_sandboxes_as_free_and_busy_ones_as_taken(configured, cfns, py_zip):
    # The worker has 128 MB: one 128 MB sandbox fills it.
    name = cfns.create(py_zip, handler="app.sleep", MemorySize=128, Timeout=30)
    client = configured.client()
    resp = client.invoke(FunctionName=name, Payload=json.dumps({"seconds": 0}).encode())
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, resp
    # Idle and warm: placement would evict it for new work, so still ready.
    status, body = wait_ready(configured, 200, within=0)
    assert status == 200, body
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.invoke, FunctionName=name, Payload=json.dumps({"seconds": 4}).encode())
        # Busy: nothing can be evicted.
        status, body = wait_ready(configured, 503, within=3)
        assert status == 503, body
        assert body["ready"] is False
        assert body["checks"]["store"] == "ok" and body["checks"]["sandbox-backend"] == "ok", body
        assert "128 MB" in body["checks"]["capacity"], body
        # Liveness is unaffected.
        assert get(configured.endpoint + "/health")[0] == 200
        assert slow.result(timeout=30)["StatusCode"] == 200
    status, body = wait_ready(configured, 200)
    assert status == 200, body


def test_version_command_and_header(configured):
    version = stratus_version()
    assert version and version[0].isdigit(), version
    resp = configured.client().list_functions()
    assert resp["ResponseMetadata"]["HTTPHeaders"]["server"] == f"stratus/{version}"
    # Errors and the open routes carry it too.
    for path in ("/2015-03-31/functions/does-not-exist", "/ready", "/health", "/metrics"):
        _, headers, _ = get(configured.endpoint + path)
        assert headers["Server"] == f"stratus/{version}", path
