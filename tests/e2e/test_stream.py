"""Response streaming: InvokeWithResponseStream with boto3 (a Node function
using awslambda.streamifyResponse, a buffered Python function, function
errors, the Rust `lambda_runtime::streaming` crate, a timeout mid-stream)
and function URLs in RESPONSE_STREAM mode read with http.client; plus
function URLs on an alias (resolved like Invoke, deleted with the alias).

The AWS CLI of the e2e environment is v1, which has no
`invoke-with-response-stream`; boto3 is the client here."""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
import urllib.parse
from pathlib import Path

import pytest

from stratus_harness import REPO, arn, expect_error, zip_files

NODE_STREAM = r'''
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

exports.chunks = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const n = event.chunks || 3;
  for (let i = 0; i < n; i++) {
    responseStream.write(`chunk ${i}\n`);
    await sleep(event.delay_ms || 400);
  }
  if (event.fail) throw new Error('boom mid-stream');
  responseStream.end();
});

exports.http = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201,
    headers: { 'content-type': 'text/plain', 'x-stream': 'yes' },
    cookies: ['a=1; Path=/', 'b=2'],
  });
  for (let i = 0; i < 3; i++) {
    stream.write(`part ${i} of ${event.rawPath}\n`);
    await sleep(500);
  }
  stream.end();
});

exports.slow = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write('first\n');
  await sleep(event.sleep_ms || 10000);
  responseStream.write('never\n');
  responseStream.end();
});
'''

PY_APP = r'''
def hello(event, context):
    return {"hello": event.get("name", "world"), "arn": context.invoked_function_arn}


def big(event, context):
    return {"data": "x" * event.get("n", 200000)}


def fail(event, context):
    raise ValueError("boom")
'''


@pytest.fixture(scope="module")
def node_stream_zip() -> bytes:
    return zip_files({"index.js": NODE_STREAM})


@pytest.fixture(scope="module")
def py_stream_zip() -> bytes:
    return zip_files({"app.py": PY_APP})


def stream_events(lam, name, payload=None, **kwargs):
    """Invokes with response streaming; returns the response and a list of
    (monotonic arrival time, event name, event body)."""
    resp = lam.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps(payload or {}).encode(), **kwargs)
    events = []
    for ev in resp["EventStream"]:
        now = time.monotonic()
        for kind, body in ev.items():
            events.append((now, kind, body))
    return resp, events


def payload_of(events) -> bytes:
    return b"".join(body["Payload"] for _, kind, body in events if kind == "PayloadChunk")


def complete_of(events) -> dict:
    kinds = [kind for _, kind, _ in events]
    assert kinds.count("InvokeComplete") == 1 and kinds[-1] == "InvokeComplete", kinds
    return events[-1][2]


def test_node_stream_chunks_arrive_as_written(lam, fns, node_stream_zip):
    name = fns.create(node_stream_zip, handler="index.chunks", runtime="nodejs20.x", Timeout=10)
    # Warm up, so that the timings below are the stream's, not the cold start's.
    stream_events(lam, name, {"chunks": 1, "delay_ms": 1})
    started = time.monotonic()
    resp, events = stream_events(lam, name, {"chunks": 4, "delay_ms": 500})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    chunks = [(t, body["Payload"]) for t, kind, body in events if kind == "PayloadChunk"]
    assert [p for _, p in chunks] == [f"chunk {i}\n".encode() for i in range(4)], chunks
    first, done = chunks[0][0], events[-1][0]
    # The first chunk arrived while the function still had ~1.5 s to run.
    assert done - first > 1.2, (first - started, done - started)
    # Each chunk came on its own, about 500 ms apart.
    gaps = [b[0] - a[0] for a, b in zip(chunks, chunks[1:])]
    assert all(g > 0.3 for g in gaps), gaps
    assert complete_of(events) == {}
    print(f"first chunk after {1000 * (first - started):.1f} ms, stream done after {1000 * (done - started):.1f} ms")


