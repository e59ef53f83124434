#!/usr/bin/env python3
"""What a real Python zygote costs on this host (run as root).

A pre-initialised Python process (the bootstrap's imports done) forks a
child per "sandbox"; the child then does what a sandbox must do before it
loads a function, timed step by step:

  fork      parent's fork() until the child runs
  unshare   new mount, net, UTS, IPC, pid and cgroup namespaces
  cgroup    joins a fresh memory+pids+cpu cgroup (made by the parent
            beforehand, as a server would); on cgroup v1 the migration waits
            for an RCU grace period
  mounts    private /, a tmpfs root with /usr, /var/task, /var/runtime
            read-only binds, then pivot_root
  creds     setgroups, setresgid, setresuid to a sandbox uid
  seccomp   no-new-privs and a 270-instruction BPF filter (the size of the
            real policy), through prctl
  load      imports the function's module and calls its handler
  total     fork until the parent reads the child's answer

Compared against the same child steps skipped ("fork only"), and against
the jailer path's own figures (see docs/design/prewarmed-runtimes.md).

    sudo python3 bench/zygote_cost.py [-n 30]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import struct
import sys
import tempfile
import time

# What the bootstrap imports before a function is known.
import socket  # noqa: F401
import logging  # noqa: F401
import importlib  # noqa: F401

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SYS_PIVOT_ROOT = 155  # x86_64
CG = "/sys/fs/cgroup"
UID = int(os.environ.get("STRATUS_E2E_UID_BASE", "90000000")) + 999_000


def check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def mount(src, dst, fstype, flags, data=None):
    check(libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
                     data and data.encode()), f"mount {dst}")


def bind_ro(src, dst):
    os.makedirs(dst, exist_ok=True)
    mount(src, dst, None, MS_BIND | MS_REC)
    mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def seccomp_filter(n_rules=135):
    # BPF: load nr; (jeq nr_i -> allow) * n; ret allow. 2 instructions per rule.
    ins = [struct.pack("HBBI", 0x20, 0, 0, 0)]
    for i in range(n_rules):
        ins.append(struct.pack("HBBI", 0x15, 0, 1, 1000 + i))
        ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000))
    ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000))
    buf = ctypes.create_string_buffer(b"".join(ins))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    return Prog(len(ins), ctypes.cast(buf, ctypes.c_void_p)), buf


def child(steps, cgroups, root, task, runtime, out_fd, t_fork):
    t = {"fork": time.perf_counter_ns() - t_fork}

    def step(name, fn):
        t0 = time.perf_counter_ns()
        fn()
        t[name] = time.perf_counter_ns() - t0

    if "unshare" in steps:
        step("unshare", lambda: check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC
                                                    | CLONE_NEWPID | CLONE_NEWCGROUP), "unshare"))
    if "cgroup" in steps:
        def join():
            for cg in cgroups:
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write("0")
        step("cgroup", join)
    if "mounts" in steps:
        def mounts():
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
            bind_ro("/usr", root + "/usr")
            for name in ("bin", "lib", "lib64", "sbin"):
                if os.path.islink("/" + name):
                    os.symlink(os.readlink("/" + name), f"{root}/{name}")
            bind_ro(task, root + "/var/task")
            bind_ro(runtime, root + "/var/runtime")
            os.makedirs(root + "/tmp")
            os.chdir(root)
            check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
            check(libc.umount2(b".", MNT_DETACH), "umount old root")
            os.chdir("/")
        step("mounts", mounts)
    if "creds" in steps:
        def creds():
            os.setgroups([])
            os.setresgid(UID, UID, UID)
            os.setresuid(UID, UID, UID)
        step("creds", creds)
    if "seccomp" in steps:
        prog, keep = seccomp_filter()

        def install():
            check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
            check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")
        step("seccomp", install)
    t0 = time.perf_counter_ns()
    sys.path.insert(0, "/var/task" if "mounts" in steps else task)
    mod = importlib.import_module("app")
    mod.handler({}, None)
    t["load"] = time.perf_counter_ns() - t0
    os.write(out_fd, json.dumps(t).encode())
    os._exit(0)


def run(steps, n, base):
    task = tempfile.mkdtemp(prefix="zyg-task-")
    runtime = tempfile.mkdtemp(prefix="zyg-rt-")
    with open(os.path.join(task, "app.py"), "w") as f:
        f.write("def handler(event, context):\n    return {}\n")
    os.chmod(task, 0o755)
    results = []
    for i in range(n):
        root = tempfile.mkdtemp(prefix="zyg-root-")
        cgroups = []
        if "cgroup" in steps:
            for ctrl in ("memory", "pids", "cpu"):
                d = os.path.join(CG, ctrl, base, f"z{i}-{len(steps)}")
                os.makedirs(d)
                cgroups.append(d)
            with open(os.path.join(cgroups[0], "memory.limit_in_bytes"), "w") as f:
                f.write(str(128 << 20))
        rd, wr = os.pipe()
        t_fork = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            try:
                child(steps, cgroups, root, task, runtime, wr, t_fork)
            except BaseException as e:  # report and leave
                os.write(wr, json.dumps({"error": repr(e)}).encode())
                os._exit(1)
        os.close(wr)
        data = os.read(rd, 65536)
        # Fork to the child's answer (its exit and namespace teardown are
        # not on a cold start's path).
        total = time.perf_counter_ns() - t_fork
        while chunk := os.read(rd, 65536):
            data += chunk
        os.close(rd)
        os.waitpid(pid, 0)
        r = json.loads(data)
        if "error" in r:
            raise SystemExit(f"child failed: {r['error']}")
        r["total"] = total
        results.append(r)
        for d in cgroups:
            os.rmdir(d)
        os.rmdir(root)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    base = f"stratus-zygote-exp-{os.getpid()}"
    for ctrl in ("memory", "pids", "cpu"):
        os.makedirs(os.path.join(CG, ctrl, base), exist_ok=True)
    try:
        with open("/proc/loadavg") as f:
            print("load average:", " ".join(f.read().split()[:3]))
        rss = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) // 1024
        print(f"zygote RSS {rss} MiB (bootstrap imports: socket, json, logging, importlib)")
        full = ["unshare", "cgroup", "mounts", "creds", "seccomp"]
        for label, steps in (("fork only", []), ("full sandbox", full),
                             ("full minus cgroup", [s for s in full if s != "cgroup"])):
            rs = run(steps, a.n, base)
            keys = ["fork"] + steps + ["load", "total"]
            med = {k: statistics.median(r[k] for r in rs) / 1e6 for k in keys}
            print(f"{label:18s} " + "  ".join(f"{k} {v:.2f}" for k, v in med.items()) + f"  (ms, median of {a.n})")
    finally:
        for ctrl in ("memory", "pids", "cpu"):
            try:
                os.rmdir(os.path.join(CG, ctrl, base))
            except OSError:
                pass


if __name__ == "__main__":
    main()
