"""Start and stop a real `stratus server` process and talk to it with boto3.

Shared by the end-to-end suite (tests/e2e) and the latency benchmark (bench/).
Nothing here builds the binary: `scripts/test` does that first. The binary is
`target/debug/stratus` unless `STRATUS_BIN` names another one.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = Path(__file__).resolve().parent / "functions"
SHARED_FUNCTIONS = REPO / "tests" / "functions"
ROLE = "arn:aws:iam::000000000000:role/stratus-e2e"
DEFAULT_REGION = "us-east-1"
# The key pair every client here signs with, and the servers' admin key: a
# server reads STRATUS_ACCESS_KEY_ID / STRATUS_SECRET_ACCESS_KEY as its admin
# key (account 000000000000), and the `stratus` CLI signs with the same
# variables. Set here, once, for the servers and CLIs this process starts.
ACCESS_KEY_ID = "test"
SECRET_ACCESS_KEY = "test"
os.environ["STRATUS_ACCESS_KEY_ID"] = ACCESS_KEY_ID
os.environ["STRATUS_SECRET_ACCESS_KEY"] = SECRET_ACCESS_KEY
# Fixed timestamp so that zipping the same tree twice gives the same bytes
# (and therefore the same CodeSha256).
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def stratus_bin() -> Path:
    env = os.environ.get("STRATUS_BIN")
    if env:
        return Path(env).resolve()
    return REPO / "target" / "debug" / "stratus"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One running `stratus server` process."""

    data_dir: Path
    log_path: Path
    port: int = 0
    extra_args: list[str] = field(default_factory=list)
    # Changes to the server's environment (None removes a variable).
    env: dict[str, str | None] = field(default_factory=dict)
    # Run the server as this (unprivileged) user, via setpriv; the binary and
    # the data dir must then be reachable by that user (rootless mode).
    run_as: str | None = None
    binary: Path | None = None
    proc: subprocess.Popen | None = None
    _log: object = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "Server":
        binary = self.binary or stratus_bin()
        if not binary.exists():
            raise RuntimeError(f"stratus binary not found at {binary}; run `cargo build -p stratus` (or set STRATUS_BIN)")
        if not self.port:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            import pwd

            pw = pwd.getpwnam(self.run_as)
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self._log = open(self.log_path, "ab")
        cmd = [
            str(binary),
            "server",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        if self.run_as:
            # setpriv execs the server: self.proc is the server itself.
            cmd = ["setpriv", "--reuid", self.run_as, "--regid", self.run_as, "--init-groups", "--", *cmd]
        self._log.write(f"\n=== {' '.join(cmd)}\n".encode())
        self._log.flush()
        env = dict(os.environ)
        # The server reads its log filter from STRATUS_LOG (e.g. "debug").
        env.setdefault("STRATUS_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        if self.run_as:
            env["HOME"] = str(self.data_dir)
            env.pop("XDG_RUNTIME_DIR", None)  # root's, if set
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"stratus server exited with {self.proc.returncode} before becoming healthy; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError) as e:  # not listening yet
                last_err = e
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"stratus server not healthy after {timeout}s ({last_err}); log tail:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit. Returns the exit code."""
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = None
        elif self.proc is not None:
            rc = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        self._remove_cgroup_lock()
        return rc

    def _remove_cgroup_lock(self) -> None:
        """The server never removes its cgroup parent's lock file (see
        bin/stratus/src/lock.rs); the suite's parents are used once, so
        their files would pile up in /run/stratus until a reboot."""
        if self.proc is None or self.proc.poll() is None or "--cgroup-parent" not in self.extra_args:
            return
        parent = arg_of(self, "--cgroup-parent").replace("%", "%25").replace("/", "%2F")
        Path(f"/run/stratus/cgroup-{parent}.lock").unlink(missing_ok=True)

    def this_run_log(self) -> str:
        """The server's log since its last start (the file may hold earlier
        runs, each after the "=== <command>" line `start` writes)."""
        text = self.log_path.read_text(errors="replace")
        return text[text.rfind("\n=== "):]

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def client(self, region: str = DEFAULT_REGION, service: str = "lambda", **cfg):
        return make_client(self.endpoint, region=region, service=service, **cfg)


def make_client(endpoint: str, region: str = DEFAULT_REGION, service: str = "lambda", **cfg):
    """A boto3 client; `aws_access_key_id` / `aws_secret_access_key` sign as
    another key than the admin key."""
    key_id = cfg.pop("aws_access_key_id", ACCESS_KEY_ID)
    secret = cfg.pop("aws_secret_access_key", SECRET_ACCESS_KEY)
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        # Client-side validation would hide the server's own range checks.
        parameter_validation=False,
        connect_timeout=5,
        read_timeout=cfg.pop("read_timeout", 60),
        max_pool_connections=cfg.pop("max_pool_connections", 20),
        **cfg,
    )
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=config,
    )


