"""Placement on a worker with little memory: LRU eviction of idle sandboxes,
and a clear 429 when nothing can be freed. Uses its own server instance with
--worker-memory-mb 256 (two 128 MB sandboxes)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from stratus_harness import FunctionFactory, new_server, remove_data_dir


@pytest.fixture(scope="module")
def small():
    srv = new_server("small-worker", ["--worker-memory-mb", "256", "--keep-alive-secs", "300"])
    srv.start()
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


@pytest.fixture
def small_lam(small):
    return small.client()


@pytest.fixture
def sfns(small_lam, request):
    f = FunctionFactory(small_lam, request.node.name)
    yield f
    f.cleanup()


def _invoke(lam, name, payload):
    t0 = time.monotonic()
    try:
        resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload))
        body = json.loads(resp["Payload"].read())
        return {"ok": True, "body": body, "error": resp.get("FunctionError"), "secs": time.monotonic() - t0}
    except ClientError as e:
        return {"ok": False, "resp": e.response, "secs": time.monotonic() - t0}


def test_full_worker_gives_429_not_a_hang(small_lam, sfns, py_zip):
    name = sfns.create(py_zip, handler="app.sleep", MemorySize=128, Timeout=30)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: _invoke(small_lam, name, {"seconds": 3}), range(3)))
    ok = [r for r in results if r["ok"]]
    throttled = [r for r in results if not r["ok"]]
    assert len(ok) == 2, results
    assert all(r["error"] is None for r in ok), results
    assert len(throttled) == 1, results
    err = throttled[0]["resp"]
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 429, err
    assert err["Error"]["Code"] == "TooManyRequestsException", err
    assert throttled[0]["secs"] < 2.5, f"the 429 took {throttled[0]['secs']:.1f}s (waited for a sandbox?)"
    # Once the two finish, the worker accepts work again.
    assert _invoke(small_lam, name, {"seconds": 0})["ok"]


def test_idle_sandboxes_are_evicted_lru(small_lam, sfns, py_zip):
    a, b, c = (sfns.create(py_zip, MemorySize=128, name=sfns.name(s)) for s in ("-a", "-b", "-c"))
    ra = _invoke(small_lam, a, {})
    rb = _invoke(small_lam, b, {})
    assert ra["ok"] and rb["ok"] and ra["body"]["count"] == 1 and rb["body"]["count"] == 1
    # Worker full of idle sandboxes: C evicts the least recently used (A).
    rc = _invoke(small_lam, c, {})
    assert rc["ok"], rc
    assert rc["body"]["count"] == 1
    rb2 = _invoke(small_lam, b, {})
    assert rb2["ok"] and rb2["body"]["count"] == 2, f"B should still be warm: {rb2}"
    ra2 = _invoke(small_lam, a, {})
    assert ra2["ok"] and ra2["body"]["count"] == 1, f"A should have been evicted: {ra2}"
    assert ra2["body"]["sandbox"] != ra["body"]["sandbox"]


def test_function_bigger_than_worker_is_refused_cleanly(small_lam, sfns, py_zip):
    name = sfns.create(py_zip, MemorySize=512)
    r = _invoke(small_lam, name, {})
    assert not r["ok"], r
    assert r["resp"]["ResponseMetadata"]["HTTPStatusCode"] == 429, r["resp"]
    assert r["resp"]["Error"]["Code"] == "TooManyRequestsException", r["resp"]
    assert r["secs"] < 5


def test_a_small_worker_keeps_no_runtime_pool(small):
    # Three families of 128 MB would be more than a quarter of 256 MB.
    assert ("runtime_pool=off (one sandbox per runtime family, 384 MB, would be more than a quarter "
            "of the worker's 256 MB)") in small.this_run_log(), small.log_tail()


def test_the_runtime_pool_holds_its_share_of_the_worker(py_zip):
    """Pre-initialised sandboxes (128 MB each) are taken from what placement
    gives functions: a 1,536 MB worker keeps one per runtime family (a
    quarter of it: 384 MB), and functions get the other 1,152 MB."""
    srv = new_server("pool-share", ["--worker-memory-mb", "1536", "--keep-alive-secs", "300"])
    srv.start()
    try:
        assert ("runtime_pool=1 pre-initialised sandbox(es) per runtime family (python, node, provided), "
                "holding 384 MB of the worker's memory") in srv.this_run_log(), srv.log_tail()
        lam = srv.client()
        f = FunctionFactory(lam, "pool-share")
        fits = f.create(py_zip, MemorySize=1152, name=f.name("-fits"))
        r = _invoke(lam, fits, {})
        assert r["ok"] and r["error"] is None, r
        # 1,280 MB would fit in 1,536 (after evicting the idle 1,152 MB
        # sandbox), but not beside the pool.
        big = f.create(py_zip, MemorySize=1280, name=f.name("-big"))
        r = _invoke(lam, big, {})
        assert not r["ok"], r
        assert r["resp"]["ResponseMetadata"]["HTTPStatusCode"] == 429, r["resp"]
        assert r["resp"]["Error"]["Code"] == "TooManyRequestsException", r["resp"]
        # The function that fits is still warm: nothing was evicted for it.
        r2 = _invoke(lam, fits, {})
        assert r2["ok"] and r2["body"]["count"] == 2, r2
        f.cleanup()
    finally:
        srv.stop()
        remove_data_dir(srv.data_dir)
