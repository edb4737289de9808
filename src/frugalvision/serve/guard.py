"""Host allow-list, Origin check and security headers, as one small ASGI middleware.

* **Host** (every request): DNS rebinding points a hostile name at 127.0.0.1, so the browser sends
  ``Host: evil.example``; only the allowed names (``127.0.0.1``, ``localhost``, ``[::1]`` and
  ``--allow-host`` names, any port) are answered, anything else gets 400. Starlette's
  TrustedHostMiddleware is not used: before Starlette 0.47 it took ``host.split(":")[0]``, which turns
  ``[::1]:8000`` into ``[`` (and FastAPI >= 0.110, our requirement, allows those versions).
* **Origin** (POST, PUT, PATCH, DELETE): a page on another site may send a form or a fetch to us; the
  browser adds ``Origin``. An Origin whose host is not allowed (or ``null``), or ``Sec-Fetch-Site:
  cross-site``, gets 403. Requests without Origin (curl, scripts) are allowed.
* **Headers** on every response: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY`` and a Content-Security-Policy (the route's own, if it set one, else
  :data:`PAGE_CSP`), so no page of ours loads anything from another host.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable

__all__ = ["DEFAULT_HOSTS", "PAGE_CSP", "REPORT_CSP", "SecurityGuard", "allowed_hosts", "parse_authority"]

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "[::1]")

#: The page, the docs and JSON answers: scripts, styles and images only from this server (plus data: images).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: report.html is self-contained: inline styles and data: images, no script at all.
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_AUTHORITY = re.compile(r"(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?#@\s]+)", re.IGNORECASE)
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def parse_authority(value: str | None) -> tuple[str, str | None] | None:
    """``("localhost", "8000")`` for ``localhost:8000``, ``("::1", None)`` for ``[::1]``; None if malformed."""
    if not value:
        return None
    m = _AUTHORITY.fullmatch(value.strip())
    if m is None:
        return None
    if m["ip6"] is not None:
        try:
            host = ipaddress.IPv6Address(m["ip6"]).compressed
        except ValueError:
            return None
    else:
        host = m["name"].lower()
    return host, m["port"]


def _normalise(name: str) -> str:
    """An allow-list entry as :func:`parse_authority` reports hosts (``[::1]``, ``::1`` -> ``::1``)."""
    name = name.strip()
    if name == "*":
        return name
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"  # a bare IPv6 address
    parsed = parse_authority(name)
    if parsed is None or parsed[1] is not None:
        raise ValueError(f"not a host name or IP address (no port, no scheme): {name!r}")
    return parsed[0]


def allowed_hosts(extra: Iterable[str] = (), bind: str | None = None) -> list[str]:
    """The default local names, the ``extra`` ones and the bind address unless it is a wildcard."""
    names = list(DEFAULT_HOSTS) + [h for h in extra if h]
    if bind and bind not in ("0.0.0.0", "::", "[::]", ""):
        names.append(bind)
    return list(dict.fromkeys(_normalise(n) for n in names))


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


class SecurityGuard:
    """ASGI middleware: Host allow-list (400), Origin / Sec-Fetch-Site check on unsafe methods (403), headers."""

    def __init__(self, app, hosts: Iterable[str] = DEFAULT_HOSTS):
        self.app = app
        self.hosts = frozenset(_normalise(h) for h in hosts)
        self.any_host = "*" in self.hosts

    def host_allowed(self, host: str) -> bool:
        return self.any_host or host in self.hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope["headers"]:
            headers.setdefault(k.lower(), v.decode("latin-1"))
        host = parse_authority(headers.get(b"host"))
        if host is None or not self.host_allowed(host[0]):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _refuse(send, 400, "Host header not allowed; start the server with --allow-host NAME "
                                            "to answer under another name.")
        if scope["type"] == "http" and scope["method"] in _UNSAFE:
            problem = self._cross_origin(headers, host)
            if problem:
                return await _refuse(send, 403, problem)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                         (b"x-frame-options", b"DENY"), (b"content-security-policy", PAGE_CSP.encode())]
                message = {**message, "headers": list(message.get("headers", []))
                           + [(k, v) for k, v in extra if k not in present]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cross_origin(self, headers: dict, host: tuple[str, str | None]) -> str | None:
        if headers.get(b"sec-fetch-site", "").strip().lower() == "cross-site":
            return "Cross-site requests are not accepted."
        origin = headers.get(b"origin")
        if origin is None:
            return None  # not a browser (curl, scripts): nothing to check
        m = _ORIGIN.fullmatch(origin.strip())
        parsed = parse_authority(m["authority"]) if m else None
        if parsed is None:
            return f"Requests from origin {origin!r} are not accepted."
        same_origin = parsed == host
        if same_origin or (not self.any_host and parsed[0] in self.hosts):
            return None
        return f"Requests from origin {origin!r} are not accepted."