def zip_files(files: dict[str, bytes | str], executable: tuple[str, ...] = ()) -> bytes:
    """Deterministic zip of {archive name: content}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            data = files[name]
            if isinstance(data, str):
                data = data.encode()
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if name in executable else 0o644
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def read_tree(path: Path) -> tuple[dict[str, bytes], tuple[str, ...]]:
    files: dict[str, bytes] = {}
    executable = []
    for p in sorted(Path(path).rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            rel = p.relative_to(path).as_posix()
            files[rel] = p.read_bytes()
            if os.access(p, os.X_OK):
                executable.append(rel)
    return files, tuple(executable)


def zip_dir(path: Path, overrides: dict[str, bytes | str] | None = None) -> bytes:
    """Zip a directory in memory (deterministically), optionally replacing files."""
    files, executable = read_tree(path)
    files.update(overrides or {})
    return zip_files(files, executable)


_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")


def unique_name(hint: str) -> str:
    base = _NAME_RE.sub("-", hint).strip("-")[:40] or "fn"
    return f"e2e-{base}-{uuid.uuid4().hex[:8]}"


def wait_active(client, name: str, timeout: float = 60.0) -> dict:
    client.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": int(timeout)}
    )
    return client.get_function_configuration(FunctionName=name)


def wait_updated(client, name: str, timeout: float = 60.0) -> dict:
    client.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": int(timeout)}
    )
    return client.get_function_configuration(FunctionName=name)


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LAST_MODIFIED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")


def expect_error(call, status: int, code: str, *fragments: str, **kwargs) -> dict:
    """Run a boto3 call that must fail; check HTTP status, error code, header and message."""
    from botocore.exceptions import ClientError

    try:
        resp = call(**kwargs)
    except ClientError as e:
        err = e.response
    else:
        raise AssertionError(f"expected {status} {code}, got success: {resp!r}"[:2000])
    meta = err.get("ResponseMetadata", {})
    summary = f"status={meta.get('HTTPStatusCode')} error={err.get('Error')}"
    assert meta.get("HTTPStatusCode") == status, summary
    assert err["Error"].get("Code") == code, summary
    assert UUID_RE.match(meta.get("HTTPHeaders", {}).get("x-amzn-requestid", "")), f"no x-amzn-RequestId; {meta}"
    header = meta.get("HTTPHeaders", {}).get("x-amzn-errortype", "")
    assert header.split(":")[0] == code, f"x-amzn-ErrorType header is {header!r}; {summary}"
    message = err["Error"].get("Message") or ""
    for frag in fragments:
        assert frag in message, f"{frag!r} not in message; {summary}"
    return err


def arn(name: str, region: str = DEFAULT_REGION, account: str = "000000000000") -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


# Keep-alive used by the shared server: short enough that the keep-alive test
# does not take minutes, long enough that back-to-back invokes stay warm.
KEEP_ALIVE_SECS = 6

_LOG_DIR = Path(os.environ.get("STRATUS_E2E_LOG_DIR") or tempfile.mkdtemp(prefix="stratus-e2e-logs-"))
_LOG_DIR.mkdir(parents=True, exist_ok=True)
_SERVERS: list[Server] = []


def arg_of(server: Server, flag: str) -> str:
    """The value the harness passed the server for `flag` (e.g. --cgroup-parent)."""
    return server.extra_args[server.extra_args.index(flag) + 1]


def cgroup_parents_of(server: Server) -> list[str]:
    """The server's cgroup parent directories that exist, in every hierarchy."""
    parent = arg_of(server, "--cgroup-parent")
    return sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{parent}"))


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        with open("/proc/self/mounts") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    except OSError:
        return []


