"""Text from data never runs as script: report.html and audit.html with hostile names, in Chromium.

Class folders, file names, manifest column names and group values are taken from
``attack_corpus.HOSTILE_NAMES``. Each page is checked twice:

- statically: parsed with ``html.parser``, it contains only the tags the templates write, no event
  handler attribute, no link, and every ``src`` is an inline PNG; the hostile names appear escaped;
- in headless Chromium, with dialog, console and page-error listeners: nothing fires, no injected
  element exists, and the hostile names are shown as text. The page is also opened with its
  Content-Security-Policy removed, so that escaping alone is shown to be enough.
"""

from __future__ import annotations

import frugalvision as fv
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from markupsafe import escape

from attack_corpus import HOSTILE_NAMES, safe_dirname
from browser import launch
from conftest import SHAPES, draw_shape

#: Three hostile class names (one per shape): attribute break-out (" and '), script-block break-out.
CLASSES = tuple(safe_dirname(n) for n in HOSTILE_NAMES[:3])
#: Manifest columns used for the bias audit / kept as extra metadata.
GROUP_COLS = (HOSTILE_NAMES[3], HOSTILE_NAMES[4])
EXTRA_COL = HOSTILE_NAMES[0]
GROUP_VALUES = (HOSTILE_NAMES[4], HOSTILE_NAMES[5], HOSTILE_NAMES[9])

#: Tags the two templates write; anything else in a page was injected.
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "div", "span", "b",
                "section", "table", "tr", "th", "td", "ul", "li", "img", "details", "summary", "code", "figure",
                "figcaption", "a"}  # <a> only as an in-page anchor: its href is checked below
PNG_SRC = re.compile(r"data:image/png;base64,[A-Za-z0-9+/]+=*")
CSP_META = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')

# In the page: elements or attributes that only an injection could have produced.
INJECTED_JS = """() => {
  const bad = document.querySelectorAll('script, svg, iframe, object, embed, a:not([href^="#"]), form, base, link, img:not([src^="data:image/png;base64,"])');
  const handlers = Array.from(document.querySelectorAll('*')).filter(e => Array.from(e.attributes).some(a => a.name.startsWith('on')));
  return bad.length + handlers.length;
}"""


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs = set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)


def assert_static_html_is_safe(html: str, shown: list[str]) -> None:
    parser = _Tags()
    parser.feed(html)
    assert parser.tags <= ALLOWED_TAGS, parser.tags - ALLOWED_TAGS
    for tag, name, value in parser.attrs:
        assert not name.startswith("on"), (tag, name, value)
        assert name not in ("action", "formaction", "srcdoc"), (tag, name, value)
        if name == "href":  # only in-page anchors to the page's own sections, never a URL from data
            assert re.fullmatch(r"#[a-z0-9_-]+", value), (tag, value)
        if name == "src":
            assert PNG_SRC.fullmatch(value), (tag, value[:80])
    for payload in ("<img src=x", "<svg", "<script", "</script", "<b>bold"):
        assert payload not in html.lower(), payload
    for text in shown:
        assert str(escape(text)) in html, text


def open_in_chromium(path, tmp_path, must_show: list[str]) -> None:
    """Open ``path`` with and without its CSP; no dialog, console error, page error or injected element."""
    from playwright.sync_api import sync_playwright

    html = path.read_text(encoding="utf-8")
    assert CSP_META.search(html), "the page declares no Content-Security-Policy"
    bare = tmp_path / f"no-csp-{path.name}"
    bare.write_text(CSP_META.sub("", html), encoding="utf-8")
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for target in (path, bare):
                page = browser.new_page()
                events = []
                page.on("dialog", lambda d, ev=events: (ev.append(f"dialog: {d.message}"), d.dismiss()))
                page.on("console", lambda m, ev=events: m.type in ("error", "warning")
                        and ev.append(f"console {m.type}: {m.text}"))
                page.on("pageerror", lambda e, ev=events: ev.append(f"pageerror: {e}"))
                page.goto(target.as_uri())
                page.wait_for_load_state("load")
                page.wait_for_timeout(200)  # onerror/onload handlers of broken images would have fired by now
                assert events == [], (target.name, events)
                assert page.evaluate(INJECTED_JS) == 0, target.name
                broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
                assert broken == 0, target.name
                text = page.inner_text("body")
                for name in must_show:
                    assert name in text, (target.name, name)
                page.close()
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------------------
# Fast: no model, no browser.

def test_image_filter_escapes_alt_and_only_embeds_png_bytes():
    from frugalvision._text import visible
    from frugalvision.reporting.render import _img

    for name in HOSTILE_NAMES:
        tag = str(_img(b"\x89PNG fake", "CAM " + name))
        assert tag.startswith('<img alt="CAM ') and tag.count("<") == 1 and tag.count('"') == 4, tag
        assert str(escape(visible(name))) in tag  # escaped, and format characters shown as escapes
    assert str(_img(None, HOSTILE_NAMES[0])) == "" and str(_img("javascript:alert(1)", "x")) == ""


