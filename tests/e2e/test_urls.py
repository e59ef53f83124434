"""Function URLs (Create/Get/Update/Delete/ListFunctionUrlConfigs and the
HTTP endpoint each opens) and tags (TagResource/UntagResource/ListTags,
Tags at create), with boto3 and a plain HTTP client (urllib), against the
recorded AWS contract (../shared/reference/lambda-api.md, section 9)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from stratus_harness import ACCESS_KEY_ID, SECRET_ACCESS_KEY, arn, expect_error, zip_files

URL_APP = r'''
import base64
import json


def echo(event, context):
    """Returns the event it got, as JSON (no statusCode: Lambda's 200)."""
    return event


def http(event, context):
    """A response description: status, headers, cookies and a body."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        raw = base64.b64decode(body)
    else:
        raw = body.encode()
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/octet-stream", "x-path": event["rawPath"]},
        "cookies": ["session=abc; Path=/", "theme=dark"],
        "body": base64.b64encode(raw[::-1]).decode(),
        "isBase64Encoded": True,
    }


def fail(event, context):
    raise RuntimeError("boom")
'''


@pytest.fixture(scope="module")
def url_zip() -> bytes:
    return zip_files({"app.py": URL_APP})


def _fetch(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _signed(url: str, method: str = "GET", data: bytes = b"", key: str = ACCESS_KEY_ID,
            secret: str = SECRET_ACCESS_KEY) -> dict:
    req = AWSRequest(method=method, url=url, data=data)
    SigV4Auth(Credentials(key, secret), "lambda", "us-east-1").add_auth(req)
    return dict(req.headers)


def test_url_config_lifecycle(lam, fns, url_zip):
    name = fns.create(url_zip, handler="app.echo")
    expect_error(lam.get_function_url_config, 404, "ResourceNotFoundException",
                 "The resource you requested does not exist.", FunctionName=name)
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["AuthType"] == "NONE"
    assert created["InvokeMode"] == "BUFFERED"
    assert created["FunctionArn"] == arn(name)
    assert "/_stratus/url/" in created["FunctionUrl"]
    expect_error(lam.create_function_url_config, 409, "ResourceConflictException",
                 FunctionName=name, AuthType="NONE")
    got = lam.get_function_url_config(FunctionName=name)
    assert got["FunctionUrl"] == created["FunctionUrl"]
    assert got["CreationTime"] == created["CreationTime"]
    assert "LastModifiedTime" in got

    updated = lam.update_function_url_config(
        FunctionName=name, AuthType="AWS_IAM",
        Cors={"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"], "MaxAge": 60})
    assert updated["AuthType"] == "AWS_IAM"
    assert updated["Cors"]["AllowOrigins"] == ["https://app.example"]
    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["FunctionUrl"] for c in listed] == [created["FunctionUrl"]]

    # Validation as recorded: enum values, a version qualifier.
    expect_error(lam.update_function_url_config, 400, "ValidationException", FunctionName=name, AuthType="OPEN")
    expect_error(lam.create_function_url_config, 400, "ValidationException",
                 FunctionName=name, Qualifier="1", AuthType="NONE")
    expect_error(lam.create_function_url_config, 400, "ValidationException",
                 FunctionName=name, Qualifier="$LATEST", AuthType="NONE")
    expect_error(lam.update_function_url_config, 400, "ValidationException",
                 FunctionName=name, InvokeMode="STREAMING")
    assert lam.update_function_url_config(FunctionName=name, InvokeMode="RESPONSE_STREAM")["InvokeMode"] == "RESPONSE_STREAM"
    assert lam.update_function_url_config(FunctionName=name, InvokeMode="BUFFERED")["InvokeMode"] == "BUFFERED"

    lam.delete_function_url_config(FunctionName=name)
    expect_error(lam.delete_function_url_config, 404, "ResourceNotFoundException", FunctionName=name)
    status, _, _ = _fetch(created["FunctionUrl"])
    assert status == 403, "a deleted URL no longer answers"


def test_url_with_plain_http_client_delivers_v2_event(lam, fns, url_zip):
    name = fns.create(url_zip, handler="app.echo")
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    status, headers, body = _fetch(
        url + "orders/42?x=1&x=2&y=hello%20world", method="POST", data=b'{"n": 1}',
        headers={"content-type": "application/json", "cookie": "a=1; b=2", "X-Trace": "t1",
                 "user-agent": "e2e-agent"},
    )
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    ev = json.loads(body)
    assert ev["version"] == "2.0"
    assert ev["routeKey"] == "$default"
    assert ev["rawPath"] == "/orders/42", "the function sees only its own path"
    assert ev["rawQueryString"] == "x=1&x=2&y=hello%20world"
    assert ev["queryStringParameters"] == {"x": "1,2", "y": "hello world"}
    assert ev["cookies"] == ["a=1", "b=2"]
    assert ev["headers"]["x-trace"] == "t1"
    assert ev["headers"]["content-type"] == "application/json"
    assert ev["body"] == '{"n": 1}'
    assert ev["isBase64Encoded"] is False
    ctx = ev["requestContext"]
    assert ctx["http"]["method"] == "POST"
    assert ctx["http"]["path"] == "/orders/42"
    assert ctx["http"]["sourceIp"] == "127.0.0.1"
    assert ctx["http"]["userAgent"] == "e2e-agent"
    assert ctx["requestId"] == headers["x-amzn-requestid"]
    assert ctx["apiId"] in url
    assert isinstance(ctx["timeEpoch"], int)

    # The URL of a function whose handler fails: 502, as Lambda's.
    failing = fns.create(url_zip, handler="app.fail")
    furl = lam.create_function_url_config(FunctionName=failing, AuthType="NONE")["FunctionUrl"]
    status, _, body = _fetch(furl)
    assert status == 502, body


def test_url_binary_round_trip_and_response_mapping(lam, fns, url_zip):
    name = fns.create(url_zip, handler="app.http")
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    payload = bytes(range(256)) * 4
    status, headers, body = _fetch(url + "bin", method="PUT", data=payload,
                                   headers={"content-type": "application/octet-stream"})
    assert status == 201, body
    assert body == payload[::-1], "binary in as base64, binary out from base64"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-path"] == "/bin"
    assert sorted(headers.get_all("set-cookie")) == ["session=abc; Path=/", "theme=dark"]


def test_url_auth_none_vs_aws_iam(lam, fns, url_zip):
    name = fns.create(url_zip, handler="app.echo")
    url = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    status, _, body = _fetch(url)
    assert status == 403, body
    status, _, body = _fetch(url, headers=_signed(url, key="unknown", secret="nope"))
    assert status == 403, body
    status, _, body = _fetch(url + "me?q=1", headers=_signed(url + "me?q=1"))
    assert status == 200, body
    ev = json.loads(body)
    assert ev["rawPath"] == "/me"
    assert ev["requestContext"]["authorizer"]["iam"]["accessKey"] == ACCESS_KEY_ID
    # A tampered request (signed for another path) is refused.
    status, _, _ = _fetch(url + "other", headers=_signed(url + "me"))
    assert status == 403

    lam.update_function_url_config(FunctionName=name, AuthType="NONE")
    status, _, body = _fetch(url)
    assert status == 200, body


def test_url_cors_preflight_and_headers(lam, fns, url_zip):
    name = fns.create(url_zip, handler="app.echo")
    url = lam.create_function_url_config(
        FunctionName=name, AuthType="AWS_IAM",
        Cors={"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
              "AllowHeaders": ["x-custom"], "ExposeHeaders": ["x-out"], "MaxAge": 300,
              "AllowCredentials": True},
    )["FunctionUrl"]
    # The preflight carries no credentials and never reaches the function.
    status, headers, _ = _fetch(url, method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-custom"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-methods"] == "GET,POST"
    assert headers["access-control-allow-headers"] == "x-custom"
    assert headers["access-control-max-age"] == "300"
    assert headers["access-control-allow-credentials"] == "true"
    status, headers, _ = _fetch(url, method="OPTIONS", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in headers
    # An actual request gets the CORS headers too.
    hdrs = _signed(url)
    hdrs["Origin"] = "https://app.example"
    status, headers, body = _fetch(url, headers=hdrs)
    assert status == 200, body
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-expose-headers"] == "x-out"


def test_deleting_the_function_removes_its_url(lam, fns, url_zip):
    name = fns.create(url_zip, handler="app.echo")
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    assert _fetch(url)[0] == 200
    lam.delete_function(FunctionName=name)
    assert _fetch(url)[0] == 403
    fns.create(url_zip, handler="app.echo", name=name)
    expect_error(lam.get_function_url_config, 404, "ResourceNotFoundException", FunctionName=name)


# ---- tags --------------------------------------------------------------


def test_tags_at_create_tag_untag_list(lam, fns, url_zip):
    name = fns.create(url_zip, handler="app.echo", Tags={"team": "core", "env": "dev"})
    fn_arn = arn(name)
    assert lam.get_function(FunctionName=name)["Tags"] == {"team": "core", "env": "dev"}
    rev = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    resp = lam.tag_resource(Resource=fn_arn, Tags={"env": "prod", "cost": "42"})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=fn_arn)["Tags"] == {"team": "core", "env": "prod", "cost": "42"}
    lam.untag_resource(Resource=fn_arn, TagKeys=["team", "not-there"])
    assert lam.list_tags(Resource=fn_arn)["Tags"] == {"env": "prod", "cost": "42"}
    assert lam.get_function_configuration(FunctionName=name)["RevisionId"] == rev


def test_tag_errors(lam, fns, url_zip):
    name = fns.create(url_zip, handler="app.echo")
    fn_arn = arn(name)
    expect_error(lam.tag_resource, 400, "InvalidParameterValueException",
                 "Tags on function aliases and versions are not supported",
                 Resource=fn_arn + ":1", Tags={"a": "b"})
    expect_error(lam.tag_resource, 400, "InvalidParameterValueException", "aws:",
                 Resource=fn_arn, Tags={"aws:owner": "x"})
    expect_error(lam.tag_resource, 400, "InvalidParameterValueException",
                 Resource=fn_arn, Tags={"k" * 129: "x"})
    expect_error(lam.tag_resource, 400, "InvalidParameterValueException",
                 Resource=fn_arn, Tags={"k": "v" * 257})
    lam.tag_resource(Resource=fn_arn, Tags={f"k{i}": "v" for i in range(50)})
    expect_error(lam.tag_resource, 400, "InvalidParameterValueException", "limit",
                 Resource=fn_arn, Tags={"one-more": "v"})
    expect_error(lam.list_tags, 404, "ResourceNotFoundException", Resource=arn(name + "-missing"))
    expect_error(lam.create_function, 400, "InvalidParameterValueException", "aws:",
                 FunctionName=fns.name("bad-tags"), Runtime="python3.12", Role="arn:aws:iam::000000000000:role/r",
                 Handler="app.echo", Code={"ZipFile": url_zip}, Tags={"aws:x": "1"})
