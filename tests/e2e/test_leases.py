"""Sandbox leases: a server with a 2 s lease (`--sandbox-lease-secs 2`) under
continuous load from four clients. Every sandbox is retired between invokes
once its lease is over and replaced on demand: no invoke fails, and the
clients see more distinct sandboxes than there are clients."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from stratus_harness import FunctionFactory, new_server, remove_data_dir, wait_no_pids

LEASE_SECS = 2
CLIENTS = 4
LOAD_SECS = 8.0


@pytest.fixture(scope="module")
def leased():
    srv = new_server("leases", ["--sandbox-lease-secs", str(LEASE_SECS), "--keep-alive-secs", "300"])
    srv.start()
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


@pytest.fixture
def lfns(leased, request):
    f = FunctionFactory(leased.client(), request.node.name)
    yield f
    f.cleanup()


def _client_loop(lam, name: str, until: float) -> list[dict]:
    """Invokes `name` back to back until `until`; one record per invoke."""
    out = []
    while time.monotonic() < until:
        try:
            resp = lam.invoke(FunctionName=name, Payload=json.dumps({}))
            body = json.loads(resp["Payload"].read())
            out.append({"ok": resp.get("FunctionError") is None, "body": body, "at": time.monotonic()})
        except ClientError as e:
            out.append({"ok": False, "resp": e.response, "at": time.monotonic()})
    return out


def test_leases_rotate_sandboxes_under_load_without_a_failed_invoke(leased, lfns, py_zip):
    name = lfns.create(py_zip, MemorySize=128, Timeout=10)
    # One boto3 client per thread (clients are not shared across threads).
    lams = [leased.client() for _ in range(CLIENTS)]
    until = time.monotonic() + LOAD_SECS
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [r for rs in pool.map(lambda lam: _client_loop(lam, name, until), lams) for r in rs]
    failed = [r for r in results if not r["ok"]]
    assert not failed, f"{len(failed)} of {len(results)} invokes failed: {failed[:3]}"
    assert len(results) >= CLIENTS * 10, f"too little load: {len(results)} invokes"

    seen: dict[str, tuple[float, float]] = {}
    for r in results:
        sb, at = r["body"]["sandbox"], r["at"]
        first, last = seen.get(sb, (at, at))
        seen[sb] = (min(first, at), max(last, at))
    print(f"{len(results)} invokes, {len(seen)} sandboxes for {CLIENTS} clients")
    assert len(seen) > CLIENTS, f"leases did not rotate the sandboxes: {len(seen)} for {CLIENTS} clients"
    # A sandbox answers from its first invoke until an invoke that started
    # before its lease ran out; allow a second for the invokes themselves.
    for sb, (first, last) in seen.items():
        assert last - first <= LEASE_SECS + 1.0, f"sandbox {sb} served for {last - first:.1f}s"

    # Idle now, with a keep-alive of 300 s: the reaper stops every sandbox
    # once its lease is over.
    assert wait_no_pids(name, timeout=LEASE_SECS + 8) == []
