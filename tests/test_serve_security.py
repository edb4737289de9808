"""The web app against hostile clients: uploads never reach the disk, CPU work never blocks the event loop,
only allowed Host names and same-site browsers are answered, and the page shows data as text.

Servers run in a thread of this process (uvicorn on a free 127.0.0.1 port), so the temporary directory
and the memory of the server are the test's own. Every load loop is bounded in count and time.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attack_corpus import HOSTILE_NAMES, safe_dirname
from browser import launch, serving, watch

MB = 1024 * 1024
BOUNDARY = "fvboundary7Ma4YWxkTrZu0gW"
CTYPE = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


# -- helpers -------------------------------------------------------------------------------------------
def part(field: str, filename: str, data: bytes = b"", ctype: str = "image/png") -> bytes:
    """The head of one multipart part followed by ``data`` (the caller adds the closing CRLF)."""
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n").encode() + data


def multipart(field: str, files: list[tuple[str, bytes]]) -> bytes:
    return b"".join(part(field, name, data) + b"\r\n" for name, data in files) + f"--{BOUNDARY}--\r\n".encode()


def huge_part_body(field: str, size: int):
    """A multipart body with one ``size``-byte file part, generated lazily (1 MB at a time)."""
    yield part(field, "huge.jpg", b"\xff\xd8")
    block = b"\xa5" * MB
    for _ in range(size // MB):
        yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def post(port: int, path: str, body, headers=None, chunked=False, timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={**CTYPE, **(headers or {})}, encode_chunked=chunked)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def _png(colour=(200, 30, 30), size=(96, 96)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _large_jpeg() -> bytes:
    """A 3000 x 2000 photo-sized JPEG of noise (~4.5 MB): expensive to decode, under the 8 MB limit."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (2000, 3000, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class DiskWatch:
    """Peak bytes of files in ``root`` — named ones and unnamed ones (Linux O_TMPFILE, which is how
    SpooledTemporaryFile rolls over) seen through this process's open file descriptors — and peak RSS."""

    def __init__(self, root: Path):
        self.root, self.peak, self.rss_peak = str(root), 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    def size(self) -> int:
        n = sum(p.stat().st_size for p in Path(self.root).rglob("*") if p.is_file())
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith(self.root):
                    n += os.stat(f"/proc/self/fd/{fd}").st_size
            except OSError:
                pass
        return n

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.size())
            self.rss_peak = max(self.rss_peak, self.rss())
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.size())


# -- fixtures ------------------------------------------------------------------------------------------
#: Request limit 16 x 8 MB + 1 MB = 129 MB: a 100 MB body to /predict is read to its end.
LIMITS = {"max_upload_bytes": 8 * MB, "max_files": 16}


@pytest.fixture(scope="module")
def app(trained):
    from frugalvision.serve import Limits, create_app

    return create_app(trained[0], limits=Limits(**LIMITS), workers=2, queue=8)


@pytest.fixture(scope="module")
def port(app):
    with serving(app) as p:
        yield p


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.fixture(scope="module")
def circle_png(shapes_dir) -> bytes:
    return (shapes_dir / "circle" / "circle_000.png").read_bytes()


# -- uploads: streamed, counted, never on disk ------------------------------------------------------
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
@pytest.mark.parametrize("route,field", [("/predict", "files"), ("/explain", "file")])
def test_100mb_upload_is_refused_without_touching_the_disk(port, tmp_path, monkeypatch, route, field, chunked):
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where Starlette's SpooledTemporaryFile would go
    size = 100 * MB
    headers = {} if chunked else {"Content-Length": str(sum(len(c) for c in huge_part_body(field, size)))}
    rss_before = DiskWatch.rss()
    t0 = time.perf_counter()
    with DiskWatch(spool) as watch:
        status, _, body = post(port, route, huge_part_body(field, size), headers, chunked=chunked)
    took = time.perf_counter() - t0
    assert status == 413, body
    assert b"larger than the limit of 8 MB" in body
    assert watch.peak <= 4096, f"{watch.peak} bytes written to the temporary directory"
    # Held in memory: at most the 8 MB per-file limit plus buffers, not the 100 MB sent.
    assert watch.rss_peak - rss_before < 48 * MB, (watch.rss_peak - rss_before) / MB
    assert took < 30
    assert post(port, "/predict", multipart("files", [("ok.png", _png())]))[0] == 200  # still serving


