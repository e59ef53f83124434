"""Authentication: every API request is SigV4-verified against the server's
keys, each key acts for one account, and accounts are isolated. Accounts and
keys are made with the `stratus` CLI (the admin API), as an operator would."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from unittest import mock

import pytest

from stratus_harness import (
    ACCESS_KEY_ID,
    ROLE,
    arn,
    expect_error,
    make_client,
    new_server,
    remove_data_dir,
    stratus_bin,
    unique_name,
    wait_active,
)


def cli(server, *args, key: tuple[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, STRATUS_ENDPOINT=server.endpoint)
    if key is not None:
        env.update(STRATUS_ACCESS_KEY_ID=key[0], STRATUS_SECRET_ACCESS_KEY=key[1])
    proc = subprocess.run([str(stratus_bin()), *args], capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)
    if ok:
        assert proc.returncode == 0, f"stratus {' '.join(args)}: {proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def account_b(server):
    """A second account and its key, made with the CLI: (account, key id, secret)."""
    account = cli(server, "account", "create").stdout.strip()
    assert len(account) == 12 and account.isdigit(), account
    key = json.loads(cli(server, "key", "create", "--account", account, "--output", "json").stdout)
    assert key["AccountId"] == account
    return account, key["AccessKeyId"], key["SecretAccessKey"]


def client_of(server, key_id: str, secret: str):
    return make_client(server.endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret)


def raw(server, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(server.endpoint + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("x-amzn-ErrorType", ""), {}
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType", ""), json.loads(e.read() or b"{}")


def test_unsigned_requests_are_refused(server):
    for method, path in [("GET", "/2015-03-31/functions"), ("POST", "/2015-03-31/functions/f/invocations"),
                         ("GET", "/_stratus/logs/f"), ("GET", "/_stratus/functions/f/sandboxes"),
                         ("GET", "/_stratus/admin/keys")]:
        status, kind, body = raw(server, path, method)
        assert (status, kind) == (403, "MissingAuthenticationTokenException"), (method, path, status, kind)
        assert body == {"message": "Missing Authentication Token"}, body


def test_unknown_key_and_wrong_secret(server):
    expect_error(client_of(server, "NOSUCHKEY", "x").list_functions, 403, "UnrecognizedClientException",
                 "The security token included in the request is invalid")
    expect_error(client_of(server, ACCESS_KEY_ID, "not-the-secret").list_functions, 403,
                 "InvalidSignatureException", "The request signature we calculated does not match")


def test_old_and_future_signatures_are_refused(lam):
    """A signature 20 minutes old (a replay) or 20 minutes ahead is refused;
    botocore signs with a patched clock."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for skew in (-20, 20):
        when = now + datetime.timedelta(minutes=skew)
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            expect_error(lam.list_functions, 403, "InvalidSignatureException", "Signature expired")
    # A few minutes of clock skew are tolerated.
    with mock.patch("botocore.auth.get_current_datetime", return_value=now - datetime.timedelta(minutes=5)):
        lam.list_functions()


def test_a_body_changed_after_signing_is_refused(server, fns, py_zip):
    name = fns.create(py_zip, handler="app.echo")
    lam = server.client()

    def tamper(request, **_):
        assert request.body == b'{"amount": 1}'
        request.body = b'{"amount": 9}'

    lam.meta.events.register("before-send.lambda.Invoke", tamper)
    expect_error(lam.invoke, 403, "InvalidSignatureException", FunctionName=name, Payload=b'{"amount": 1}')
    lam.meta.events.unregister("before-send.lambda.Invoke", tamper)
    out = lam.invoke(FunctionName=name, Payload=b'{"amount": 1}')
    assert json.loads(out["Payload"].read()) == {"amount": 1}


