"""Streaming multipart/form-data reader: uploads are parsed as the bytes arrive, in memory, never on disk.

Starlette's form parser spools every file part over 1 MB to a temporary file before any size check runs,
and a Content-Length check does not apply to chunked requests. This reader takes the body from
``request.stream()`` (the same for every transfer encoding), feeds it to python-multipart's streaming
``MultipartParser`` and counts bytes as they arrive:

* a part over ``max_file_bytes`` stops being stored at once (its buffer is dropped, its bytes are still
  counted) and is reported as too large, so one oversize file fails only itself;
* a body over ``max_request_bytes`` ends the request with 413 as soon as the byte that crosses it arrives;
* stored bytes are charged to a :class:`MemoryBudget` shared by all requests (503 when it is spent), so
  concurrent uploads cannot exhaust memory either;
* a body that stalls for ``idle_timeout`` seconds ends with 408, and so does one that, after ``rate_grace``
  seconds, averages less than ``min_rate`` bytes per second (a trickle of 1 byte every 5 s never stalls).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

try:  # python-multipart >= 0.0.13
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - older python-multipart (the requirement is >= 0.0.9)
    from multipart.exceptions import FormParserError
    from multipart.multipart import MultipartParser, parse_options_header

from .errors import RequestRejected, size_text

__all__ = ["MemoryBudget", "Upload", "read_uploads"]


@dataclass
class Upload:
    """One file part: ``data`` is None when the part went over the per-file limit (``size`` still counts it)."""

    field: str
    filename: str
    content_type: str
    size: int = 0
    data: bytes | bytearray | None = None

    @property
    def too_large(self) -> bool:
        return self.data is None


class MemoryBudget:
    """Bytes of uploads held in memory by all requests together; ``charge`` raises 503 when it is spent."""

    def __init__(self, limit: int):
        self.limit, self.used = int(limit), 0
        self._lock = threading.Lock()

    def charge(self, n: int) -> None:
        with self._lock:
            if self.used + n > self.limit:
                raise RequestRejected(503, "The server holds too many uploads in memory right now; retry shortly.",
                                      {"Retry-After": "2"})
            self.used += n

    def release(self, n: int) -> None:
        with self._lock:
            self.used = max(0, self.used - n)


class _Collector:
    """python-multipart callbacks: keep the parts named ``field`` (at most ``max_files``), drop the rest."""

    def __init__(self, field: str, max_files: int, max_file_bytes: int, budget: MemoryBudget | None):
        self.field, self.max_files, self.max_file_bytes, self.budget = field, max_files, max_file_bytes, budget
        self.uploads: list[Upload] = []
        self.charged = 0
        self.ended = False
        self._current: Upload | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._name = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self._current, self._headers = None, []
        self._name.clear()
        self._value.clear()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self._headers.append((bytes(self._name).strip().lower(), bytes(self._value).strip()))
        self._name.clear()
        self._value.clear()

    def headers_finished(self) -> None:
        headers = dict(self._headers)
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise RequestRejected(400, "Each multipart part needs 'Content-Disposition: form-data; name=...'.")
        if options[b"name"].decode("utf-8", "replace") != self.field:
            return  # another field: its bytes count towards the request limit, nothing is kept
        if len(self.uploads) >= self.max_files:
            raise RequestRejected(400, f"More than {self.max_files} files sent; at most {self.max_files} per request.")
        # Browsers send file names as raw UTF-8 inside the quoted string; parse_options_header gives latin-1 bytes.
        filename = options.get(b"filename", b"").decode("utf-8", "replace")
        ctype = headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
        self._current = Upload(self.field, filename, ctype, data=bytearray())
        self.uploads.append(self._current)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        up = self._current
        if up is None:
            return
        n = end - start
        up.size += n
        if up.data is None:
            return
        if up.size > self.max_file_bytes:  # over the limit: forget what was kept, keep counting
            self._uncharge(len(up.data))
            up.data = None
            return
        if self.budget is not None:
            self.budget.charge(n)
        self.charged += n
        up.data += data[start:end]

    def part_end(self) -> None:
        if self._current is not None and self._current.data is not None:
            self._current.data = bytes(self._current.data)  # the decoders take bytes
        self._current = None

    def end(self) -> None:
        self.ended = True

    def _uncharge(self, n: int) -> None:
        if self.budget is not None:
            self.budget.release(n)
        self.charged -= n

    def release_all(self) -> None:
        self._uncharge(self.charged)


#: A body must average at least this many bytes per second once ``RATE_GRACE`` seconds have passed.
MIN_BODY_RATE = 1024.0
RATE_GRACE = 10.0


async def read_uploads(request, field: str, *, max_files: int, max_file_bytes: int, max_request_bytes: int,
                       budget: MemoryBudget | None = None, idle_timeout: float = 30.0,
                       request_too_large: str | None = None, min_rate: float | None = None,
                       rate_grace: float | None = None) -> tuple[list[Upload], object]:
    """The file parts named ``field`` of a multipart/form-data request, read from ``request.stream()``.

    Returns ``(uploads, release)``: call ``release()`` once the uploads are no longer needed, to give their
    bytes back to ``budget``. Raises :class:`RequestRejected` for a body that is not multipart/form-data
    (415), malformed (400), has no ``field`` part or too many of them (400), goes over ``max_request_bytes``
    (413, with ``request_too_large`` as the message if given), stalls (408), averages less than ``min_rate``
    bytes/s after ``rate_grace`` seconds (408; defaults :data:`MIN_BODY_RATE` and :data:`RATE_GRACE`) or does not
    fit the memory budget (503).
    """
    min_rate = MIN_BODY_RATE if min_rate is None else min_rate
    rate_grace = RATE_GRACE if rate_grace is None else rate_grace
    from starlette.requests import ClientDisconnect

    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise RequestRejected(415, "Send the images as multipart/form-data.")
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestRejected(400, "The multipart/form-data Content-Type has no boundary.")
    over = request_too_large or f"Request larger than {size_text(max_request_bytes)}."
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_request_bytes:
        raise RequestRejected(413, over)

    collector = _Collector(field, max_files, max_file_bytes, budget)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
    except (FormParserError, ValueError) as exc:
        raise RequestRejected(400, f"Malformed multipart boundary: {exc}") from None
    received = 0
    started = asyncio.get_running_loop().time()
    stream = request.stream()
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise RequestRejected(408, f"The upload stalled for {idle_timeout:g} s.") from None
            except ClientDisconnect:
                raise RequestRejected(400, "The client disconnected during the upload.") from None
            received += len(chunk)
            if received > max_request_bytes:
                raise RequestRejected(413, over)
            elapsed = asyncio.get_running_loop().time() - started
            if min_rate and elapsed > rate_grace and received / elapsed < min_rate:
                raise RequestRejected(408, f"The upload is too slow ({received / elapsed:.0f} bytes/s after "
                                           f"{elapsed:.0f} s; at least {min_rate:.0f} bytes/s are needed).")
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise RequestRejected(400, f"Malformed multipart body: {exc}") from None
        if not collector.ended:
            raise RequestRejected(400, "The multipart body ended before its closing boundary.")
        if not collector.uploads:
            raise RequestRejected(400, f"No '{field}' file part in the request.")
    except BaseException:
        collector.release_all()
        raise
    finally:
        await stream.aclose()
    return collector.uploads, collector.release_all
