"""Why did the model decide? Class activation maps for any class, overlays, faithfulness.

Methods (``--method``): ``auto`` (the default: ``cam`` for linear heads, else ``gradcam``), ``cam``
(exact, gradient-free),
and the gradient family from pytorch-grad-cam: ``gradcam``, ``gradcam++``, ``layercam``,
``scorecam``. The CLI builds its choices from :data:`METHODS`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.decode import decode_for_input, load_rgb
from ..exceptions import DataError, ImageDecodeError
from ..heads import head_type
from .cam import class_activation_maps
from .gradcam import GRADIENT_METHODS, gradient_cams
from .overlay import normalise_map, overlay, to_image_coordinates

__all__ = ["METHODS", "Explanation", "display_image", "explain_image", "explain_images", "resolve_classes", "render_panel",
           "write_explanations", "class_activation_maps"]

METHODS = ("auto", "cam", *GRADIENT_METHODS)


def resolve_method(model, method: str) -> str:
    """'auto': exact CAM for a linear head on average-pooled features, else Grad-CAM."""
    if method != "auto":
        return method
    linear = hasattr(model.head, "coef_") and model.meta["backbone"].get("pooled_is_plain_avg", True)
    return "cam" if linear else "gradcam"


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
    """

    path: str
    class_names: list
    maps: np.ndarray
    probabilities: dict
    box: tuple
    size: tuple
    method: str
    input: np.ndarray | None = None

    def heat(self, i: int = 0, size=None) -> np.ndarray:
        """Map ``i`` in image coordinates (``size`` = (W, H), default the decoded size), scaled to [0, 1]."""
        return normalise_map(to_image_coordinates(self.maps[i], self.box, size or self.size))


def resolve_classes(spec, proba: np.ndarray, classes: list, true_label=None) -> list[int]:
    """Class indices for ``'top1'``, ``'top2'`` (top-1 and 2nd), ``'topK'``, ``'all'``, ``'true'``, a name, or a list."""
    if isinstance(spec, (list, tuple)):
        out = []
        for s in spec:
            out.extend(i for i in resolve_classes(s, proba, classes, true_label) if i not in out)
        return out
    order = list(np.argsort(-proba))
    if isinstance(spec, (int, np.integer)):
        if not 0 <= spec < len(classes):
            raise DataError(f"Class index {spec} is out of range for {len(classes)} classes.")
        return [int(spec)]
    s = str(spec)
    if s == "all":
        return list(range(len(classes)))
    if s == "true":
        if true_label is None:
            raise DataError("cls='true' needs the image's true label (labels=...).")
        return [classes.index(str(true_label))]
    if s.startswith("top") and s[3:].isdigit():
        k = int(s[3:])
        return [int(i) for i in order[:max(1, min(k, len(classes)))]]
    if s == "second":
        return [int(order[1])]
    if s in classes:
        return [classes.index(s)]
    raise DataError(f"Unknown class selector '{s}'. Use top1, top2, topK, all, true, or a class name: {classes}.")


def checked_method(model, method: str) -> str:
    """The concrete method for this model ('auto' resolved), or a DataError saying why it can't work."""
    if method not in METHODS:
        raise DataError(f"Unknown method '{method}'. Choose one of {', '.join(METHODS)}.")
    method = resolve_method(model, method)
    if method == "cam" and not model.meta["backbone"].get("pooled_is_plain_avg", True):
        raise DataError(f"Exact CAM needs an average-pooled embedding; backbone '{model.spec.name}' is not. "
                        f"Use method='gradcam'.")
    if method == "cam" and not hasattr(model.head, "coef_"):
        raise DataError(f"Exact CAM needs a linear head; this model's head is {head_type(model.head)}. "
                        f"Use method='gradcam' (--method gradcam).")
    return method


def explain_images(model, paths, *, cls="top2", method: str = "auto", labels=None, engine: str = "auto",
                   cache_dir=None, batch_size: int = 16) -> tuple[list[Explanation], list[tuple[str, str]]]:
    """Explanations for many images (one backbone pass each) and the files that failed."""
    method = checked_method(model, method)
    ex = model.extractor(engine=engine, cache_dir=cache_dir, progress=False)
    pre = ex.preprocessing
    out, failed = [], []
    paths = [str(p) for p in paths]
    labels = list(labels) if labels is not None else [None] * len(paths)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        decoded = [decode_for_input(p, pre["input_size"], pre["crop_pct"], pre["interpolation"]) for p in chunk]
        failed.extend((chunk[i], d.error) for i, d in enumerate(decoded) if d.array is None)
        out.extend(explain_decoded(model, ex.engine, chunk, decoded, cls=cls, method=method,
                                   labels=labels[start:start + batch_size])[0])
    return out, failed


