"""The HTML report is self-contained and renders in a real headless browser."""

from __future__ import annotations

import json
import re

import pytest

from frugalvision.cli.main import main

from browser import launch

SECTIONS = ["summary", "data", "metrics", "per-class", "learning-curve", "confusion", "bias", "calibration",
            "looks-at", "mistakes", "faithfulness", "data-map", "model-card"]


@pytest.fixture(scope="module")
def report(trained, tmp_path_factory):
    _, run = trained
    out = tmp_path_factory.mktemp("rep")
    assert main(["report", str(run), "--out", str(out / "r.html"), "--json", str(out / "r.json"), "-q",
                 "--goal", "accuracy>=0.5", "--goal", "circle:recall>=0.99"]) == 0
    return out / "r.html", out / "r.json"


def test_report_is_self_contained(report):
    html = report[0].read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from the network
    assert html.count('src="data:image/png;base64,') >= 8
    for sid in SECTIONS:
        assert f'id="{sid}"' in html
    data = json.loads(report[1].read_text())
    assert data["headline"]["n"] == 9 and "accuracy_ci" in data["headline"]
    assert data["faithfulness"]["rows"] and data["model_card"]["backbone"] == "efficientnet_lite0"
    # The default model runs the int8 graph, and its card says so and why (not "asked for").
    int8 = [x for x in data["model_card"]["sentences"] if "int8" in x]
    assert len(int8) == 1 and "the default where it can run" in int8[0] and "--precision fp32" in int8[0]
    # The verdict comes first, against the goals given on the command line, with 2-4 next steps.
    v = data["verdict"]
    assert [g["name"] for g in v["goals"]] == ["accuracy>=0.5", "circle:recall>=0.99"]
    # Each goal's verdict follows from its value and Wilson interval on the 9 test images (recomputed here from the
    # report's own predictions), and the overall verdict from the goals'.
    from frugalvision.evaluation.bootstrap import wilson_ci

    acc = data["headline"]["accuracy"]
    right = round(acc * 9)
    circle = next(r for r in data["per_class"] if r["class"] == "circle")
    expect = {"accuracy>=0.5": (right, 9), "circle:recall>=0.99": (round(circle["recall"] * circle["support"]),
                                                                    circle["support"])}
    for g in v["goals"]:
        k, n = expect[g["name"]]
        lo, hi = wilson_ci(k, n)
        assert g["ci"] == pytest.approx([lo, hi]) and g["value_reached"] == pytest.approx(k / n)
        want = "met" if lo >= g["value"] else "not met" if hi < g["value"] else "cannot tell yet"
        assert g["verdict"] == want, g
    verdicts = [g["verdict"] for g in v["goals"]]
    assert v["overall"] == ("not met" if "not met" in verdicts else "cannot tell yet" if "cannot tell yet" in verdicts
                            else "met")
    assert 2 <= len(v["next_steps"]) <= 4
    assert html.index('class="verdict') < html.index('class="lead"')
    for g in v["goals"]:
        lo, hi = g["ci"]
        assert lo < hi  # Wilson: never a collapsed interval, even at 100 %
    assert len(data["learning_curve"]["n_train"]) == 4 and data["data_map"]["n"] == 9
    assert data["faithfulness"]["sentence"] and "log-loss" in html and "how surprised" in html
    assert "{'" not in html  # no raw Python dicts in the model card
    assert data["headline"]["accuracy_ci_method"] == "Wilson" and "95 % Wilson CI" in html


def test_report_maps_are_the_readable_rendering(report):
    """One colour scale per image, no map below p = 0.05 (with a note), and the top-1 minus top-2 map."""
    html = report[0].read_text()
    data = json.loads(report[1].read_text())
    panels = [it["panel"] for items in data["typical"].values() for it in items]
    panels += [r["panel"] for r in data["mistakes"] + data["unsure"] if r["panel"]]
    assert len(panels) >= 9
    hidden = 0
    for p in panels:
        tiles = [t for t in p["tiles"] if t["kind"] == "class"]
        for t in tiles:
            assert t["hidden"] == (t["probability"] < 0.05)
            hidden += t["hidden"]
        assert p["difference"] == (len(tiles) >= 2 and not any(t["hidden"] for t in tiles[:2]))
    assert hidden == data["maps_hidden"] == html.count("no map: too unlikely (p &lt; 0.05)")
    assert any(p["difference"] for p in panels) and "why " in html
    assert html.count('class="panel"') == len(panels) and "one colour scale shared by the maps" in html
    assert data["faithfulness"]["per_class"] == 30 and data["faithfulness"]["steps"] == 3


def test_report_renders_in_headless_chromium(report, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report[0].as_uri())
        for sid in SECTIONS:
            assert page.locator(f"section#{sid}").count() == 1
        n_images = page.evaluate("document.images.length")
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert n_images >= 8 and broken == 0
        assert "picks the right category" in page.inner_text("#summary")
        for width in (1400, 390):  # no horizontal overflow on a desktop or a phone
            page.set_viewport_size({"width": width, "height": 900})
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=str(tmp_path / f"report-{width}.png"), full_page=True)
        # On a phone the map tiles wrap (two a row) instead of shrinking one wide picture.
        tops = page.eval_on_selector("#looks-at .panel", "p => [...p.children].map(f => f.offsetTop)")
        assert len(set(tops)) >= 2
        browser.close()
    assert errors == [], errors
    assert (tmp_path / "report-1400.png").stat().st_size > 50_000
