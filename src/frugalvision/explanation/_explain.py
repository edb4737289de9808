"""Why did the model decide? Class activation maps for any class, overlays, faithfulness: the code behind
``frugalvision.explanation`` (its docstring says more).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.decode import load_rgb
from ..decision import Decision
from ..exceptions import ImageDecodeError
from ..inference import METHODS, Predictor, map_support, resolve_classes
from ..maps.cam import class_activation_maps
from .overlay import normalise_map, to_image_coordinates

__all__ = ["checked_method", "METHODS", "Explanation", "display_image", "explain_image", "explain_images", "resolve_classes", "render_panel",
           "write_explanations", "class_activation_maps", "explanations_of"]


def checked_method(model, method: str) -> str:
    """The concrete method this model gives maps with ('auto' resolved), or a DataError saying why none."""
    from ..exceptions import DataError

    support = map_support(model, method)
    if not support.available:
        raise DataError(f"No maps for this model with method '{method}': {support.reason}.")
    return support.method


@dataclass
class Explanation:
    """Maps for one image.

    Attributes
    ----------
    path : str
    class_names : list of str
        The explained classes, in ``maps`` order.
    maps : ndarray (k, h, w)
        Raw maps at feature-map resolution (CAM: signed logit contributions).
    probabilities : dict
        Probability of every class for this image.
    box : (l, t, r, b)
        The network's crop as fractions of the image, to map ``maps`` back onto it.
    size : (W, H)
        Size of the decoded image the box refers to.
    method : str
    decision : Decision or None
        The model's decision for the image (:mod:`frugalvision.decision`): maps are titled by it
        (decided class, runner-up), not by probability rank.
    """

    path: str
    class_names: list
    maps: np.ndarray
    probabilities: dict
    box: tuple
    size: tuple
    method: str
    input: np.ndarray | None = None
    decision: "Decision | None" = None

    def heat(self, i: int = 0, size=None) -> np.ndarray:
        """Map ``i`` in image coordinates (``size`` = (W, H), default the decoded size), scaled to its own [0, 1].

        For locating the map's peak; pictures go through :func:`.panels.readable_maps`, which puts the maps of
        one image on a shared scale.
        """
        return normalise_map(to_image_coordinates(self.maps[i], self.box, size or self.size))


def explain_images(model, paths, *, cls="top2", method: str = "auto", labels=None, engine: str = "auto",
                   cache_dir=None, batch_size: int = 8) -> tuple[list[Explanation], list[tuple[str, str]]]:
    """Explanations for many images (one backbone pass each) and the files that failed."""
    concrete = checked_method(model, method)
    ex = model.extractor(engine=engine, cache_dir=cache_dir, progress=False)
    predictor = Predictor(model, ex.engine)
    decode = ex.decoder()
    out, failed = [], []
    paths = [str(p) for p in paths]
    labels = list(labels) if labels is not None else [None] * len(paths)

    def one(start):
        chunk = paths[start:start + batch_size]
        decoded = [decode(p) for p in chunk]
        errors = [(chunk[i], d.error) for i, d in enumerate(decoded) if d.array is None]
        return explanations_of(predictor, chunk, decoded, cls=cls, method=method,
                               labels=labels[start:start + batch_size])[0], errors

    starts = range(0, len(paths), batch_size)
    # Single-threaded sessions: one chunk per core at once, order kept. Only for maps computed in numpy from the
    # session's outputs: Grad-CAM methods hook one shared torch module, which two threads would mix up.
    if ex.lanes_mode and len(starts) > 1 and concrete in ("cam", "gradient"):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=ex.workers) as pool:
            results = list(pool.map(one, starts))
    else:
        results = [one(s) for s in starts]
    for expl, errors in results:
        out.extend(expl)
        failed.extend(errors)
    return out, failed


def explanations_of(predictor: Predictor, paths, decoded, *, cls="top2", method: str = "auto", labels=None):
    """One pass of the inference path over already-decoded images: ``(explanations, outputs)`` of the readable ones.

    ``decoded`` holds :class:`DecodedInput` s; ``outputs`` is the :class:`~frugalvision.inference.Outputs` of the
    readable images, in order.
    """
    model = predictor.model
    classes = model.classes
    labels = list(labels) if labels is not None else [None] * len(paths)
    good = [i for i, d in enumerate(decoded) if d.array is not None]
    arrays = (np.stack([decoded[i].array for i in good]) if good else
              np.zeros((0, model.info.preprocessing.input_size, model.info.preprocessing.input_size, 3), np.uint8))
    res = predictor.run(arrays, classes=cls, method=method, labels=[labels[i] for i in good])
    out = []
    for j, i in enumerate(good):
        k = len(res.map_classes[j])
        out.append(Explanation(
            path=str(paths[i]), class_names=[classes[c] for c in res.map_classes[j]], maps=res.maps[j, :k],
            probabilities={c: float(p) for c, p in zip(classes, res.probabilities[j])}, box=decoded[i].box,
            size=decoded[i].size, method=res.method, input=arrays[j], decision=res.decisions[j]))
    return out, res


def explain_image(model, path, *, cls="top1", method: str = "auto", label=None, **kw) -> np.ndarray:
    """Raw map(s) for one image: ``(h, w)`` for one class, ``(k, h, w)`` for several.

    Raises ImageDecodeError when the image cannot be read.
    """
    expl, failed = explain_images(model, [path], cls=cls, method=method,
                                  labels=None if label is None else [label], **kw)
    if failed:
        raise ImageDecodeError(failed[0][0], failed[0][1])
    maps = expl[0].maps
    if maps.shape[0] == 0:
        from ..exceptions import DataError

        raise DataError(f"{path}: the model decided '{expl[0].decision.label}' (none of these), so there is no "
                        f"decided class to explain; name a class (cls='NAME') to see its map anyway.")
    return maps[0] if maps.shape[0] == 1 else maps


def display_image(source, longest: int = 320, max_pixels: int | None = None) -> np.ndarray:
    """An RGB uint8 array of ``source`` (path or bytes) whose longest side is ``longest`` (small images enlarged)."""
    from ..data.decode import DEFAULT_MAX_PIXELS

    img = load_rgb(source, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, min_side=longest)
    scale = longest / max(img.size)
    if abs(scale - 1) > 0.05:
        from PIL import Image

        img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                         Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    return np.asarray(img)


def render_panel(e: Explanation, *, true_label=None, colorbar: bool = False, source=None) -> bytes:
    """PNG: image | map per explained class | map 1 minus map 2, on one colour scale per image.

    The readable rendering of :mod:`.panels` (the one the report and the web page show): maps of classes below
    p = 0.05 are hidden with a note. ``source``: the image's bytes when ``e.path`` is not a local file (e.g. an
    object-store URI).
    """
    from .panels import readable_panel_png

    return readable_panel_png(e, true_label=true_label, colorbar=colorbar, source=source)[0]


def write_explanations(model, paths, out, *, cls="top2", method: str = "auto", labels=None, colorbar: bool = False,
                       sheet: bool = True, overwrite: bool = False, **kw) -> dict:
    """Write ``<stem>__panel.png`` per image (+ one overlay PNG per drawn map) and a contact sheet.

    Panels are the readable rendering of :mod:`.panels`: one colour scale per image, no map for classes below
    p = 0.05, and a "why A, not B" map (``<stem>__<method>_<A>_minus_<B>.png``). Overlays are
    ``<stem>__<method>_<class>.png``. File names: the image's stem, plus a short hash of its full path when two
    inputs share a stem. Returns ``{"panels": [...], "overlays": [...], "sheet": path or None, "failed":
    [(path, reason)], "hidden": number of maps not drawn}``.
    """
    from .._io import refuse_overwrite, write_bytes
    from .panels import compose_panel, contact_sheet_png, png_bytes, readable_maps

    out = Path(out)
    paths = [str(p) for p in paths]
    expl, failed = explain_images(model, paths, cls=cls, method=method, labels=labels, **kw)
    stems = [Path(e.path).stem for e in expl]
    written = {"panels": [], "overlays": [], "sheet": None, "failed": failed, "hidden": 0}
    label_of = dict(zip(paths, labels)) if labels is not None else {}
    rows = []
    for e, stem in zip(expl, stems):
        if stems.count(stem) > 1:
            stem = f"{stem}-{hashlib.sha1(e.path.encode()).hexdigest()[:6]}"
        rm = readable_maps(e, true_label=label_of.get(e.path), longest=320)
        written["hidden"] += len(rm.hidden)
        panel = compose_panel(rm, colorbar=colorbar)
        if len(rows) < 60:
            rows.append(panel)
        target = out / f"{stem}__panel.png"
        refuse_overwrite(target, overwrite, "explanation image")
        write_bytes(target, png_bytes(panel))
        written["panels"].append(target)
        names = e.class_names
        for tile in rm.tiles:
            if tile.overlay is None:
                continue
            what = _safe(tile.label) if tile.kind == "class" else f"{_safe(names[0])}_minus_{_safe(names[1])}"
            t = out / f"{stem}__{e.method}_{what}.png"
            refuse_overwrite(t, overwrite, "explanation image")
            write_bytes(t, png_bytes(tile.overlay))
            written["overlays"].append(t)
    if sheet and len(rows) > 1:
        target = out / "contact_sheet.png"
        refuse_overwrite(target, overwrite, "contact sheet")
        write_bytes(target, contact_sheet_png(rows))
        written["sheet"] = target
    return written


def _safe(name: str) -> str:
    from .._io import safe_name

    return safe_name(name)
