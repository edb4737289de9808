"""A map of the evaluated images: their embeddings projected to 2-D, coloured by true class.

Mistakes and images the "none of these" score rejects are marked; hovering a point shows its thumbnail
(CSS ``:hover`` on plain HTML elements: the report allows no script and no SVG). The projection is a
t-SNE (scikit-learn, PCA-initialised, after a PCA to 50 dimensions) for up to :data:`TSNE_MAX` images, and a
plain PCA beyond (a t-SNE's cost grows with the square of the points); at most :data:`MAX_POINTS` are drawn;
images close on the map look alike to the backbone, so a class spread over several islands or mixed into
another one shows where the embedding cannot separate them.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["data_map", "MAX_POINTS", "MAX_THUMBS"]

MAX_POINTS = 2000
#: t-SNE (exact: ~1 s for 200 points, ~2.5 s for 500 on a busy CPU; scikit-learn's Barnes-Hut was slower
#: here at these sizes) up to this many points; a PCA beyond.
TSNE_MAX = 500
#: Thumbnails embedded (mistakes and rejected images first, then a sample per class); others show text only.
MAX_THUMBS = 240
THUMB = 56

_PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
            "#EECA3B", "#1F77B4", "#8C564B", "#17BECF", "#BCBD22", "#7F7F7F", "#393B79", "#637939", "#8C6D31",
            "#843C39", "#7B4173")


def _colour(i: int) -> str:
    if i < len(_PALETTE):
        return _PALETTE[i]
    import colorsys

    r, g, b = colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.45 + 0.15 * ((i // 7) % 2), 0.65)
    return "#%02X%02X%02X" % (int(r * 255), int(g * 255), int(b * 255))


def _project(X: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    from sklearn.decomposition import PCA

    X = np.asarray(X, np.float32)
    if len(X) < 3:
        return np.zeros((len(X), 2)), "none"
    Z = PCA(n_components=min(50, X.shape[1], len(X) - 1), random_state=seed).fit_transform(X)
    if len(X) < 30 or len(X) > TSNE_MAX:
        return (Z[:, :2] if Z.shape[1] >= 2 else np.c_[Z, np.zeros(len(Z))]), "a PCA"
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(5, (len(X) - 1) / 4)))
    Y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto",
             max_iter=300, n_jobs=1, method="exact").fit_transform(Z)
    return Y, "a t-SNE"


def _thumb_png(path: str) -> bytes | None:
    from PIL import Image

    from ..exceptions import ImageDecodeError
    from ..explanation import display_image

    try:
        img = Image.fromarray(display_image(path, THUMB))
    except (ImageDecodeError, OSError, ValueError):  # an unreadable file gets no thumbnail, the point stays
        return None
    buf = io.BytesIO()
    img.convert("RGB").quantize(colors=64).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_map(ev, X: np.ndarray, *, rejected=None, seed: int = 0) -> dict:
    """Points (x, y in percent of the plot), classes with colours, and counts, as plain data.

    ``X``: embeddings of ``ev.predictions`` rows, in order; ``rejected``: boolean per row or None.
    """
    p = ev.predictions.reset_index(drop=True)
    n = len(p)
    rows = np.arange(n)
    if n > MAX_POINTS:
        rows = np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))
    Y, method = _project(X[rows], seed)
    span = np.ptp(Y, axis=0) if len(Y) else np.ones(2)
    span[span == 0] = 1
    Yn = (Y - Y.min(axis=0)) / span if len(Y) else Y
    classes = list(ev.classes)
    colour = {c: _colour(i) for i, c in enumerate(classes)}
    rej = np.zeros(n, bool) if rejected is None else np.asarray(rejected, bool)
    # Thumbnails: every mistake and rejected image first, then round-robin over classes.
    wrong = ~p["correct"].to_numpy()
    order = [i for i in range(len(rows)) if wrong[rows[i]] or rej[rows[i]]]
    rng = np.random.default_rng(seed)
    per = {c: [i for i in rng.permutation(len(rows)) if p["true"].iat[rows[i]] == c
               and not (wrong[rows[i]] or rej[rows[i]])] for c in classes}
    while len(order) < min(MAX_THUMBS, len(rows)) and any(per.values()):
        for c in classes:
            if per[c]:
                order.append(per[c].pop())
    thumbs = set(order[:MAX_THUMBS])
    points = []
    for j, i in enumerate(rows):
        r = p.iloc[i]
        x, y = float(Yn[j, 0]), float(Yn[j, 1])
        png = _thumb_png(r["path"]) if j in thumbs else None
        kind = "rejected" if rej[i] else "mistake" if wrong[i] else "ok"
        name = str(r["path"]).replace("\\", "/").rsplit("/", 1)[-1]
        label = (f"{name}: {r['true']}" + (f", predicted {r['pred']} (p={float(r['probability']):.2f})" if wrong[i]
                                            else f" (p={float(r['probability']):.2f})")
                 + (", rejected as unknown" if rej[i] else ""))
        points.append({"x": round(3 + 94 * x, 2), "y": round(3 + 94 * (1 - y), 2), "cls": str(r["true"]),
                       "colour": colour[r["true"]], "kind": kind, "label": label,
                       # left/up when the point is near the right/bottom edge, so the thumbnail stays inside
                       "flip_x": x > 0.6, "flip_y": y < 0.4,
                       "thumb": png})
    return {"method": method, "n": int(n), "n_shown": int(len(rows)), "points": points,
            "legend": [{"cls": c, "colour": colour[c], "n": int((p["true"] == c).sum())} for c in classes],
            "n_mistakes": int(wrong.sum()), "n_rejected": int(rej.sum()), "n_thumbs": len(thumbs)}
