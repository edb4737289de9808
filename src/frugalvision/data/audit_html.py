"""The audit as one self-contained HTML page (charts and thumbnails inlined)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

__all__ = ["audit_html"]


def _thumb(path: str, side: int = 96) -> str:
    from PIL import Image

    from .decode import load_rgb

    try:
        img = load_rgb(path, min_side=side)
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    except Exception:
        return "(unreadable)"


def audit_html(manifest: pd.DataFrame, summary: dict, max_rows: int = 200) -> str:
    from ..evaluate.plots import balance_png

    counts = pd.Series(summary["balance"]["counts"], dtype=int).to_frame("kept images")
    chart = base64.b64encode(balance_png(counts)).decode() if len(counts) else ""
    flagged = manifest[manifest["status"] != "keep"].head(max_rows)
    rows = "".join(
        f"<tr><td>{_thumb(r.path) if r.status != 'exclude' or 'duplicate' in r.reason else ''}</td>"
        f"<td>{html.escape(str(r.path))}</td><td>{html.escape(str(r.label))}</td><td>{r.status}</td>"
        f"<td>{html.escape(str(r.reason))}</td><td>{html.escape(str(r.suggested_label or ''))}</td></tr>"
        for r in flagged.itertuples())
    findings = "".join(f"<li>{k.replace('_', ' ')}: <b>{v}</b></li>" for k, v in summary["findings"].items())
    warn = summary["balance"]["warning"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>frugalvision data audit</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:.3em .5em;vertical-align:top}}
.warn{{background:#fff7e6;border-left:4px solid #e69500;padding:.6em 1em}}</style></head><body>
<section id="audit"><h1>Data audit</h1>
<p>{summary['n_files']} files from <code>{html.escape(summary['source'])}</code>: {summary['status']}.
Your files were not modified; <code>manifest.csv</code> lists what to keep, review or exclude, and why.</p>
<h2>Findings</h2><ul>{findings}</ul>
<h2>Class balance</h2><p>Imbalance ratio {summary['balance']['imbalance_ratio']:.2f}</p>
{f'<p class="warn">{html.escape(warn)}</p>' if warn else ''}
{f'<img alt="class balance" src="data:image/png;base64,{chart}">' if chart else ''}
<h2>Files to review or excluded</h2>
<table><tr><th></th><th>file</th><th>label</th><th>status</th><th>reason</th><th>suggested label</th></tr>{rows}</table>
{f'<p>… and {int((manifest["status"] != "keep").sum()) - max_rows} more in manifest.csv</p>' if (manifest["status"] != "keep").sum() > max_rows else ''}
</section></body></html>"""
