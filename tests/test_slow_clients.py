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

    from frugalvision.serve.errors import RequestRejected
    from frugalvision.serve.upload import read_uploads

    async def echo(request):
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return JSONResponse({"bytes": n})

    async def upload(request):
        try:
            ups, release = await read_uploads(request, "file", max_files=1, max_file_bytes=10**6,
                                              max_request_bytes=10**6, min_rate=1000, rate_grace=1.0)
        except RequestRejected as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        release()
        return JSONResponse({"bytes": ups[0].size})

    app = Starlette(routes=[Route("/health", lambda request: JSONResponse({"status": "ok"})),
                            Route("/echo", echo, methods=["POST"]), Route("/upload", upload, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    per_client, header_timeout, body_grace = (*getattr(request, "param", (300, 1.0)), 30.0)[:3]
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, header_timeout=header_timeout,
                                          per_client=per_client, body_rate=1000, body_grace=body_grace))
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


def _trickle_body(port, path, head: bytes, body: bytes, pause: float, limit: float):
    """Send ``head`` then ``body`` one byte every ``pause`` s; (seconds until the server answered or closed, what
    it sent). Bounded by ``limit`` seconds."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(pause)
    t0, got = time.monotonic(), b""
    try:
        s.sendall(head)
        for i in range(len(body)):
            if time.monotonic() - t0 > limit:
                break
            try:
                s.sendall(body[i:i + 1])
            except OSError:
                break
            try:
                chunk = s.recv(4096)
                got += chunk
                if not chunk or got:
                    break
            except socket.timeout:
                pass
        took = time.monotonic() - t0
        s.settimeout(1.0)
        try:
            while got and (chunk := s.recv(4096)):  # the rest of the response
                got += chunk
        except OSError:
            pass
        return took, got
    finally:
        s.close()


def test_a_trickled_upload_gets_408_after_the_rate_grace(guarded_server):
    """An upload trickling 1 byte every 0.25 s (the report's 1 byte every 5 s, scaled down) is cut with 408 once
    its grace (1 s here, 10 s by default) has passed, by serve.upload's minimum rate."""
    body = b"--b\r\nContent-Disposition: form-data; name=file; filename=x.png\r\n\r\n" + b"x" * 200 + b"\r\n--b--\r\n"
    head = (b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    took, got = _trickle_body(guarded_server, "/upload", head, body, 0.25, 8.0)
    assert got.startswith(b"HTTP/1.1 408") and b"too slow" in got, got[:300]
    assert 1.0 < took < 3.0, took


@pytest.mark.parametrize("guarded_server", [(300, 30.0, 1.0)], indirect=True)
def test_any_trickled_body_is_closed_by_the_protocol_guard(guarded_server):
    """A route that reads a body with no limit of its own (like the review page's decisions): the protocol-level
    minimum rate (1000 B/s after 1 s here; 1 KB/s after 20 s by default) closes the connection; a fast body of the
    same route passes."""
    body = b"y" * 500
    head = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    took, got = _trickle_body(guarded_server, "/echo", head, body, 0.25, 8.0)
    assert got == b"" and 1.0 < took < 3.5, (took, got[:200])
    with socket.create_connection(("127.0.0.1", guarded_server), timeout=5) as s:
        s.sendall(head.replace(b"HTTP/1.1", b"HTTP/1.1").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
                  + body)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert b" 200 " in data.split(b"\r\n", 1)[0] and b'"bytes":500' in data
