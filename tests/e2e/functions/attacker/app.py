"""A hostile tenant for the attack suite (tests/e2e/test_attacks.py).

`attack(event)` runs the attack named by event["case"] and reports what
happened, never raising: the tests decide what counts as failing safe.
"""

import ctypes
import errno
import json
import os
import signal
import socket
import urllib.error
import urllib.request
import uuid

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

# x86-64 syscall numbers.
NR = {
    "ptrace": 101, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "reboot": 169, "swapon": 167, "acct": 163, "mount": 165,
    "umount2": 166, "unshare": 272, "setns": 308, "pivot_root": 155, "chroot": 161,
    "clone": 56, "clone3": 435, "process_vm_readv": 310, "fsopen": 430, "open_tree": 428,
    "kcmp": 312, "pidfd_getfd": 438, "syslog": 103, "sethostname": 170,
}
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000


def _errno_name(e: int) -> str:
    return errno.errorcode.get(e, str(e))


def _syscall(name, *args):
    """'ok' or the errno's name. Arguments are chosen invalid, so that a
    syscall the filter let through fails with EINVAL/EFAULT/EBADF rather than
    EPERM: EPERM then means the seccomp filter answered."""
    ctypes.set_errno(0)
    rc = LIBC.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) for a in args])
    return "ok" if rc >= 0 else _errno_name(ctypes.get_errno())


def syscalls(event):
    bad = 0xDEAD
    return {
        # Never allowed, whatever the arguments.
        "bpf": _syscall("bpf", 9999, 0, 0),
        "keyctl": _syscall("keyctl", 9999, 0, 0, 0, 0),
        "add_key": _syscall("add_key", 0, 0, 0, 0, 0),
        "request_key": _syscall("request_key", 0, 0, 0, 0),
        "io_uring_setup": _syscall("io_uring_setup", 0, 0),
        "ptrace": _syscall("ptrace", 16, 1, 0, 0),  # PTRACE_ATTACH to pid 1
        "perf_event_open": _syscall("perf_event_open", 0, 0, -1, -1, 0),
        "kexec_load": _syscall("kexec_load", 0, 0, 0, bad),
        "init_module": _syscall("init_module", 0, 0, 0),
        "finit_module": _syscall("finit_module", -1, 0, 0),
        "delete_module": _syscall("delete_module", 0, bad),
        "userfaultfd": _syscall("userfaultfd", bad),
        "open_by_handle_at": _syscall("open_by_handle_at", -1, 0, 0),
        "name_to_handle_at": _syscall("name_to_handle_at", -1, 0, 0, 0, bad),
        "reboot": _syscall("reboot", 0, 0, 0, 0),
        "swapon": _syscall("swapon", 0, 0),
        "acct": _syscall("acct", 1),
        "mount": _syscall("mount", 0, 0, 0, bad, 0),
        "umount2": _syscall("umount2", 0, bad),
        "pivot_root": _syscall("pivot_root", 0, 0),
        "chroot": _syscall("chroot", 0),
        "setns": _syscall("setns", -1, 0),
        "unshare_user": _syscall("unshare", CLONE_NEWUSER),
        "unshare_net": _syscall("unshare", CLONE_NEWNET),
        "unshare_mnt": _syscall("unshare", CLONE_NEWNS),
        # clone with CLONE_NEWUSER and an invalid stack: refused before it runs.
        "clone_newuser": _syscall("clone", CLONE_NEWUSER | signal.SIGCHLD, 1, 0, 0, 0),
        "clone3": _syscall("clone3", 0, 0),
        "process_vm_readv": _syscall("process_vm_readv", 1, 0, 0, 0, 0, 0),
        "fsopen": _syscall("fsopen", 0, 0),
        "open_tree": _syscall("open_tree", -1, 0, 0),
        "kcmp": _syscall("kcmp", 1, 1, 0, 0, 0),
        "pidfd_getfd": _syscall("pidfd_getfd", -1, 0, 0),
        "syslog": _syscall("syslog", 3, 0, 0),
        "sethostname": _syscall("sethostname", 0, 0),
        "status": {line.split(":")[0]: line.split(":", 1)[1].strip()
                   for line in open("/proc/self/status") if line.startswith(("Seccomp", "NoNewPrivs", "Cap"))},
    }


