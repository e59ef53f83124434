"""Functions, configurations and code survive a server restart (own server instance)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from stratus_harness import _mounts_under, new_server, remove_data_dir, wait_no_pids
from stratus_harness import ROLE, unique_name, wait_active, wait_updated


def test_restart_keeps_functions(py_zip):
    first = new_server("persist")
    first.start()
    data_dir = first.data_dir
    lam = first.client()
    name = unique_name("persist")
    gone = unique_name("persist-deleted")
    try:
        for n in (name, gone):
            lam.create_function(FunctionName=n, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": py_zip}, Description="survives", MemorySize=192)
            wait_active(lam, n)
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"KEPT": "yes"}})
        wait_updated(lam, name)
        lam.delete_function(FunctionName=gone)
        out = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
        assert out["count"] == 1 and out["env"]["KEPT"] == "yes"
        before = lam.get_function_configuration(FunctionName=name)
    finally:
        rc = first.stop()
    assert rc == 0, f"server exit code after SIGTERM: {rc}"
    assert not wait_no_pids(name, 5), "sandbox processes outlived the server"
    assert not _mounts_under(data_dir), f"mounts left under the data dir: {_mounts_under(data_dir)[:5]}"
    parent = first.extra_args[first.extra_args.index("--cgroup-parent") + 1]
    left = sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{parent}"))
    assert not left, f"cgroups left after SIGTERM: {left}"

    second = new_server("persist-restarted", data_dir=data_dir)
    second.start()
    try:
        lam2 = second.client()
        after = lam2.get_function_configuration(FunctionName=name)
        for key in ("FunctionArn", "CodeSha256", "CodeSize", "RevisionId", "Description", "MemorySize",
                    "Environment", "Handler", "Runtime", "LastModified"):
            assert after[key] == before[key], (key, before[key], after[key])
        assert after["State"] == "Active"
        names = [f["FunctionName"] for f in lam2.list_functions()["Functions"]]
        assert name in names and gone not in names
        url = lam2.get_function(FunctionName=name)["Code"]["Location"]
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.read() == py_zip
        resp = lam2.invoke(FunctionName=name, Payload=b'{"after": "restart"}')
        out = json.loads(resp["Payload"].read())
        assert "FunctionError" not in resp, out
        assert out["count"] == 1 and out["env"]["KEPT"] == "yes" and out["event"] == {"after": "restart"}
        lam2.delete_function(FunctionName=name)
    finally:
        second.stop()
        remove_data_dir(data_dir)