def test_node_stream_error_mid_stream_and_log_tail(lam, fns, node_stream_zip):
    name = fns.create(node_stream_zip, handler="index.chunks", runtime="nodejs20.x", Timeout=10)
    _, events = stream_events(lam, name, {"chunks": 2, "delay_ms": 50, "fail": True}, LogType="Tail")
    assert payload_of(events) == b"chunk 0\nchunk 1\n"
    done = complete_of(events)
    assert done["ErrorCode"] == "Error", done
    assert done["ErrorDetails"] == "boom mid-stream", done
    log = base64.b64decode(done["LogResult"]).decode()
    assert "REPORT RequestId:" in log and "boom mid-stream" in log, log
    # The sandbox is fine afterwards.
    _, events = stream_events(lam, name, {"chunks": 1, "delay_ms": 1})
    assert payload_of(events) == b"chunk 0\n" and complete_of(events) == {}


def test_buffered_function_answers_in_chunks(lam, fns, py_stream_zip):
    name = fns.create(py_stream_zip, handler="app.hello")
    resp, events = stream_events(lam, name, {"name": "stream"})
    assert resp["ExecutedVersion"] == "$LATEST"
    assert json.loads(payload_of(events)) == {"hello": "stream", "arn": arn(name)}
    assert complete_of(events) == {}
    # Larger than one chunk: several PayloadChunk events, in order.
    big = fns.create(py_stream_zip, handler="app.big")
    _, events = stream_events(lam, big, {"n": 300000})
    assert sum(1 for _, k, _ in events if k == "PayloadChunk") > 1
    assert json.loads(payload_of(events)) == {"data": "x" * 300000}


def test_function_error_goes_in_invoke_complete(lam, fns, py_stream_zip):
    name = fns.create(py_stream_zip, handler="app.fail")
    _, events = stream_events(lam, name)
    assert payload_of(events) == b""
    done = complete_of(events)
    assert done["ErrorCode"] == "ValueError" and done["ErrorDetails"] == "boom", done


