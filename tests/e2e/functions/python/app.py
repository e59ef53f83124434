"""Python test function for the Stratus end-to-end suite.

Every handler reports enough about its sandbox for the tests to check warm
reuse, isolation and the Lambda environment. `VERSION` is rewritten by the
tests to prove that a code update reaches the next invoke.
"""

import os
import socket
import sys
import time
import uuid

VERSION = "v1"
SANDBOX_ID = uuid.uuid4().hex
COUNT = 0
INIT_AT = time.time()


def _info(event, context):
    global COUNT
    COUNT += 1
    return {
        "hello": "python",
        "version": VERSION,
        "count": COUNT,
        "sandbox": SANDBOX_ID,
        "pid": os.getpid(),
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "event": event,
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "python": sys.version,
    }


def handler(event, context):
    print(f"hello-from-handler {context.aws_request_id}")
    return _info(event, context)


def echo(event, context):
    return event


def noop(event, context):
    return {}


def none(event, context):
    return None


def fail(event, context):
    raise ValueError("boom: " + str((event or {}).get("msg", "no message")))


def sleep(event, context):
    time.sleep(float((event or {}).get("seconds", 1)))
    return _info(event, context)


def oom(event, context):
    # Touch every page (b"\x01" * n writes it) so the memory is really used.
    chunks = []
    for _ in range(int((event or {}).get("mb", 1024)) // 16):
        chunks.append(b"\x01" * (16 << 20))
    return {"allocated_mb": len(chunks) * 16}


def exit(event, context):  # noqa: A001 - handler name used by the tests
    sys.stdout.flush()
    os._exit(int((event or {}).get("code", 3)))


def write_tmp(event, context):
    path = "/tmp/" + event["file"]
    with open(path, "w") as f:
        f.write("secret")
    return {"written": path, "tmp": sorted(os.listdir("/tmp"))}


def fill_tmp(event, context):
    """Writes {"mb": N} MiB to /tmp in 1 MiB chunks; reports how far it got."""
    import errno
    chunk = b"\x02" * (1 << 20)
    written, error = 0, None
    path = "/tmp/" + event.get("file", "fill")
    try:
        with open(path, "wb") as f:
            for _ in range(int(event.get("mb", 1))):
                f.write(chunk)
                written += 1
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e))
    if event.get("remove", True):
        os.remove(path)
    st = os.statvfs("/tmp")
    return {
        "written_mb": written,
        "error": error,
        "tmp_mb": st.f_blocks * st.f_frsize // (1 << 20),
        "tmp_fs": [l.split()[2] for l in open("/proc/self/mounts") if l.split()[1] == "/tmp"],
    }


def _probe_path(path):
    try:
        if os.path.isdir(path):
            return {"exists": True, "entries": sorted(os.listdir(path))[:50]}
        with open(path, "rb") as f:
            f.read(16)
        return {"exists": True, "readable": True}
    except FileNotFoundError:
        return {"exists": False}
    except PermissionError:
        return {"exists": True, "readable": False, "entries": None}
    except OSError as e:
        return {"exists": os.path.lexists(path), "error": str(e), "entries": None}


def _status_fields():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("NoNewPrivs", "Seccomp", "Uid", "Gid", "CapEff"):
                out[k] = v.strip()
    return out


def _try_connect(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect((host, int(port)))
        return "connected"
    except OSError as e:
        return f"refused: {e}"
    finally:
        s.close()


def inspect(event, context):
    """What a tenant can see from inside its sandbox."""
    event = event or {}
    procs = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    procs[p] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                procs[p] = None
    paths = {p: _probe_path(p) for p in event.get("paths", [])}
    writable = {}
    for d in ("/var/task", "/tmp", "/usr", "/"):
        try:
            probe = os.path.join(d, f".write-probe-{uuid.uuid4().hex}")
            with open(probe, "w") as f:
                f.write("x")
            os.unlink(probe)
            writable[d] = True
        except OSError:
            writable[d] = False
    connects = {f"{h}:{p}": _try_connect(h, p) for h, p in event.get("connect", [])}
    try:
        ifaces = [name for _, name in socket.if_nameindex()]
    except OSError:
        ifaces = None
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "procs": procs,
        "hostname": socket.gethostname(),
        "paths": paths,
        "writable": writable,
        "connects": connects,
        "interfaces": ifaces,
        "status": _status_fields(),
        "runtime_api": os.environ.get("AWS_LAMBDA_RUNTIME_API"),
        "tmp": sorted(os.listdir("/tmp")),
        "bin_sh": os.path.exists("/bin/sh"),
    }


