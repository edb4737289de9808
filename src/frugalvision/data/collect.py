"""Download labelled images from a CSV of URLs into a folder layout, safely and resumably.

Input CSV: ``url,label[,extra columns]``, written by anyone. Output folder ``<out>``:

- ``<out>/<folder>/<hash>.<ext>``: one file per distinct image, ``<hash>`` from its bytes;
- ``collect_log.csv``: one row per input row (``row`` is its 1-based number in the CSV) with
  ``status`` ok / duplicate / conflict / failed, a ``reason``, the ``folder`` its label maps to,
  ``path`` and ``hash``;
- ``manifest.csv`` (path,label,extras,url,hash, ready for ``frugalvision train``): one row per
  input row whose status is ok, with the label text exactly as written in the CSV.

What is guaranteed, whatever the servers send:

- **Time.** The transfer of one URL never takes longer than ``deadline`` seconds: all attempts,
  back-off pauses and redirects included, enforced on every connect, read and write, so a server
  trickling its status line, headers or body is cut off too. An attempt whose average rate is
  below ``min_rate`` bytes/s once ``rate_grace`` seconds passed since its first byte is aborted.
  ``timeout`` bounds one stalled connect/read. Timeouts, connection errors, 429 and 5xx are
  retried up to ``retries`` attempts with exponential back-off, while the deadline allows; a
  deadline or rate failure is final. Name resolution runs inside the deadline too. Not covered: decoding the
  bytes once received (bounded by ``max_bytes`` and the decoder's pixel limit).
- **Addresses.** By default collect never connects to loopback, private (RFC 1918, IPv6 unique-local),
  link-local (169.254.0.0/16, where cloud metadata services answer), multicast, unspecified or reserved
  addresses: each name is resolved once, every address it gives is checked, and the socket connects to the
  checked address itself (so a name that re-resolves elsewhere, DNS rebinding, cannot slip through), on the first
  request and on every redirect. ``allow_private=True`` (``--allow-private``) permits them, for intranets.
  Through an http(s) proxy from the environment the proxy resolves the names: the check does not apply there.
- **Size.** At most ``max_bytes`` are read per URL (Content-Length checked first, then counted
  while streaming).
- **Redirects.** At most 5 are followed, and only to http:// or https:// URLs; a redirect to
  ``file:``, ``ftp:``, ``data:``... fails the row and is never fetched.
- **Content.** A file is kept only if its first bytes are a JPEG, PNG, GIF, BMP, TIFF or WebP
  signature *and* its pixels fully decode with :func:`frugalvision.data.decode.load_rgb`. The
  Content-Type header is never trusted either way: HTML served as image/png fails, a real PNG
  served as text/html is kept; the reason says what the server claimed and what the bytes were.
  Nothing is written for a failed URL. Server-supplied text in reasons is escaped and shortened.
- **Labels.** A label is used as a folder name only if it is a plain name (letters and digits of
  any script, inner spaces, ``-``, ``_``; at most 48 characters; not a Windows device name). Any other label
  (``../x``, ``/abs``, empty, ``.``, NUL, very long...) gets ``<cleaned>-<8 hex of its hash>``,
  which stays inside ``<out>`` and is distinct per label; the log's ``folder`` column and reason say so.
- **Duplicates.** Each distinct URL is downloaded once. Rows repeating a URL with the *same*
  label are all ok (one manifest row each, same file; extras may differ). A row repeating a URL
  with a *different* label is ``conflict``: the first row's label is kept, the conflicting row is
  left out of the manifest and its reason names the first row. URLs are compared after stripping
  surrounding spaces. Different URLs with identical bytes: the one that finished first is kept,
  the others are ``duplicate`` (pointing to its file) and left out of the manifest. When such a row's label
  differs from the kept one's (the same picture under two labels), it is a ``conflict`` naming the row whose
  label was kept, and the kept row's reason lists the rows that disagree: never one label kept silently.
- **Crashes.** Images are written atomically (temporary file, fsync, rename), then the log rows
  of that URL are appended and flushed (fsync). After a crash or ``kill -9``, a re-run skips every
  URL logged ok/duplicate whose file is present (no second request; only a URL killed in the
  microseconds between its rename and its log row is fetched again), redoes the others, removes
  temporary files left by the killed run, and rewrites the log and manifest in full, atomically.
  Rows of earlier runs whose URL is no longer in the CSV are kept. One run at a time per folder
  (``.frugalvision.lock``: a second run is refused on POSIX).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import os
import ssl
import threading
import time
import unicodedata
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import httpcore
import httpx
import pandas as pd

from .._io import csv_rows_text, read_csv, remove_stale_temporaries, run_folder, unescape_cell, write_bytes, write_text
from .._text import printable
from ..exceptions import DataError, ImageDecodeError
from .decode import DEFAULT_MAX_PIXELS, load_rgb

__all__ = ["DEFAULT_DEADLINE", "DEFAULT_MIN_RATE", "DEFAULT_RATE_GRACE", "MAX_REDIRECTS", "CollectResult", "collect",
           "label_folder", "printable", "sniff_image_type"]

#: Seconds one URL may take, all attempts included.
DEFAULT_DEADLINE = 60.0
#: Bytes/s below which an attempt is aborted once DEFAULT_RATE_GRACE seconds passed since its first byte.
DEFAULT_MIN_RATE = 4096
DEFAULT_RATE_GRACE = 10.0
MAX_REDIRECTS = 5

LOG_NAME, MANIFEST_NAME = "collect_log.csv", "manifest.csv"
_OWN_COLUMNS = ("row", "status", "reason", "folder", "path", "hash")

_SIGNATURES = [(b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif")]
_SNIFF_BYTES = 16
_FORMAT = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "tif": "TIFF", "webp": "WebP"}
_MIME = {"jpg": {"image/jpeg", "image/jpg", "image/pjpeg"}, "png": {"image/png", "image/apng", "image/x-png"},
         "gif": {"image/gif"}, "bmp": {"image/bmp", "image/x-bmp", "image/x-ms-bmp"},
         "tif": {"image/tiff", "image/tif"}, "webp": {"image/webp"}}
_GENERIC_MIME = {"", "application/octet-stream", "binary/octet-stream"}
_REDIRECT_CODES = {301, 302, 303, 307, 308}
_REQUEST_HEADERS = [(b"User-Agent", b"frugalvision-collect"), (b"Accept", b"image/*"),
                    (b"Accept-Encoding", b"identity")]  # compressed bodies would not sniff as images

# Decoding a large image takes hundreds of MB; a few at a time is enough to keep up with the network.
_DECODE_SLOTS = threading.BoundedSemaphore(2)


def sniff_image_type(head: bytes) -> str | None:
    """File extension from the first bytes (magic numbers), or None if it is not a known image."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for sig, ext in _SIGNATURES:
        if head.startswith(sig):
            return ext
    return None


