"""Render report sections to one self-contained HTML file (images inlined, no network)."""

from __future__ import annotations

import base64
import json
import math
from importlib import resources

from .._text import visible

__all__ = ["render_html", "sections_to_json"]


def _img(png: bytes | None, alt: str = ""):
    """An inline ``<img>`` for PNG bytes, as Markup whose ``alt`` is HTML-escaped.

    ``alt`` often carries text from data (class names, column names), so it is passed through
    ``Markup.format``, which escapes every argument; ``src`` is always a ``data:image/png`` URL built
    from bytes here, never a string from data.
    """
    from markupsafe import Markup

    if not isinstance(png, (bytes, bytearray, memoryview)) or not png:
        return Markup("")
    return Markup('<img alt="{}" src="data:image/png;base64,{}">').format(
        visible(alt), base64.b64encode(bytes(png)).decode("ascii"))


def pct(x) -> str:
    """0.935 -> '93.5 %'; None/NaN -> 'n/a' (shared by the sentences and the template)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.1f} %"


def pp(x, unit: str = "percentage points") -> str:
    """A difference of two shares: 0.327 -> '32.7 percentage points' (not '32.7 %'); None/NaN -> 'n/a'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.1f} {unit}".rstrip()


def ci_text(pair, kind: str = "f3") -> str:
    """'lo – hi' of an interval, or what to say when there is none (too few images for a bootstrap)."""
    import math

    if pair is None or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in pair):
        return "too few images for an interval"
    fmt = {"f3": lambda v: f"{v:.3f}", "pct": pct, "pp": lambda v: pp(v, "")}[kind]
    return f"{fmt(pair[0])} – {fmt(pair[1])}"


def render_html(sections: dict) -> str:
    from jinja2 import Environment

    # Every value comes from data (class names, file names, manifest columns): autoescape everything.
    # The only Markup is built by ``_img``, which escapes its text argument.
    # Text from data is also shown with its control and format characters as escapes: a class named "RTL\u202e..."
    # reversed the caption after it.
    env = Environment(autoescape=True, finalize=lambda v: visible(v) if type(v) is str else v)
    env.filters["img"] = _img
    env.filters["pct"] = pct
    env.filters["pp"] = pp
    env.filters["f3"] = lambda x: "n/a" if x is None else f"{x:.3f}"
    env.filters["ci"] = ci_text
    # The file and its folder (the class folder, mostly): names like 13.png repeat in every class.
    env.filters["shortpath"] = lambda p: "/".join(str(p).replace("\\", "/").rsplit("/", 2)[-2:])
    template = resources.files("frugalvision.reporting").joinpath("templates/report.html").read_text(encoding="utf-8")
    return env.from_string(template).render(s=sections)


def sections_to_json(sections: dict) -> str:
    """The same content for machines: every number, no images."""

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if not isinstance(v, (bytes, bytearray))}
        if isinstance(o, list):
            return [strip(v) for v in o]
        if hasattr(o, "tolist"):
            return o.tolist()
        return o

    return json.dumps(strip(sections), indent=2, default=str, allow_nan=True) + "\n"