def remove_data_dir(path: Path) -> None:
    # Never recurse into a bind mount the server may have left behind (it
    # could be the host's /usr).
    left = _mounts_under(path)
    if left:
        print(f"\n[e2e] NOT removing {path}: mounts left behind by the server: {left[:5]}", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


_UID_BASE = int(os.environ.get("STRATUS_E2E_UID_BASE", "1600000"))
# Run every server of the suite as this existing unprivileged user
# (rootless mode), to see which tests hold without root. Not for CI: tests
# that check cgroups or host uid ranges fail by design then.
_RUN_AS = os.environ.get("STRATUS_E2E_RUN_AS") or None
_ROOTLESS_BIN: Path | None = None


def _rootless_binary() -> Path:
    """The stratus binary copied where an unprivileged user can run it."""
    global _ROOTLESS_BIN
    if _ROOTLESS_BIN is None:
        d = Path(tempfile.mkdtemp(prefix="stratus-e2e-bin-"))
        atexit.register(shutil.rmtree, d, ignore_errors=True)
        d.chmod(0o755)
        _ROOTLESS_BIN = d / "stratus"
        shutil.copy2(stratus_bin(), _ROOTLESS_BIN)
        _ROOTLESS_BIN.chmod(0o755)
    return _ROOTLESS_BIN


def new_server(tag: str, extra_args: list[str] | None = None, data_dir: Path | None = None,
               env: dict[str, str | None] | None = None, run_as: str | None = None,
               binary: Path | None = None) -> Server:
    """A server for the suite. Servers of one run may overlap in time, so each
    gets its own cgroup parent and sandbox uid range. Concurrent suites on one
    host (several checkouts) must set STRATUS_E2E_UID_BASE apart by at least
    1,000,000 so their uid ranges never meet."""
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"stratus-e2e-{tag}-"))
    if run_as is None and _RUN_AS:
        run_as, binary = _RUN_AS, binary or _rootless_binary()
    index = len(_SERVERS)
    isolation = ["--cgroup-parent", f"stratus-e2e-{os.getpid()}-{index}", "--uid-base", str(_UID_BASE + index * 10_000)]
    srv = Server(data_dir=data_dir, log_path=_LOG_DIR / f"server-{tag}.log",
                 extra_args=isolation + (extra_args or []), env=env or {}, run_as=run_as,
                 binary=binary)
    _SERVERS.append(srv)
    return srv



class FunctionFactory:
    """Creates functions with unique names and deletes them afterwards."""

    def __init__(self, client, hint: str):
        self.client = client
        self.hint = hint
        self.created: list[tuple[object, str]] = []

    def name(self, suffix: str = "") -> str:
        return unique_name(f"{self.hint}{suffix}")

    def create(self, code: bytes, handler: str = "app.handler", runtime: str = "python3.12",
               name: str | None = None, wait: bool = True, client=None, **kwargs) -> str:
        client = client or self.client
        name = name or self.name()
        resp = client.create_function(
            FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
            Code={"ZipFile": code}, **kwargs,
        )
        self.created.append((client, name))
        self.last_response = resp
        if wait:
            wait_active(client, name)
        return name

    def track(self, name: str, client=None) -> None:
        self.created.append((client or self.client, name))

    def cleanup(self) -> None:
        for client, name in reversed(self.created):
            try:
                client.delete_function(FunctionName=name)
            except Exception:  # server already gone
                pass




def host_pids_of(function_name: str) -> list[int]:
    """Host pids of this function's sandboxed runtimes (and what they started).

    A runtime started for the function carries AWS_LAMBDA_FUNCTION_NAME in
    its /proc environ. One made from a pre-initialised sandbox (the runtime
    pool) was exec'd before the function was known, so its /proc environ
    does not name it: those are found through the sandbox ids the running
    servers list for the function (remembered, so they are still checked
    after the function or the server is gone) and the cgroup named by each
    id, leaving out each sandbox's init (pid 1 of its namespace)."""
    needle = f"AWS_LAMBDA_FUNCTION_NAME={function_name}".encode()
    ids = _SANDBOX_IDS.setdefault(function_name, set())
    ids |= _sandbox_ids_from_servers(function_name)
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in env or (ids and _in_sandbox_cgroup(d, ids)):
                pids.append(int(d))
    return pids


# Sandbox ids seen per function name (see host_pids_of).
_SANDBOX_IDS: dict[str, set[str]] = {}


def _sandbox_ids_from_servers(function_name: str) -> set[str]:
    from urllib.parse import quote

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    ids: set[str] = set()
    for srv in _SERVERS:
        if srv.proc is None or srv.proc.poll() is not None:
            continue
        url = f"{srv.endpoint}/_stratus/functions/{quote(function_name, safe='')}/sandboxes"
        req = AWSRequest(method="GET", url=url)
        SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "lambda", DEFAULT_REGION).add_auth(req)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=dict(req.headers)), timeout=5) as r:
                import json

                ids |= {sb["Id"] for sb in json.load(r).get("Sandboxes", [])}
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            continue
    return ids


def _in_sandbox_cgroup(pid: str, ids: set[str]) -> bool:
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if not any(line.rsplit("/", 1)[-1] in ids for line in cgroups.splitlines() if "/" in line):
        return False
    nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
    return not (nspid and nspid[-1] == "1")


def wait_no_pids(function_name: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    pids = host_pids_of(function_name)
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        pids = host_pids_of(function_name)
    return pids