def find_secrets(event):
    """Looks everywhere it can for files whose name or content holds the marker."""
    marker = event["marker"].encode()
    found = []
    skip = ("/proc", "/usr", "/sys", "/dev")
    for root, dirs, files in os.walk("/", onerror=lambda e: None):
        if root.startswith(skip):
            dirs[:] = []
            continue
        for f in files + dirs:
            path = os.path.join(root, f)
            if marker in path.encode():
                found.append(path)
            elif os.path.isfile(path) and not os.path.islink(path):
                try:
                    with open(path, "rb") as fh:
                        if marker in fh.read(1 << 20):
                            found.append(path)
                except OSError:
                    pass
    # Through other processes' roots and working directories.
    through_proc = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            for link in ("root", "cwd"):
                try:
                    through_proc[f"/proc/{p}/{link}"] = sorted(os.listdir(f"/proc/{p}/{link}/tmp"))
                except OSError as e:
                    through_proc[f"/proc/{p}/{link}"] = _errno_name(e.errno)
    guesses = {p: os.path.exists(p) for p in event.get("host_paths", [])}
    return {"found": found, "through_proc": through_proc, "host_paths_visible": guesses}


def signals(event):
    """Signals (0: a probe, harmless) and ptrace to the victim's host pids."""
    out = {}
    for pid in event["pids"]:
        try:
            os.kill(pid, 0)
            out[str(pid)] = "ok"
        except OSError as e:
            out[str(pid)] = _errno_name(e.errno)
    out["pidfd_open"] = {}
    for pid in event["pids"]:
        ctypes.set_errno(0)
        rc = LIBC.syscall(ctypes.c_long(434), ctypes.c_long(pid), ctypes.c_long(0))
        out["pidfd_open"][str(pid)] = "ok" if rc >= 0 else _errno_name(ctypes.get_errno())
    out["visible_pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return out


def write_host(event):
    out = {}
    name = f"stratus-attack-{uuid.uuid4().hex}"
    for d in ["/", "/usr", "/usr/bin", "/etc", "/var", "/var/task", "/var/runtime", "/opt", "/root", "/home"]:
        path = os.path.join(d, name)
        try:
            with open(path, "w") as f:
                f.write("x")
            out[path] = "ok"
        except OSError as e:
            out[path] = _errno_name(e.errno)
    for path in ["/proc/sys/kernel/hostname", "/proc/sysrq-trigger", "/proc/sys/vm/drop_caches",
                 "/proc/self/oom_score_adj", "/proc/self/comm", "/proc/1/comm"]:
        try:
            with open(path, "w") as f:
                f.write("1")
            out[path] = "ok"
        except OSError as e:
            out[path] = _errno_name(e.errno)
    return {"name": name, "results": out}


def fds(event):
    held = []
    error = None
    try:
        while len(held) < 1_000_000:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        error = _errno_name(e.errno)
    n = len(held)
    for fd in held:
        os.close(fd)
    return {"opened": n, "error": error}


def connect(event):
    out = {}
    for host, port in event["targets"]:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.settimeout(2)
        try:
            s.connect((host, int(port)))
            out[f"{host}:{port}"] = "connected"
        except OSError as e:
            out[f"{host}:{port}"] = _errno_name(e.errno) if e.errno else type(e).__name__
        finally:
            s.close()
    out["interfaces"] = [n for _, n in socket.if_nameindex()]
    return out


def runtime_api(event, context):
    """Abuses this sandbox's own Runtime API: answers for an invocation that
    is not open (another id), reports an init error mid-invoke, and asks for
    the next event while one is open."""
    base = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"
    out = {}

    def call(method, path, body=b"{}"):
        req = urllib.request.Request(base + path, data=body if method == "POST" else None, method=method)
        try:
            with urllib.request.urlopen(req, timeout=3) as r:
                return {"status": r.status}
        except urllib.error.HTTPError as e:
            return {"status": e.code, "body": e.read().decode(errors="replace")[:300]}
        except OSError as e:
            return {"error": str(e)}

    out["other_id_response"] = call("POST", f"/invocation/{uuid.uuid4()}/response", json.dumps({"forged": True}).encode())
    out["other_id_error"] = call("POST", f"/invocation/{uuid.uuid4()}/error")
    out["next_while_open"] = call("GET", "/invocation/next")
    out["init_error_mid_invoke"] = call("POST", "/init/error")
    out["not_an_api"] = call("GET", "/../../_stratus/admin/keys")
    return out


def attack(event, context):
    case = event.get("case")
    if case == "syscalls":
        return syscalls(event)
    if case == "find_secrets":
        return find_secrets(event)
    if case == "signals":
        return signals(event)
    if case == "write_host":
        return write_host(event)
    if case == "fds":
        return fds(event)
    if case == "connect":
        return connect(event)
    if case == "runtime_api":
        return runtime_api(event, context)
    raise ValueError(f"unknown case {case!r}")


def victim(event, context):
    """Keeps a secret in /tmp and reports its host-visible identity."""
    marker = event.get("marker")
    if marker:
        with open(f"/tmp/{marker}", "w") as f:
            f.write(marker)
    return {"pid": os.getpid(), "tmp": sorted(os.listdir("/tmp"))}
