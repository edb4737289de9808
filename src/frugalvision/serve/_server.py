"""Running a page's server: uvicorn with limits that hold under slow and many clients (serve, review).

uvicorn times out idle keep-alive connections but not the request itself: ``timeout_keep_alive`` is reset by
every byte, so a client trickling its request line and headers holds a connection for ever, and ASGI middleware
runs only once the request is parsed. :class:`GuardedH11` adds what is missing, at the protocol level:

- a deadline for receiving each request's line and headers (:data:`HEADER_TIMEOUT`), re-armed for every request
  of a keep-alive connection, after which the connection is closed;
- a cap on open connections per client address (:data:`PER_CLIENT`), over which new connections are closed at once;
- with uvicorn's own ``limit_concurrency`` (503 past :data:`MAX_CONNECTIONS` connections), a short keep-alive and a
  bound on the size of an incomplete request line/headers (``h11_max_incomplete_event_size``).
- a minimum average rate for every request body (:data:`BODY_RATE` after :data:`BODY_GRACE` seconds, measured
  only while the server is reading: time the app leaves the body unread does not count), after which the
  connection is closed. Uploads have their own, earlier cut with a 408 and a message (serve.upload); this one holds
  for any route and any body (the review page's decisions, a route that never reads its body).
"""

from __future__ import annotations

from collections import Counter

__all__ = ["run_server", "server_config", "guarded_protocol", "HEADER_TIMEOUT", "PER_CLIENT", "MAX_CONNECTIONS",
           "BODY_RATE", "BODY_GRACE"]

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
#: Bytes/s a request body must average once BODY_GRACE seconds passed since its headers (uploads: serve.upload
#: answers 408 after 10 s first).
BODY_RATE = 1024.0
BODY_GRACE = 20.0


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT, per_client: int = PER_CLIENT,
                     body_rate: float = BODY_RATE, body_grace: float = BODY_GRACE):
    """uvicorn's h11 protocol class with a header deadline, a per-client connection cap and a body rate floor."""
    import h11
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

        def data_received(self, data):
            if getattr(self, "_body_for", None) is not None:
                self._body_bytes += len(data)
            super().data_received(data)

        def handle_events(self):
            super().handle_events()
            if getattr(self, "_deadline", None) is not None and self.cycle is not self._armed_for:
                self._disarm()  # the request line and headers of a new request arrived in time
            if (body_rate and self.cycle is not None and getattr(self, "_body_for", None) is not self.cycle
                    and self.conn.their_state is h11.SEND_BODY):  # a new request whose body is still arriving
                self._body_for, self._body_start, self._body_bytes = self.cycle, self.loop.time(), 0
                self._body_check = self.loop.call_later(1.0, self._check_body)

        def _check_body(self):
            self._body_check = None
            if self.transport.is_closing() or self.cycle is not self._body_for \
                    or self.conn.their_state is not h11.SEND_BODY:
                self._body_for = None  # the body is complete (or the connection went)
                return
            now = self.loop.time()
            if self.flow.read_paused:  # the app is not reading the body: the client is not the one being slow
                self._body_start, self._body_bytes = now, 0
            elif now - self._body_start > body_grace and self._body_bytes / (now - self._body_start) < body_rate:
                self.transport.close()  # a trickled body: the connection is given back
                return
            self._body_check = self.loop.call_later(1.0, self._check_body)

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._disarm()
                self._arm()  # the next request on this keep-alive connection gets its own deadline

        def connection_lost(self, exc):
            self._disarm()
            if getattr(self, "_body_check", None) is not None:
                self._body_check.cancel()
            open_by_client[self._who] -= 1
            if open_by_client[self._who] <= 0:
                del open_by_client[self._who]
            super().connection_lost(exc)

    return GuardedH11


def server_config(app, *, host: str, port: int, header_timeout: float = HEADER_TIMEOUT, per_client: int = PER_CLIENT,
                  max_connections: int = MAX_CONNECTIONS, body_rate: float = BODY_RATE,
                  body_grace: float = BODY_GRACE):
    """The uvicorn ``Config`` of :func:`run_server` (tests run it in a thread with shorter limits)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", server_header=False,
                          http=guarded_protocol(header_timeout, per_client, body_rate, body_grace),
                          limit_concurrency=max_connections,
                          timeout_keep_alive=KEEP_ALIVE, h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def run_server(app, *, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn and the limits above (blocks until stopped)."""
    import uvicorn

    uvicorn.Server(server_config(app, host=host, port=port)).run()
