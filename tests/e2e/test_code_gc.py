"""Code no function uses any more is removed while the server runs: the
archive under <data>/blobs at once, the unpacked copy under
<data>/worker/code once no sandbox runs it. Code another function shares
stays (own server instance)."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stratus_harness import ROLE, new_server, remove_data_dir, unique_name, wait_active, wait_updated, zip_files


def blob_of(data_dir: Path, sha_b64: str) -> Path:
    """Where the archive whose CodeSha256 is `sha_b64` is stored."""
    digest = base64.b64decode(sha_b64).hex()
    return data_dir / "blobs" / digest[:2] / f"{digest}.zip"


def unpacked_of(data_dir: Path, sha_b64: str) -> Path:
    return data_dir / "worker" / "code" / base64.b64decode(sha_b64).hex()


def wait_gone(path: Path, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not path.exists()


# Reads a file of its package after sleeping: fails if the package's files
# were removed from under a running sandbox.
READER = """\
import time

def handler(event, context):
    time.sleep(event.get("seconds", 0))
    with open("/var/task/data.txt") as f:
        return {"data": f.read()}
"""


def test_deleted_and_replaced_code_is_removed_shared_code_stays(py_zip):
    srv = new_server("code-gc-runtime")
    srv.start()
    data = srv.data_dir
    lam = srv.client()
    a, b, reader = unique_name("gc-a"), unique_name("gc-b"), unique_name("gc-reader")
    try:
        for n in (a, b):
            lam.create_function(FunctionName=n, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": py_zip})
            wait_active(lam, n)
        shared = lam.get_function_configuration(FunctionName=a)["CodeSha256"]
        assert lam.get_function_configuration(FunctionName=b)["CodeSha256"] == shared
        for n in (a, b):
            assert "FunctionError" not in lam.invoke(FunctionName=n, Payload=b"{}")
        assert blob_of(data, shared).is_file() and unpacked_of(data, shared).is_dir()

        # `b` shares the code: deleting `a` removes nothing.
        lam.delete_function(FunctionName=a)
        assert blob_of(data, shared).is_file() and unpacked_of(data, shared).is_dir()
        out = json.loads(lam.invoke(FunctionName=b, Payload=b"{}")["Payload"].read())
        assert out["hello"] == "python", out

        # New code for `b`: the old archive goes at once, its unpacked copy
        # once the old revision's sandbox has stopped.
        lam.update_function_code(FunctionName=b, ZipFile=zip_files({"app.py": READER, "data.txt": "new"}))
        new = wait_updated(lam, b)["CodeSha256"]
        assert not blob_of(data, shared).exists()
        assert wait_gone(unpacked_of(data, shared)), list((data / "worker" / "code").iterdir())
        assert blob_of(data, new).is_file()
        out = json.loads(lam.invoke(FunctionName=b, Payload=b"{}")["Payload"].read())
        assert out == {"data": "new"}, out

        # A sandbox running code that stops being used keeps its files until
        # it is gone.
        lam.create_function(FunctionName=reader, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": zip_files({"app.py": READER, "data.txt": "first"})}, Timeout=30)
        first = wait_active(lam, reader)["CodeSha256"]
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(lam.invoke, FunctionName=reader, Payload=json.dumps({"seconds": 3}).encode())
            time.sleep(1)  # the invoke is in its sleep
            lam.update_function_code(FunctionName=reader,
                                     ZipFile=zip_files({"app.py": READER, "data.txt": "second"}))
            assert not blob_of(data, first).exists()
            assert (unpacked_of(data, first) / "data.txt").is_file(), "a running sandbox keeps its code"
            resp = busy.result(timeout=30)
        assert "FunctionError" not in resp, resp
        assert json.loads(resp["Payload"].read()) == {"data": "first"}
        assert wait_gone(unpacked_of(data, first)), "removed after the sandbox stopped"
        wait_updated(lam, reader)
        resp = lam.invoke(FunctionName=reader, Payload=b"{}")
        assert json.loads(resp["Payload"].read()) == {"data": "second"}

        # Deleting the last users removes everything.
        for n in (b, reader):
            lam.delete_function(FunctionName=n)
        assert not any((data / "blobs").glob("*/*.zip")), list((data / "blobs").glob("*/*"))
        deadline = time.monotonic() + 15
        while list((data / "worker" / "code").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list((data / "worker" / "code").iterdir())
        assert "removed code no function uses" in srv.log_path.read_text()
    finally:
        assert srv.stop() == 0
        remove_data_dir(data)
