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
