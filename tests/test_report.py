"""The HTML report is self-contained and renders in a real headless browser."""

from __future__ import annotations

import json
import re

import pytest

from frugalvision.cli.main import main

from browser import launch

SECTIONS = ["summary", "data", "metrics", "per-class", "confusion", "bias", "calibration", "looks-at", "mistakes",
            "faithfulness", "model-card"]


@pytest.fixture(scope="module")
def report(trained, tmp_path_factory):
    _, run = trained
    out = tmp_path_factory.mktemp("rep")
    assert main(["report", str(run), "--out", str(out / "r.html"), "--json", str(out / "r.json"), "-q"]) == 0
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


def test_report_renders_in_headless_chromium(report, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        page.goto(report[0].as_uri())
        for sid in SECTIONS:
            assert page.locator(f"section#{sid}").count() == 1
        n_images = page.evaluate("document.images.length")
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert n_images >= 8 and broken == 0
        assert "picks the right category" in page.inner_text("#summary")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 50_000