# ----------------------------------------------------------------------------------------- labels

_FOLDER_MAX = 48  # characters; 48 x 4 UTF-8 bytes + the hash suffix stays under the 255-byte name limit
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def label_folder(label: str) -> str:
    """The folder name for ``label``: the label itself when it is a plain name, else a cleaned name + hash.

    The hash (of the raw label) keeps two unsafe labels that clean to the same text ('a/b', 'a?b') apart.
    """
    label = str(label)
    cleaned = "".join(ch if ch.isalnum() or ch in "-_ " else "_" for ch in unicodedata.normalize("NFC", label))
    cleaned = cleaned.strip()[:_FOLDER_MAX].strip()
    if cleaned and cleaned == label and cleaned.lower() not in _WINDOWS_DEVICES:
        return cleaned
    digest = hashlib.blake2b(label.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{cleaned or 'unlabelled'}-{digest}"


# -------------------------------------------------------------------- per-URL time and rate budget


class _Failure(Exception):
    def __init__(self, reason: str, retry: bool = False):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


@dataclass(frozen=True)
class _Limits:
    retries: int
    timeout: float
    backoff: float
    max_bytes: int
    deadline: float
    min_rate: float
    rate_grace: float

    def __post_init__(self):
        checks = {"retries": self.retries >= 1, "timeout": self.timeout > 0, "backoff": self.backoff >= 0,
                  "max_bytes": self.max_bytes > 0, "deadline": self.deadline > 0, "min_rate": self.min_rate >= 0,
                  "rate_grace": self.rate_grace >= 0}
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"collect: invalid setting(s) {', '.join(bad)}; expected retries >= 1, timeout, "
                             "deadline and max_bytes > 0, backoff, min_rate and rate_grace >= 0.")


