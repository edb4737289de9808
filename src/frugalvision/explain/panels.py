"""Side-by-side panels (image | CAM top-1 | CAM top-2 ...) and contact sheets, as PNG."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["panel_png", "contact_sheet_png"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _draw_row(axes, image, overlays, titles, heading, colorbar, fig):
    axes[0].imshow(image)
    axes[0].set_title(heading, fontsize=9)
    for ax, ov, title in zip(axes[1:], overlays, titles):
        im = ax.imshow(ov)
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    if colorbar:
        import matplotlib as mpl

        sm = mpl.cm.ScalarMappable(cmap="jet", norm=mpl.colors.Normalize(0, 1))
        fig.colorbar(sm, ax=list(axes), shrink=0.7, label="relative evidence")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def panel_png(image: np.ndarray, overlays, titles, *, heading: str = "image", colorbar: bool = False,
              panel_size: float = 2.6) -> bytes:
    """One row: the image, then one overlay per class with its title ('shirt  p=0.81')."""
    plt = _plt()
    n = 1 + len(overlays)
    fig, axes = plt.subplots(1, n, figsize=(panel_size * n + (0.6 if colorbar else 0), panel_size + 0.3))
    _draw_row(np.atleast_1d(axes), image, overlays, titles, heading, colorbar, fig)
    return _png(fig)


def contact_sheet_png(rows, *, panel_size: float = 2.2, colorbar: bool = False) -> bytes:
    """Many panels stacked: ``rows`` is a list of (image, overlays, titles, heading)."""
    plt = _plt()
    ncols = 1 + max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(panel_size * ncols, (panel_size + 0.35) * len(rows)),
                             squeeze=False)
    for ax_row, (image, overlays, titles, heading) in zip(axes, rows):
        _draw_row(ax_row, image, overlays, titles, heading, False, fig)
        for ax in ax_row[1 + len(overlays):]:
            ax.axis("off")
    if colorbar:
        import matplotlib as mpl

        sm = mpl.cm.ScalarMappable(cmap="jet", norm=mpl.colors.Normalize(0, 1))
        fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=0.5, label="relative evidence")
    return _png(fig)


#: Maps of classes below this probability are not drawn: scaled up, near-zero evidence looks like signal.
MIN_MAP_PROBABILITY = 0.05


def readable_panel_png(e, *, true_label=None, longest: int = 240, min_p: float = MIN_MAP_PROBABILITY,
                       panel_size: float = 2.4) -> tuple[bytes, dict]:
    """A panel people can read: image | map per explained class | top-1 minus top-2.

    - The class maps of one image share one colour scale (the largest positive evidence of either map), so a
      weak runner-up looks weak instead of saturated.
    - A class below ``min_p`` gets no map, only a note (its map would be noise scaled up).
    - When the top-2 class reaches ``min_p``, a last panel shows top-1 minus top-2 on a diverging scale: red
      regions made it choose the top-1 class over the runner-up, blue regions pulled toward the runner-up.

    Returns ``(png, info)`` with ``info``: ``hidden`` (class names whose map was hidden), ``difference``
    (bool), ``scale`` (the shared maximum, in the map's own units).
    """
    from pathlib import Path

    from . import display_image
    from .overlay import normalise_map, overlay, to_image_coordinates

    image = display_image(e.path, longest)
    size = (image.shape[1], image.shape[0])
    ranks = sorted(e.probabilities, key=e.probabilities.get, reverse=True)
    raw = [to_image_coordinates(e.maps[i], e.box, size) for i in range(len(e.class_names))]
    shown = [e.probabilities[c] >= min_p for c in e.class_names]
    vmax = max([float(np.nanmax(np.maximum(r, 0))) for r, s in zip(raw, shown) if s and np.isfinite(r).any()] or [0.0])
    tiles, titles, hidden = [], [], []
    for c, r, s in zip(e.class_names, raw, shown):
        k = ranks.index(c) + 1
        title = f"{'top-%d' % k if k <= 3 else 'class'}: {c}  p={e.probabilities[c]:.2f}"
        if s:
            tiles.append(overlay(image, normalise_map(r, vmax if vmax > 0 else None)))
        else:
            tiles.append(None)
            hidden.append(c)
            title += f"\nmap hidden (p < {min_p:g})"
        titles.append(title)
    diff = False
    if len(e.class_names) >= 2 and all(shown[:2]):
        d = raw[0] - raw[1]
        m = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 0.0
        heat = (np.clip(d / m, -1, 1) + 1) / 2 if m > 0 else np.full_like(d, 0.5)
        tiles.append(overlay(image, heat, alpha=0.55, cmap="RdBu_r"))
        titles.append(f"why {e.class_names[0]}, not {e.class_names[1]}\nred: for {e.class_names[0]} · blue: for "
                      f"{e.class_names[1]}")
        diff = True
    heading = Path(e.path).name if true_label is None else f"{Path(e.path).name}\ntrue: {true_label}"
    plt = _plt()
    n = 1 + len(tiles)
    fig, axes = plt.subplots(1, n, figsize=(panel_size * n, panel_size + 0.45))
    axes = np.atleast_1d(axes)
    axes[0].imshow(image)
    axes[0].set_title(_short(heading), fontsize=8)
    for ax, tile, title in zip(axes[1:], tiles, titles):
        if tile is None:
            ax.imshow(np.full_like(image, 235))
            ax.text(0.5, 0.5, "no map:\ntoo unlikely", ha="center", va="center", fontsize=8, color="#555",
                    transform=ax.transAxes)
        else:
            ax.imshow(tile)
        ax.set_title(_short(title), fontsize=8)
    for ax in axes:
        ax.axis("off")
    return _png(fig), {"hidden": hidden, "difference": diff, "scale": vmax}


def _short(text: str, width: int = 34) -> str:
    """Titles of long class names: each line cut to ``width`` characters."""
    return "\n".join(line if len(line) <= width else line[:width - 1] + "…" for line in str(text).split("\n"))