def test_qualifier_dry_run_and_errors(lam, fns, py_stream_zip):
    name = fns.create(py_stream_zip, handler="app.hello")
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    resp, events = stream_events(lam, name, {"name": "a"}, Qualifier="live")
    assert resp["ExecutedVersion"] == "1"
    assert json.loads(payload_of(events))["arn"].endswith(f":function:{name}:live")
    dry = lam.invoke_with_response_stream(FunctionName=name, InvocationType="DryRun", Payload=b"{}")
    assert dry["ResponseMetadata"]["HTTPStatusCode"] == 204
    expect_error(lam.invoke_with_response_stream, 404, "ResourceNotFoundException",
                 FunctionName=name, Qualifier="nope", Payload=b"{}")
    expect_error(lam.invoke_with_response_stream, 400, "InvalidRequestContentException",
                 FunctionName=name, Payload=b"{not json")
    # Counting applies as for Invoke.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    err = expect_error(lam.invoke_with_response_stream, 429, "TooManyRequestsException",
                       FunctionName=name, Payload=b"{}")
    assert err["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_timeout_mid_stream(lam, fns, node_stream_zip):
    name = fns.create(node_stream_zip, handler="index.slow", runtime="nodejs20.x", Timeout=2)
    started = time.monotonic()
    _, events = stream_events(lam, name, {"sleep_ms": 10000})
    assert payload_of(events) == b"first\n"
    done = complete_of(events)
    assert done["ErrorCode"] == "Sandbox.Timedout", done
    assert time.monotonic() - started < 8
    # The next invoke runs (a fresh runtime in the same sandbox).
    _, events = stream_events(lam, name, {"sleep_ms": 1})
    assert payload_of(events) == b"first\nnever\n" and complete_of(events) == {}


def _rust_stream_bootstrap() -> Path | None:
    env = os.environ.get("STRATUS_TEST_FN_RUST_STREAM")
    if env:
        return Path(env)
    for cand in (REPO / "target" / "release" / "bootstrap-stream",
                 REPO / "target-fixtures" / "release" / "bootstrap-stream"):
        if cand.exists():
            return cand
    return None


def test_rust_lambda_runtime_streaming(lam, fns):
    binary = _rust_stream_bootstrap()
    if binary is None:
        pytest.skip("rust streaming fixture not built: cargo build -p stratus-test-fn-rust --release")
    code = zip_files({"bootstrap": binary.read_bytes()}, executable=("bootstrap",))
    name = fns.create(code, handler="bootstrap", runtime="provided.al2023", Timeout=10)
    _, events = stream_events(lam, name, {"chunks": 3, "delay_ms": 400})
    body = payload_of(events)
    # The crate always sends an http-integration prelude, which Invoke passes on.
    prelude, sep, rest = body.partition(b"\0" * 8)
    assert sep, body
    assert json.loads(prelude)["statusCode"] == 200
    assert rest == b"chunk 0\nchunk 1\nchunk 2\n"
    times = [t for t, k, b in events if k == "PayloadChunk" and b"chunk" in b["Payload"]]
    assert times[-1] - times[0] > 0.5, times
    assert complete_of(events) == {}


def _url_parts(url: str):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port, u.path


def test_url_response_stream_mode(lam, fns, node_stream_zip):
    name = fns.create(node_stream_zip, handler="index.http", runtime="nodejs20.x", Timeout=10)
    cfg = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    assert cfg["InvokeMode"] == "RESPONSE_STREAM"
    host, port, path = _url_parts(cfg["FunctionUrl"])
    conn = http.client.HTTPConnection(host, port, timeout=30)
    started = time.monotonic()
    conn.request("GET", path + "hello")
    resp = conn.getresponse()
    head = time.monotonic()
    assert resp.status == 201
    assert resp.getheader("content-type") == "text/plain"
    assert resp.getheader("x-stream") == "yes"
    assert resp.getheader("transfer-encoding") == "chunked"
    assert sorted(v for k, v in resp.getheaders() if k.lower() == "set-cookie") == ["a=1; Path=/", "b=2"]
    pieces = []
    while True:
        data = resp.read1(65536)
        if not data:
            break
        pieces.append((time.monotonic(), data))
    conn.close()
    body = b"".join(p for _, p in pieces)
    assert body == b"part 0 of /hello\npart 1 of /hello\npart 2 of /hello\n"
    # The client saw the first part about a second before the last.
    assert len(pieces) >= 3, pieces
    assert pieces[-1][0] - pieces[0][0] > 0.7, [t - started for t, _ in pieces]
    assert head - started < pieces[-1][0] - started


def test_url_response_stream_mode_buffered_function(lam, fns, py_stream_zip):
    name = fns.create(py_stream_zip, handler="app.hello")
    cfg = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    host, port, path = _url_parts(cfg["FunctionUrl"])
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read())["hello"] == "world"
    conn.close()


def test_url_on_alias_runs_the_alias_and_goes_with_it(lam, fns, py_stream_zip):
    name = fns.create(py_stream_zip, handler="app.hello")
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    cfg = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    assert cfg["FunctionArn"].endswith(f":function:{name}:live")
    host, port, path = _url_parts(cfg["FunctionUrl"])
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, body
    assert json.loads(body)["arn"].endswith(f":function:{name}:live")
    # An alias that does not exist cannot get a URL.
    expect_error(lam.create_function_url_config, 404, "ResourceNotFoundException",
                 FunctionName=name, Qualifier="nope", AuthType="NONE")
    # Deleting the alias deletes its URL config.
    lam.delete_alias(FunctionName=name, Name="live")
    expect_error(lam.get_function_url_config, 404, "ResourceNotFoundException",
                 FunctionName=name, Qualifier="live")
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 403
    # An alias of the same name made again has no URL.
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    expect_error(lam.get_function_url_config, 404, "ResourceNotFoundException",
                 FunctionName=name, Qualifier="live")