class _Budget:
    """Time and rate allowed to one URL, checked on every socket operation of the thread fetching it."""

    def __init__(self, limits: _Limits):
        self.limits = limits
        self.end = time.monotonic() + limits.deadline
        self.first_byte: float | None = None
        self.received = 0

    def new_attempt(self) -> None:
        self.first_byte, self.received = None, 0

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def cap(self, timeout: float | None) -> float:
        left = self.remaining()
        if left <= 0:
            raise self.expired()
        return left if timeout is None else min(timeout, left)

    def expired(self) -> _Failure:
        return _Failure(f"deadline exceeded: not finished within {self.limits.deadline:g} s (--deadline), "
                        f"{self.received:,} bytes received in the last attempt")

    def count(self, n: int) -> None:
        if n <= 0:
            return
        now = time.monotonic()
        if self.first_byte is None:
            self.first_byte = now
        self.received += n
        elapsed, floor = now - self.first_byte, self.limits.min_rate
        if floor and elapsed > self.limits.rate_grace and self.received / elapsed < floor:
            rate = self.received / elapsed
            raise _Failure(f"too slow: {self.received:,} bytes in {elapsed:.1f} s ({rate:,.0f} B/s), "
                           f"below the minimum of {floor:,.0f} B/s (--min-rate {floor / 1024:g} KB/s)")


_local = threading.local()  # the budget of the URL this worker thread is fetching


def _within_budget(op, timeout: float | None):
    """Run a socket operation with its timeout cut to what is left of the URL's deadline."""
    budget = getattr(_local, "budget", None)
    if budget is None:
        return op(timeout)
    try:
        return op(budget.cap(timeout))
    except httpcore.TimeoutException:
        if budget.remaining() <= 0:
            raise budget.expired() from None
        raise


class _GuardedStream(httpcore.NetworkStream):
    """A socket whose every read/write honours the current URL's budget (deadline and minimum rate)."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = _within_budget(lambda t: self._inner.read(max_bytes, t), timeout)
        budget = getattr(_local, "budget", None)
        if budget is not None:
            budget.count(len(data))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _within_budget(lambda t: self._inner.write(buffer, t), timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _GuardedStream(_within_budget(lambda t: self._inner.start_tls(ssl_context, server_hostname, t), timeout))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


_NAT64 = "64:ff9b::/96"  # well-known NAT64 prefix: the last 32 bits are the IPv4 address reached


def _refused_address(ip: str) -> str:
    """Why collect does not connect to ``ip`` by default ('' when it may): anything that is not a globally routed
    unicast address, including an IPv4 address carried inside IPv6 (mapped, 6to4, NAT64)."""
    import ipaddress

    a = ipaddress.ip_address(ip.split("%", 1)[0])
    if a.version == 6:
        if a.ipv4_mapped:
            a = a.ipv4_mapped
        elif a in ipaddress.ip_network(_NAT64):
            a = ipaddress.IPv4Address(int(a) & 0xFFFFFFFF)
        elif a.sixtofour:
            a = a.sixtofour
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(a, f"is_{kind}"):
            return kind.replace("_", "-")
    if not a.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), benchmarking and documentation ranges
        return "special-purpose (not globally routed)"
    return ""


def _resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses of ``host``, resolved inside the URL's budget (getaddrinfo has no timeout of its own)."""
    import socket

    box: dict = {}

    def run():
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise httpcore.ConnectTimeout(f"resolving {host} took longer than the time left")
    if "error" in box:
        raise httpcore.ConnectError(f"cannot resolve {host}: {box['error']}")
    return list(dict.fromkeys(info[4][0] for info in box["infos"]))


