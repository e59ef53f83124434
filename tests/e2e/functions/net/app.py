"""Network probes for tests/e2e/test_network.py: what a sandbox can reach."""

import socket
import threading

_listener = None


def _connect(host, port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        try:
            data = s.recv(256).decode(errors="replace")
        except OSError:
            data = ""
        return {"ok": True, "reply": data}
    except OSError as e:
        kind = "timeout" if isinstance(e, socket.timeout) else type(e).__name__
        return {"ok": False, "error": f"{kind}: {e}"}
    finally:
        s.close()


def _own_address(gateway):
    """The address this sandbox sends from towards `gateway` (None: no route)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((gateway, 9))
        return s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()


def _serve(sock):
    while True:
        try:
            conn, peer = sock.accept()
        except OSError:
            return
        try:
            conn.sendall(f"sandbox saw {peer[0]}".encode())
        finally:
            conn.close()


def handler(event, context):
    global _listener
    out = {
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "resolv": open("/etc/resolv.conf").read(),
    }
    if "listen" in event and _listener is None:
        _listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _listener.bind(("0.0.0.0", int(event["listen"])))
        _listener.listen(16)
        threading.Thread(target=_serve, args=(_listener,), daemon=True).start()
    if "gateway" in event:
        out["address"] = _own_address(event["gateway"])
    timeout = float(event.get("timeout", 1.5))
    out["connect"] = [_connect(h, int(p), timeout) for h, p in event.get("connect", [])]
    return out