def explain_decoded(model, engine, paths, decoded, *, cls="top2", method: str = "cam", labels=None):
    """One backbone pass over already-decoded images: ``(explanations, embeddings)`` of the readable ones.

    ``method`` is resolved ("cam" or a Grad-CAM variant); ``decoded`` holds :class:`DecodedInput` s.
    """
    classes = model.classes
    labels = list(labels) if labels is not None else [None] * len(paths)
    good = [i for i, d in enumerate(decoded) if d.array is not None]
    if not good:
        return [], np.zeros((0, model.spec.embed_dim), np.float32)
    arrays = np.stack([decoded[i].array for i in good])
    fmaps, emb = engine.run(arrays, maps=True)
    proba = model.predict_proba_embeddings(emb)
    picks = [resolve_classes(cls, proba[j], classes, labels[i]) for j, i in enumerate(good)]
    width = max(len(p) for p in picks)
    padded = [p + [p[-1]] * (width - len(p)) for p in picks]
    if method == "cam":
        allmaps = class_activation_maps(fmaps, model.head.coef_)
        maps = np.stack([allmaps[j, padded[j]] for j in range(len(good))])
    else:
        maps = gradient_cams(_torch_backbone(model), model.head, arrays, padded, method)
    out = []
    for j, i in enumerate(good):
        k = len(picks[j])
        out.append(Explanation(
            path=str(paths[i]), class_names=[classes[c] for c in picks[j]], maps=maps[j, :k],
            probabilities={c: float(p) for c, p in zip(classes, proba[j])}, box=decoded[i].box,
            size=decoded[i].size, method=method, input=arrays[j]))
    return out, emb


def _torch_backbone(model):
    if getattr(model, "_torch_backbone", None) is None:
        model._torch_backbone = model.backbone()
    return model._torch_backbone


def explain_image(model, path, *, cls="top1", method: str = "auto", label=None, **kw) -> np.ndarray:
    """Raw map(s) for one image: ``(h, w)`` for one class, ``(k, h, w)`` for several.

    Raises ImageDecodeError when the image cannot be read.
    """
    expl, failed = explain_images(model, [path], cls=cls, method=method,
                                  labels=None if label is None else [label], **kw)
    if failed:
        raise ImageDecodeError(failed[0][0], failed[0][1])
    maps = expl[0].maps
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


def _panel_parts(e: Explanation, true_label=None, longest: int = 320, source=None):
    image = display_image(e.path if source is None else source, longest)
    size = (image.shape[1], image.shape[0])
    overlays = [overlay(image, e.heat(i, size)) for i in range(len(e.class_names))]
    ranks = sorted(e.probabilities, key=e.probabilities.get, reverse=True)
    titles = []
    for c in e.class_names:
        r = ranks.index(c) + 1
        titles.append(f"{'top-%d' % r if r <= 3 else 'class'}: {c}  p={e.probabilities[c]:.2f}")
    heading = Path(e.path).name if true_label is None else f"{Path(e.path).name}\ntrue: {true_label}"
    return image, overlays, titles, heading


def render_panel(e: Explanation, *, true_label=None, colorbar: bool = False, source=None) -> bytes:
    """PNG: image | overlay per explained class, each titled with label and probability.

    ``source``: the image's bytes when ``e.path`` is not a local file (e.g. an object-store URI).
    """
    from .panels import panel_png

    image, overlays, titles, heading = _panel_parts(e, true_label, source=source)
    return panel_png(image, overlays, titles, heading=heading, colorbar=colorbar)


def write_explanations(model, paths, out, *, cls="top2", method: str = "auto", labels=None, colorbar: bool = False,
                       sheet: bool = True, overwrite: bool = False, **kw) -> dict:
    """Write ``<stem>__panel.png`` per image (+ ``<stem>__<method>_<class>.png`` raw overlays) and a contact sheet.

    File names: the image's stem, plus a short hash of its full path when two inputs share a stem.
    Returns ``{"panels": [...], "overlays": [...], "sheet": path or None, "failed": [(path, reason)]}``.
    """
    import io

    from PIL import Image

    from .._io import refuse_overwrite, write_bytes
    from .panels import contact_sheet_png, panel_png

    out = Path(out)
    paths = [str(p) for p in paths]
    expl, failed = explain_images(model, paths, cls=cls, method=method, labels=labels, **kw)
    stems = [Path(e.path).stem for e in expl]
    written = {"panels": [], "overlays": [], "sheet": None, "failed": failed}
    label_of = dict(zip(paths, labels)) if labels is not None else {}
    rows = []
    for e, stem in zip(expl, stems):
        if stems.count(stem) > 1:
            stem = f"{stem}-{hashlib.sha1(e.path.encode()).hexdigest()[:6]}"
        parts = _panel_parts(e, label_of.get(e.path))
        rows.append(parts)
        target = out / f"{stem}__panel.png"
        refuse_overwrite(target, overwrite, "explanation image")
        write_bytes(target, panel_png(*parts[:3], heading=parts[3], colorbar=colorbar))
        written["panels"].append(target)
        for c, ov in zip(e.class_names, parts[1]):
            t = out / f"{stem}__{e.method}_{_safe(c)}.png"
            refuse_overwrite(t, overwrite, "explanation image")
            buf = io.BytesIO()
            Image.fromarray(ov).save(buf, format="PNG")
            write_bytes(t, buf.getvalue())
            written["overlays"].append(t)
    if sheet and len(rows) > 1:
        target = out / "contact_sheet.png"
        refuse_overwrite(target, overwrite, "contact sheet")
        write_bytes(target, contact_sheet_png(rows[:60], colorbar=colorbar))
        written["sheet"] = target
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))
