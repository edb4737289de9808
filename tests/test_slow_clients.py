"""Servers that hold under slow and many clients: header deadline, per-client cap, /health stays fast."""

from __future__ import annotations

import socket
import threading
import time

import pytest


@pytest.fixture()
def guarded_server(request):
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from frugalvision.serve._server import server_config

    app = Starlette(routes=[Route("/health", lambda request: JSONResponse({"status": "ok"}))])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    per_client, header_timeout = getattr(request, "param", (300, 1.0))
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, header_timeout=header_timeout,
                                          per_client=per_client))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield port
    server.should_exit = True
    th.join(5)


def _health(port) -> float:
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert b" 200 " in data.split(b"\r\n", 1)[0], data[:100]
    return time.perf_counter() - t


def test_health_stays_fast_with_idle_and_slow_header_clients(guarded_server):
    port = guarded_server
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]  # bounded: 200 idle connections
    slow = []
    for _ in range(20):  # 20 clients that start a request and never finish its headers
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(s)
    try:
        worst = max(_health(port) for _ in range(5))
        assert worst < 0.5, worst
        time.sleep(1.6)  # past the header deadline (1 s in this test): the slow clients were cut off
        for s in slow:
            s.settimeout(2)
            assert s.recv(10) == b""  # closed by the server
    finally:
        for s in idle + slow:
            s.close()


@pytest.mark.parametrize("guarded_server", [(5, 30.0)], indirect=True)
def test_a_client_over_its_connection_cap_is_closed(guarded_server):
    port = guarded_server
    conns = []
    try:
        for _ in range(8):
            conns.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.05)
        closed = []
        for s in conns:
            s.settimeout(0.3)
            try:
                closed.append(s.recv(10) == b"")
            except socket.timeout:
                closed.append(False)  # still open, waiting for a request
        assert closed == [False] * 5 + [True] * 3, closed
    finally:
        for s in conns:
            s.close()
