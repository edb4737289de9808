"""Readable class activation maps: the one rendering behind the report, ``frugalvision explain`` and the web page.

:func:`readable_maps` turns an :class:`~frugalvision.explanation.Explanation` into tiles people can read:

- the class maps of one image share **one colour scale** (the largest positive evidence of the maps shown),
  so a weak runner-up looks weak instead of saturated;
- a class below ``min_p`` (default p = 0.05) gets **no map**, only a note: scaled up, near-zero evidence
  looks like signal;
- when the first two explained classes both have maps, a last tile shows **map 1 minus map 2** on a
  diverging scale: red regions made the model choose the first class over the second, blue ones pulled
  toward the second.

Presentations of the same tiles: :func:`readable_panel_png` (one PNG row, for the CLI and the Ray batch),
:func:`contact_sheet_png` (rows stacked), and the report and the web page, which show each tile as an HTML
figure with its caption so the row wraps on a phone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._text import printable

__all__ = ["MIN_MAP_PROBABILITY", "CAM_HELP", "Tile", "ReadableMaps", "readable_maps", "readable_panel_png",
           "compose_panel", "contact_sheet_png", "legend_bar", "png_bytes"]

#: Maps of classes below this probability are not drawn: scaled up, near-zero evidence looks like signal.
MIN_MAP_PROBABILITY = 0.05

#: One line for people who have never heard of a CAM (the web page shows it next to the maps).
CAM_HELP = ("The coloured map shows which parts of the image pushed the model towards this label. "
            "It is a class activation map (CAM): red = strong evidence, blue = none, on one colour scale shared "
            "by the maps of this image; maps of labels below p = 0.05 are not drawn.")

EVIDENCE_CMAP = "jet"
DIFFERENCE_CMAP = "RdBu_r"


@dataclass
class Tile:
    """One tile of a readable panel.

    ``kind`` is ``"class"`` (a class map), ``"difference"`` (map 1 minus map 2) or ``"unknown"`` (the image was
    decided "none of these": no class map, ``note`` says so). ``overlay`` is the RGB
    uint8 tile, or None when the map is hidden (``hidden``; ``note`` says why). ``title`` holds the lines
    drawn above the tile in a PNG; ``caption`` is the same as one line for HTML.
    """

    kind: str
    label: str
    title: list
    caption: str
    overlay: np.ndarray | None
    rank: int | None = None
    probability: float | None = None
    hidden: bool = False
    note: str = ""
    pair: tuple = ()  # difference tile: (class of map 1, class of map 2)


@dataclass
class ReadableMaps:
    """The displayed image, its heading, and the map tiles on their shared scale."""

    image: np.ndarray
    heading: list
    tiles: list = field(default_factory=list)
    scale: float = 0.0            # the shared maximum of the class maps, in the maps' own units
    difference_scale: float = 0.0  # the largest |map 1 - map 2|
    method: str = ""
    min_p: float = MIN_MAP_PROBABILITY

    @property
    def hidden(self) -> list:
        return [t.label for t in self.tiles if t.hidden]

    @property
    def difference(self) -> bool:
        return any(t.kind == "difference" for t in self.tiles)

    def info(self) -> dict:
        return {"hidden": self.hidden, "difference": self.difference, "scale": self.scale,
                "difference_scale": self.difference_scale}


def _p(p: float) -> str:
    """'p = 0.81', or 'p < 0.01' for the tiny ones."""
    return f"p = {p:.2f}" if p >= 0.01 else "p < 0.01"


def _rank_name(k: int) -> str:
    return f"top-{k}" if k <= 3 else f"rank {k}"


def _role(c: str, d) -> str:
    """'decided' / 'runner-up' when ``c`` plays that part in decision ``d``; '' otherwise."""
    if d is None:
        return ""
    if c == d.label:
        return "decided"
    if c == d.runner_up and not d.unknown:
        return "runner-up"
    return ""


def readable_maps(e, *, true_label=None, longest: int = 240, min_p: float = MIN_MAP_PROBABILITY, source=None,
                  image: np.ndarray | None = None) -> ReadableMaps:
    """Tiles of ``e`` (an :class:`~frugalvision.explanation.Explanation`): one per explained class, then the difference.

    ``source``: the image's bytes when ``e.path`` is not a local file; ``image``: the display image itself
    (RGB uint8), when already decoded.
    """
    from . import display_image
    from .overlay import normalise_map, overlay, to_image_coordinates

    if image is None:
        image = display_image(e.path if source is None else source, longest)
    size = (image.shape[1], image.shape[0])
    ranks = sorted(e.probabilities, key=e.probabilities.get, reverse=True)
    dec = e.decision
    raw = [to_image_coordinates(e.maps[i], e.box, size) for i in range(len(e.class_names))]
    shown = [e.probabilities[c] >= min_p for c in e.class_names]
    vmax = max([float(np.nanmax(np.maximum(r, 0))) for r, s in zip(raw, shown) if s and np.isfinite(r).any()]
               or [0.0])
    name = Path(str(e.path).split("://", 1)[-1]).name or str(e.path)
    heading = [name] + ([f"true: {true_label}"] if true_label is not None else [])
    if dec is not None:
        heading.append(f"decided: {dec.label}" + (f" ({dec.rule})" if dec.rule != "most probable" else ""))
    out = ReadableMaps(image=image, heading=heading, scale=vmax, method=e.method, min_p=min_p)
    for c, r, s in zip(e.class_names, raw, shown):
        k = ranks.index(c) + 1
        p = float(e.probabilities[c])
        head = f"{_role(c, dec) or _rank_name(k)}: {c}"
        if s:
            out.tiles.append(Tile("class", c, [head, _p(p)], f"{head} ({_p(p)})",
                                  overlay(image, normalise_map(r, vmax if vmax > 0 else None), cmap=EVIDENCE_CMAP),
                                  rank=k, probability=p))
        else:
            note = f"no map: p < {min_p:g}"
            out.tiles.append(Tile("class", c, [head, f"{_p(p)} · no map"], f"{head} ({_p(p)}), no map",
                                  None, rank=k, probability=p, hidden=True,
                                  note=f"{note}, too unlikely for its map to mean anything"))
    if dec is not None and dec.unknown and not e.class_names:
        out.tiles.append(Tile("unknown", "unknown", ["decided: unknown", "no class map"],
                              f"decided unknown (none of these), closest class {dec.most_probable} "
                              f"({_p(dec.most_probable_probability)}): no class map", None,
                              note="none of these; name a class to see its map"))
    if len(e.class_names) >= 2 and all(shown[:2]):
        a, b = e.class_names[0], e.class_names[1]
        d = raw[0] - raw[1]
        m = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 0.0
        heat = (np.clip(d / m, -1, 1) + 1) / 2 if m > 0 else np.where(np.isnan(d), np.nan, 0.5)
        decided_first = a == dec.label if dec is not None else e.probabilities[a] >= e.probabilities[b]
        why = f"why {a}, not {b}" if decided_first else f"{a} against {b}"
        out.tiles.append(Tile("difference", why, [why, f"red: for {a} · blue: for {b}"],
                              f"{why} (red: for {a} · blue: for {b})",
                              overlay(image, heat, alpha=0.55, cmap=DIFFERENCE_CMAP), pair=(a, b)))
        out.difference_scale = m
    return out


# -- PNG composition (Pillow: ~20 ms a panel, where matplotlib's layout took ~0.3 s) -----------------------------
@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    try:
        from matplotlib import get_data_path

        return ImageFont.truetype(str(Path(get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except Exception:  # pragma: no cover - matplotlib without its fonts
        return ImageFont.load_default(size)


def _wrap(text: str, font, width: int) -> list:
    """``text`` in lines no wider than ``width`` pixels (words cut when a single one is too wide)."""
    words = printable(text, None, quote=False).split(" ")
    lines, line = [], ""
    for w in words:
        cand = f"{line} {w}".strip()
        if font.getlength(cand) <= width:
            line = cand
            continue
        if line:
            lines.append(line)
        while font.getlength(w) > width and len(w) > 1:
            n = max(1, int(len(w) * width / font.getlength(w)) - 1)
            lines.append(w[:n])
            w = w[n:]
        line = w
    lines.append(line)
    return lines


def _fit(text: str, font, width: float) -> str:
    """``text`` cut with an ellipsis to at most ``width`` pixels."""
    text = printable(text, None, quote=False)
    while len(text) > 1 and font.getlength(text) > width:
        text = text[:-2] + "…"
    return text


def legend_bar(cmap: str, width: int = 160, height: int = 10) -> np.ndarray:
    """RGB uint8 strip of ``cmap`` from 0 (left) to 1 (right)."""
    from .overlay import colorize

    return colorize(np.tile(np.linspace(0, 1, width), (height, 1)), cmap)


def compose_panel(rm: ReadableMaps, *, colorbar: bool = False, font_size: int = 13) -> np.ndarray:
    """One RGB row: the image, then the tiles, each under its title; hidden maps are grey tiles with the note.

    ``colorbar`` adds the two scales under the row: evidence (shared by the class maps) and difference.
    """
    from PIL import Image, ImageDraw

    font = _font(font_size)
    H, W = rm.image.shape[:2]
    pad, gap, line_h = 8, 10, font_size + 4
    titles = [[ln for t in rm.heading for ln in _wrap(t, font, W)]]
    titles += [[ln for t in tile.title for ln in _wrap(t, font, W)] for tile in rm.tiles]
    top = pad + line_h * max(len(t) for t in titles) + 4
    n = 1 + len(rm.tiles)
    legend_h = 3 * line_h + 8 if colorbar else 0
    canvas = Image.new("RGB", (2 * pad + n * W + (n - 1) * gap, top + H + pad + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    arrays = [rm.image] + [t.overlay for t in rm.tiles]
    for j, (arr, lines) in enumerate(zip(arrays, titles)):
        x = pad + j * (W + gap)
        for i, ln in enumerate(lines):
            draw.text((x + W / 2, pad + i * line_h), ln, fill=(34, 34, 34), font=font, anchor="ma")
        if arr is not None:
            canvas.paste(Image.fromarray(arr), (x, top))
        else:
            draw.rectangle([x, top, x + W - 1, top + H - 1], fill=(236, 236, 236))
            unknown = j > 0 and rm.tiles[j - 1].kind == "unknown"
            words = ("no map:", "none of these") if unknown else ("no map:", "too unlikely", f"(p < {rm.min_p:g})")
            note = [ln for t in words for ln in _wrap(t, font, W - 8)]
            y0 = top + H / 2 - len(note) * line_h / 2
            for i, ln in enumerate(note):
                draw.text((x + W / 2, y0 + i * line_h), ln, fill=(85, 85, 85), font=font, anchor="ma")
    if colorbar:
        y = top + H + pad
        cls = [j for j, t in enumerate(rm.tiles, 1) if t.kind == "class" and not t.hidden]
        diff = [j for j, t in enumerate(rm.tiles, 1) if t.kind == "difference"]
        pair = rm.tiles[diff[0] - 1].pair if diff else ("map 1", "map 2")
        for cols, cmap, left, right in ((cls, EVIDENCE_CMAP, "no evidence", "strongest (shared scale)"),
                                        (diff, DIFFERENCE_CMAP, f"for {pair[1]}", f"for {pair[0]}")):
            if not cols:
                continue
            x0, x1 = pad + cols[0] * (W + gap), pad + cols[-1] * (W + gap) + W
            canvas.paste(Image.fromarray(legend_bar(cmap, x1 - x0, 10)), (x0, y))
            half = (x1 - x0) / 2 - 4
            draw.text((x0, y + 14), _fit(left, font, half), fill=(68, 68, 68), font=font)
            draw.text((x1, y + 14), _fit(right, font, half), fill=(68, 68, 68), font=font, anchor="ra")
    return np.asarray(canvas)


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def readable_panel_png(e, *, true_label=None, longest: int = 240, min_p: float = MIN_MAP_PROBABILITY,
                       colorbar: bool = False, source=None) -> tuple[bytes, dict]:
    """PNG of :func:`compose_panel` for ``e``, and ``info``: ``hidden`` (class names whose map was hidden),
    ``difference`` (bool), ``scale`` (the shared maximum, in the map's own units), ``difference_scale``."""
    rm = readable_maps(e, true_label=true_label, longest=longest, min_p=min_p, source=source)
    return png_bytes(compose_panel(rm, colorbar=colorbar)), rm.info()


def contact_sheet_png(panels, *, pad: int = 6) -> bytes:
    """Panels (RGB arrays of :func:`compose_panel`) stacked top to bottom on white."""
    from PIL import Image

    width = max(p.shape[1] for p in panels)
    canvas = Image.new("RGB", (width, sum(p.shape[0] for p in panels) + pad * (len(panels) - 1)), "white")
    y = 0
    for p in panels:
        canvas.paste(Image.fromarray(p), (0, y))
        y += p.shape[0] + pad
    return png_bytes(np.asarray(canvas))

