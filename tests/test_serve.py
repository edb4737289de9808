"""The web app: JSON API with malformed inputs (right 4xx, still healthy), and a real browser upload."""

from __future__ import annotations

import io
import zlib

import pytest
from PIL import Image

from browser import launch, serving


@pytest.fixture(scope="module")
def app(trained):
    from frugalvision.serve import Limits, create_app

    model, run = trained
    return create_app(model, limits=Limits(max_upload_bytes=8 * 1024 * 1024, max_files=4))


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    # The app answers only allowed Host names; TestClient's default Host is "testserver".
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _jpeg(size=(320, 240), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _huge_png(side=20_000) -> bytes:
    """A valid 20k x 20k greyscale PNG header + highly compressible data (~400 KB on the wire)."""
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    raw = zlib.compress(b"\x00" * (side + 1) * 64, 9)  # only the first rows; the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_health_model_and_openapi(client, trained):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/model").json()
    assert info["classes"] == trained[0].classes and info["limits"]["max_files"] == 4
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/explain", "/health", "/model"} <= set(paths)


def test_predict_and_explain(client, shapes_dir):
    png = (shapes_dir / "circle" / "circle_000.png").read_bytes()
    r = client.post("/predict", files=[("files", ("a.png", png, "image/png")), ("files", ("b.jpg", _jpeg(), "image/jpeg"))])
    assert r.status_code == 200
    res = r.json()["results"]
    assert res[0]["top"][0]["label"] == "circle" and len(res[0]["top"]) == 3
    e = client.post("/explain", files={"file": ("x.png", png, "image/png")}).json()
    assert [c["rank"] for c in e["cams"]] == [1, 2]
    _check_readable_maps(e)


def _check_readable_maps(e):
    """The web page's maps are the report's: shared scale, no map below p = 0.05, top-1 minus top-2."""
    for c in e["cams"]:
        assert c["hidden"] == (c["probability"] < 0.05)
        if c["hidden"]:
            assert c["overlay"] is None and "no map: p < 0.05" in c["note"]
        else:
            assert c["overlay"].startswith("data:image/png;base64,")
    both = not any(c["hidden"] for c in e["cams"])
    assert (e["difference"] is not None) == both
    if both:
        assert e["difference"]["overlay"].startswith("data:image/png;base64,")
        assert e["difference"]["label"] == f"why {e['cams'][0]['label']}, not {e['cams'][1]['label']}"
    assert e["scale"] > 0 and "class activation map" in e["cams_help"]


@pytest.fixture(scope="module")
def two_shapes(tmp_path_factory):
    """A circle and a square in one image: the model hesitates, so both maps and their difference are drawn."""
    from PIL import ImageDraw

    img = Image.new("RGB", (96, 96), (40, 40, 40))
    draw = ImageDraw.Draw(img)
    draw.ellipse([8, 8, 44, 44], fill=(220, 200, 90))
    draw.rectangle([52, 52, 88, 88], fill=(220, 200, 90))
    path = tmp_path_factory.mktemp("two") / "circle and square.png"
    img.save(path)
    return path


def test_explain_of_an_unsure_image_has_the_difference_map(client, two_shapes):
    e = client.post("/explain", files={"file": ("two.png", two_shapes.read_bytes(), "image/png")}).json()
    _check_readable_maps(e)
    assert e["cams"][1]["probability"] >= 0.05 and e["difference"] is not None, e["cams"]


@pytest.mark.parametrize("name,payload,status,words", [
    ("truncated.jpg", _jpeg()[:300], 422, "truncated"),
    ("notes.jpg", b"hello, I am a text file\n" * 20, 415, "not an image"),
    ("empty.jpg", b"", 400, "empty"),
    ("huge.png", _huge_png(), 413, "too large"),
    ("big.jpg", b"\xff\xd8" + b"0" * (9 * 1024 * 1024), 413, "larger than"),
])
def test_malformed_uploads_get_the_right_4xx_and_the_server_stays_healthy(client, name, payload, status, words):
    for route, field in (("/predict", "files"), ("/explain", "file")):
        r = client.post(route, files={field: (name, payload, "image/jpeg")})
        assert r.status_code == status, (route, r.text)
        assert words in r.json()["detail"]
        assert client.get("/health").status_code == 200


def test_oversized_request_and_too_many_files(client):
    r = client.post("/predict", files=[("files", (f"{i}.jpg", _jpeg(), "image/jpeg")) for i in range(5)])
    assert r.status_code == 400 and "at most 4" in r.json()["detail"]
    r = client.post("/predict", content=b"x" * (50 * 1024 * 1024),
                    headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413


def test_concurrent_requests_do_not_mix_results(client, shapes_dir):
    from concurrent.futures import ThreadPoolExecutor

    files = {k: (shapes_dir / k / f"{k}_001.png").read_bytes() for k in ("circle", "square", "triangle")}
    expected = {k: client.post("/predict", files={"files": ("x.png", v, "image/png")}).json()["results"][0]["top"]
                for k, v in files.items()}

    def ask(k):
        return k, client.post("/predict", files={"files": ("x.png", files[k], "image/png")}).json()["results"][0]["top"]

    with ThreadPoolExecutor(6) as pool:
        for k, top in pool.map(ask, list(files) * 6):
            assert top == expected[k]


OVERFLOW_JS = "() => document.documentElement.scrollWidth - window.innerWidth"


@pytest.mark.browser
def test_browser_upload_shows_readable_maps_on_desktop_and_phone(app, tmp_path, two_shapes, shapes_dir):
    from playwright.sync_api import sync_playwright

    with serving(app) as port, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#files", str(two_shapes))
        page.wait_for_selector("figure.diff", timeout=30_000)
        card = page.locator("#results .card").first
        labels = card.locator("td.label").all_inner_texts()
        assert len(labels) == 3 and set(labels) <= {"circle", "square", "triangle"}
        captions = card.locator("figcaption").all_inner_texts()
        assert captions[1].startswith("decided: ") and captions[2].startswith("runner-up: ")
        assert captions[3].startswith("why ") and "(red: for " in captions[3]
        loaded = card.evaluate("c => Array.from(c.querySelectorAll('figure img')).filter(i => i.naturalWidth > 0).length")
        assert loaded == 4
        assert "class activation map" in card.locator("p.cam-help").inner_text()
        assert card.locator(".legend .bar.evidence").count() == 1 and card.locator(".legend .bar.difference").count() == 1
        # A confident image: the runner-up's map is hidden, with the note in its place.
        page.set_input_files("#files", str(shapes_dir / "circle" / "circle_000.png"))
        page.wait_for_function("() => document.querySelectorAll('#results .card').length === 2"
                               " && document.querySelector('#results .card .top')")
        first = page.locator("#results .card").first
        first.locator("figure.nomap").wait_for(timeout=30_000)
        assert "no map: p < 0.05" in first.locator("figure.nomap").inner_text()
        assert first.locator("figure.diff").count() == 0
        for width in (1400, 390):
            page.set_viewport_size({"width": width, "height": 900})
            assert page.evaluate(OVERFLOW_JS) <= 0, width
            page.screenshot(path=str(tmp_path / f"serve-{width}.png"), full_page=True)
        browser.close()
    assert errors == [], errors
