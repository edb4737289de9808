"""The audit as one self-contained HTML page (charts and thumbnails inlined).

Labels, file names, reasons and the source path come from the user's data and may contain any text
(``<script>``, quotes, ``javascript:``). The page is therefore rendered by a Jinja template with
autoescaping on for every value; the only markup not written in the template is the ``<img>`` tag of
an inlined PNG, built by :func:`_img` with ``Markup.format`` (which escapes its arguments) and a
``src`` that is always a ``data:image/png`` URL made from bytes here. A Content-Security-Policy
forbids scripts and network access, as a second line of defence.
"""

from __future__ import annotations

import base64
import io
import math

import pandas as pd

__all__ = ["audit_html"]

#: No scripts, no network: only inline styles and data: images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

TEMPLATE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>frugalvision data audit</title>
<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.3em .5em;vertical-align:top}
.warn{background:#fff7e6;border-left:4px solid #e69500;padding:.6em 1em}</style></head><body>
<section id="audit"><h1>Data audit</h1>
<p>{{ s.n_files }} files from <code>{{ s.source }}</code>:
{% for k, v in s.status.items() %}{{ v }} {{ k }}{% if not loop.last %}, {% endif %}{% endfor %}.
Your files were not modified; <code>manifest.csv</code> lists what to keep, review or exclude, and why.</p>
<h2>Findings</h2><ul>{% for k, v in s.findings.items() %}<li>{{ k|replace("_", " ") }}: <b>{{ v }}</b></li>{% endfor %}</ul>
<h2>Class balance</h2><p>Imbalance ratio {{ ratio }}</p>
{% if s.balance.warning %}<p class="warn">{{ s.balance.warning }}</p>{% endif %}
{{ chart|img("class balance") }}
<h2>Files to review or excluded</h2>
<table><tr><th></th><th>file</th><th>label</th><th>status</th><th>reason</th><th>suggested label</th></tr>
{% for r in rows %}<tr><td>{% if r.thumb is not none %}{{ r.thumb|img("") if r.thumb else "(unreadable)" }}{% endif %}</td>
<td>{{ r.path }}</td><td>{{ r.label }}</td><td>{{ r.status }}</td><td>{{ r.reason }}</td><td>{{ r.suggested }}</td></tr>
{% endfor %}</table>
{% if n_more > 0 %}<p>… and {{ n_more }} more in manifest.csv</p>{% endif %}
</section></body></html>
"""


def _img(png, alt: str = ""):
    """``<img>`` for PNG bytes; ``alt`` is escaped, ``src`` is never a string from data."""
    from markupsafe import Markup

    if not isinstance(png, (bytes, bytearray, memoryview)) or not png:
        return Markup("")
    return Markup('<img alt="{}" src="data:image/png;base64,{}">').format(
        str(alt), base64.b64encode(bytes(png)).decode("ascii"))


def _thumb(path: str, side: int = 96) -> bytes:
    """PNG bytes of a thumbnail, or b"" when the file cannot be read."""
    from .decode import load_rgb

    try:
        img = load_rgb(path, min_side=side)
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()
    except Exception:
        return b""


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def audit_html(manifest: pd.DataFrame, summary: dict, max_rows: int = 200) -> str:
    from jinja2 import Environment

    from ..evaluate.plots import balance_png

    counts = pd.Series(summary["balance"]["counts"], dtype=int).to_frame("kept images")
    chart = balance_png(counts) if len(counts) else b""
    not_kept = manifest["status"] != "keep"
    rows = []
    for r in manifest[not_kept].head(max_rows).itertuples():
        reason = _text(r.reason)
        show = r.status != "exclude" or "duplicate" in reason
        rows.append({"thumb": _thumb(r.path) if show else None, "path": _text(r.path), "label": _text(r.label),
                     "status": _text(r.status), "reason": reason, "suggested": _text(r.suggested_label)})
    ratio = summary["balance"]["imbalance_ratio"]
    env = Environment(autoescape=True)
    env.filters["img"] = _img
    return env.from_string(TEMPLATE).render(
        s=summary, csp=CSP, chart=chart, rows=rows, n_more=int(not_kept.sum()) - max_rows,
        ratio="n/a" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}")
