"""Stratus test fixture: failure modes and sandbox probes (Python).

Handlers (all in module app):
  app.fail   raises ValueError("boom")
  app.sleep  sleeps event["seconds"] (default 10), returns {"slept": seconds}
  app.oom    allocates event["mb"] MB (default 1024) and touches every page
  app.exit   os._exit(event.get("code", 1))
  app.ps     reports what the sandbox can see (pids, paths, uid, hostname)
  app.noop   returns {}
"""
import os
import socket
import time


def fail(event, context):
    raise ValueError("boom")


def sleep(event, context):
    seconds = float(event.get("seconds", 10))
    print("sleeping %s seconds" % seconds)
    time.sleep(seconds)
    return {"slept": seconds}


_hold = []


def oom(event, context):
    mb = int(event.get("mb", 1024))
    print("allocating %d MB" % mb)
    for _ in range(mb):
        # bytearray pages are zero-filled lazily; write to make them resident
        chunk = bytearray(1024 * 1024)
        chunk[::4096] = b"x" * len(chunk[::4096])
        _hold.append(chunk)
    allocated = len(_hold)
    _hold.clear()
    return {"allocated_mb": allocated}


def exit(event, context):  # noqa: A001 - handler name required by the suite
    code = int(event.get("code", 1))
    print("exiting with code %d" % code, flush=True)
    os._exit(code)


PROBE_PATHS = ("/etc/shadow", "/root", "/work", "/home", "/var/task", "/var/runtime", "/tmp", "/proc/1/environ")


def ps(event, context):
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    readable = {}
    for p in PROBE_PATHS:
        try:
            with open(p, "rb") as f:
                f.read(1)
            readable[p] = True
        except Exception:
            readable[p] = False
    return {
        "pids": pids,
        "self_pid": os.getpid(),
        "exists": {p: os.path.exists(p) for p in PROBE_PATHS},
        "readable": readable,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "euid": os.geteuid(),
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
        "tmp_writable": os.access("/tmp", os.W_OK),
        "task_writable": os.access(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"), os.W_OK),
    }


def noop(event, context):
    return {}