def test_accounts_are_isolated(server, lam, fns, py_zip, account_b):
    account, key_id, secret = account_b
    name = fns.create(py_zip, handler="app.echo")
    b = client_of(server, key_id, secret)
    for call, kwargs in [
        (b.get_function, {"FunctionName": name}),
        (b.get_function, {"FunctionName": arn(name)}),
        (b.invoke, {"FunctionName": name, "Payload": b"{}"}),
        (b.invoke, {"FunctionName": arn(name), "Payload": b"{}"}),
        (b.update_function_configuration, {"FunctionName": arn(name), "Description": "mine now"}),
        (b.delete_function, {"FunctionName": arn(name)}),
        (b.delete_function, {"FunctionName": name}),
    ]:
        expect_error(call, 404, "ResourceNotFoundException", **kwargs)
    assert name not in [f["FunctionName"] for f in b.list_functions()["Functions"]]
    # B's CLI sees nothing of A's either (logs, sandboxes).
    p = cli(server, "logs", name, key=(key_id, secret), ok=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr, p.stderr
    p = cli(server, "function", "sandboxes", name, key=(key_id, secret), ok=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr, p.stderr

    # The same name in B is B's own function, with B's account in its ARN.
    created = b.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.echo",
                                Code={"ZipFile": py_zip})
    try:
        assert created["FunctionArn"] == arn(name, account=account)
        wait_active(b, name)
        assert json.loads(b.invoke(FunctionName=name, Payload=b'{"who": "b"}')["Payload"].read()) == {"who": "b"}
    finally:
        b.delete_function(FunctionName=name)
    # A's is untouched.
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["FunctionArn"] == arn(name) and conf.get("Description", "") == ""


def test_admin_api_is_for_the_admin_key_and_revocation_takes_effect(server, account_b):
    account, key_id, secret = account_b
    for args in (["account", "list"], ["account", "create"], ["key", "list"],
                 ["key", "create", "--account", account], ["key", "revoke", key_id]):
        p = cli(server, *args, key=(key_id, secret), ok=False)
        assert p.returncode != 0 and "AccessDeniedException" in p.stderr, (args, p.stderr)

    listed = cli(server, "key", "list", "--account", account).stdout
    assert key_id in listed and secret not in listed, listed
    assert account in cli(server, "account", "list").stdout

    # A second key of B's, revoked: refused at once; the first still works.
    extra = json.loads(cli(server, "key", "create", "--account", account, "--output", "json").stdout)
    c = client_of(server, extra["AccessKeyId"], extra["SecretAccessKey"])
    c.list_functions()
    cli(server, "key", "revoke", extra["AccessKeyId"])
    expect_error(c.list_functions, 403, "UnrecognizedClientException")
    client_of(server, key_id, secret).list_functions()
    assert extra["AccessKeyId"] not in cli(server, "key", "list").stdout
    p = cli(server, "key", "revoke", extra["AccessKeyId"], ok=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr, p.stderr


def test_probes_metrics_and_code_downloads_need_no_credentials(server, lam, fns, py_zip):
    for path in ("/health", "/ready", "/metrics"):
        status, _, _ = raw(server, path)
        assert status == 200, path
    name = fns.create(py_zip)
    location = lam.get_function(FunctionName=name)["Code"]["Location"]
    with urllib.request.urlopen(location, timeout=10) as r:
        assert r.status == 200 and r.read() == py_zip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listening_beyond_loopback_needs_configured_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUS_")}
    cmd = [str(stratus_bin()), "server", "--listen", f"0.0.0.0:{_free_port()}", "--data-dir", str(tmp_path / "d")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "without credentials" in p.stderr and "STRATUS_SECRET_ACCESS_KEY" in p.stderr, p.stderr
    # The documented local secret is public: refused there too.
    env.update(STRATUS_ACCESS_KEY_ID="STRATUSLOCALADMINKEY", STRATUS_SECRET_ACCESS_KEY="stratus-local-secret")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "documented local secret" in p.stderr, p.stderr
    assert not (tmp_path / "d").exists()


def test_loopback_server_without_keys_uses_the_documented_pair_and_keys_survive_a_restart():
    no_keys = {"STRATUS_ACCESS_KEY_ID": None, "STRATUS_SECRET_ACCESS_KEY": None}
    local = ("STRATUSLOCALADMINKEY", "stratus-local-secret")
    srv = new_server("localkey", env=no_keys)
    srv.start()
    again = None
    try:
        assert "STRATUSLOCALADMINKEY" in srv.log_path.read_text(), srv.log_tail()
        c = make_client(srv.endpoint, aws_access_key_id=local[0], aws_secret_access_key=local[1])
        assert c.list_functions()["Functions"] == []
        expect_error(make_client(srv.endpoint).list_functions, 403, "UnrecognizedClientException")
        # The store holding secrets is the server user's alone.
        assert (srv.data_dir / "meta.redb").stat().st_mode & 0o077 == 0
        account = cli(srv, "account", "create", key=local).stdout.strip()
        key = json.loads(cli(srv, "key", "create", "--account", account, "--output", "json", key=local).stdout)
        # The secret is not in the server's log.
        assert key["SecretAccessKey"] not in srv.log_path.read_text()
        assert srv.stop() == 0

        again = new_server("localkey-restarted", data_dir=srv.data_dir, env=no_keys)
        again.start()
        b = client_of(again, key["AccessKeyId"], key["SecretAccessKey"])
        assert b.list_functions()["Functions"] == []
        assert account in cli(again, "account", "list", key=local).stdout
    finally:
        srv.stop()
        if again is not None:
            again.stop()
        remove_data_dir(srv.data_dir)