class _GuardedBackend(httpcore.NetworkBackend):
    """Sockets whose every operation honours the URL's budget; ``check_addresses``: refuse private targets."""

    def __init__(self, *, check_addresses: bool = False):
        self._inner = httpcore.SyncBackend()
        self._check = check_addresses

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if self._check:
            name = host.decode() if isinstance(host, bytes) else str(host)
            budget = getattr(_local, "budget", None)
            limit = budget.cap(timeout) if budget is not None else timeout
            ips = _resolve(name.strip("[]"), port, limit)
            bad = [(ip, _refused_address(ip)) for ip in ips]
            bad = [(ip, why) for ip, why in bad if why]
            if bad:
                ip, why = bad[0]
                raise _Failure(f"refused: {printable(name)} resolves to {ip}, a {why} address (collect does not "
                               f"fetch from private networks; --allow-private permits it)")
            host = ips[0]  # connect to the address that was checked, not to a name that could re-resolve
        return _GuardedStream(_within_budget(
            lambda t: self._inner.connect_tcp(host, port, t, local_address, socket_options), timeout))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _GuardedStream(_within_budget(
            lambda t: self._inner.connect_unix_socket(path, t, socket_options), timeout))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# ------------------------------------------------------------------------------------ HTTP layer


def _ssl_context() -> ssl.SSLContext:
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:  # as httpx does: a corporate CA bundle
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return httpcore.default_ssl_context()


