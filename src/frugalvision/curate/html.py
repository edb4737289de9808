"""The audit as one self-contained HTML page: a readable summary, then one image grid per issue kind
(sorted by severity, every image listed - long grids are collapsed in ``<details>``, never cut), and
duplicate groups side by side.

Labels, file names, reasons and the source path come from the user's data and may contain any text.
The page is rendered by a Jinja ``Environment(autoescape=True)``; the only markup not written in the
template is the ``<img>`` tag of an inlined PNG built by :func:`_img` with ``Markup.format`` (which
escapes its arguments) and a ``src`` that is always a ``data:image/png`` URL made from bytes here. A
Content-Security-Policy forbids scripts and network access, as a second line of defence.
"""

from __future__ import annotations

import base64
import io
import math

import pandas as pd

from .issues import ISSUE_KINDS

__all__ = ["audit_html", "CSP", "ISSUE_TITLES", "issue_rows"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

ISSUE_TITLES = {
    "unreadable": "Unreadable files", "scan_failed": "Quality scan failed", "label_conflict": "Label conflicts",
    "leak": "Train/test leaks", "exact_duplicate": "Exact duplicates", "near_duplicate": "Near-duplicates",
    "label_error": "Likely label errors", "too_dark": "Too dark", "too_bright": "Too bright", "blurry": "Blurry",
    "low_information": "Nearly constant", "tiny": "Tiny", "odd_aspect": "Extreme aspect ratio",
    "atypical": "Atypical for their class",
}

#: Grids longer than this start collapsed (all images are still in the page).
OPEN_LIMIT = 60

TEMPLATE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>frugalvision data audit</title>
<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:150px;font-size:12px;border:1px solid #ddd;padding:4px}
.card img{width:140px;height:140px;object-fit:contain;image-rendering:pixelated;background:#eee;display:block}
.group{display:flex;gap:8px;border:1px solid #ccc;padding:6px;margin:6px 0;align-items:flex-start}
.exclude{border-color:#c0392b}.review{border-color:#e69500}.path{word-break:break-all;color:#555}
.warn{background:#fff7e6;border-left:4px solid #e69500;padding:.6em 1em}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.3em .5em}</style></head><body>
<section id="audit"><h1>Data audit</h1>
<p>{{ s.n_files }} files from <code>{{ s.source }}</code> audited{% if s.seconds is defined %} in {{ "%.1f"|format(s.seconds) }} s{% endif %}:
<b>{{ s.status.get("keep", 0) }}</b> kept, <b>{{ s.status.get("review", 0) }}</b> to review,
<b>{{ s.status.get("exclude", 0) }}</b> excluded ({{ "%.1f"|format(100 * s.excluded_share) }} %;
{{ s.test_rows_excluded }} of them test images). Your files were not modified; <code>manifest.csv</code> lists
what to keep, review or exclude, and why: edit its <code>status</code> and <code>label</code> columns to decide, then train on it.</p>
<h2>Summary</h2><table><tr><th>issue</th><th>files</th><th>what happens</th></tr>
{% for k in kinds %}<tr><td><a href="#{{ k }}">{{ titles[k] }}</a></td><td>{{ counts[k] }}</td><td>{{ effect[k] }}</td></tr>
{% endfor %}</table>
<h2>Class balance</h2><p>Imbalance ratio {{ ratio }}</p>
{% if s.balance.warning %}<p class="warn">{{ s.balance.warning }}</p>{% endif %}
{{ chart|img("class balance") }}
{% if groups %}<h2 id="groups">Duplicate groups ({{ groups|length }})</h2>
<details {% if groups|length <= 30 %}open{% endif %}><summary>{{ groups|length }} groups, copies side by side</summary>
{% for g in groups %}<div class="group"><div><b>{{ g.title }}</b></div>
{% for c in g.cards %}<div class="card {{ c.status }}">{% if c.thumb %}{{ c.thumb|img(c.label) }}{% else %}<div>(unreadable)</div>{% endif %}<div>{{ c.label }} · {{ c.split }} · <b>{{ c.status }}</b></div>
<div class="path">{{ c.path }}</div></div>{% endfor %}</div>{% endfor %}</details>{% endif %}
{% for k in kinds %}{% if cards[k] %}<h2 id="{{ k }}">{{ titles[k] }} ({{ cards[k]|length }})</h2>
<details {% if cards[k]|length <= open_limit %}open{% endif %}><summary>{{ cards[k]|length }} images, most severe first</summary>
<div class="grid">{% for c in cards[k] %}<div class="card {{ c.status }}">{% if c.thumb %}{{ c.thumb|img(c.label) }}{% else %}<div>(unreadable)</div>{% endif %}
<div>{{ c.label }}{% if c.suggested %} → {{ c.suggested }}{% endif %} · <b>{{ c.status }}</b></div>
<div>{{ c.reason }}</div><div class="path">{{ c.path }}</div></div>{% endfor %}</div></details>{% endif %}{% endfor %}
</section></body></html>
"""

EFFECT = {"unreadable": "excluded", "scan_failed": "review (quality not checked)",
          "label_conflict": "review: every copy, both labels named", "leak": "train copy excluded, test copy kept",
          "exact_duplicate": "extra copies excluded (test rows: review)",
          "near_duplicate": "smaller copies excluded (test rows: review)", "label_error": "review, label suggested"}


def _img(png, alt: str = ""):
    from markupsafe import Markup

    if not isinstance(png, (bytes, bytearray, memoryview)) or not png:
        return Markup("")
    return Markup('<img alt="{}" src="data:image/png;base64,{}">').format(
        str(alt), base64.b64encode(bytes(png)).decode("ascii"))


def thumb_png(path: str, side: int = 140) -> bytes:
    """PNG bytes of a thumbnail, or b"" when the file cannot be read."""
    from ..data.decode import load_rgb

    try:
        img = load_rgb(path, min_side=min(side, 64))
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()
    except Exception:
        return b""


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


_REASON_WORDS = (("unreadable", "unreadable"), ("cannot", "unreadable"), ("exact duplicate", "exact_duplicate"),
                 ("near-duplicate", "near_duplicate"), ("leak", "leak"), ("different labels", "label_conflict"),
                 ("label error", "label_error"), ("too dark", "too_dark"), ("too bright", "too_bright"),
                 ("blurry", "blurry"), ("atypical", "atypical"))


def _kinds_in(reason: str) -> str:
    low = reason.lower()
    return ";".join(dict.fromkeys(kind for word, kind in _REASON_WORDS if word in low))


def issue_rows(manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows per issue kind, most severe first (then by path)."""

    # A manifest from an older prepare (or written by hand) may lack the issue column: read the kinds off the reasons.
    issues = (manifest["issues"] if "issues" in manifest.columns else
              manifest.get("reason", pd.Series("", index=manifest.index)).fillna("").astype(str).map(_kinds_in))
    iss = issues.fillna("").astype(str).str.split(";")
    sev = manifest.assign(severity=manifest["severity"] if "severity" in manifest.columns else 0)
    out = {}
    for k in ISSUE_KINDS:
        rows = sev[iss.map(lambda s, k=k: k in s)]
        out[k] = rows.sort_values(["severity", "path"], ascending=[False, True], kind="stable")
    return out


def audit_html(manifest: pd.DataFrame, summary: dict) -> str:
    from jinja2 import Environment

    from ..evaluation.plots import balance_png

    # Older or hand-made summaries lack the newer figures: derive what can be, leave out the rest.
    n_excluded = int((manifest.get("status", pd.Series(dtype=str)) == "exclude").sum())
    summary = {"excluded_share": n_excluded / max(len(manifest), 1), "test_rows_excluded": 0, **summary}
    counts = pd.Series(summary["balance"]["counts"], dtype=int).to_frame("kept images")
    chart = balance_png(counts) if len(counts) else b""
    thumbs: dict[str, bytes] = {}

    def th(p):
        if p not in thumbs:
            thumbs[p] = thumb_png(p)
        return thumbs[p]

    def card(r):
        return {"thumb": th(r["path"]), "path": _text(r["path"]), "label": _text(r.get("label")),
                "split": _text(r.get("split")), "status": _text(r.get("status")), "reason": _text(r.get("reason")),
                "suggested": _text(r.get("suggested_label"))}

    per = issue_rows(manifest)
    cards = {k: [card(r) for _, r in rows.iterrows()] for k, rows in per.items()}
    by_path = manifest.set_index("path", drop=False)
    groups = []
    for g in summary.get("duplicate_groups", []):
        title = ("label conflict" if g["label_conflict"] else "leak" if g["leak"] else
                 "exact copies" if g["kind"] == "exact" else "near copies")
        groups.append({"title": title, "cards": [card(by_path.loc[p]) for p in g["members"] if p in by_path.index]})
    groups.sort(key=lambda g: (g["title"] != "label conflict", g["title"] != "leak"))
    ratio = summary["balance"]["imbalance_ratio"]
    env = Environment(autoescape=True)
    env.filters["img"] = _img
    return env.from_string(TEMPLATE).render(
        s=summary, csp=CSP, chart=chart, kinds=list(ISSUE_KINDS), titles=ISSUE_TITLES,
        counts={k: len(v) for k, v in cards.items()}, effect={k: EFFECT.get(k, "review") for k in ISSUE_KINDS},
        cards=cards, groups=groups, open_limit=OPEN_LIMIT,
        ratio="n/a" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}")
