"""Sandbox networking (docs/design/network.md), seen from inside a function.

Default (`--network none`): a sandbox has only `lo`; it reaches neither the
host (its loopback nor any other host address) nor another sandbox.

`--network outbound`: a sandbox has `eth0` on a NAT'd bridge. It reaches the
"outside" (here a network namespace this test creates, routed through the
host, which sees the host's masqueraded address), and the allowlisted host
ports at the gateway address, but no other host port on any host address, and
no other sandbox.

All traffic stays on this machine: loopback, the server's bridge, and the
interfaces and namespaces the tests create (198.18.0.0/15, the range set
aside for benchmarking, which no real network routes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stratus_harness import (
    FUNCTIONS,
    FunctionFactory,
    Server,
    arg_of,
    cgroup_parents_of,
    free_port,
    new_server,
    remove_data_dir,
    zip_dir,
)

# Unique per run, so concurrent runs on one host do not collide.
_K = os.getpid() % 250 + 1


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def net_names(cgroup_parent: str) -> dict[str, str]:
    """The server's bridge, veth prefix and nft table (FNV-1a of the cgroup parent, as in net.rs)."""
    h = 0xCBF29CE484222325
    for b in cgroup_parent.encode():
        h ^= b
        h = (h * 0x100000001B3) % (1 << 64)
    ident = f"{h & 0xFFFFFF:06x}"
    return {"bridge": f"stratus-{ident}", "veth_prefix": f"stv{ident}", "table": f"stratus_{ident}"}


def links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def nft_tables() -> str:
    try:
        return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=20).stdout
    except FileNotFoundError:
        return ""