class _Pools:
    """Connection pools (direct, and one per http(s) proxy from the environment), all budget-guarded.

    httpcore is used directly (not httpx.Client) because only it lets every socket operation be wrapped.
    """

    def __init__(self, workers: int, *, allow_private: bool = False):
        self._kw = {"ssl_context": _ssl_context(), "max_connections": workers, "max_keepalive_connections": workers,
                    "network_backend": _GuardedBackend()}
        self._direct = httpcore.ConnectionPool(**{**self._kw, "network_backend": _GuardedBackend(
            check_addresses=not allow_private)})
        self._proxies = {s: _proxy_url(s, u) for s, u in urllib.request.getproxies().items() if s in ("http", "https")}
        self._proxied: dict[str, httpcore.HTTPProxy] = {}
        self._lock = threading.Lock()

    def for_url(self, url: httpx.URL):
        proxy = self._proxies.get(url.scheme)
        if proxy is None or urllib.request.proxy_bypass(url.host):
            return self._direct
        with self._lock:
            if str(proxy) not in self._proxied:
                auth = tuple(proxy.userinfo.split(b":", 1)) if proxy.userinfo else None
                self._proxied[str(proxy)] = httpcore.HTTPProxy(
                    proxy_url=httpcore.URL(scheme=proxy.raw_scheme, host=proxy.raw_host, port=proxy.port, target=b"/"),
                    proxy_auth=auth, **self._kw)
            return self._proxied[str(proxy)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for pool in (self._direct, *self._proxied.values()):
            pool.close()


def _proxy_url(scheme: str, text: str) -> httpx.URL:
    url = httpx.URL(text if "://" in text else f"http://{text}")
    if url.scheme not in ("http", "https"):
        raise DataError(f"The {scheme}_proxy setting {printable(text)} is a {url.scheme} proxy; collect supports "
                        "only http:// and https:// proxies. Unset it or point it to an HTTP proxy.")
    return url


def _http_url(text: str, *, redirect: bool = False) -> httpx.URL:
    """Parse ``text``; anything but an http(s) URL with a host is refused before any request."""
    what = "redirect to" if redirect else "URL"
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _Failure(f"invalid {what} {printable(text)} ({printable(exc)})") from None
    if url.scheme not in ("http", "https"):
        if redirect:
            raise _Failure(f"redirect to {printable(text)} refused: only http:// and https:// redirects are followed")
        raise _Failure(f"not an http(s) URL: {printable(text)}; only http:// and https:// URLs are fetched")
    if not url.host:
        raise _Failure(f"{what} {printable(text)} has no host name")
    return url


def _redirect_target(current: httpx.URL, location: str, status: int) -> httpx.URL:
    if not location:
        raise _Failure(f"HTTP {status} redirect without a Location header")
    try:
        scheme = httpx.URL(location).scheme
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _Failure(f"invalid redirect to {printable(location)} ({printable(exc)})") from None
    if scheme and scheme not in ("http", "https"):  # judged as written (file:, data:, ftp:...), before joining
        raise _Failure(f"redirect to {printable(location)} refused: only http:// and https:// redirects are followed")
    return _http_url(str(current.join(location)), redirect=True)


def _header(response, name: bytes) -> str:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return ""


def _open(pools: _Pools, url: httpx.URL, timeout: float):
    headers = [(b"Host", url.netloc), *_REQUEST_HEADERS]
    if url.userinfo:  # credentials written in this very URL only: never forwarded to a redirect's host
        headers.append((b"Authorization", b"Basic " + base64.b64encode(f"{url.username}:{url.password}".encode())))
    target = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
    timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    return pools.for_url(url).stream("GET", target, headers=headers, extensions={"timeout": timeouts})


def _fetch(pools: _Pools, text: str, limits: _Limits) -> tuple[bytes, str, str]:
    """One attempt: (body, its sniffed extension, the server's content-type), following safe redirects."""
    url = _http_url(text)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            with _open(pools, url, limits.timeout) as r:
                if r.status in _REDIRECT_CODES:
                    url = _redirect_target(url, _header(r, b"location"), r.status)
                    continue
                if not 200 <= r.status < 300:
                    raise _Failure(f"HTTP {r.status}", retry=r.status == 429 or r.status >= 500)
                ctype = _header(r, b"content-type").split(";")[0].strip().lower()
                data, ext = _read_body(r, limits.max_bytes, ctype)
                return data, ext, ctype
        raise _Failure(f"too many redirects (more than {MAX_REDIRECTS})")
    except httpcore.ConnectTimeout:
        raise _Failure(f"timeout: could not connect within {limits.timeout:g} s", retry=True) from None
    except httpcore.TimeoutException:
        raise _Failure(f"timeout: the server sent nothing for {limits.timeout:g} s", retry=True) from None
    except httpcore.RemoteProtocolError as exc:  # includes 'server disconnected' and short bodies
        raise _Failure(f"connection failed (invalid or cut HTTP response: {printable(exc)})", retry=True) from None
    except (httpcore.NetworkError, httpcore.ProxyError) as exc:
        raise _Failure(f"connection failed ({type(exc).__name__}: {printable(exc)})", retry=True) from None
    except (httpcore.UnsupportedProtocol, httpcore.LocalProtocolError) as exc:
        raise _Failure(f"cannot request this URL ({type(exc).__name__}: {printable(exc)})") from None


def _read_body(r, max_bytes: int, ctype: str) -> tuple[bytes, str]:
    length = _header(r, b"content-length")
    if length.isascii() and length.isdigit() and int(length) > max_bytes:
        raise _Failure(f"too large: {int(length):,} bytes > cap of {max_bytes:,}")
    body, ext = bytearray(), None
    for chunk in r.iter_stream():
        body += chunk
        if len(body) > max_bytes:
            raise _Failure(f"too large: more than the cap of {max_bytes:,} bytes")
        if ext is None and len(body) >= _SNIFF_BYTES:
            ext = _sniff_or_fail(bytes(body[:_SNIFF_BYTES]), ctype)  # stop at once on HTML & co.
    return bytes(body), ext or _sniff_or_fail(bytes(body), ctype)


def _sniff_or_fail(head: bytes, ctype: str) -> str:
    ext = sniff_image_type(head)
    if ext is None:
        seen = printable(head[:_SNIFF_BYTES], 40) if head else "nothing (empty body)"
        raise _Failure(f"not an image: the content starts with {seen}, no JPEG/PNG/GIF/BMP/TIFF/WebP signature; "
                       f"the server's content-type is {printable(ctype or '(none)', 60)}")
    return ext


def _check_decodes(data: bytes, ext: str) -> None:
    """Keep only images whose pixels decode: a valid header followed by junk must not pass."""
    try:
        with _DECODE_SLOTS:
            load_rgb(data, max_pixels=DEFAULT_MAX_PIXELS)
    except ImageDecodeError as exc:
        raise _Failure(f"{_FORMAT[ext]} signature, but the image does not decode: {exc.reason}") from None
    except Exception as exc:  # a decoder bug must not end a 10k-URL run
        raise _Failure(f"{_FORMAT[ext]} signature, but decoding failed unexpectedly "
                       f"({type(exc).__name__}: {printable(exc)})") from None


@dataclass
class _Got:
    data: bytes
    ext: str
    notes: list


def _download(pools: _Pools, url: str, limits: _Limits) -> _Got:
    """Fetch, sniff and decode one URL within its budget, retrying transient failures; raises _Failure."""
    budget = _local.budget = _Budget(limits)
    attempt = 0
    try:
        while True:
            attempt += 1
            budget.new_attempt()
            try:
                data, ext, ctype = _fetch(pools, url, limits)
                _check_decodes(data, ext)
                return _Got(data, ext, _ok_notes(attempt, ctype, ext))
            except _Failure as f:
                pause = limits.backoff * 2 ** (attempt - 1)
                if f.retry and attempt < limits.retries and budget.remaining() > pause:
                    time.sleep(pause)
                    continue
                if f.retry and attempt < limits.retries:
                    f.reason += f"; no time left for another attempt within the {limits.deadline:g} s deadline"
                f.reason = f"{f.reason} (after {attempt} attempt{'s' if attempt > 1 else ''})"
                raise
    finally:
        _local.budget = None


def _ok_notes(attempt: int, ctype: str, ext: str) -> list:
    notes = [f"ok after {attempt} attempts"] if attempt > 1 else []
    if ctype not in _GENERIC_MIME and ctype not in _MIME[ext]:
        notes.append(f"the server's content-type is {printable(ctype, 60)} but the content is a valid "
                     f"{_FORMAT[ext]} image (kept: decided by content)")
    return notes


# ------------------------------------------------------------------------------ log and outcomes


@dataclass
class CollectResult:
    manifest: pd.DataFrame
    log: pd.DataFrame
    n_downloaded: int  # URLs downloaded ok in this run
    n_skipped: int  # URLs of the CSV already done by an earlier run (not requested again)


@dataclass(frozen=True)
class _Outcome:
    """What happened to one URL (shared by every input row listing it)."""

    status: str
    reason: str = ""
    path: str = ""
    hash: str = ""
    owner: tuple = ()  # duplicate: (row, url, label) of the row whose download of these bytes was kept


@dataclass(frozen=True)
class _Kept:
    """The file kept for one content hash, and the row whose label it was stored under."""

    path: str
    row: str
    url: str
    label: str


def _csv_text(columns, rows, header: bool) -> str:
    return csv_rows_text(columns, rows, header=header)  # spreadsheet-safe, like every CSV frugalvision writes


class _Log:
    """collect_log.csv: rewritten atomically at start, then appended and flushed one URL at a time."""

    def __init__(self, path: Path, columns: list, rows: list):
        self.path, self.columns, self.rows = path, columns, list(rows)
        write_text(path, _csv_text(columns, self.rows, header=True))
        self._fh = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()

    def append(self, rows: list) -> None:
        self._fh.write(_csv_text(self.columns, rows, header=False))  # one write per URL: no half row
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.extend(rows)

    def close(self) -> None:
        self._fh.close()


def _read_log(path: Path) -> list:
    """Rows of an earlier log; a last row cut by a killed run, or any malformed row, is dropped (redone)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = []
    with contextlib.suppress(csv.Error):
        for r in csv.DictReader(io.StringIO(text)):
            if None not in r and None not in r.values():
                rows.append({unescape_cell(k): unescape_cell(v) for k, v in r.items()})
    return rows


def _inside(out: Path, rel: str) -> bool:
    return bool(rel) and not Path(rel).is_absolute() and ".." not in Path(rel).parts and (out / rel).is_file()


def _previous(out: Path, urls: set, columns: list) -> tuple[dict, list, dict]:
    """URL -> outcome reused from an earlier run (file present), the rows kept for URLs not in this CSV, and
    content hash -> the row whose download was kept."""
    rows = [r for r in _read_log(out / LOG_NAME)
            if r.get("status") in ("ok", "duplicate", "conflict") and r.get("hash") and _inside(out, r.get("path", ""))]
    kept: dict[str, _Kept] = {}
    for r in rows:
        if r["status"] == "ok" and r["hash"] not in kept:
            kept[r["hash"]] = _Kept(r["path"], r["row"], r["url"], r["label"])
    known, carried = {}, []
    for r in rows:
        owner = kept.get(r["hash"])
        if r["url"] in urls:
            if r["url"] not in known and owner is not None:
                if owner.url == r["url"]:
                    known[r["url"]] = _Outcome("ok", "already downloaded by an earlier run", r["path"], r["hash"])
                else:
                    known[r["url"]] = _Outcome("duplicate", f"same content as {r['path']} (found by an earlier run)",
                                               r["path"], r["hash"], (owner.row, owner.url, owner.label))
        elif r["status"] in ("ok", "duplicate"):
            carried.append({**{c: r.get(c, "") for c in columns},
                            "reason": "kept from an earlier run; this URL is not in the current CSV"})
    return known, carried, kept


def _rows_for(group: list, outcome: _Outcome) -> list:
    """Log rows of every input row listing one URL: the first row's label wins, other labels are conflicts."""
    first, rows = group[0], []
    for r in group:
        folder, status = label_folder(r["label"]), outcome.status
        notes = [outcome.reason] if outcome.reason else []
        if r is not first and r["label"] != first["label"]:
            status = "conflict"
            notes = [(f"URL already listed in row {first['row']} with label {printable(first['label'], 60)}; "
                      f"this row's label {printable(r['label'], 60)} is not used. Give each URL one label and re-run")]
        elif outcome.status == "duplicate" and outcome.owner and r["label"] != outcome.owner[2]:
            row, url, label = outcome.owner
            status = "conflict"
            notes = [(f"same image as row {row} ({printable(url, 80)}), kept with label {printable(label, 60)}; "
                      f"this row's label {printable(r['label'], 60)} is not used. Give each image one label and "
                      f"re-run")]
        elif r is not first:
            notes.append(f"same URL as row {first['row']}")
        if folder != r["label"]:
            notes.append(f"label is not a plain folder name: folder {printable(folder, 80)} is used")
        rows.append({**r, "status": status, "reason": "; ".join(notes), "folder": folder,
                     "path": outcome.path, "hash": outcome.hash})
    return rows


def _store(fut, first: dict, out: Path, seen: dict) -> _Outcome:
    """Turn a finished download into an outcome; new content is written atomically under the folder of the label
    of ``first`` (the first input row listing the URL)."""
    try:
        got = fut.result()
    except _Failure as f:
        return _Outcome("failed", f.reason)
    except Exception as exc:  # a bug for one URL is reported on its row, not allowed to end the run
        return _Outcome("failed", f"unexpected error ({type(exc).__name__}: {printable(exc)})")
    h = hashlib.blake2b(got.data, digest_size=16).hexdigest()
    if h in seen:
        k = seen[h]
        return _Outcome("duplicate", f"same content as {k.path}", k.path, h, (k.row, k.url, k.label))
    rel = f"{label_folder(first['label'])}/{h[:16]}.{got.ext}"
    write_bytes(out / rel, got.data)
    seen[h] = _Kept(rel, first["row"], first["url"], first["label"])
    return _Outcome("ok", "; ".join(got.notes), rel, h)


# ------------------------------------------------------------------------------ folder hygiene


def _remove_stale_temps(out: Path) -> None:
    """Temporary files of a killed run (atomic_writer's, tagged with the dead writer's pid) are removed."""
    for folder in [out, *(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())]:
        remove_stale_temporaries(folder)


# ------------------------------------------------------------------------------------------ main


def _read_input(csv_path) -> tuple[list, list]:
    try:
        src = read_csv(csv_path)
    except UnicodeDecodeError:
        raise DataError(f"'{csv_path}' is not UTF-8 text; save it as UTF-8 CSV and try again.") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"'{csv_path}' is not a readable CSV ({exc}).") from None
    if "url" not in src.columns or "label" not in src.columns:
        raise DataError(f"'{csv_path}' needs columns 'url' and 'label' (has {list(src.columns)}).")
    clash = [c for c in src.columns if c in _OWN_COLUMNS]
    if clash:
        raise DataError(f"'{csv_path}' has column(s) {clash}, which collect writes itself in {LOG_NAME} and "
                        f"{MANIFEST_NAME}; rename or drop them.")
    extras = [c for c in src.columns if c not in ("url", "label")]
    rows = [{**r, "row": str(i), "url": r["url"].strip()} for i, r in enumerate(src.to_dict("records"), start=1)]
    return rows, extras


