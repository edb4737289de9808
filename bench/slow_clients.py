"""/health latency and server memory while 200 idle and 20 slow-header connections are open (loopback only).

    python bench/slow_clients.py RUN_FOLDER          # runs `frugalvision serve RUN_FOLDER` on a free port

Bounded: 220 sockets, 50 timed /health requests; the server is stopped at the end.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def _health(port: int) -> float:
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    if b" 200 " not in data.split(b"\r\n", 1)[0]:
        raise SystemExit(f"/health answered {data[:80]!r}")
    return time.perf_counter() - t


def _timed(port: int, n: int = 50) -> dict:
    ms = sorted(1000 * _health(port) for _ in range(n))
    return {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * n) - 1], 1),
            "max_ms": round(ms[-1], 1)}


def main(run: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "frugalvision.cli.main", "serve", run, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    socks = []
    try:
        for _ in range(300):
            try:
                _health(port)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server did not start within 60 s")
        base = _timed(port)
        rss0 = _rss_mb(proc.pid)
        # From 10 other loopback addresses (127.0.0.2-11, 22 connections each): as many clients, each under the
        # per-client cap of 32; /health is asked from 127.0.0.1.
        src = [(f"127.0.0.{2 + i % 10}", 0) for i in range(220)]
        socks = [socket.create_connection(("127.0.0.1", port), source_address=src[i]) for i in range(200)]
        for i in range(200, 220):
            c = socket.create_connection(("127.0.0.1", port), source_address=src[i])
            c.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(c)
        time.sleep(0.5)
        loaded = _timed(port)
        rss1 = _rss_mb(proc.pid)
        print(f"no extra clients: /health {base}; server RSS {rss0:.0f} MB")
        print(f"200 idle + 20 slow-header connections: /health {loaded}; server RSS {rss1:.0f} MB "
              f"(+{rss1 - rss0:.1f} MB)")
    finally:
        for c in socks:
            c.close()
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main(sys.argv[1])
