"""Pre-initialised runtime sandboxes (the runtime pool, `--runtime-pool`).

A server keeps python and node sandboxes started all the way (namespaces,
cgroup, uid, seccomp, interpreter with the bootstrap's imports) without a
function; a cold start hands one to the function (its code and layers are
mounted then, its environment passed to the waiting bootstrap). A custom
runtime's (`provided`) pooled sandbox runs no program: it waits right
before `execve` and then execs the function's own `bootstrap` (or a
layer's) with the function's environment. These tests
run their own server with debug logs, whose `sandbox start phases` line says
`pooled_runtime=true` for such a cold start.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import pytest

from stratus_harness import (
    FunctionFactory,
    make_client,
    stratus_bin,
    _sandbox_ids_from_servers,
    host_pids_of,
    new_server,
    remove_data_dir,
    unique_name,
    zip_files,
)

PY_APP = r'''
import os, socket, sys, time

SEEN = {"imported_at_cwd": os.getcwd()}

def handler(event, context):
    if event.get("crash"):
        os._exit(3)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    marker = "/tmp/marker"
    fresh_tmp = sorted(os.listdir("/tmp"))
    with open(marker, "w") as f:
        f.write(context.aws_request_id)
    procs = [p for p in os.listdir("/proc") if p.isdigit()]
    return {
        "family": "python",
        "env": {k: v for k, v in os.environ.items()},
        "cwd": os.getcwd(),
        "imported_at_cwd": SEEN["imported_at_cwd"],
        "task": sorted(os.listdir("/var/task")),
        "opt": sorted(os.listdir("/opt")) if os.path.isdir("/opt") else None,
        "layer_value": __import__("layermod").VALUE,
        "tmp_before": fresh_tmp,
        "hostname": socket.gethostname(),
        "etc_hostname": open("/etc/hostname").read().strip(),
        "uid": os.getuid(),
        "procs": procs,
        "sys_path_has_task": "/var/task" in sys.path,
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "invoked_function_arn": context.invoked_function_arn,
            "aws_request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }
'''

NODE_APP = r'''
const fs = require('fs');
const os = require('os');
exports.handler = async (event, context) => {
  if (event.crash) process.exit(3);
  if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep * 1000));
  const tmpBefore = fs.readdirSync('/tmp').sort();
  fs.writeFileSync('/tmp/marker', context.awsRequestId);
  return {
    family: 'node',
    env: Object.assign({}, process.env),
    cwd: process.cwd(),
    task: fs.readdirSync('/var/task').sort(),
    opt: fs.readdirSync('/opt').sort(),
    layer_value: require('layermod').VALUE,
    tmp_before: tmpBefore,
    hostname: os.hostname(),
    etc_hostname: fs.readFileSync('/etc/hostname', 'utf8').trim(),
    uid: process.getuid(),
    procs: fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)),
    context: {
      function_name: context.functionName,
      function_version: context.functionVersion,
      memory_limit_in_mb: context.memoryLimitInMB,
      log_group_name: context.logGroupName,
      log_stream_name: context.logStreamName,
      invoked_function_arn: context.invokedFunctionArn,
      aws_request_id: context.awsRequestId,
      remaining_ms: context.getRemainingTimeInMillis(),
    },
  };
};
'''

# A custom runtime (its own Runtime API client), as a script so it can
# report what it sees; `start_cwd`: the cwd it was exec'd in.
PROVIDED_BOOTSTRAP = r'''#!/usr/bin/python3
import http.client, json, os, socket, time

START_CWD = os.getcwd()
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
conn = http.client.HTTPConnection(host, int(port))
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    event = json.loads(r.read() or b"{}")
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    deadline = int(r.getheader("Lambda-Runtime-Deadline-Ms"))
    if event.get("crash"):
        os._exit(3)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    tmp_before = sorted(os.listdir("/tmp"))
    with open("/tmp/marker", "w") as f:
        f.write(rid)
    e = os.environ
    body = {
        "family": "provided",
        "env": dict(e),
        "cwd": os.getcwd(),
        "start_cwd": START_CWD,
        "task": sorted(os.listdir("/var/task")),
        "opt": sorted(os.listdir("/opt")),
        "layer_value": open("/opt/provided/layermod").read().strip(),
        "tmp_before": tmp_before,
        "hostname": socket.gethostname(),
        "etc_hostname": open("/etc/hostname").read().strip(),
        "uid": os.getuid(),
        "procs": [p for p in os.listdir("/proc") if p.isdigit()],
        "context": {
            "function_name": e["AWS_LAMBDA_FUNCTION_NAME"],
            "function_version": e["AWS_LAMBDA_FUNCTION_VERSION"],
            "memory_limit_in_mb": e["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"],
            "log_group_name": e["AWS_LAMBDA_LOG_GROUP_NAME"],
            "log_stream_name": e["AWS_LAMBDA_LOG_STREAM_NAME"],
            "invoked_function_arn": r.getheader("Lambda-Runtime-Invoked-Function-Arn"),
            "aws_request_id": rid,
            "remaining_ms": deadline - int(time.time() * 1000),
        },
    }
    conn.request("POST", f"/2018-06-01/runtime/invocation/{rid}/response", json.dumps(body))
    conn.getresponse().read()
'''

CASES = {
    "python": dict(runtime="python3.12", handler="app.handler", files={"app.py": PY_APP},
                   layer={"python/layermod.py": "VALUE = 'from-the-layer'\n"}, opt=["python"]),
    "node": dict(runtime="nodejs20.x", handler="index.handler", files={"index.js": NODE_APP},
                 layer={"nodejs/node_modules/layermod/index.js": "exports.VALUE = 'from-the-layer';\n"},
                 opt=["nodejs"]),
    "provided": dict(runtime="provided.al2023", handler="anything", files={"bootstrap": PROVIDED_BOOTSTRAP},
                     layer={"provided/layermod": "from-the-layer\n"}, opt=["provided"]),
}


@pytest.fixture(scope="module")
def pool_server():
    srv = new_server("prewarmed", ["--keep-alive-secs", "300", "--runtime-pool", "1"],
                     env={"STRATUS_LOG": "info,stratus_sandbox_process=debug"})
    srv.start()
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


@pytest.fixture()
def pfns(pool_server):
    f = FunctionFactory(pool_server.client(), "pool")
    yield f
    f.cleanup()


def _wait_pool_ready(srv, want: int = 3, timeout: float = 30.0) -> None:
    """Waits until the server logged `want` more pre-initialised sandboxes than were taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = srv.this_run_log()
        made = text.count("pre-initialised a runtime sandbox")
        taken = text.count("pooled_runtime=true elapsed_us")
        if made - taken >= want:
            return
        time.sleep(0.1)
    raise AssertionError(f"runtime pool not refilled; log tail:\n{srv.log_tail(30)}")