class Listener:
    """A TCP listener on the host that records who connected."""

    def __init__(self, host: str, port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.host, self.port = self.sock.getsockname()
        self.peers: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            try:
                conn.sendall(f"host {self.host}:{self.port} saw {peer[0]}".encode())
            finally:
                conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def dummy_addr():
    """A non-loopback address of the host, on an interface this test makes
    (a veth pair with both ends on the host: the kernel here has no dummy)."""
    name = f"stt{_K}dm"
    addr = f"198.19.{_K}.1"
    _ip("link", "del", name, check=False)
    _ip("link", "add", name, "type", "veth", "peer", "name", f"stt{_K}dp")
    _ip("addr", "add", f"{addr}/32", "dev", name)
    _ip("link", "set", name, "up")
    yield addr
    _ip("link", "del", name, check=False)


@pytest.fixture(scope="module")
def outside():
    """A network namespace routed through the host (the 'Internet' of these
    tests) with a listener that answers with the address it saw."""
    ns = f"stratus-e2e-out-{os.getpid()}"
    host_if = f"stt{_K}out"
    host_addr, ns_addr = f"198.18.{_K}.1", f"198.18.{_K}.2"
    _ip("netns", "del", ns, check=False)
    _ip("link", "del", host_if, check=False)
    _ip("netns", "add", ns)
    _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("addr", "add", f"{host_addr}/30", "dev", host_if)
    _ip("link", "set", host_if, "up")
    _ip("-n", ns, "addr", "add", f"{ns_addr}/30", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "route", "add", "default", "via", host_addr)
    port = free_port()
    script = (
        "import socket\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{ns_addr}', {port})); s.listen(16); print('ready', flush=True)\n"
        "while True:\n"
        "    c, p = s.accept(); c.sendall(('outside saw ' + p[0]).encode()); c.close()\n"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", script],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield {"addr": ns_addr, "port": port, "host_side": host_addr}
    proc.kill()
    proc.wait()
    _ip("netns", "del", ns, check=False)
    _ip("link", "del", host_if, check=False)


@pytest.fixture(scope="module")
def net_zip() -> bytes:
    return zip_dir(FUNCTIONS / "net")


def invoke(lam, name: str, event: dict) -> dict:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    return body


def test_default_network_reaches_neither_the_host_nor_another_sandbox(lam, net_zip, dummy_addr):
    fns = FunctionFactory(lam, "net-none")
    loop_l = Listener("127.0.0.1")
    dummy_l = Listener(dummy_addr)
    try:
        a = fns.create(net_zip, handler="app.handler", Timeout=30)
        b = fns.create(net_zip, handler="app.handler", Timeout=30)
        port = free_port()
        # Sandbox A listens on all its addresses.
        first = invoke(lam, a, {"listen": port, "connect": [["127.0.0.1", port]]})
        assert first["interfaces"] == ["lo"], first
        assert first["connect"][0]["ok"], f"A cannot reach its own listener: {first}"
        out = invoke(lam, b, {
            "gateway": dummy_addr,
            "connect": [["127.0.0.1", loop_l.port], [dummy_addr, dummy_l.port], ["127.0.0.1", port]],
        })
        assert out["interfaces"] == ["lo"], out
        assert out["address"] is None, f"a sandbox has a route out: {out}"
        assert [c["ok"] for c in out["connect"]] == [False, False, False], out
        assert loop_l.peers == [] and dummy_l.peers == [], "a host listener was reached"
    finally:
        loop_l.close()
        dummy_l.close()
        fns.cleanup()


@pytest.fixture(scope="module")
def outbound():
    """A server with outbound networking; the test's allowlisted host ports
    are chosen before it starts."""
    allowed_lo = Listener("127.0.0.1")
    cidr_base = f"172.31.{200 + _K % 40}"
    gateway = f"{cidr_base}.1"
    gw_port = free_port()
    srv = new_server("net-outbound", [
        "--keep-alive-secs", "60",
        "--network", "outbound",
        "--network-bridge-cidr", f"{cidr_base}.0/24",
        "--network-allow-host", f"127.0.0.1:{allowed_lo.port}",
        "--network-allow-host", f"{gateway}:{gw_port}",
    ])
    srv.start()
    # The bridge holds the gateway address now: listen on it (allowlisted port).
    allowed_gw = Listener(gateway, gw_port)
    yield {"server": srv, "gateway": gateway, "cidr_base": cidr_base,
           "allowed_lo": allowed_lo, "allowed_gw": allowed_gw}
    allowed_lo.close()
    allowed_gw.close()
    srv.stop()
    remove_data_dir(srv.data_dir)


def test_outbound_reaches_the_outside_and_allowlisted_host_ports_only(outbound, net_zip, outside, dummy_addr):
    srv, gw = outbound["server"], outbound["gateway"]
    lam = srv.client(read_timeout=60)
    fns = FunctionFactory(lam, "net-out")
    names = net_names(arg_of(srv, "--cgroup-parent"))
    denied_gw = Listener(gw)
    denied_lo = Listener("127.0.0.1")
    denied_dummy = Listener(dummy_addr)
    try:
        assert names["bridge"] in links()
        assert f"table inet {names['table']}" in nft_tables()
        name = fns.create(net_zip, handler="app.handler", Timeout=60)
        out = invoke(lam, name, {
            "gateway": gw,
            "connect": [
                [outside["addr"], outside["port"]],                 # 0: the outside
                [gw, outbound["allowed_lo"].port],                  # 1: allowlisted 127.0.0.1 port, DNAT'd
                [gw, outbound["allowed_gw"].port],                  # 2: allowlisted port on the gateway itself
                [gw, denied_gw.port],                               # 3: a host port on the gateway, not allowed
                [gw, denied_lo.port],                               # 4: a host loopback port, not allowed
                [dummy_addr, denied_dummy.port],                    # 5: another host address
                [outside["host_side"], denied_dummy.port],          # 6: the host's address towards the outside
            ],
        })
        assert out["interfaces"] == ["eth0", "lo"], out
        assert out["address"].startswith(outbound["cidr_base"] + "."), out
        ok = [c["ok"] for c in out["connect"]]
        assert ok == [True, True, True, False, False, False, False], out
        # Masqueraded: the outside sees the host's address, not the sandbox's.
        assert out["connect"][0]["reply"] == f"outside saw {outside['host_side']}", out
        assert out["connect"][1]["reply"].startswith(f"host 127.0.0.1:{outbound['allowed_lo'].port} saw "), out
        assert out["connect"][2]["reply"] == f"host {gw}:{outbound['allowed_gw'].port} saw {out['address']}", out
        # Dropped, not refused: the firewall, not a missing listener.
        assert all("timeout" in c["error"] for c in out["connect"][3:6]), out
        assert denied_gw.peers == denied_lo.peers == denied_dummy.peers == []
        # The host's name servers, unless they are loopback ones.
        assert out["resolv"].startswith("nameserver "), out
    finally:
        for l in (denied_gw, denied_lo, denied_dummy):
            l.close()
        fns.cleanup()


def test_outbound_sandboxes_cannot_reach_each_other(outbound, net_zip):
    srv, gw = outbound["server"], outbound["gateway"]
    lam = srv.client(read_timeout=60)
    fns = FunctionFactory(lam, "net-peer")
    try:
        a = fns.create(net_zip, handler="app.handler", Timeout=60)
        b = fns.create(net_zip, handler="app.handler", Timeout=60)
        port = free_port()
        first = invoke(lam, a, {"listen": port, "gateway": gw})
        a_addr = first["address"]
        # A's listener answers on its bridge address (from A itself)...
        again = invoke(lam, a, {"connect": [[a_addr, port]]})
        assert again["connect"][0]["ok"], again
        # ...but not to B, nor through the gateway (routed hairpin).
        out = invoke(lam, b, {"gateway": gw, "connect": [[a_addr, port]]})
        assert out["address"] != a_addr
        assert out["connect"][0]["ok"] is False, out
        assert "timeout" in out["connect"][0]["error"] or "unreachable" in out["connect"][0]["error"].lower(), out
    finally:
        fns.cleanup()


def test_a_bridge_network_the_host_already_routes_is_refused(outbound):
    clash = new_server("net-clash", ["--network", "outbound",
                                     "--network-bridge-cidr", f"{outbound['cidr_base']}.128/25"])
    with pytest.raises(RuntimeError) as e:
        clash.start(timeout=30)
    assert "overlaps the route to" in str(e.value), str(e.value)
    assert net_names(arg_of(clash, "--cgroup-parent"))["bridge"] not in links()
    assert cgroup_parents_of(clash) == [], "a refused start left its cgroup parent"
    remove_data_dir(clash.data_dir)


def test_outbound_crash_and_shutdown_leave_no_links_or_tables(net_zip):
    cidr_base = f"172.31.{160 + _K % 40}"
    first = new_server("net-crash", ["--network", "outbound", "--network-bridge-cidr", f"{cidr_base}.0/24"])
    first.start()
    names = net_names(arg_of(first, "--cgroup-parent"))
    veths = lambda: [l for l in links() if l.startswith(names["veth_prefix"])]  # noqa: E731
    lam = first.client(read_timeout=60, max_pool_connections=10)
    fns = FunctionFactory(lam, "net-crash")
    name = fns.create(net_zip, handler="app.handler", Timeout=60)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: invoke(lam, name, {"connect": []}), range(4)))
    assert names["bridge"] in links()
    assert len(veths()) >= 4, links()
    first.proc.kill()
    first.proc.wait()
    first.stop()
    # The sandboxes died with the server; their veths with their namespaces.
    deadline = time.monotonic() + 10
    while veths() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert veths() == [], f"veths outlived their sandboxes: {veths()}"
    # The bridge and the firewall are left by a crash...
    assert names["bridge"] in links()
    assert f"table inet {names['table']}" in nft_tables()

    # ...and a restart sweeps them and makes its own.
    second = Server(data_dir=first.data_dir, log_path=first.log_path.with_name("server-net-crash-restarted.log"),
                    extra_args=list(first.extra_args))
    second.start()
    lam2 = second.client(read_timeout=60)
    try:
        log = second.log_path.read_text(errors="replace")
        assert "removed the network bridge, veths and firewall tables of a previous server process" in log
        out = invoke(lam2, name, {"gateway": f"{cidr_base}.1"})
        assert out["address"].startswith(cidr_base + "."), out
        assert nft_tables().count(names["table"]) == 2, nft_tables()
    finally:
        lam2.delete_function(FunctionName=name)
        assert second.stop() == 0
    # A graceful stop removes the bridge, the veths and both tables.
    deadline = time.monotonic() + 10
    while (veths() or names["bridge"] in links()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert names["bridge"] not in links()
    assert veths() == []
    assert names["table"] not in nft_tables()
    remove_data_dir(first.data_dir)