def test_audit_page_escapes_every_value_without_a_model(tmp_path):
    from frugalvision.curate.html import audit_html

    labels = list(HOSTILE_NAMES)
    manifest = pd.DataFrame({
        "path": [str(tmp_path / f"{safe_dirname(n)}.png") for n in HOSTILE_NAMES],  # missing files: "(unreadable)"
        "label": labels, "status": ["review", "exclude"] * 5,
        "reason": [f"exact duplicate of {n}" if i % 2 else f"possible label error: looks like '{n}'"
                   for i, n in enumerate(HOSTILE_NAMES)],
        "suggested_label": labels[::-1], EXTRA_COL: labels,
    })
    summary = {"n_files": 10, "source": HOSTILE_NAMES[2], "status": {"review": 5, "exclude": 5},
               "findings": {"exact_duplicates": 5, "label_issues": 5},
               "balance": {"counts": {n: 3 for n in HOSTILE_NAMES[:3]}, "imbalance_ratio": 1.0,
                           "warning": f"collect more images of {HOSTILE_NAMES[1]!r}"}}
    html = audit_html(manifest, summary)
    assert_static_html_is_safe(html, labels + [HOSTILE_NAMES[2]])
    assert html.count("(unreadable)") == 10


# ---------------------------------------------------------------------------------------------------------
# A model trained on hostile data, its report and its audit page.

@pytest.fixture(scope="module")
def hostile_manifest(tmp_path_factory):
    """12 small images per hostile class, hostile file names, hostile group columns; explicit splits."""
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(3)
    rows = []
    for kind, label in zip(SHAPES, CLASSES):
        (root / label).mkdir()
        for i in range(12):
            name = f"{safe_dirname(HOSTILE_NAMES[(i + 3) % len(HOSTILE_NAMES)])} {i:02d}.png"
            draw_shape(kind, rng, 40).save(root / label / name)
            rows.append({"path": f"{label}/{name}", "label": label,
                         "split": "train" if i < 6 else "val" if i < 8 else "test",
                         GROUP_COLS[0]: GROUP_VALUES[i % 3], GROUP_COLS[1]: GROUP_VALUES[(i + 1) % 3],
                         EXTRA_COL: HOSTILE_NAMES[i % len(HOSTILE_NAMES)]})
    csv = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


@pytest.fixture(scope="module")
def hostile_report(hostile_manifest, tmp_path_factory):

    out = tmp_path_factory.mktemp("hostile_run")
    model = fv.train(hostile_manifest, out=out / "model", progress=False)
    assert sorted(model.classes) == sorted(CLASSES)
    path = fv.report(model, out / "report.html", group_by=list(GROUP_COLS), progress=False)
    return path


def test_report_with_hostile_names_is_escaped(hostile_report):
    html = hostile_report.read_text(encoding="utf-8")
    assert_static_html_is_safe(html, [*CLASSES, *GROUP_COLS, *GROUP_VALUES, "CAM " + CLASSES[0]])
    assert 'x&#34;&gt;&lt;img src=x onerror=alert(1)&gt;' in html  # the hostile class name, shown only escaped


def test_report_with_hostile_names_runs_no_script_in_chromium(hostile_report, tmp_path):
    open_in_chromium(hostile_report, tmp_path, [*CLASSES, "{{7*7}} ${7*7}", "javascript:alert(5)",
                                                "a&amp;b <b>bold</b> & c"])


@pytest.fixture(scope="module")
def hostile_audit(hostile_manifest, tmp_path_factory):
    """prepare on the same images plus planted problems with hostile names (exact copy, broken file)."""
    from frugalvision.curate import prepare

    df = pd.read_csv(hostile_manifest, dtype=str, keep_default_na=False)
    root = hostile_manifest.parent
    copy = f"{CLASSES[0]}/{safe_dirname(HOSTILE_NAMES[2])} copy.png"
    (root / copy).write_bytes((root / df.loc[0, "path"]).read_bytes())
    broken = f"{CLASSES[1]}/{safe_dirname(HOSTILE_NAMES[1])} broken.png"
    (root / broken).write_bytes(b"\x89PNG\r\n\x1a\n<script>alert(6)</script>")
    extra = pd.DataFrame([{**df.loc[0].to_dict(), "path": copy},
                          {**df.loc[12].to_dict(), "path": broken}])
    csv = root / "audit_manifest.csv"
    pd.concat([df, extra]).to_csv(csv, index=False)
    out = tmp_path_factory.mktemp("hostile_prep")
    res = prepare(csv, out, progress=False)
    return res, out / "audit.html"


def test_audit_page_of_hostile_data_is_escaped_and_runs_no_script_in_chromium(hostile_audit, tmp_path):
    res, page = hostile_audit
    flagged = res.manifest[res.manifest["status"] != "keep"]
    reasons = " ".join(flagged["reason"])
    assert "exact duplicate of" in reasons and "unreadable" in reasons  # both planted rows are in the table
    shown = sorted(set(flagged["label"])) + [p.rsplit("/", 1)[-1] for p in flagged["path"]]
    assert_static_html_is_safe(page.read_text(encoding="utf-8"), shown)
    open_in_chromium(page, tmp_path, [CLASSES[1], safe_dirname(HOSTILE_NAMES[1]) + " broken.png",
                                      safe_dirname(HOSTILE_NAMES[2]) + " copy.png"])