def collect(csv, out, *, workers: int = 8, retries: int = 3, timeout: float = 15.0, backoff: float = 0.5,
            max_bytes: int = 20 * 1024 * 1024, deadline: float = DEFAULT_DEADLINE,
            min_rate: float = DEFAULT_MIN_RATE, rate_grace: float = DEFAULT_RATE_GRACE,
            progress: bool = True, allow_private: bool = False) -> CollectResult:
    """Download every ``url`` of ``csv`` into ``out``; see the module docstring for what is guaranteed.

    ``timeout``: seconds one connect/read may stall; ``deadline``: seconds per URL, all attempts included;
    ``min_rate``: bytes/s an attempt must average once ``rate_grace`` seconds passed since its first byte
    (0 turns the check off); ``allow_private``: also fetch from loopback, private and link-local addresses.
    """
    limits = _Limits(retries, timeout, backoff, max_bytes, deadline, min_rate, rate_grace)
    if workers < 1:
        raise ValueError(f"collect: workers must be >= 1, got {workers}.")
    rows, extras = _read_input(csv)
    out = Path(out)
    columns = ["row", "url", "label", *extras, "status", "reason", "folder", "path", "hash"]
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r["url"], []).append(r)
    with run_folder(out, files=()):  # the lock only: re-runs reuse the log and manifest by design
        _remove_stale_temps(out)
        known, carried, seen = _previous(out, set(groups), columns)
        for url, o in known.items():  # this CSV's row numbers for the files it kept
            if o.status == "ok":
                seen[o.hash] = _Kept(o.path, groups[url][0]["row"], url, groups[url][0]["label"])
        log = _Log(out / LOG_NAME, columns,
                   carried + [row for url in groups if url in known for row in _rows_for(groups[url], known[url])])
        try:
            todo = [u for u in groups if u not in known]
            n_new = _download_all(todo, groups, limits, workers, out, seen, log, progress, allow_private)
        finally:
            log.close()
        return _finish(out, log, len(carried), extras, n_new, n_skipped=len(known))


