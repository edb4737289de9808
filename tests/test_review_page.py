"""``frugalvision review``: decisions applied purely and validated, saved atomically to a new manifest (never
to manifest.csv or the images), served safely (Host/Origin checks, CSP, rows not paths), and a keyboard-only
review in Chromium whose reviewed manifest then trains a model.

The prepared folder is written by hand (no ``prepare`` run, to stay fast): a likely label error with a
suggestion, an exact-duplicate pair, an unreadable file, a dark image, and a row whose file name, label,
reason, suggestion and duplicate group are hostile text.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attack_corpus import HOSTILE_NAMES, safe_dirname
from browser import launch, serving, watch
from conftest import draw_shape

HOSTILE_FILE = safe_dirname(HOSTILE_NAMES[0]) + ".png"
HOSTILE_LABEL = HOSTILE_NAMES[1]
HOSTILE_GROUP = HOSTILE_NAMES[2]


# -- a tiny prepared folder ------------------------------------------------------------------------------
def make_prepared(root: Path, n: int = 10) -> tuple[Path, dict]:
    """``root/data`` images and ``root/prepared/manifest.csv``; returns the folder and {name: row}."""
    from frugalvision.curate.audit import MANIFEST_COLUMNS

    rng = np.random.default_rng(0)
    data = root / "data"
    rows = []

    def add(path: Path, label, **kw):
        rows.append({"path": str(path), "label": label, "split": "", "status": "keep", "reason": "", "issues": "",
                     "severity": "0.0000", "suggested_label": "", "duplicate_group": "", **kw})

    for kind in ("circle", "square"):
        (data / kind).mkdir(parents=True)
        for i in range(n):
            p = data / kind / f"{kind}_{i:02d}.png"
            draw_shape(kind, rng, 64).save(p)
            add(p, kind)
    extra = data / "extra"
    extra.mkdir()
    draw_shape("circle", rng, 64).save(extra / "mislabelled.png")
    add(Path("../data/extra/mislabelled.png"), "square", status="review", issues="label_error", severity="0.8000",
        suggested_label="circle", reason="possible label error: looks like 'circle' (p=0.91), labelled 'square'")
    draw_shape("triangle", rng, 64).save(extra / HOSTILE_FILE)
    add(extra / HOSTILE_FILE, HOSTILE_LABEL, status="review", issues="too_dark;atypical", severity="0.6000",
        suggested_label=HOSTILE_NAMES[3], reason=" | ".join(HOSTILE_NAMES))
    draw_shape("circle", rng, 64).save(extra / "dup_a.png")
    (extra / "dup_b.png").write_bytes((extra / "dup_a.png").read_bytes())
    add(extra / "dup_a.png", "circle", duplicate_group=HOSTILE_GROUP,
        reason="kept copy of exact duplicate group (2 files)")
    add(extra / "dup_b.png", "circle", status="exclude", issues="exact_duplicate", severity="0.9000",
        duplicate_group=HOSTILE_GROUP, reason=f"exact duplicate of {extra / 'dup_a.png'}, which is kept")
    (extra / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    add(extra / "broken.png", "square", status="exclude", issues="unreadable", severity="1.0000",
        reason="unreadable: not an image")
    Image.fromarray(np.full((64, 64, 3), 4, np.uint8)).save(extra / "dark.png")
    add(extra / "dark.png", "circle", status="review", issues="too_dark", severity="0.3000",
        reason="too dark (mean brightness 4)")
    df = pd.DataFrame(rows)
    for col in MANIFEST_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    prepared = root / "prepared"
    prepared.mkdir()
    df[MANIFEST_COLUMNS].to_csv(prepared / "manifest.csv", index=False)
    names = {Path(p).name: i for i, p in enumerate(df["path"])}
    return prepared, names


def digest(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def prepared(tmp_path):
    return make_prepared(tmp_path)


# -- apply_decisions: pure and validated -------------------------------------------------------------------
def test_apply_decisions_accept_keep_exclude_and_leaves_the_input_alone(prepared):
    from frugalvision.review import apply_decisions, read_manifest

    folder, rows = prepared
    m = read_manifest(folder / "manifest.csv")
    before = m.copy()
    mis, dark, dup = rows["mislabelled.png"], rows["dark.png"], rows["dup_b.png"]
    out = apply_decisions(m, {mis: "accept", str(dark): "keep", np.int64(dup): "exclude"})
    assert m.equals(before)  # the input is not modified
    assert list(out.columns) == list(m.columns) + ["review_decision", "original_label"]
    assert out.index.equals(m.index) and len(out) == len(m)
    assert out.loc[mis, ["label", "status", "review_decision", "original_label"]].tolist() == [
        "circle", "keep", "accept", "square"]
    assert out.loc[dark, ["label", "status", "review_decision"]].tolist() == ["circle", "keep", "keep"]
    assert out.loc[dup, ["status", "review_decision"]].tolist() == ["exclude", "exclude"]
    untouched = out.drop(index=[mis, dark, dup])
    assert (untouched["review_decision"] == "").all()
    assert untouched[m.columns].equals(m.drop(index=[mis, dark, dup]))
    assert (out["original_label"] == m["label"]).all()
    assert apply_decisions(m, {})[m.columns].equals(m)
    # Reviewing a reviewed manifest keeps the first original label.
    again = apply_decisions(out, {mis: "keep"})
    assert again.loc[mis, ["label", "original_label", "review_decision"]].tolist() == ["circle", "square", "keep"]


def test_apply_decisions_refuses_unknown_rows_decisions_and_empty_suggestions(prepared):
    from frugalvision.review import apply_decisions, read_manifest

    folder, rows = prepared
    m = read_manifest(folder / "manifest.csv")
    for bad in (len(m), -1, "abc", "1.5", True, 2.0, None):
        with pytest.raises(ValueError, match="Unknown row"):
            apply_decisions(m, {bad: "keep"})
    for bad in ("delete", "ACCEPT", "", None, 1):
        with pytest.raises(ValueError, match="Unknown decision"):
            apply_decisions(m, {0: bad})
    with pytest.raises(ValueError, match="no suggested_label"):
        apply_decisions(m, {rows["dark.png"]: "accept"})
    with pytest.raises(ValueError, match="no suggested_label"):
        apply_decisions(m.drop(columns=["suggested_label"]), {rows["mislabelled.png"]: "accept"})
    with pytest.raises(ValueError, match="two decisions"):
        apply_decisions(m, {1: "keep", "1": "exclude"})
    with pytest.raises(TypeError):
        apply_decisions(m, [(0, "keep")])
    # A notebook manifest read with pandas defaults: a missing suggestion is NaN, still refused.
    nb = pd.read_csv(folder / "manifest.csv")
    with pytest.raises(ValueError, match="no suggested_label"):
        apply_decisions(nb, {rows["dark.png"]: "accept"})
    assert apply_decisions(nb, {rows["mislabelled.png"]: "accept"}).loc[rows["mislabelled.png"], "label"] == "circle"


def test_saved_decisions_follow_their_files_and_never_touch_manifest_or_images(prepared, tmp_path):
    from frugalvision.exceptions import DataWarning
    from frugalvision.review import ReviewSession, load_decisions, read_manifest, save_decisions

    folder, rows = prepared
    before = digest(tmp_path / "data") | {"manifest": digest(folder)[str(folder / "manifest.csv")]}
    target = save_decisions(folder, {rows["mislabelled.png"]: "accept", rows["dup_b.png"]: "keep"})
    assert target == folder / "manifest.reviewed.csv"
    assert digest(tmp_path / "data") | {"manifest": digest(folder)[str(folder / "manifest.csv")]} == before
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.csv", "manifest.reviewed.csv",
                                                        "review_decisions.json"]
    m = read_manifest(folder / "manifest.csv")
    # Rows moved (manifest written again in another order): decisions follow their files; a vanished file's
    # decision is dropped with a warning.
    moved = m.iloc[::-1].reset_index(drop=True)
    moved = moved[moved["path"] != m.loc[rows["dup_b.png"], "path"]].reset_index(drop=True)
    with pytest.warns(DataWarning, match="no longer fit"):
        got = load_decisions(folder / "review_decisions.json", moved)
    new_row = int(np.flatnonzero(moved["path"] == m.loc[rows["mislabelled.png"], "path"])[0])
    assert got == {new_row: "accept"}
    session = ReviewSession(folder)
    assert session.decisions == {rows["mislabelled.png"]: "accept", rows["dup_b.png"]: "keep"}
    session.decide(rows["dup_b.png"], None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ReviewSession(folder / "manifest.csv").decisions == {rows["mislabelled.png"]: "accept"}
    with pytest.raises(ValueError, match="no suggested_label"):
        session.decide(rows["dark.png"], "accept")
    assert session.decisions == {rows["mislabelled.png"]: "accept"}


# -- the server: rows not paths, Host/Origin checks, CSP -------------------------------------------------
def test_server_serves_rows_refuses_cross_site_and_saves_atomically(prepared, tmp_path):
    from fastapi.testclient import TestClient

    from frugalvision.review import create_app

    folder, rows = prepared
    images = digest(tmp_path / "data")
    manifest_bytes = (folder / "manifest.csv").read_bytes()
    app = create_app(folder)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        r = c.get("/")
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "<script" not in r.text.replace('<script src="/static/kit.js" defer></script>', "").replace(
            '<script src="/static/review.js" defer></script>', "")
        items = c.get("/api/items").json()
        assert items["total"] == 6 and items["reviewed"] == 0
        kinds = [s["kind"] for s in items["sections"]]
        assert kinds == ["unreadable", "exact_duplicate", "label_error", "too_dark", "atypical"]
        dup = items["sections"][1]["sets"]
        assert dup == [{"group": HOSTILE_GROUP, "rows": [rows["dup_a.png"], rows["dup_b.png"]]}]
        dark = [s["rows"][0] for s in items["sections"][3]["sets"]]
        assert dark == [rows[HOSTILE_FILE], rows["dark.png"]]  # most severe first
        card = {c_["row"]: c_ for c_ in items["cards"]}[rows[HOSTILE_FILE]]
        assert (card["name"], card["label"], card["suggested"]) == (HOSTILE_FILE, HOSTILE_LABEL, HOSTILE_NAMES[3])

        thumb = c.get(f"/image/{rows['mislabelled.png']}")  # a relative path in the manifest
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumb.content)).size == (64, 64)
        broken = c.get(f"/image/{rows['broken.png']}")
        assert broken.status_code == 200 and broken.headers["content-type"].startswith("image/svg+xml")
        for bad in ("999", "-1", "..%2F..%2Fetc%2Fpasswd", "0x1", "1.0"):
            assert c.get(f"/image/{bad}").status_code in (404, 422), bad
        assert c.get("/static/../decisions.py").status_code == 404

        ok = {"row": rows["mislabelled.png"], "decision": "accept"}
        assert c.post("/api/decision", json=ok, headers={"Origin": "http://evil.example"}).status_code == 403
        assert c.post("/api/decision", json=ok, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert c.post("/api/decision", json=ok, headers={"Host": "evil.example"}).status_code == 400
        assert c.post("/api/decision", content=b'{"row": 1, "decision": "keep"}',
                      headers={"Content-Type": "text/plain"}).status_code == 415
        assert c.post("/api/decision", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
        assert c.post("/api/decision", content=b" " * 5000,
                      headers={"Content-Type": "application/json"}).status_code == 413
        for body in ({"row": "1", "decision": "keep"}, {"row": True, "decision": "keep"}, {"row": 1},
                     {"row": 1, "decision": "delete"}, {"row": 999, "decision": "keep"},
                     {"row": rows["dark.png"], "decision": "accept"}, [1, "keep"],
                     {"row": 1, "decision": "keep", "path": "/etc/passwd"}):
            assert c.post("/api/decision", json=body).status_code == 422, body
        assert not (folder / "manifest.reviewed.csv").exists()  # nothing refused was saved

        r = c.post("/api/decision", json=ok, headers={"Origin": "http://127.0.0.1:8765"})
        assert r.status_code == 200 and r.json()["reviewed"] == 1 and r.json()["total"] == 6
        assert c.post("/api/decision", json={"row": rows["dup_b.png"], "decision": "keep"}).json()["reviewed"] == 2
        assert c.post("/api/decision", json={"row": rows["dup_b.png"], "decision": None}).json()["reviewed"] == 1
        assert c.get("/api/items").json()["decisions"] == {str(rows["mislabelled.png"]): "accept"}
    reviewed = pd.read_csv(folder / "manifest.reviewed.csv", dtype=str, keep_default_na=False)
    assert reviewed.loc[rows["mislabelled.png"], "label"] == "circle"
    assert (reviewed["review_decision"] != "").sum() == 1
    assert (folder / "manifest.csv").read_bytes() == manifest_bytes and digest(tmp_path / "data") == images
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_cli_review_refuses_a_folder_without_manifest_or_already_open(prepared, tmp_path, capsys):
    from frugalvision._io import run_folder
    from frugalvision.cli.main import main

    assert main(["review", str(tmp_path / "nothing"), "--no-browser"]) == 1
    assert "No manifest.csv" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
    with run_folder(prepared[0], ()):  # what a running review holds
        assert main(["review", str(prepared[0]), "--no-browser", "--port", "1"]) == 1
    assert "open in another 'frugalvision review'" in capsys.readouterr().err
    assert main(["review", "--help"]) == 0


# -- Chromium: keyboard only, resume, hostile text, narrow screen, then train -------------------------------
ACTIVE_ROW = "() => document.activeElement && document.activeElement.dataset.row"
INJECTED_JS = """() => {
  const bad = document.querySelectorAll('script:not([src="/static/review.js"]):not([src="/static/kit.js"]), svg, iframe, a, object, embed, '
    + 'img:not(.thumb), main img:not([src^="/image/"])');
  const handlers = Array.from(document.querySelectorAll('*'))
    .filter(e => Array.from(e.attributes).some(a => a.name.startsWith('on')));
  return bad.length + handlers.length;
}"""
OVERFLOW_JS = "() => document.documentElement.scrollWidth - window.innerWidth"
CARD_STATE_JS = """rows => rows.map(r => Array.from(document.querySelectorAll(`.card[data-row="${r}"]`))
  .map(c => c.dataset.decision))"""


def _focus_row(page, row: int, key: str = "j", limit: int = 20) -> None:
    for _ in range(limit):
        if page.evaluate(ACTIVE_ROW) == str(row):
            return
        page.keyboard.press(key)
    raise AssertionError(f"could not reach row {row} with '{key}' (at {page.evaluate(ACTIVE_ROW)})")


def _wait_ready(page):
    page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=20_000)
    # the thumbnails in view have loaded (the others load lazily when scrolled to)
    page.wait_for_function("() => Array.from(document.images).filter(i => i.getBoundingClientRect().top "
                           "< innerHeight).every(i => i.complete)", timeout=20_000)


@pytest.mark.browser
def test_keyboard_review_in_chromium_resumes_and_trains(prepared, tmp_path):
    from playwright.sync_api import sync_playwright

    import frugalvision as fv
    from frugalvision.review import create_app

    folder, rows = prepared
    mis, hostile, dark = rows["mislabelled.png"], rows[HOSTILE_FILE], rows["dark.png"]
    manifest_bytes = (folder / "manifest.csv").read_bytes()
    images = digest(tmp_path / "data")
    app = create_app(folder)
    with serving(app) as port, sync_playwright() as p:
        base = f"http://127.0.0.1:{port}"
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs, errors, failed = watch(page)
        page.goto(base + "/")
        _wait_ready(page)
        assert page.locator("#progress").text_content() == "Reviewed 0 of 6"
        assert page.evaluate(ACTIVE_ROW) == str(rows["broken.png"])  # the first card has the focus
        assert page.evaluate("() => document.activeElement.classList.contains('focused')")
        # Hostile text is shown as text, exactly.
        assert HOSTILE_FILE in page.locator(".card .name").all_text_contents()
        assert HOSTILE_LABEL in page.locator(".card .label").all_text_contents()
        assert HOSTILE_GROUP in page.locator(".set .group").all_text_contents()
        assert " | ".join(HOSTILE_NAMES) in page.locator(".card .reason").all_text_contents()
        assert page.evaluate(INJECTED_JS) == 0
        # Unreadable file: the placeholder image; the duplicate pair is one set, side by side.
        assert page.locator(f'.card[data-row="{rows["broken.png"]}"] img').evaluate("i => i.naturalWidth") == 256
        assert page.locator(".set .card").count() == 2

        # Keyboard only: accept the suggestion, exclude the hostile image, keep the dark one and undo that.
        _focus_row(page, mis)
        page.keyboard.press("a")
        assert page.evaluate(ACTIVE_ROW) == str(hostile)  # moved on to the next image
        page.keyboard.press("x")
        assert page.evaluate(ACTIVE_ROW) == str(dark)
        page.keyboard.press("o")
        page.keyboard.press("u")
        assert page.evaluate(ACTIVE_ROW) == str(dark)  # undo goes back to the image
        page.keyboard.press("a")  # no suggestion here: a message, nothing sent
        assert "no suggested label" in page.locator("#message").text_content()
        _focus_row(page, mis, key="ArrowLeft")
        _focus_row(page, dark, key="ArrowDown")
        page.wait_for_function("() => document.getElementById('save-status').textContent === 'All decisions saved'")
        assert page.locator("#progress").text_content() == "Reviewed 2 of 6"
        states = page.evaluate(CARD_STATE_JS, [mis, hostile, dark])
        assert states == [["accept"], ["exclude", "exclude"], [""]]  # the hostile image is in two grids
        page.keyboard.press("?")
        assert page.locator("#help").is_visible()
        page.keyboard.press("Escape")
        assert not page.locator("#help").is_visible()

        reviewed = pd.read_csv(folder / "manifest.reviewed.csv", dtype=str, keep_default_na=False)
        decided = reviewed[reviewed["review_decision"] != ""]
        assert decided.index.tolist() == sorted([mis, hostile])
        assert decided.loc[mis, ["label", "status", "original_label"]].tolist() == ["circle", "keep", "square"]
        assert decided.loc[hostile, ["label", "status", "review_decision"]].tolist() == [
            HOSTILE_LABEL, "exclude", "exclude"]

        # Reopen: the decisions are shown, the focus is on the first image without one.
        page.reload()
        _wait_ready(page)
        assert page.locator("#progress").text_content() == "Reviewed 2 of 6"
        assert page.evaluate(CARD_STATE_JS, [mis, hostile, dark]) == [["accept"], ["exclude", "exclude"], [""]]
        assert "circle" in page.locator(f'.card[data-row="{mis}"] .decision').text_content()
        assert page.evaluate(ACTIVE_ROW) == str(rows["broken.png"])
        assert page.evaluate(INJECTED_JS) == 0

        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(100)
        assert page.evaluate(OVERFLOW_JS) <= 0
        page.keyboard.press("?")
        assert page.evaluate(OVERFLOW_JS) <= 0
        page.keyboard.press("?")
        browser.close()
    assert dialogs == [] and errors == [], (dialogs, errors)
    assert failed == [], failed
    assert (folder / "manifest.csv").read_bytes() == manifest_bytes and digest(tmp_path / "data") == images

    # Train on the reviewed manifest: the accepted label is used, the excluded rows are not.
    model = fv.train(folder / "manifest.reviewed.csv", progress=False, calibrate=False)
    table = model.data_.table.assign(name=lambda t: t["path"].map(lambda s: Path(s).name))
    assert table.loc[table["name"] == "mislabelled.png", "label"].tolist() == ["circle"]
    assert HOSTILE_FILE not in set(table["name"]) and "dup_b.png" not in set(table["name"])
    assert "broken.png" not in set(table["name"])
    assert sorted(model.classes) == ["circle", "square"]
    assert len(table) == 23  # 20 shapes + mislabelled + dup_a + dark
