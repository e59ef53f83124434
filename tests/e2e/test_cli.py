"""The README walk-throughs: the `stratus` CLI, and the AWS CLI with --endpoint-url."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from stratus_harness import FUNCTIONS, ROLE, arn, stratus_bin, unique_name, zip_dir


def _names_in(doc) -> list[str]:
    """Every FunctionName anywhere in a JSON document (list output shape is the CLI's choice)."""
    found = []
    if isinstance(doc, dict):
        if isinstance(doc.get("FunctionName"), str):
            found.append(doc["FunctionName"])
        for v in doc.values():
            found.extend(_names_in(v))
    elif isinstance(doc, list):
        for v in doc:
            found.extend(_names_in(v))
    return found


def _config_of(doc: dict) -> dict:
    return doc.get("Configuration", doc) if isinstance(doc, dict) else doc


@pytest.fixture
def cli(server):
    # npm_config_offline: tests reach no registry (deploy's bundling uses local packages).
    env = dict(os.environ, STRATUS_ENDPOINT=server.endpoint, AWS_ACCESS_KEY_ID="test",
               AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
               npm_config_offline="true")
    env.pop("AWS_PROFILE", None)

    def run(*args, ok=True):
        proc = subprocess.run([str(stratus_bin()), *args], capture_output=True, text=True, env=env,
                              timeout=120, stdin=subprocess.DEVNULL)
        if ok:
            assert proc.returncode == 0, f"stratus {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        return proc

    return run


def test_stratus_cli_walkthrough(cli, lam, tmp_path):
    name = unique_name("cli")
    code_dir = tmp_path / "fn"
    shutil.copytree(FUNCTIONS / "python", code_dir)
    try:
        # create from a directory
        p = cli("function", "create", name, "--runtime", "python3.12", "--handler", "app.handler",
                "--code", str(code_dir), "--memory", "256", "--timeout", "10", "--env", "GREETING=hi",
                "--env", "OTHER=x=y", "--description", "from the cli", "--output", "json")
        created = _config_of(json.loads(p.stdout))
        assert created["FunctionName"] == name
        assert created["FunctionArn"] == arn(name)
        assert created["MemorySize"] == 256 and created["Timeout"] == 10
        assert created["Description"] == "from the cli"
        assert created["Environment"]["Variables"] == {"GREETING": "hi", "OTHER": "x=y"}
        conf = lam.get_function_configuration(FunctionName=name)
        # The directory was zipped: the server has app.py at the top level.
        url = lam.get_function(FunctionName=name)["Code"]["Location"]
        import io
        import urllib.request
        import zipfile
        with urllib.request.urlopen(url, timeout=10) as r:
            names = zipfile.ZipFile(io.BytesIO(r.read())).namelist()
        assert "app.py" in names, names

        lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

        # invoke with a payload; result on stdout
        p = cli("invoke", name, "--payload", '{"from": "cli"}')
        out = json.loads(p.stdout)
        assert out["event"] == {"from": "cli"}
        assert out["count"] == 1 and out["env"]["GREETING"] == "hi"

        # invoke --log: log tail on stderr
        p = cli("invoke", name, "--payload", "{}", "--log")
        out = json.loads(p.stdout)
        rid = out["request_id"]
        assert f"START RequestId: {rid}" in p.stderr, p.stderr
        assert f"hello-from-handler {rid}" in p.stderr, p.stderr
        assert f"REPORT RequestId: {rid}" in p.stderr, p.stderr

        # get and list
        p = cli("function", "get", name, "--output", "json")
        got = _config_of(json.loads(p.stdout))
        assert got["FunctionName"] == name and got["CodeSha256"] == conf["CodeSha256"]
        # For people: a FIELD/VALUE table (environment variable names only).
        lines = cli("function", "get", name).stdout.splitlines()
        assert lines[0].split() == ["FIELD", "VALUE"], lines
        assert any(line.split() == ["Name", name] for line in lines), lines
        assert any(line.split() == ["Runtime", "python3.12"] for line in lines), lines
        assert any(line.split() == ["State", "Active"] for line in lines), lines
        assert any(line.split() == ["Environment", "GREETING,", "OTHER"] for line in lines), lines
        assert not any("x=y" in line for line in lines), lines
        p = cli("function", "list", "--output", "json")
        assert name in _names_in(json.loads(p.stdout))
        table = cli("function", "list").stdout.splitlines()
        assert table[0].split() == ["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "STATE", "LAST", "MODIFIED"], table
        row = next(line.split() for line in table[1:] if line.split()[0] == name)
        assert row[1:5] == ["python3.12", "256", "10", "Active"], row

        # the function's live sandboxes (the invoke above left one idle)
        sbx = json.loads(cli("function", "sandboxes", name, "--output", "json").stdout)
        assert len(sbx["Sandboxes"]) == 1 and sbx["Sandboxes"][0]["State"] == "idle", sbx
        table = cli("function", "sandboxes", name).stdout.splitlines()
        assert table[0].split()[:3] == ["SANDBOX", "STATE", "VERSION"], table
        assert table[1].split()[0] == sbx["Sandboxes"][0]["Id"] and table[1].split()[1] == "idle", table

        # update-code from a zip file
        v2 = zip_dir(FUNCTIONS / "python", {"app.py": (FUNCTIONS / "python" / "app.py").read_text().replace(
            'VERSION = "v1"', 'VERSION = "v2"')})
        zpath = tmp_path / "v2.zip"
        zpath.write_bytes(v2)
        p = cli("function", "update-code", name, "--code", str(zpath), "--output", "json")
        updated = _config_of(json.loads(p.stdout))
        assert updated["CodeSha256"] == base64.b64encode(hashlib.sha256(v2).digest()).decode()
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        out = json.loads(cli("invoke", name).stdout)
        assert out["version"] == "v2" and out["count"] == 1 and out["event"] == {}

        # update-config
        p = cli("function", "update-config", name, "--memory", "384", "--timeout", "20", "--env", "GREETING=bye",
                "--output", "json")
        upd = _config_of(json.loads(p.stdout))
        assert upd["MemorySize"] == 384 and upd["Timeout"] == 20
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        out = json.loads(cli("invoke", name, "--payload", "{}").stdout)
        assert out["env"]["GREETING"] == "bye"

        # delete, then errors carry the Lambda error type on stderr
        cli("function", "delete", name)
        p = cli("function", "get", name, ok=False)
        assert p.returncode != 0
        assert "ResourceNotFoundException" in p.stderr, p.stderr
        assert p.stdout.strip() == ""
    finally:
        try:
            lam.delete_function(FunctionName=name)
        except Exception:
            pass


def test_stratus_cli_errors(cli, fns, py_zip):
    p = cli("invoke", unique_name("nope"), "--payload", "{}", ok=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr, p.stderr
    name = fns.create(py_zip)
    p = cli("invoke", name, "--payload", "{oops", ok=False)
    assert p.returncode != 0 and "InvalidRequestContentException" in p.stderr, p.stderr
    p = cli("function", "create", name, "--runtime", "python3.12", "--handler", "app.handler",
            "--code", str(FUNCTIONS / "python"), ok=False)
    assert p.returncode != 0 and "ResourceConflictException" in p.stderr, p.stderr
    failing = fns.create(py_zip, handler="app.fail")
    p = cli("invoke", failing, "--payload", '{"msg": "cli"}', ok=False)
    assert p.returncode == 2, (p.returncode, p.stderr)  # README: exit 2 when the function failed
    err = json.loads(p.stdout)
    assert err["errorType"] == "ValueError" and err["errorMessage"] == "boom: cli", err
    p = cli("function", "create", unique_name("badrt"), "--runtime", "cobol85", "--handler", "app.handler",
            "--code", str(FUNCTIONS / "python"), ok=False)
    assert p.returncode != 0 and "InvalidParameterValueException" in p.stderr, p.stderr


def test_stratus_cli_endpoint_flag(server, fns, py_zip):
    name = fns.create(py_zip, handler="app.echo")
    env = {k: v for k, v in os.environ.items() if k != "STRATUS_ENDPOINT"}
    env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    proc = subprocess.run([str(stratus_bin()), "invoke", name, "--payload", '{"e": 1}', "--endpoint", server.endpoint],
                          capture_output=True, text=True, env=env, timeout=60)
    if proc.returncode != 0:  # the flag may be global: before the subcommand
        proc = subprocess.run([str(stratus_bin()), "--endpoint", server.endpoint, "invoke", name, "--payload",
                               '{"e": 1}'], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"e": 1}


def test_stratus_cli_finds_the_server_like_the_aws_cli(server, fns, py_zip, tmp_path):
    """No --endpoint, no STRATUS_ENDPOINT: the AWS CLI's AWS_ENDPOINT_URL, or
    the profile's endpoint_url in the AWS config file."""
    name = fns.create(py_zip, handler="app.echo")
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nregion = us-east-1\n\n[profile stratus]\nendpoint_url = {server.endpoint}\n")
    base = {k: v for k, v in os.environ.items()
            if k not in ("STRATUS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "AWS_PROFILE")}
    for extra in ({"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "stratus"},
                  {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_ENDPOINT_URL": server.endpoint}):
        proc = subprocess.run([str(stratus_bin()), "invoke", name, "--payload", '{"e": 2}'],
                              capture_output=True, text=True, env={**base, **extra}, timeout=60)
        assert proc.returncode == 0, (extra, proc.stderr)
        assert json.loads(proc.stdout) == {"e": 2}
    # Nothing configured: the default endpoint, which is not this test server.
    proc = subprocess.run([str(stratus_bin()), "invoke", name, "--payload", "{}"], capture_output=True, text=True,
                          env={**base, "AWS_CONFIG_FILE": str(tmp_path / "none")}, timeout=60)
    if server.port != 9000:
        assert proc.returncode != 0, proc.stdout


def test_stratus_cli_signs_like_botocore(tmp_path):
    """The CLI signs with SigV4 using the credentials and region of an AWS
    profile, and botocore computes the same signature for what arrived (a POST
    with a body, to a path holding an ARN). No server needed: a capture server
    records the request."""
    import http.server
    import threading

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    seen = []

    class Capture(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
        (tmp_path / "credentials").write_text(
            "[default]\naws_access_key_id = AKWRONG\naws_secret_access_key = wrong\n"
            "[signer]\naws_access_key_id = AKSIGNER\naws_secret_access_key = s3cr3t/key+x\n")
        (tmp_path / "config").write_text("[profile signer]\nregion = eu-central-1\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STRATUS_"))}
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"), AWS_CONFIG_FILE=str(tmp_path / "config"))
        target = "arn:aws:lambda:eu-central-1:000000000000:function:f"
        proc = subprocess.run([str(stratus_bin()), "invoke", target, "--payload", '{"k": "v w"}', "--profile", "signer",
                               "--endpoint", endpoint], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
    finally:
        srv.shutdown()
    method, path, headers, body = seen[0]
    assert body == b'{"k": "v w"}'
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKSIGNER/"), auth
    assert "/eu-central-1/lambda/aws4_request" in auth, auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    req = AWSRequest(method=method, url=endpoint + path, data=body,
                     headers={h: headers[h] for h in signed})
    req.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials("AKSIGNER", "s3cr3t/key+x"), "lambda", "eu-central-1")
    expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    assert auth.endswith(f"Signature={expected}"), (auth, expected)


# ---------------------------------------------------------------- AWS CLI


@pytest.fixture
def aws(server, tmp_path):
    exe = shutil.which("aws")
    if exe is None:
        pytest.skip("aws CLI not installed (pip install awscli; .ci/run installs it)")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
               AWS_MAX_ATTEMPTS="1", AWS_PAGER="", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    env.pop("AWS_PROFILE", None)

    def run(*args, ok=True):
        proc = subprocess.run([exe, "--endpoint-url", server.endpoint, "--output", "json", "lambda", *args],
                              capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
        if ok:
            assert proc.returncode == 0, f"aws lambda {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        return proc

    return run


def test_aws_cli_walkthrough(aws, tmp_path):
    name = unique_name("awscli")
    zpath = tmp_path / "fn.zip"
    code = zip_dir(FUNCTIONS / "python")
    zpath.write_bytes(code)
    try:
        created = json.loads(aws("create-function", "--function-name", name, "--runtime", "python3.12",
                                 "--handler", "app.handler", "--role", ROLE,
                                 "--zip-file", f"fileb://{zpath}").stdout)
        assert created["FunctionArn"] == arn(name)
        assert created["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()
        aws("wait", "function-active-v2", "--function-name", name)

        payload = tmp_path / "payload.json"
        payload.write_text('{"via": "aws-cli"}')
        outfile = tmp_path / "out.json"
        inv = json.loads(aws("invoke", "--function-name", name, "--payload", f"fileb://{payload}",
                             "--log-type", "Tail", str(outfile)).stdout)
        assert inv["StatusCode"] == 200 and inv["ExecutedVersion"] == "$LATEST"
        assert "FunctionError" not in inv
        out = json.loads(outfile.read_text())
        assert out["event"] == {"via": "aws-cli"} and out["count"] == 1
        assert f"END RequestId: {out['request_id']}" in base64.b64decode(inv["LogResult"]).decode()

        # The README's literal form (AWS CLI v1 takes --payload as raw JSON text).
        raw = json.loads(aws("invoke", "--function-name", name, "--payload", '{"name":"aws"}', str(outfile)).stdout)
        assert raw["StatusCode"] == 200
        assert json.loads(outfile.read_text())["event"] == {"name": "aws"}
        names = json.loads(aws("list-functions", "--query", "Functions[].FunctionName").stdout)
        assert name in names

        got = json.loads(aws("get-function", "--function-name", name).stdout)
        assert got["Configuration"]["FunctionName"] == name and got["Code"]["Location"]
        listed = json.loads(aws("list-functions").stdout)
        assert name in [f["FunctionName"] for f in listed["Functions"]]

        upd = json.loads(aws("update-function-configuration", "--function-name", name,
                             "--environment", "Variables={COLOR=blue}").stdout)
        assert upd["Environment"]["Variables"] == {"COLOR": "blue"}
        aws("wait", "function-updated-v2", "--function-name", name)
        aws("invoke", "--function-name", name, "--payload", f"fileb://{payload}", str(outfile))
        assert json.loads(outfile.read_text())["env"]["COLOR"] == "blue"

        aws("delete-function", "--function-name", name)
        p = aws("get-function", "--function-name", name, ok=False)
        assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr, p.stderr
    finally:
        aws("delete-function", "--function-name", name, ok=False)


def test_doctor_reports_what_the_host_offers():
    import subprocess
    from stratus_harness import stratus_bin
    table = subprocess.run([str(stratus_bin()), "doctor"], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stdout + table.stderr
    for name in ("root", "cgroups", "user namespaces", "seccomp", "landlock", "/tmp size", "python", "node", "data dir",
                 "cpu idle"):
        assert any(line.startswith(name) for line in table.stdout.splitlines()), (name, table.stdout)
    js = subprocess.run([str(stratus_bin()), "doctor", "--output", "json", "--python", "/nonexistent/python3"],
                        capture_output=True, text=True, timeout=60)
    assert js.returncode == 0, js.stdout + js.stderr
    checks = {c["name"]: c for c in json.loads(js.stdout)}
    assert all(c["status"] in ("ok", "warn", "fail") for c in checks.values())
    assert checks["python"]["status"] == "warn" and "refused" in checks["python"]["detail"]
    # This host runs the whole suite, so nothing may fail.
    assert not [c for c in checks.values() if c["status"] == "fail"], checks


def test_deploy_is_idempotent_and_bundles_node_dependencies(cli, lam, server, tmp_path):
    """`stratus deploy DIR`: create, no-op, code update, config update, and a
    package.json dependency (a local `file:` package, installed offline)."""
    import time as _time
    fn_dir = tmp_path / unique_name("deploy")
    fn_dir.mkdir()
    lib = tmp_path / "greeting-lib"
    lib.mkdir()
    (lib / "package.json").write_text(json.dumps({"name": "greeting-lib", "version": "1.0.0", "main": "index.js"}))
    (lib / "index.js").write_text("module.exports = (n) => `hello ${n}`;\n")
    (fn_dir / "package.json").write_text(json.dumps(
        {"name": "fn", "version": "1.0.0", "dependencies": {"greeting-lib": f"file:{lib}"}}))
    (fn_dir / "index.js").write_text(
        "const greet = require('greeting-lib');\nexports.handler = async (e) => ({msg: greet(e.who), v: 1});\n")
    (fn_dir / "stratus.json").write_text(json.dumps({"runtime": "nodejs20.x", "handler": "index.handler"}))
    name = fn_dir.name
    first = cli("deploy", str(fn_dir))
    assert f"{name}: created" in first.stdout, first.stdout + first.stderr
    out = json.loads(lam.invoke(FunctionName=name, Payload=b'{"who": "stratus"}')["Payload"].read())
    assert out == {"msg": "hello stratus", "v": 1}, out
    # The dependency was installed into the package, not into the directory.
    assert not (fn_dir / "node_modules").exists()
    again = cli("deploy", str(fn_dir))
    assert f"{name}: unchanged" in again.stdout, again.stdout
    (fn_dir / "index.js").write_text(
        "const greet = require('greeting-lib');\nexports.handler = async (e) => ({msg: greet(e.who), v: 2});\n")
    code = cli("deploy", str(fn_dir))
    assert f"{name}: updated code" in code.stdout, code.stdout
    assert json.loads(lam.invoke(FunctionName=name, Payload=b'{"who": "x"}')["Payload"].read())["v"] == 2
    conf = cli("deploy", str(fn_dir), "--memory", "256")
    assert f"{name}: updated configuration" in conf.stdout, conf.stdout
    assert lam.get_function_configuration(FunctionName=name)["MemorySize"] == 256
    lam.delete_function(FunctionName=name)


def test_deploy_watch_redeploys_an_edit(server, lam, tmp_path):
    fn_dir = tmp_path / unique_name("watch")
    fn_dir.mkdir()
    (fn_dir / "app.py").write_text("def handler(event, context):\n    return 'one'\n")
    name = fn_dir.name
    env = dict(os.environ, STRATUS_ENDPOINT=server.endpoint)
    proc = subprocess.Popen([str(stratus_bin()), "deploy", str(fn_dir), "--runtime", "python3.12",
                             "--handler", "app.handler", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        import time as _time
        deadline = _time.monotonic() + 60
        got = None
        while _time.monotonic() < deadline:
            try:
                got = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
                break
            except lam.exceptions.ResourceNotFoundException:
                _time.sleep(0.2)
        assert got == "one", got
        _time.sleep(0.5)
        (fn_dir / "app.py").write_text("def handler(event, context):\n    return 'two'\n")
        deadline = _time.monotonic() + 30
        while got != "two" and _time.monotonic() < deadline:
            _time.sleep(0.3)
            got = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
        assert got == "two", "the edit was not redeployed"
        # The server answers the invoke as soon as the new code is stored,
        # which can be before the CLI has read its own answer and said so.
        deadline = _time.monotonic() + 10
        while f"{name}: updated code" not in "".join(lines) and _time.monotonic() < deadline:
            _time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        reader.join(timeout=10)
    output = "".join(lines)
    assert f"{name}: created" in output and f"{name}: updated code" in output, output
    lam.delete_function(FunctionName=name)


def test_stratus_cli_versions_aliases_urls_and_layers(cli, lam, tmp_path):
    import urllib.request

    name = unique_name("cli-surface")
    layer = unique_name("cli-layer")
    fn_dir = tmp_path / "fn"
    fn_dir.mkdir()
    (fn_dir / "app.py").write_text(
        "def handler(event, context):\n"
        "    try:\n"
        "        import shared\n"
        "        extra = shared.VALUE\n"
        "    except ImportError:\n"
        "        extra = None\n"
        "    return {'v': 'one', 'layer': extra, 'path': event.get('rawPath')}\n")
    layer_dir = tmp_path / "layer" / "python"
    layer_dir.mkdir(parents=True)
    (layer_dir / "shared.py").write_text("VALUE = 'from-layer'\n")
    try:
        cli("function", "create", name, "--runtime", "python3.12", "--handler", "app.handler",
            "--code", str(fn_dir))
        lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        p = cli("function", "publish", name, "--description", "first", "--output", "json")
        assert json.loads(p.stdout)["Version"] == "1"
        # A layer, then version 2 with it.
        p = cli("layer", "publish", layer, "--code", str(tmp_path / "layer"),
                "--compatible-runtime", "python3.12", "--output", "json")
        layer_arn = json.loads(p.stdout)["LayerVersionArn"]
        assert layer_arn.endswith(f":layer:{layer}:1")
        assert layer in cli("layer", "list").stdout
        assert layer_arn in cli("layer", "list", layer).stdout
        cli("function", "update-config", name, "--layer", layer_arn)
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        p = cli("function", "publish", name, "--output", "json")
        assert json.loads(p.stdout)["Version"] == "2"
        table = cli("function", "versions", name).stdout.splitlines()
        assert table[0].split()[:2] == ["VERSION", "DESCRIPTION"]
        assert [line.split()[0] for line in table[1:]] == ["$LATEST", "1", "2"]

        # An alias on 1 sending every invoke to 2, then plain 1 again.
        p = cli("alias", "create", name, "live", "--version", "1", "--weight", "2=1", "--output", "json")
        assert json.loads(p.stdout)["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 1.0}}
        out = json.loads(cli("invoke", name, "--qualifier", "live").stdout)
        assert out["layer"] == "from-layer"
        cli("alias", "update", name, "live", "--no-weights")
        assert json.loads(cli("invoke", name, "--qualifier", "live").stdout)["layer"] is None
        assert json.loads(cli("invoke", name, "--qualifier", "2").stdout)["layer"] == "from-layer"
        assert "live" in cli("alias", "list", name).stdout
        got = json.loads(cli("alias", "get", name, "live", "--output", "json").stdout)
        assert got["FunctionVersion"] == "1" and got["AliasArn"] == arn(name) + ":live"

        # A function URL, called with a plain HTTP client.
        p = cli("url", "create", name, "--output", "json")
        url = json.loads(p.stdout)["FunctionUrl"]
        with urllib.request.urlopen(url + "hello", timeout=30) as r:
            body = json.loads(r.read())
        assert body["v"] == "one" and body["path"] == "/hello"
        assert url in cli("url", "get", name).stdout
        cli("url", "delete", name)
        p = cli("url", "get", name, ok=False)
        assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr

        cli("alias", "delete", name, "live")
        p = cli("alias", "get", name, "live", ok=False)
        assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr
        p = cli("alias", "create", name, "bad", "--version", "1", "--weight", "2", ok=False)
        assert p.returncode != 0 and "VERSION=WEIGHT" in p.stderr
        cli("layer", "delete", layer, "1")
        assert layer_arn not in cli("layer", "list", layer).stdout
    finally:
        cli("function", "delete", name, ok=False)
