"""Running a page's server: uvicorn with limits that hold under slow and many clients (serve, review).

uvicorn times out idle keep-alive connections but not the request itself: ``timeout_keep_alive`` is reset by
every byte, so a client trickling its request line and headers holds a connection for ever, and ASGI middleware
runs only once the request is parsed. :class:`GuardedH11` adds what is missing, at the protocol level:

- a deadline for receiving each request's line and headers (:data:`HEADER_TIMEOUT`), re-armed for every request
  of a keep-alive connection, after which the connection is closed;
- a cap on open connections per client address (:data:`PER_CLIENT`), over which new connections are closed at once;
- with uvicorn's own ``limit_concurrency`` (503 past :data:`MAX_CONNECTIONS` connections), a short keep-alive and a
  bound on the size of an incomplete request line/headers (``h11_max_incomplete_event_size``).
Request bodies have their own minimum rate (serve.upload).
"""

from __future__ import annotations

from collections import Counter

__all__ = ["run_server", "server_config", "guarded_protocol", "HEADER_TIMEOUT", "PER_CLIENT", "MAX_CONNECTIONS"]

#: Seconds a client has to send a request line and its headers.
HEADER_TIMEOUT = 10.0
#: Open connections one client address may hold.
PER_CLIENT = 32
#: Open connections in all, past which uvicorn answers 503.
MAX_CONNECTIONS = 256
#: Seconds an idle keep-alive connection is kept.
KEEP_ALIVE = 5
#: Bytes of request line + headers buffered before a request is refused.
MAX_HEADER_BYTES = 16 * 1024


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT, per_client: int = PER_CLIENT):
    """uvicorn's h11 protocol class with a header deadline and a per-client connection cap."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_by_client: Counter = Counter()

    class GuardedH11(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._who = self.client[0] if self.client else None
            open_by_client[self._who] += 1
            if open_by_client[self._who] > per_client:
                transport.close()  # connection_lost gives the count back
                return
            self._arm()

        def _arm(self):
            self._armed_for = self.cycle
            self._deadline = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self):
            handle = getattr(self, "_deadline", None)
            if handle is not None:
                handle.cancel()
                self._deadline = None

        def _headers_too_slow(self):
            self._deadline = None
            if self.cycle is self._armed_for and not self.transport.is_closing():  # no new request arrived
                self.transport.close()

        def handle_events(self):
            super().handle_events()
            if getattr(self, "_deadline", None) is not None and self.cycle is not self._armed_for:
                self._disarm()  # the request line and headers of a new request arrived in time

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._disarm()
                self._arm()  # the next request on this keep-alive connection gets its own deadline

        def connection_lost(self, exc):
            self._disarm()
            open_by_client[self._who] -= 1
            if open_by_client[self._who] <= 0:
                del open_by_client[self._who]
            super().connection_lost(exc)

    return GuardedH11


def server_config(app, *, host: str, port: int, header_timeout: float = HEADER_TIMEOUT, per_client: int = PER_CLIENT,
                  max_connections: int = MAX_CONNECTIONS):
    """The uvicorn ``Config`` of :func:`run_server` (tests run it in a thread with shorter limits)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", server_header=False,
                          http=guarded_protocol(header_timeout, per_client), limit_concurrency=max_connections,
                          timeout_keep_alive=KEEP_ALIVE, h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def run_server(app, *, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn and the limits above (blocks until stopped)."""
    import uvicorn

    uvicorn.Server(server_config(app, host=host, port=port)).run()
