"""Functions, configurations and code survive a server restart (own server instance)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from stratus_harness import _mounts_under, cgroup_parents_of, new_server, remove_data_dir, wait_no_pids
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
    left = cgroup_parents_of(first)
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


def _blob_digests(data_dir: Path) -> set[str]:
    return {p.name.split(".")[0] for p in (data_dir / "blobs").glob("*/*") if not p.name.startswith(".")}


def _unpacked(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "worker" / "code").iterdir()}


def test_unused_code_is_removed_at_start(py_zip, node_zip):
    """Code of deleted functions and replaced code is removed while the server
    runs (test_code_gc.py); what a crash left before that (an archive and an
    unpacked copy no function names) is removed at the next start; code in
    use (and its unpacked copy) stays."""
    first = new_server("code-gc")
    first.start()
    data_dir = first.data_dir
    lam = first.client()
    kept, gone = unique_name("gc-kept"), unique_name("gc-gone")
    try:
        for n, code in ((kept, py_zip), (gone, node_zip)):
            lam.create_function(FunctionName=n, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": code})
            wait_active(lam, n)
        old_sha = lam.get_function_configuration(FunctionName=kept)["CodeSha256"]
        # New code for `kept` (a different zip), so its first archive is unused.
        import io
        import zipfile
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("app.py", "def handler(event, context):\n    return {'new': True}\n")
        lam.update_function_code(FunctionName=kept, ZipFile=buf.getvalue())
        wait_updated(lam, kept)
        assert lam.invoke(FunctionName=kept, Payload=b"{}")["Payload"].read() == b'{"new": true}'
        lam.delete_function(FunctionName=gone)
        assert len(_blob_digests(data_dir)) == 1, _blob_digests(data_dir)
    finally:
        assert first.stop() == 0
    # What a server killed between storing code and removing it leaves.
    orphan = "ab" * 32
    (data_dir / "blobs" / "ab").mkdir(exist_ok=True)
    (data_dir / "blobs" / "ab" / f"{orphan}.zip").write_bytes(py_zip)
    (data_dir / "worker" / "code" / orphan).mkdir()
    (data_dir / "worker" / "code" / orphan / "app.py").write_text("x = 1\n")
    assert orphan in _blob_digests(data_dir) and orphan in _unpacked(data_dir)
    second = new_server("code-gc-restarted", data_dir=data_dir)
    second.start()
    try:
        lam2 = second.client()
        current = lam2.get_function_configuration(FunctionName=kept)["CodeSha256"]
        assert current != old_sha
        # Blobs are named by hex SHA-256; CodeSha256 is its base64.
        import base64
        current_hex = base64.b64decode(current).hex()
        assert _blob_digests(data_dir) == {current_hex}
        assert _unpacked(data_dir) <= {current_hex}, _unpacked(data_dir)
        assert "removed code no function uses" in second.log_path.read_text()
        assert lam2.invoke(FunctionName=kept, Payload=b"{}")["Payload"].read() == b'{"new": true}'
        lam2.delete_function(FunctionName=kept)
    finally:
        second.stop()
        remove_data_dir(data_dir)


def test_data_directory_format_is_upgraded_or_refused(py_zip):
    """A data directory of the previous format (no FORMAT file) is upgraded
    in place and keeps its functions; one from a newer Stratus is refused."""
    first = new_server("format")
    first.start()
    data_dir = first.data_dir
    name = unique_name("format")
    try:
        lam = first.client()
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": py_zip})
        wait_active(lam, name)
    finally:
        assert first.stop() == 0
    assert (data_dir / "FORMAT").read_text() == "1\n"
    (data_dir / "FORMAT").unlink()  # what the previous format looked like

    second = new_server("format-upgraded", data_dir=data_dir)
    second.start()
    try:
        out = json.loads(second.client().invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
        assert out["count"] == 1
        assert "upgraded the data directory's format in place" in second.log_path.read_text()
    finally:
        assert second.stop() == 0
    assert (data_dir / "FORMAT").read_text() == "1\n"

    (data_dir / "FORMAT").write_text("2\n")
    third = new_server("format-newer", data_dir=data_dir)
    try:
        try:
            third.start(timeout=20)
        except RuntimeError as e:
            message = str(e)
        else:
            raise AssertionError("a server started on a data directory of a newer format")
        assert "format 2, written by a newer Stratus" in message, message
    finally:
        third.stop()
        remove_data_dir(data_dir)