def test_request_over_the_total_limit_is_cut_off_at_the_limit(trained):
    """A chunked body has no Content-Length to check up front: it is counted as it arrives."""
    from frugalvision.serve import Limits, create_app

    app = create_app(trained[0], limits=Limits(max_upload_bytes=1 * MB, max_files=2), workers=1)
    assert app.state.budget.limit >= 3 * MB
    with serving(app) as p:
        files = [("files", b"\xff\xd8" + b"0" * (MB // 2))] * 8  # 4 MB in 8 parts, over the 3 MB request limit
        body = (part("files", f"{i}.jpg", data) + b"\r\n" for i, (_, data) in enumerate(files))
        status, _, text = post(p, "/predict", body, chunked=True)
        assert status in (400, 413), text  # 400: more than 2 files, noticed first; never read to the end
        many = multipart("other", [("x", b"0" * MB)] * 4)  # 4 MB of ignored fields: still counted
        status, _, text = post(p, "/predict", iter([many]), chunked=True)
        assert status == 413 and b"Request larger than 3 MB" in text


def test_one_oversize_file_fails_only_itself(port, circle_png):
    def body():  # chunked, generated: good, 9 MB (over 8), good
        yield part("files", "a.png", circle_png) + b"\r\n"
        yield part("files", "big.jpg", b"\xff\xd8")
        for _ in range(9):
            yield b"\x00" * MB
        yield b"\r\n" + part("files", "b.png", _png((30, 200, 30))) + b"\r\n" + f"--{BOUNDARY}--\r\n".encode()

    status, _, raw = post(port, "/predict", body(), chunked=True)
    assert status == 200, raw
    import json

    a, big, b = json.loads(raw)["results"]
    assert big == {"filename": "big.jpg", "error": "upload larger than the limit of 8 MB", "status": 413}
    assert a["filename"] == "a.png" and a["top"][0]["label"] == "circle"
    assert b["filename"] == "b.png" and len(b["top"]) == 3


@pytest.mark.parametrize("headers,body,status,words", [
    ({"Content-Type": "application/json"}, b"{}", 415, "multipart/form-data"),
    ({"Content-Type": "multipart/form-data"}, b"--x--\r\n", 400, "no boundary"),
    (CTYPE, part("files", "a.png", b"abc"), 400, "ended before its closing boundary"),
    (CTYPE, multipart("image", [("a.png", b"abc")]), 400, "No 'files' file part"),
    (CTYPE, b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: attachment\r\n\r\nabc\r\n--"
     + BOUNDARY.encode() + b"--\r\n", 400, "form-data"),
])
def test_malformed_multipart_bodies_get_a_4xx(client, headers, body, status, words):
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == status and words in r.json()["detail"], r.text


def test_stalled_upload_gets_408(trained):
    from frugalvision.serve import Limits, create_app

    app = create_app(trained[0], limits=Limits(upload_idle_timeout=0.5), workers=1)
    with serving(app) as p, socket.create_connection(("127.0.0.1", p), timeout=10) as s:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                  f"boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        head = part("files", "slow.png", b"\x89PNG")
        s.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")  # ... and nothing more
        t0 = time.perf_counter()
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and time.perf_counter() - t0 < 5


def test_upload_memory_budget_answers_503(trained):
    from fastapi.testclient import TestClient

    from frugalvision.serve import Limits, create_app

    app = create_app(trained[0], limits=Limits(max_upload_bytes=4 * MB, max_buffered_bytes=1 * MB), workers=1)
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/predict", files={"files": ("a.jpg", b"\xff\xd8" + b"0" * (2 * MB), "image/jpeg")})
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert app.state.budget.used == 0  # given back
        assert c.post("/predict", files={"files": ("a.png", _png(), "image/png")}).status_code == 200


# -- CPU work off the event loop, bounded queue ----------------------------------------------------------
def test_health_and_small_requests_stay_fast_while_big_requests_run(port, circle_png):
    big = multipart("files", [(f"{i}.jpg", _large_jpeg()) for i in range(1)] * 8)  # 8 x ~4.5 MB
    small = multipart("files", [("small.png", circle_png)])
    done = []

    def heavy():
        done.append(post(port, "/predict", big, timeout=120)[0])

    threads = [threading.Thread(target=heavy) for _ in range(3)]
    for t in threads:
        t.start()
    health, small_ms = [], []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + 90
    for i in range(2000):  # bounded: ~20 ms apart, at most 90 s
        if not any(t.is_alive() for t in threads) or time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        conn.request("GET", "/health")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        health.append(time.perf_counter() - t0)
        if i % 10 == 5:
            t0 = time.perf_counter()
            conn.request("POST", "/predict", body=small, headers=CTYPE)
            r = conn.getresponse()
            r.read()
            assert r.status == 200
            small_ms.append(time.perf_counter() - t0)
        time.sleep(0.02)
    conn.close()
    for t in threads:
        t.join(timeout=60)
    assert done == [200, 200, 200]
    assert len(health) >= 10 and small_ms
    print(f"/health under load: max {max(health) * 1000:.0f} ms, median {np.median(health) * 1000:.0f} ms, "
          f"n={len(health)}; small /predict max {max(small_ms) * 1000:.0f} ms")
    assert max(health) < 0.2
    assert max(small_ms) < 2.0  # one image per busy request ahead of it, not whole 8-image requests


def test_full_queue_answers_503_with_retry_after(trained, monkeypatch):
    from fastapi.testclient import TestClient

    import frugalvision.serve.app as serve_app
    from frugalvision.serve import create_app

    gate, entered = threading.Event(), threading.Semaphore(0)

    def blocked(model, data, *, limits, cams=False, lock=None):
        entered.release()
        gate.wait(10)
        return {"top": [{"label": "circle", "probability": 1.0}]}

    monkeypatch.setattr(serve_app, "analyze", blocked)
    app = create_app(trained[0], workers=1, queue=1)
    files = {"files": ("a.png", _png(), "image/png")}
    with TestClient(app, base_url="http://127.0.0.1") as c:
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(c.post("/predict", files=files).status_code))
                   for _ in range(2)]
        for t in threads:
            t.start()
        assert entered.acquire(timeout=10)  # one running, ...
        for _ in range(200):  # ... one waiting
            if app.state.pool.admitted == 2:
                break
            time.sleep(0.02)
        assert app.state.pool.admitted == 2
        r = c.post("/predict", files=files)
        assert r.status_code == 503 and "busy" in r.json()["detail"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert c.get("/health").status_code == 200
        gate.set()
        for t in threads:
            t.join(timeout=20)
        assert codes == [200, 200]
        assert c.post("/predict", files=files).status_code == 200


# -- Host allow-list and Origin check --------------------------------------------------------------------
@pytest.mark.parametrize("host,status", [
    ("127.0.0.1:8000", 200), ("localhost", 200), ("LOCALHOST:1234", 200), ("[::1]:8000", 200), ("[::1]", 200),
    ("[0:0:0:0:0:0:0:1]:80", 200),
    ("evil.example", 400), ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400), ("localhost.", 400),
    ("[::1", 400), ("::1", 400), ("[::2]:8000", 400), ("localhost:80:80", 400), ("", 400), ("a b", 400),
])
def test_host_allow_list(client, host, status):
    r = client.get("/health", headers={"Host": host})
    assert r.status_code == status, r.text
    if status == 400:
        assert "Host header not allowed" in r.json()["detail"]


def test_starlette_trusted_host_and_ours_on_ipv6():
    """Starlette's TrustedHostMiddleware before 0.47 read ``[::1]:8000`` as host ``[``; ours parses it."""
    from frugalvision.serve.guard import parse_authority

    assert parse_authority("[::1]:8000") == ("::1", "8000")
    assert parse_authority("[::1]") == ("::1", None)
    assert parse_authority("Example.ORG:443") == ("example.org", "443")
    assert parse_authority("[::1]:8000x") is None and parse_authority("[zz::1]") is None


def test_allow_host_option_and_bind_host(trained):
    from fastapi.testclient import TestClient

    from frugalvision.serve import allowed_hosts, create_app

    assert allowed_hosts() == ["127.0.0.1", "localhost", "::1"]
    assert allowed_hosts(["Photos.lan"], bind="0.0.0.0") == ["127.0.0.1", "localhost", "::1", "photos.lan"]
    assert allowed_hosts([], bind="192.168.1.5")[-1] == "192.168.1.5"
    assert allowed_hosts([], bind="::") == ["127.0.0.1", "localhost", "::1"]
    assert allowed_hosts([], bind="::1") == ["127.0.0.1", "localhost", "::1"]
    with pytest.raises(ValueError):
        allowed_hosts(["http://evil.example/"])
    app = create_app(trained[0], allowed_hosts=allowed_hosts(["photos.lan"], bind="192.168.1.5"), workers=1)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        for host, status in (("photos.lan:8000", 200), ("192.168.1.5:8000", 200), ("[::1]", 200),
                             ("other.lan", 400)):
            assert c.get("/health", headers={"Host": host}).status_code == status, host


@pytest.mark.parametrize("headers,status", [
    ({}, 200),                                                     # curl, scripts: no Origin
    ({"Origin": "http://127.0.0.1:8000"}, 200),                    # the page itself
    ({"Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-site"}, 200),
    ({"Origin": "http://[::1]:8000", "Sec-Fetch-Site": "same-origin"}, 200),
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "https://localhost.evil.example"}, 403),
    ({"Origin": "http://127.0.0.1.evil.example:8000"}, 403),
    ({"Origin": "null"}, 403),                                     # sandboxed iframe, file:// page
    ({"Origin": "http://user@127.0.0.1:8000"}, 403),
    ({"Sec-Fetch-Site": "cross-site"}, 403),                       # browsers that omit Origin
    ({"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "cross-site"}, 403),
])
def test_cross_origin_posts_are_refused(client, headers, status):
    for route, field in (("/predict", "files"), ("/explain", "file")):
        r = client.post(route, files={field: ("a.png", _png(), "image/png")}, headers=headers)
        assert r.status_code == status, (route, headers, r.text)
        if status == 403:
            assert "not accepted" in r.json()["detail"]


def test_cross_origin_get_is_answered_but_not_readable(client):
    r = client.get("/model", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# -- docs, headers, page ---------------------------------------------------------------------------------
OUTSIDE = re.compile(r"(?:https?:)?//(?!(?:127\.0\.0\.1|localhost|\[::1\])[:/])[A-Za-z0-9.-]+", re.IGNORECASE)


def test_docs_are_off_by_default_and_the_schema_is_served(client):
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["files"] and body["properties"]["files"]["items"]["format"] == "binary"
    body = spec["paths"]["/explain"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"]["format"] == "binary"
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "403", "413", "503"} <= set(responses)
    assert "cams_note" in str(spec["paths"]["/explain"]["post"]["responses"]["200"])


def test_api_docs_page_needs_no_network(trained):
    from fastapi.testclient import TestClient

    from frugalvision.serve import create_app

    app = create_app(trained[0], api_docs=True, workers=1)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.get("/docs")
        assert r.status_code == 200 and "POST /predict" in r.text and "/openapi.json" in r.text
        assert "<script" not in r.text
        assert not OUTSIDE.findall(r.text), OUTSIDE.findall(r.text)
        assert "default-src 'self'" in r.headers["content-security-policy"]


def test_security_headers_and_no_inline_script(client):
    r = client.get("/")
    csp = r.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "img-src 'self' data:", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-frame-options"] == "DENY"
    assert not re.search(r"<script(?![^>]*\bsrc=)", r.text) and "style=" not in r.text
    assert not re.search(r"\son[a-z]+=", r.text) and not OUTSIDE.findall(r.text)
    js = client.get("/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js.text, sink
    fav = client.get("/favicon.ico")
    assert fav.status_code == 200 and fav.headers["content-type"] == "image/svg+xml"
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/health").headers["x-frame-options"] == "DENY"


def test_report_is_served_under_a_script_free_policy(trained, tmp_path):
    from importlib import resources

    from fastapi.testclient import TestClient

    from frugalvision.serve import create_app
    from frugalvision.serve.guard import REPORT_CSP

    template = resources.files("frugalvision.reporting").joinpath("templates/report.html").read_text()
    assert "<script" not in template.lower() and not OUTSIDE.findall(template)  # REPORT_CSP allows no script
    report = tmp_path / "report.html"
    report.write_text("<!doctype html><style>body{color:rgb(1, 2, 3)}</style><p>ok</p>")
    app = create_app(trained[0], report_path=report, workers=1)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.get("/report")
        assert r.status_code == 200 and r.headers["content-security-policy"] == REPORT_CSP
        assert "script-src" not in REPORT_CSP and "default-src 'none'" in REPORT_CSP


# -- the page in Chromium --------------------------------------------------------------------------------
INJECTED_JS = """() => {
  const bad = document.querySelectorAll('#results script, #results svg, #results iframe, #results a, '
    + '#results img:not([src^="data:image/png;base64,"]), #model img, #model script, #model svg');
  const handlers = Array.from(document.querySelectorAll('*'))
    .filter(e => Array.from(e.attributes).some(a => a.name.startsWith('on')));
  return bad.length + handlers.length;
}"""
SETTLED_JS = """n => document.querySelectorAll('#results .card').length === n
  && !Array.from(document.querySelectorAll('#results .card p.muted'))
       .some(p => /^(Waiting|Analysing)/.test(p.textContent))"""
OVERFLOW_JS = "() => document.documentElement.scrollWidth - window.innerWidth"


def _report_png() -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(_png((10, 20, 30), (40, 30))).decode()


@pytest.mark.browser
def test_page_in_chromium_hostile_names_narrow_screens_and_maps_note(trained, circle_png, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    import frugalvision.serve.app as serve_app
    from frugalvision.serve import create_app

    report = tmp_path / "report.html"  # self-contained like report.html: inline style, data: image, no script
    report.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>r</title><style>'
                      f'body{{color:rgb(1, 2, 3)}}</style></head><body><p>report</p><img alt="x" '
                      f'src="{_report_png()}"></body></html>')
    app = create_app(trained[0], report_path=report, workers=2)
    names = [safe_dirname(n) + ".png" for n in HOSTILE_NAMES]
    with serving(app) as port, sync_playwright() as p:
        base = f"http://127.0.0.1:{port}"
        browser = launch(p)
        page = browser.new_page(viewport={"width": 390, "height": 844})
        dialogs, errors, failed = watch(page)

        page.goto(base + "/")
        page.wait_for_function("() => document.getElementById('model').textContent.startsWith('Model:')")
        page.set_input_files("#files", files=[{"name": n, "mimeType": "image/png", "buffer": circle_png}
                                              for n in names])
        page.wait_for_function(SETTLED_JS, arg=len(names), timeout=60_000)
        shown = page.eval_on_selector_all("#results .card h3", "hs => hs.map(h => h.textContent)")
        assert sorted(shown) == sorted(names)  # the names, as text, exactly
        assert page.locator("#results .card .err").count() == 0
        assert page.locator("td.label").count() == 3 * len(names)
        assert page.locator("#results figure").count() == 3 * len(names)
        help_line = "The coloured map shows which parts of the image pushed the model towards this label."
        assert page.get_by_text(help_line).count() == len(names)
        assert page.evaluate(INJECTED_JS) == 0
        assert page.evaluate(OVERFLOW_JS) <= 0
        page.set_viewport_size({"width": 360, "height": 740})
        assert page.evaluate(OVERFLOW_JS) <= 0

        # After the inference rewrite, a model without maps answers cams=[] and cams_note: labels + the note.
        note = 'maps need a linear head <img src=x onerror=alert("note")>'
        labels = [safe_dirname(n) for n in HOSTILE_NAMES[:3]]
        monkeypatch.setattr(serve_app, "analyze", lambda model, data, *, limits, cams=False, lock=None: {
            "top": [{"label": lab, "probability": 0.5 - 0.1 * i} for i, lab in enumerate(labels)],
            "cams": [], "cams_note": note})
        page.set_input_files("#files", files=[{"name": "no-maps.png", "mimeType": "image/png", "buffer": circle_png}])
        page.wait_for_function(SETTLED_JS, arg=len(names) + 1, timeout=30_000)
        card = page.locator("#results .card").first
        assert card.locator("td.label").evaluate_all("tds => tds.map(t => t.textContent)") == labels
        assert card.locator(".cams-note").text_content() == f"No maps for this model: {note}."
        assert card.locator("figure").count() == 0 and page.evaluate(INJECTED_JS) == 0
        assert page.evaluate(OVERFLOW_JS) <= 0
        monkeypatch.undo()

        # Hostile class names in /model are shown as text too.
        page2 = browser.new_page(viewport={"width": 390, "height": 844})
        page2.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page2.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page2.route("**/model", lambda route: route.fulfill(json={
            "backbone": HOSTILE_NAMES[2], "classes": list(HOSTILE_NAMES), "report": "javascript:alert(7)"}))
        page2.goto(base + "/")
        page2.wait_for_function("() => document.getElementById('model').textContent.startsWith('Model:')")
        text = page2.locator("#model").text_content()
        assert all(n in text for n in HOSTILE_NAMES) and page2.evaluate(INJECTED_JS) == 0
        assert page2.locator("#model a").get_attribute("href") == "/report"
        assert page2.evaluate(OVERFLOW_JS) <= 0

        # The report renders under its CSP: inline style applied, data: image shown, nothing refused.
        page.goto(base + "/report")
        assert page.evaluate("getComputedStyle(document.body).color") == "rgb(1, 2, 3)"
        assert page.evaluate("document.images[0].naturalWidth") == 40
        page.wait_for_timeout(200)
        browser.close()
    assert dialogs == [] and errors == [], (dialogs, errors)
    assert failed == [], failed  # no 404 (favicon) and no refused request
