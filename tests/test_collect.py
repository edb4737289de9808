"""collect against a local HTTP server started by the test: every failure kind logged; re-runs resumable."""

from __future__ import annotations

import csv as csvmod
import io
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from frugalvision.cli.main import main
from frugalvision.data.collect import MAX_REDIRECTS, collect, sniff_image_type
from frugalvision.data.decode import load_rgb


def _img(colour, fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, format=fmt)
    return buf.getvalue()


RED, BLUE = _img((200, 0, 0)), _img((0, 0, 200), "PNG")
_noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
_buf = io.BytesIO()
_noise.save(_buf, format="PNG")
NOISY_PNG = _buf.getvalue()  # incompressible: cutting it removes pixel data, not just the end marker
PNG_SIG = b"\x89PNG\r\n\x1a\n"
HTML = b"<html><body>not an image</body></html>"


def _numbered(n: int) -> bytes:
    """A distinct small PNG per n (distinct content, so no two are duplicates)."""
    return _img((n % 256, (n * 37) % 256, 100), "PNG")


class Handler(BaseHTTPRequestHandler):
    hits: dict = {}
    lock = threading.Lock()

    def log_message(self, *a):  # keep test output clean
        pass

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _trickle(self, data: bytes, pause=0.2):
        """Send ``data`` one byte at a time; bounded, and stops when the client hangs up."""
        for i in range(len(data)):
            try:
                self.wfile.write(data[i:i + 1])
            except OSError:
                return
            time.sleep(pause)

    def _send(self, code, body=b"", ctype="image/jpeg", length=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        with Handler.lock:
            Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path.startswith(("/n/", "/slow/")):  # /n/<k>.png: distinct images; /slow/: each takes 0.3 s
            if self.path.startswith("/slow/"):
                time.sleep(0.3)
            self._send(200, _numbered(int(self.path.rsplit("/", 1)[1].split(".")[0])), "image/png")
        elif self.path == "/trickle-body.png":  # headers at once, then a PNG signature + zeros at 5 B/s
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "128")
            self.end_headers()
            self._trickle(PNG_SIG + bytes(120))
        elif self.path == "/trickle-head.png":  # even the status line and headers arrive at 5 B/s
            self._trickle(b"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"p" * 40 + b"\r\n\r\n")
        elif self.path == "/trickle-steady.png":  # 20 B/s: steady, but far below any sane minimum rate
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self._trickle(PNG_SIG + bytes(200), pause=0.05)
        elif self.path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif self.path == "/to-data":
            self._redirect("data:image/png;base64," + __import__("base64").b64encode(BLUE).decode())
        elif self.path == "/to-ftp":
            self._redirect("ftp://127.0.0.1/blue.png")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/png-as-html":
            self._send(200, NOISY_PNG, "text/html; charset=utf-8")
        elif self.path == "/html-as-png":
            self._send(200, HTML, "image/png")
        elif self.path == "/png-junk":
            self._send(200, PNG_SIG + bytes(range(256)) * 2, "image/png")
        elif self.path == "/png-cut":
            self._send(200, NOISY_PNG[: len(NOISY_PNG) // 2], "image/png")
        elif self.path == "/gif-junk":
            self._send(200, b"GIF89a" + b"\xff" * 300, "image/gif")
        elif self.path == "/red.jpg":
            self._send(200, RED)
        elif self.path == "/blue.png":
            self._send(200, BLUE, "image/png")
        elif self.path in ("/copy-of-red.jpg", "/third-red.jpg"):
            self._send(200, RED)
        elif self.path == "/to-loopback":  # a redirect to another loopback address (127.0.0.2), same server
            self._redirect(f"http://127.0.0.2:{self.server.server_address[1]}/red.jpg")
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


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients hanging up on tricklers is expected
        pass


@pytest.fixture()
def server():
    Handler.hits = {}
    srv = QuietServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
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
    res = collect(csv, tmp_path / "out", allow_private=True, workers=4, retries=2, timeout=0.5, backoff=0.05,
                  max_bytes=1024 * 1024, progress=False)
    log = res.log.set_index(res.log["url"].str.rsplit("/", n=1).str[1])
    # Same bytes at two URLs: whichever finishes first is kept (rows are logged as they finish).
    assert sorted(log.loc[["red.jpg", "copy-of-red.jpg"], "status"]) == ["duplicate", "ok"]
    assert sorted(log.loc[["blue.png", "moved"], "status"]) == ["duplicate", "ok"]  # the redirect lands on blue.png
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
    again = collect(csv, tmp_path / "out", allow_private=True, workers=4, retries=2, timeout=0.5, backoff=0.05,
                    max_bytes=1024 * 1024, progress=False)
    assert again.n_downloaded == 0 and again.n_skipped == 5
    assert "/red.jpg" not in Handler.hits and "/blue.png" not in Handler.hits and "/moved" not in Handler.hits


def test_collect_cli(server, tmp_path, capsys):
    csv = tmp_path / "u.csv"
    pd.DataFrame({"url": [f"{server}/red.jpg", f"{server}/missing.jpg"], "label": ["a", "b"]}).to_csv(csv, index=False)
    assert main(["collect", str(csv), "--out", str(tmp_path / "o"), "-q", "--allow-private"]) == 0
    out = capsys.readouterr().out
    assert "1 downloaded" in out and "1 failed" in out and "HTTP 404" in out


# ---------------------------------------------------------------------------- hostile servers


def _write_csv(path, rows, extra=None):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csvmod.writer(fh)
        w.writerow(["url", "label", *([extra] if extra else [])])
        w.writerows(rows)
    return path


def _run(server, tmp_path, paths, label="a", **kw):
    csv = _write_csv(tmp_path / "urls.csv", [(f"{server}{p}", label) for p in paths])
    kw = {"workers": 4, "retries": 2, "timeout": 2.0, "backoff": 0.05, "progress": False, **kw}
    res = collect(csv, tmp_path / "out", allow_private=True, **kw)
    return res, res.log.set_index(res.log["url"].str.replace(server, "", regex=False))


def _images(out: Path):
    """Every file under out except our own csv files and the lock (temporaries included)."""
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.csv", "collect_log.csv",
                                                                            ".frugalvision.lock"))


def test_tricklers_are_cut_at_the_deadline(server, tmp_path):
    # The per-read timeout (5 s) never fires at 5 B/s; only the whole-transfer deadline (2 s) can stop them.
    t0 = time.monotonic()
    res, log = _run(server, tmp_path, ["/trickle-body.png", "/trickle-head.png"], timeout=5.0, retries=3,
                    deadline=2.0, min_rate=0)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0 + 1.0, f"workers held for {elapsed:.1f} s with a 2 s deadline"
    for path in ("/trickle-body.png", "/trickle-head.png"):
        assert log.loc[path, "status"] == "failed" and "deadline exceeded" in log.loc[path, "reason"]
        assert Handler.hits[path] == 1  # the deadline covers retries: none is started after it
    assert _images(tmp_path / "out") == [] and res.manifest.empty


def test_too_slow_average_rate_is_aborted_after_the_grace(server, tmp_path):
    t0 = time.monotonic()
    _, log = _run(server, tmp_path, ["/trickle-steady.png"], deadline=30.0, min_rate=1000, rate_grace=0.5)
    assert time.monotonic() - t0 < 2.5
    assert log.loc["/trickle-steady.png", "status"] == "failed"
    reason = log.loc["/trickle-steady.png", "reason"]
    assert "too slow" in reason and "below the minimum of 1,000 B/s" in reason


def test_redirects_only_to_http_and_capped(server, tmp_path):
    _, log = _run(server, tmp_path, ["/to-file", "/to-data", "/to-ftp", "/loop", "/moved"])
    assert "redirect to 'file:///etc/passwd' refused" in log.loc["/to-file", "reason"]
    assert "redirect to 'data:image/png" in log.loc["/to-data", "reason"] and "refused" in log.loc["/to-data", "reason"]
    assert "redirect to 'ftp://" in log.loc["/to-ftp", "reason"]
    assert "too many redirects" in log.loc["/loop", "reason"] and Handler.hits["/loop"] == MAX_REDIRECTS + 1
    for p in ("/to-file", "/to-data", "/to-ftp"):
        assert log.loc[p, "status"] == "failed" and log.loc[p, "path"] == ""
    assert log.loc["/moved", "status"] == "ok"  # a relative http redirect is still followed
    assert len(_images(tmp_path / "out")) == 1 and "root:" not in (tmp_path / "out" / "collect_log.csv").read_text()


def test_content_type_lies_are_decided_by_content(server, tmp_path):
    _, log = _run(server, tmp_path, ["/png-as-html", "/html-as-png"])
    kept, lie = log.loc["/png-as-html"], log.loc["/html-as-png"]
    assert kept["status"] == "ok" and kept["path"].endswith(".png")
    assert "'text/html'" in kept["reason"] and "valid PNG" in kept["reason"]
    assert lie["status"] == "failed" and "content-type is 'image/png'" in lie["reason"]
    assert "starts with '<html><body>not '" in lie["reason"] and lie["path"] == ""
    assert len(_images(tmp_path / "out")) == 1


def test_image_must_decode_fully(server, tmp_path):
    paths = ["/png-junk", "/png-cut", "/gif-junk"]
    res, log = _run(server, tmp_path, paths)
    for p in paths:
        assert log.loc[p, "status"] == "failed", p
        assert "signature, but the image does not decode" in log.loc[p, "reason"], log.loc[p, "reason"]
    assert "PNG signature" in log.loc["/png-junk", "reason"] and "truncated" in log.loc["/png-cut", "reason"]
    assert _images(tmp_path / "out") == [] and res.manifest.empty  # not even a temporary file


def test_duplicate_urls_keep_their_rows_and_conflicts_are_reported(server, tmp_path):
    red, blue = f"{server}/red.jpg", f"{server}/blue.png"
    csv = _write_csv(tmp_path / "urls.csv", [(red, "a", "s1"), (blue, "b", "s1"), (red, "a", "s2"), (red, "b", "s3")],
                     extra="source")
    for run in range(2):  # the second run must keep every row (it used to drop the ok one)
        res = collect(csv, tmp_path / "out", allow_private=True, workers=2, progress=False)
        manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
        assert sorted(zip(manifest["url"], manifest["label"], manifest["source"])) == \
            sorted([(red, "a", "s1"), (red, "a", "s2"), (blue, "b", "s1")])
        assert Handler.hits["/red.jpg"] == 1 and Handler.hits["/blue.png"] == 1  # one request per URL, ever
        log = pd.read_csv(tmp_path / "out" / "collect_log.csv", dtype=str, keep_default_na=False)
        assert list(log["row"]) == ["1", "2", "3", "4"] and list(log["status"]) == ["ok", "ok", "ok", "conflict"]
        assert "same URL as row 1" in log.loc[2, "reason"]
        assert "listed in row 1 with label 'a'" in log.loc[3, "reason"]
        assert "label 'b' is not used" in log.loc[3, "reason"]
        assert res.n_downloaded == (2 if run == 0 else 0)


HOSTILE_LABELS = ["../escape", "../../etc/cron.d/x", "/abs/x", "", ".", "..", "a\x00b", "x" * 300, "CON", "a/b",
                  "a_b", "plain", "caf\u00e9 \u202eevil", "  spaced  ", "a\\..\\b"]


def test_hostile_labels_stay_inside_out(server, tmp_path):
    csv = _write_csv(tmp_path / "urls.csv", [(f"{server}/n/{i}.png", lab) for i, lab in enumerate(HOSTILE_LABELS)])
    out = tmp_path / "out"
    res = collect(csv, out, allow_private=True, workers=4, progress=False)
    log = res.log
    assert list(log["status"]) == ["ok"] * len(HOSTILE_LABELS)
    assert list(log["label"]) == HOSTILE_LABELS  # raw text kept
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        assert [r["label"] for r in csvmod.DictReader(fh)] == HOSTILE_LABELS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "urls.csv"]  # nothing written outside out
    root = out.resolve()
    for rel, folder in zip(log["path"], log["folder"]):
        f = (out / rel).resolve()
        assert f.is_file() and f.parent.parent == root and f.parent.name == folder
        assert 0 < len(folder.encode()) <= 60 and "/" not in folder and "\x00" not in folder
        assert folder not in (".", "..") and folder.lower() != "con"
    assert log["folder"].nunique() == len(HOSTILE_LABELS)  # 'a/b' and 'a_b' do not share a folder
    folders = dict(zip(log["label"], log["folder"]))
    assert folders["plain"] == "plain" and folders["a_b"] == "a_b"
    unsafe = log[log["label"] != log["folder"]]
    assert all("folder '" in r and "is used" in r for r in unsafe["reason"])  # the log says which folder