def _started_pooled(srv, sandbox_id: str) -> bool:
    for line in srv.this_run_log().splitlines():
        if "sandbox start phases" in line and f"sandbox={sandbox_id}" in line:
            return "pooled_runtime=true" in line
    return False


def _create(lam, pfns, family: str, env: dict[str, str], memory: int = 256, timeout: int = 10) -> str:
    case = CASES[family]
    layer = lam.publish_layer_version(LayerName=unique_name(f"pool-{family}"),
                                      Content={"ZipFile": zip_files(case["layer"])})
    return pfns.create(zip_files(case["files"], executable=("bootstrap",)), handler=case["handler"],
                       runtime=case["runtime"],
                       MemorySize=memory, Timeout=timeout, Environment={"Variables": env},
                       Layers=[layer["LayerVersionArn"]])


def _invoke(lam, name: str, event: dict | None = None) -> dict:
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode())
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    return body


@pytest.mark.parametrize("family", ["python", "node", "provided"])
def test_first_invoke_is_served_by_a_specialised_pooled_sandbox(pool_server, pfns, family):
    lam = pool_server.client()
    _wait_pool_ready(pool_server)
    name = _create(lam, pfns, family, {"GREETING": f"hello-{family}", "TZ": "Europe/Paris"})
    body = _invoke(lam, name)
    (sid,) = _sandbox_ids_from_servers(name)
    assert _started_pooled(pool_server, sid), f"sandbox {sid} was not made from the pool"

    assert body["family"] == family
    env = body["env"]
    # Its own variables and the reserved ones; nothing of the pool's start-up.
    assert env["GREETING"] == f"hello-{family}"
    assert env["TZ"] == "Europe/Paris"
    assert env["_HANDLER"] == CASES[family]["handler"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert not any(k.startswith("_STRATUS") for k in env), env
    assert body["cwd"] == "/var/task"
    assert body["task"] == sorted(CASES[family]["files"])
    assert body["opt"] == CASES[family]["opt"]
    assert body["layer_value"] == "from-the-layer"
    assert body["tmp_before"] == [], "/tmp of a fresh sandbox must be empty"
    assert body["hostname"] == body["etc_hostname"]
    assert body["hostname"].startswith("sandbox-") and body["hostname"] != "sandbox"
    assert body["uid"] == 993
    ctx = body["context"]
    assert ctx["function_name"] == name
    assert ctx["function_version"] == "$LATEST"
    assert str(ctx["memory_limit_in_mb"]) == "256"
    assert ctx["log_group_name"] == f"/aws/lambda/{name}"
    assert ctx["log_stream_name"].endswith(sid)
    assert ctx["invoked_function_arn"].endswith(f":function:{name}")
    assert 0 < ctx["remaining_ms"] <= 10_000
    if family == "python":
        assert body["imported_at_cwd"] == "/var/task"
        assert body["sys_path_has_task"]
    if family == "provided":
        assert body["start_cwd"] == "/var/task", "exec'd in the code dir"
    # Only its own processes (the init and the runtime).
    assert len(body["procs"]) <= 3, body["procs"]

    # The sandbox's cgroup carries this function's memory limit.
    pids = host_pids_of(name)
    assert pids, "the pooled runtime is not found on the host"
    limit = _memory_limit(pids[0])
    assert limit is None or 256 * 2**20 <= limit <= 300 * 2**20, limit

    # Warm: same sandbox, /tmp kept.
    again = _invoke(lam, name)
    assert again["tmp_before"] == ["marker"]


def _memory_limit(pid: int) -> int | None:
    for line in open(f"/proc/{pid}/cgroup").read().splitlines():
        _, ctrl, path = line.split(":", 2)
        if "memory" in ctrl.split(","):
            for f in ("memory.limit_in_bytes", "memory.max"):
                p = f"/sys/fs/cgroup/memory{path}/{f}" if ctrl else f"/sys/fs/cgroup{path}/{f}"
                if os.path.exists(p):
                    v = open(p).read().strip()
                    return None if v == "max" else int(v)
    return None


def test_functions_and_accounts_never_share_a_sandbox(pool_server, pfns):
    lam = pool_server.client()
    names = []
    for i in range(3):
        _wait_pool_ready(pool_server)
        names.append(_create(lam, pfns, "python", {"WHO": f"f{i}"}))
    bodies = [_invoke(lam, n) for n in names]
    ids = [_sandbox_ids_from_servers(n) for n in names]
    assert all(len(s) == 1 for s in ids), ids
    assert len(set().union(*ids)) == 3, "two functions shared a sandbox"
    assert [b["env"]["WHO"] for b in bodies] == ["f0", "f1", "f2"]
    hosts = {b["hostname"] for b in bodies}
    assert len(hosts) == 3
    # Each sees only its own code: nothing of another function's marker.
    for b in bodies:
        assert b["task"] == ["app.py"]
    # Host view: distinct uids per sandbox.
    uids = set()
    for n in names:
        for pid in host_pids_of(n):
            uids.add(os.stat(f"/proc/{pid}").st_uid)
    assert len(uids) == 3, uids


def _pooled_by_name(srv, name: str) -> bool:
    return any("sandbox start phases" in line and f"function={name} " in line and "pooled_runtime=true" in line
               for line in srv.this_run_log().splitlines())


@pytest.mark.parametrize("family", ["python", "provided"])
def test_two_accounts_never_share_a_sandbox(pool_server, pfns, family):
    """Each account's cold start takes its own pooled sandbox: its own uid,
    host name, code and environment."""
    env = dict(os.environ, STRATUS_ENDPOINT=pool_server.endpoint)

    def cli(*args):
        p = subprocess.run([str(stratus_bin()), *args], capture_output=True, text=True, env=env, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        return p.stdout

    account = cli("account", "create").strip()
    key = json.loads(cli("key", "create", "--account", account, "--output", "json"))
    lam_b = make_client(pool_server.endpoint, aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"])
    lam_a = pool_server.client()
    _wait_pool_ready(pool_server)
    a = _create(lam_a, pfns, family, {"WHO": "account-a"})
    body_a = _invoke(lam_a, a)
    _wait_pool_ready(pool_server)
    fb = FunctionFactory(lam_b, "pool-b")
    try:
        b = _create(lam_b, fb, family, {"WHO": "account-b"})
        body_b = _invoke(lam_b, b)
        assert _pooled_by_name(pool_server, a) and _pooled_by_name(pool_server, b)
        assert body_a["env"]["WHO"] == "account-a" and body_b["env"]["WHO"] == "account-b"
        assert body_a["hostname"] != body_b["hostname"]
        assert body_b["context"]["invoked_function_arn"].split(":")[4] == account
        uids = {os.stat(f"/proc/{pid}").st_uid for name in (a,) for pid in host_pids_of(name)}
        assert len(uids) == 1
        # B's runtime runs under another host uid than A's.
        b_uids = set()
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if _hostname_of(d) == body_b["hostname"]:
                        b_uids.add(os.stat(f"/proc/{d}").st_uid)
                except OSError:
                    continue
        assert b_uids and not (b_uids & uids), (uids, b_uids)
    finally:
        fb.cleanup()


def _hostname_of(pid: str) -> str:
    """The UTS host name of a process (read through its /proc/<pid>/root)."""
    with open(f"/proc/{pid}/root/etc/hostname") as f:
        return f.read().strip()


def test_a_restarted_specialised_runtime_keeps_its_function(pool_server, pfns):
    """After a timeout the runtime is restarted in place (RestartRuntime):
    the new runtime is a normal start with the function's full
    configuration, in the same sandbox (/tmp kept)."""
    lam = pool_server.client()
    for family in ("python", "node", "provided"):
        _wait_pool_ready(pool_server)
        name = _create(lam, pfns, family, {"GREETING": "again"}, timeout=2)
        first = _invoke(lam, name)
        (sid,) = _sandbox_ids_from_servers(name)
        assert _started_pooled(pool_server, sid)
        r = lam.invoke(FunctionName=name, Payload=b'{"sleep": 5}')
        assert r.get("FunctionError") == "Unhandled", r
        assert "Sandbox.Timedout" in r["Payload"].read().decode()
        body = _invoke(lam, name)
        assert _sandbox_ids_from_servers(name) == {sid}, "not restarted in place"
        assert body["tmp_before"] == ["marker"], "/tmp must survive a restart"
        assert body["env"]["GREETING"] == "again"
        assert body["env"]["_HANDLER"] == CASES[family]["handler"]
        assert body["layer_value"] == "from-the-layer"
        assert body["task"] == first["task"]
        assert body["hostname"] == first["hostname"]
        assert not any(k.startswith("_STRATUS") for k in body["env"])


@pytest.mark.parametrize("family", ["python", "provided"])
def test_a_crashed_specialised_runtime_is_replaced(pool_server, pfns, family):
    """A runtime that exits ends its sandbox; the next invoke gets another."""
    lam = pool_server.client()
    _wait_pool_ready(pool_server)
    name = _create(lam, pfns, family, {"GREETING": "again"})
    _invoke(lam, name)
    (sid,) = _sandbox_ids_from_servers(name)
    r = lam.invoke(FunctionName=name, Payload=b'{"crash": true}')
    assert r.get("FunctionError") == "Unhandled", r
    body = _invoke(lam, name)
    assert body["env"]["GREETING"] == "again"
    assert _sandbox_ids_from_servers(name) != {sid}


def test_functions_the_pool_cannot_serve_start_from_scratch(pool_server, pfns):
    """Another /tmp size, or a variable the interpreter reads at start."""
    lam = pool_server.client()
    _wait_pool_ready(pool_server)
    big_tmp = pfns.create(zip_files({"app.py": PY_APP, "layermod.py": "VALUE = 'own'\n"}),
                          EphemeralStorage={"Size": 1024})
    body = _invoke(lam, big_tmp)
    (sid,) = _sandbox_ids_from_servers(big_tmp)
    assert not _started_pooled(pool_server, sid)
    assert body["layer_value"] == "own"
    startup = pfns.create(zip_files({"app.py": PY_APP, "layermod.py": "VALUE = 'own'\n"}),
                          Environment={"Variables": {"PYTHONDONTWRITEBYTECODE": "1"}})
    body = _invoke(lam, startup)
    (sid,) = _sandbox_ids_from_servers(startup)
    assert not _started_pooled(pool_server, sid)
    assert body["env"]["PYTHONDONTWRITEBYTECODE"] == "1"


def test_a_custom_runtime_takes_any_environment_and_a_layers_bootstrap(pool_server, pfns):
    """A custom runtime's program is exec'd after specialisation: variables
    read at exec (the dynamic loader's, the locale) are the function's, and
    a layer's `/opt/bootstrap` runs when the code has none."""
    lam = pool_server.client()
    _wait_pool_ready(pool_server)
    env = {"LD_LIBRARY_PATH": "/var/task/lib:/opt/lib", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    name = _create(lam, pfns, "provided", env)
    body = _invoke(lam, name)
    (sid,) = _sandbox_ids_from_servers(name)
    assert _started_pooled(pool_server, sid)
    for k, v in env.items():
        assert body["env"][k] == v, k
    assert not any(k.startswith("_STRATUS") for k in body["env"]), body["env"]

    _wait_pool_ready(pool_server)
    layer = lam.publish_layer_version(
        LayerName=unique_name("pool-rt"),
        Content={"ZipFile": zip_files({"bootstrap": PROVIDED_BOOTSTRAP, **CASES["provided"]["layer"]},
                                      executable=("bootstrap",))})
    name = pfns.create(zip_files({"README": "no bootstrap here"}), handler="x", runtime="provided.al2",
                       Layers=[layer["LayerVersionArn"]])
    body = _invoke(lam, name)
    (sid,) = _sandbox_ids_from_servers(name)
    assert _started_pooled(pool_server, sid)
    assert body["task"] == ["README"]
    assert body["opt"] == ["bootstrap", "provided"]
    assert body["start_cwd"] == "/var/task"


def test_the_rust_lambda_runtime_fixture_starts_from_the_pool(pool_server, pfns):
    from test_runtimes import _rust_bootstrap

    binary = _rust_bootstrap()
    if binary is None:
        pytest.skip("rust fixture not built: cargo build -p stratus-test-fn-rust --release")
    lam = pool_server.client()
    _wait_pool_ready(pool_server)
    name = pfns.create(zip_files({"bootstrap": binary.read_bytes()}, executable=("bootstrap",)),
                       handler="bootstrap", runtime="provided.al2023", Timeout=5)
    r = lam.invoke(FunctionName=name, Payload=json.dumps({"name": "pool"}).encode(), LogType="Tail")
    out = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, out
    assert out["hello"] == "pool" and out["count"] == 1 and out["function_name"] == name, out
    (sid,) = _sandbox_ids_from_servers(name)
    assert _started_pooled(pool_server, sid)
    # A pooled cold start still reports its Init Duration.
    log = base64.b64decode(r["LogResult"]).decode()
    assert "Init Duration" in log, log


def test_the_startup_line_names_the_pool(pool_server):
    text = pool_server.this_run_log()
    assert "runtime_pool=1 pre-initialised sandbox(es) per runtime family (python, node, provided)" in text, \
        text[-2000:]


def test_pool_size_zero_disables_it(tmp_path):
    srv = new_server("prewarmed-off", ["--runtime-pool", "0"], env={"STRATUS_LOG": "info,stratus_sandbox_process=debug"})
    srv.start()
    try:
        lam = srv.client()
        f = FunctionFactory(lam, "pool-off")
        name = f.create(zip_files({"app.py": PY_APP, "layermod.py": "VALUE = 1\n"}))
        _invoke(lam, name)
        text = srv.this_run_log()
        assert "pre-initialised a runtime sandbox" not in text
        assert "pooled_runtime=true" not in text
        assert "runtime_pool=off (runtime-pool = 0)" in text
        f.cleanup()
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)