def dispatch(event, context):
    """One entry point for the failure tests: {"action": "oom"|"exit"|"sleep"|"fail"|...}."""
    event = event or {}
    action = event.get("action", "handler")
    return {
        "handler": handler,
        "oom": oom,
        "exit": exit,
        "sleep": sleep,
        "fail": fail,
        "noop": noop,
        "write_tmp": write_tmp,
        "fork_bomb": fork_bomb,
        "fork_count": fork_count,
    }[action](event, context)


def client_ctx(event, context):
    cc = context.client_context
    ident = context.identity
    return {
        "client_context": None if cc is None else {
            "custom": getattr(cc, "custom", None),
            "env": getattr(cc, "env", None),
            "installation_id": getattr(getattr(cc, "client", None), "installation_id", None),
        },
        "identity": None if ident is None else getattr(ident, "cognito_identity_id", None),
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
    }


def big(event, context):
    return "x" * int((event or {}).get("bytes", 7 * 1024 * 1024))


def burn(event, context):
    """Spins for `seconds` of wall time; reports the CPU time the process got."""
    seconds = float((event or {}).get("seconds", 1))
    cpu0, t0 = time.process_time(), time.monotonic()
    loops = 0
    while time.monotonic() - t0 < seconds:
        loops += 1
    return {"wall_s": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0, "loops": loops}


def fork_bomb(event, context):
    """Forks without end; every child does the same. Never returns."""
    while True:
        try:
            os.fork()
        except OSError:
            pass


def fork_count(event, context):
    """Forks children that only wait, until the kernel refuses; reports how
    many it got and why it stopped, then kills and reaps them."""
    import signal

    children, error = [], None
    while len(children) < 5000:
        try:
            pid = os.fork()
        except OSError as e:
            error = {"errno": e.errno, "strerror": e.strerror}
            break
        if pid == 0:
            signal.pause()
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    for pid in children:
        os.waitpid(pid, 0)
    return {"forked": len(children), "error": error}


def chatty(event, context):
    for i in range(int((event or {}).get("lines", 200))):
        print(f"line {i:05d} " + "y" * 60)
    return {"done": True}


def flood(event, context):
    """Prints without end: for `seconds` (default: until the function times out).

    mode "block": 64 KiB writes of 100-byte lines; "lines": one print() per
    line; "binary": random bytes (few newlines); "giant": one line that never
    ends. Returns how many bytes it wrote.
    """
    event = event or {}
    mode = event.get("mode", "block")
    seconds = event.get("seconds")
    end = time.time() + float(seconds) if seconds is not None else float("inf")
    written = 0
    n = 0
    if mode == "lines":
        while time.time() < end:
            for _ in range(100):
                print(f"flood line {n:09d} " + "z" * 80)
                n += 1
            written = n * 100
        return {"bytes": written, "lines": n}
    while time.time() < end:
        if mode == "binary":
            block = os.urandom(64 * 1024)
        elif mode == "giant":
            block = b"g" * (64 * 1024)
        else:
            block = b"".join(b"flood %09d %s\n" % (n + i, b"z" * 83) for i in range(650))
            n += 650
        view = memoryview(block)
        while view:
            k = os.write(1, view)
            view = view[k:]
        written += len(block)
    return {"bytes": written, "lines": n}