def _log_rows(path: Path):
    """Complete rows of a log being appended by another process."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return list(csvmod.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))


def test_kill_9_mid_run_then_rerun_resumes(server, tmp_path):
    n = 16
    rows = [(f"{server}/slow/{i}.png", "ab"[i % 2]) for i in range(n)] + [(f"{server}/slow/0.png", "a")]
    csv, out = _write_csv(tmp_path / "urls.csv", rows), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "frugalvision.cli.main", "collect", str(csv), "--allow-private",
                             "--out", str(out),
                             "--workers", "2", "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t_end = time.monotonic() + 30
        while len({r["url"] for r in _log_rows(out / "collect_log.csv") if r["status"] == "ok"}) < 3:
            assert proc.poll() is None, "collect ended before it could be killed"
            assert time.monotonic() < t_end, "no log row appeared while collect was running"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    before = _log_rows(out / "collect_log.csv")
    ok_before = {r["url"].replace(server, "") for r in before if r["status"] == "ok"}
    assert 3 <= len(ok_before) < n  # really killed part-way
    hits_before = dict(Handler.hits)
    for f in _images(out):  # every visible file is a whole image
        if not f.name.startswith("."):
            load_rgb(f.read_bytes())
    stale = out / "a" / f".0123456789abcdef.png.{proc.pid}-abcd1234.tmp"  # what a kill during a write leaves
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"\x89PNG half")

    res = collect(csv, out, allow_private=True, workers=4, progress=False)
    for p in ok_before:
        assert Handler.hits[p] == hits_before[p] == 1, f"{p} was downloaded again"
    assert all(Handler.hits[f"/slow/{i}.png"] <= 2 for i in range(n))
    assert res.n_skipped == len(ok_before) and res.n_downloaded == n - len(ok_before)
    log = pd.read_csv(out / "collect_log.csv", dtype=str, keep_default_na=False)
    assert list(log["row"]) == [str(i) for i in range(1, n + 2)] and set(log["status"]) == {"ok"}
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == n + 1 and manifest["path"].nunique() == n
    assert not stale.exists() and len(_images(out)) == n


def test_loopback_and_private_targets_are_refused_by_default(server, tmp_path):
    """Without --allow-private: a loopback URL, a name resolving to loopback, a metadata address and a redirect from
    an allowed-looking request to loopback are all refused before a byte is sent; the server sees no request."""
    Handler.hits = {}
    urls = [f"{server}/red.jpg", f"http://localhost:{server.rsplit(':', 1)[1]}/blue.png",
            "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x.png", "http://10.0.0.1/x.png"]
    csv = tmp_path / "urls.csv"
    pd.DataFrame({"url": urls, "label": ["a"] * len(urls)}).to_csv(csv, index=False)
    res = collect(csv, tmp_path / "out", workers=2, retries=1, timeout=0.5, progress=False)
    log = res.log.set_index("url")
    assert (log["status"] == "failed").all() and res.n_downloaded == 0
    assert all("--allow-private" in r for r in log["reason"])
    assert "loopback" in log.loc[urls[0], "reason"] and "link-local" in log.loc[urls[2], "reason"]
    assert "private" in log.loc[urls[4], "reason"]
    assert sum(Handler.hits.values()) == 0  # nothing reached the loopback server


def test_a_redirect_to_loopback_is_refused(server, tmp_path, monkeypatch):
    """The first request goes to an address the test declares public (127.0.0.1 stands in for a web server); its
    redirect to 127.0.0.2 (loopback) is checked like any first request and refused before a byte is sent there."""
    import frugalvision.data.collect as c

    real = c._refused_address
    monkeypatch.setattr(c, "_refused_address", lambda ip: "" if ip == "127.0.0.1" else real(ip))
    Handler.hits = {}
    csv = _write_csv(tmp_path / "urls.csv", [(f"{server}/to-loopback", "a")])
    res = collect(csv, tmp_path / "out", workers=1, retries=1, timeout=1.0, progress=False)
    (reason,) = res.log["reason"]
    assert res.log["status"].tolist() == ["failed"] and "127.0.0.2, a loopback address" in reason, reason
    assert "--allow-private" in reason
    assert Handler.hits == {"/to-loopback": 1}  # the redirect's target was never requested
    # With --allow-private the redirect is followed (the server listens on 127.0.0.1 only: the connection fails).
    res = collect(csv, tmp_path / "out2", workers=1, retries=1, timeout=1.0, progress=False, allow_private=True)
    assert "connection failed" in res.log["reason"][0] and "--allow-private" not in res.log["reason"][0]


def test_special_purpose_addresses_are_refused():
    from frugalvision.data.collect import _refused_address

    for ip in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
               "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
               "2002:7f00:1::", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe", "fe80::1%eth0"):
        assert _refused_address(ip), ip
    for ip in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "2002:5db8:d70e::1"):
        assert _refused_address(ip) == "", ip


def test_same_image_at_three_urls_with_three_labels_is_a_conflict(server, tmp_path):
    urls = [f"{server}/red.jpg", f"{server}/copy-of-red.jpg", f"{server}/third-red.jpg"]
    csv = _write_csv(tmp_path / "urls.csv", list(zip(urls, ["a", "b", "c"])))
    for run in range(2):  # the re-run reuses the files and says the same
        res = collect(csv, tmp_path / "out", allow_private=True, workers=1, progress=False)
        log = pd.read_csv(tmp_path / "out" / "collect_log.csv", dtype=str, keep_default_na=False)
        assert sorted(log["status"]) == ["conflict", "conflict", "ok"], log
        kept = log[log["status"] == "ok"].iloc[0]
        for _, r in log[log["status"] == "conflict"].iterrows():
            assert f"same image as row {kept['row']}" in r["reason"] and f"label '{kept['label']}'" in r["reason"]
            assert f"label '{r['label']}' is not used" in r["reason"]
            assert r["path"] == kept["path"]
        assert "list the same image with another label" in kept["reason"]
        assert kept["reason"].count("another label") == 1
        assert len(res.manifest) == 1 and sum(Handler.hits.get(u.replace(server, ""), 0) for u in urls) == 3
    # Same bytes, same label: still a plain duplicate.
    csv2 = _write_csv(tmp_path / "same.csv", list(zip(urls, ["a", "a", "a"])))
    log = collect(csv2, tmp_path / "out2", allow_private=True, workers=1, progress=False).log
    assert sorted(log["status"]) == ["duplicate", "duplicate", "ok"]


def test_collect_csv_files_are_spreadsheet_safe(server, tmp_path):
    evil = '=HYPERLINK("http:x","y")'
    csv = _write_csv(tmp_path / "urls.csv", [(f"{server}/red.jpg", evil, "@SUM(1)")], extra="-note")
    out = tmp_path / "out"
    collect(csv, out, allow_private=True, workers=1, progress=False)
    for name in ("collect_log.csv", "manifest.csv"):
        with open(out / name, newline="", encoding="utf-8") as fh:
            cells = [c for row in csvmod.reader(fh) for c in row]
        assert not any(c.startswith(("=", "+", "-", "@")) for c in cells), (name, cells)
        assert "'" + evil in cells and "'@SUM(1)" in cells and "'-note" in cells
    from frugalvision._io import read_csv

    m = read_csv(out / "manifest.csv")
    assert m["label"].tolist() == [evil] and m["-note"].tolist() == ["@SUM(1)"]
    res = collect(csv, out, allow_private=True, workers=1, progress=False)  # the re-run reads its log back
    assert res.n_skipped == 1 and res.log["label"].tolist() == [evil]
