"""collect against a local HTTP server started by the test: every failure kind logged; re-runs resumable."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from PIL import Image

from frugalvision.cli.main import main
from frugalvision.data.collect import collect, sniff_image_type


def _img(colour, fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, format=fmt)
    return buf.getvalue()


RED, BLUE = _img((200, 0, 0)), _img((0, 0, 200), "PNG")


class Handler(BaseHTTPRequestHandler):
    hits: dict = {}

    def log_message(self, *a):  # keep test output clean
        pass

    def _send(self, code, body=b"", ctype="image/jpeg", length=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path == "/red.jpg":
            self._send(200, RED)
        elif self.path == "/blue.png":
            self._send(200, BLUE, "image/png")
        elif self.path == "/copy-of-red.jpg":
            self._send(200, RED)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/blue.png")
            self.end_headers()
        elif self.path == "/missing.jpg":
            self._send(404, b"nope", "text/plain")
        elif self.path == "/page.jpg":
            self._send(200, b"<html><body>not an image</body></html>", "text/html")
        elif self.path == "/liar.jpg":
            self._send(200, b"<html>served with an image content-type</html>", "image/jpeg")
        elif self.path == "/slow.jpg":
            time.sleep(2.0)
            self._send(200, RED)
        elif self.path == "/huge.jpg":
            self._send(200, b"\xff\xd8\xff" + b"0" * (3 * 1024 * 1024))
        elif self.path == "/flaky.jpg":
            if Handler.hits[self.path] == 1:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, _img((0, 200, 0)))
        else:
            self._send(404, b"", "text/plain")


@pytest.fixture()
def server():
    Handler.hits = {}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_sniffing():
    assert sniff_image_type(RED[:16]) == "jpg" and sniff_image_type(BLUE[:16]) == "png"
    assert sniff_image_type(b"<html>") is None


def test_collect_logs_every_failure_and_resumes(server, tmp_path):
    urls = {"red.jpg": "a", "blue.png": "b", "copy-of-red.jpg": "a", "moved": "b", "missing.jpg": "a",
            "page.jpg": "a", "liar.jpg": "b", "slow.jpg": "a", "huge.jpg": "b", "flaky.jpg": "a"}
    csv = tmp_path / "urls.csv"
    pd.DataFrame({"url": [f"{server}/{u}" for u in urls], "label": list(urls.values()),
                  "source": ["web"] * len(urls)}).to_csv(csv, index=False)
    res = collect(csv, tmp_path / "out", workers=4, retries=2, timeout=0.5, backoff=0.05, max_bytes=1024 * 1024,
                  progress=False)
    log = res.log.set_index(res.log["url"].str.rsplit("/", n=1).str[1])
    assert log.loc["red.jpg", "status"] == "ok" and log.loc["blue.png", "status"] == "ok"
    assert log.loc["copy-of-red.jpg", "status"] == "duplicate" or log.loc["red.jpg", "status"] == "duplicate"
    assert log.loc["moved", "status"] == "duplicate"  # the redirect lands on blue.png's bytes
    assert "HTTP 404" in log.loc["missing.jpg", "reason"]
    assert "content-type is 'text/html'" in log.loc["page.jpg", "reason"]
    assert "not an image" in log.loc["liar.jpg", "reason"]
    assert "timeout" in log.loc["slow.jpg", "reason"] and "2 attempts" in log.loc["slow.jpg", "reason"]
    assert "too large" in log.loc["huge.jpg", "reason"]
    assert log.loc["flaky.jpg", "status"] == "ok" and "after 2 attempts" in log.loc["flaky.jpg", "reason"]
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")
                   if p.suffix in (".jpg", ".png"))
    assert len(files) == 3  # red, blue, flaky: no duplicates written
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert len(manifest) == 3 and set(manifest["source"]) == {"web"}
    # Re-run: nothing downloaded again.
    Handler.hits = {}
    again = collect(csv, tmp_path / "out", workers=4, retries=2, timeout=0.5, backoff=0.05,
                    max_bytes=1024 * 1024, progress=False)
    assert again.n_downloaded == 0 and again.n_skipped == 5
    assert "/red.jpg" not in Handler.hits and "/blue.png" not in Handler.hits


def test_collect_cli(server, tmp_path, capsys):
    csv = tmp_path / "u.csv"
    pd.DataFrame({"url": [f"{server}/red.jpg", f"{server}/missing.jpg"], "label": ["a", "b"]}).to_csv(csv, index=False)
    assert main(["collect", str(csv), "--out", str(tmp_path / "o"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 downloaded" in out and "1 failed" in out and "HTTP 404" in out