def _download_all(todo, groups, limits, workers, out, seen, log, progress, allow_private=False) -> int:
    """Download ``todo`` concurrently; each URL is logged as soon as it is done. Returns how many were new."""
    from tqdm.auto import tqdm

    n_new = 0
    with _Pools(workers, allow_private=allow_private) as pools:
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = {pool.submit(_download, pools, url, limits): url for url in todo}
            for fut in tqdm(as_completed(futures), total=len(futures), desc="Downloading", unit="url",
                            disable=not progress):
                url = futures.pop(fut)  # drop our reference: the image bytes are freed once stored
                outcome = _store(fut, groups[url][0], out, seen)
                n_new += outcome.status == "ok"
                log.append(_rows_for(groups[url], outcome))
        finally:  # on Ctrl-C: start nothing new; running downloads end within their deadline
            pool.shutdown(wait=True, cancel_futures=True)
    return n_new


def _finish(out: Path, log: _Log, n_carried: int, extras: list, n_new: int, n_skipped: int) -> CollectResult:
    """Rewrite the log (earlier runs' rows first, then this CSV's in row order) and the manifest, atomically."""
    rows = log.rows[:n_carried] + sorted(log.rows[n_carried:], key=lambda r: int(r["row"]))
    others: dict[str, list] = {}  # content hash -> rows that gave the kept image another label
    for r in rows:
        if r["status"] == "conflict" and r["hash"] and r["reason"].startswith("same image as row"):
            others.setdefault(r["hash"], []).append(r["row"])
    for r in rows:
        if r["status"] == "ok" and r["hash"] in others and "same image with another label" not in r["reason"]:
            note = f"row(s) {', '.join(others[r['hash']])} list the same image with another label (conflict)"
            r["reason"] = "; ".join(x for x in (r["reason"], note) if x)
    write_text(out / LOG_NAME, _csv_text(log.columns, rows, header=True))
    table = pd.DataFrame(rows, columns=log.columns, dtype=str)
    manifest = table[table["status"] == "ok"][["path", "label", *extras, "url", "hash"]].reset_index(drop=True)
    write_text(out / MANIFEST_NAME, _csv_text(list(manifest.columns), manifest.to_dict("records"), header=True))
    return CollectResult(manifest, table, n_downloaded=n_new, n_skipped=n_skipped)
