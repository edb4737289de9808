"""The one inference path: decoded images -> embeddings -> probabilities, and the maps valid for this model.

Every consumer predicts through here: ``Model.predict`` and ``evaluate`` (embeddings from the cache,
then :func:`probabilities`), ``explain`` and the report, the web app, the Ray worker (all through
:meth:`Predictor.run`), and the ONNX export (which composes the same backbone graph with the head, see
:mod:`frugalvision.export`). Which maps a model can give is decided in one place, :func:`map_support`:
exact CAM for a linear head on average-pooled features, Grad-CAM in numpy for any other head on such features,
a pytorch-grad-cam method for other backbones (it needs torch and a known feature layer), or none, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .backbones.stages import MULTI_STAGES, stage_map_name
from .decision import UNKNOWN, Decisions, decide
from .exceptions import DataError
from .maps.gradcam import GRADIENT_METHODS

__all__ = ["UNKNOWN", "decisions", "label_names", "predict", "predictor", "predictions_table", "GRADIENT_METHODS",
           "METHODS", "MapSupport", "Outputs", "Predictor", "map_support", "probabilities", "resolve_classes"]

#: Explanation methods (``--method``); ``auto`` picks the best one this model supports.
METHODS = ("auto", "cam", "gradient", *GRADIENT_METHODS)


@dataclass(frozen=True)
class MapSupport:
    """Which maps a model gives: ``method`` ('cam', a Grad-CAM method) or None, and why."""

    method: str | None
    reason: str

    @property
    def available(self) -> bool:
        return self.method is not None


def _exact_cam_problem(model) -> str | None:
    if not model.info.backbone.pooled_is_plain_avg:
        return (f"exact CAM needs an embedding that is the plain average of the last feature map; backbone "
                f"'{model.info.backbone.name}' pools differently")
    if not hasattr(model.head, "coef_"):
        return f"exact CAM needs a linear head; this model's head is {model.info.head.type}"
    return None


def _gradient_problem(model) -> str | None:
    if model.info.backbone.features == "multi":
        return ("PyTorch Grad-CAM follows the last layer only, and this model also reads the pooled stages "
                "(--features multi): use --method cam (linear head) or gradient")
    if not model.info.backbone.cam_layer:
        return f"backbone '{model.info.backbone.name}' has no known feature layer to explain"
    if model.info.backbone.precision == "int8":
        return ("PyTorch Grad-CAM runs the fp32 network, and this model decides on the int8 graph's features: its "
                "maps would explain another network. Use --method cam or gradient (on the int8 graph's own feature "
                "map), or train with --precision fp32")
    from ._optional import has_torch, installed

    if not has_torch() or not installed("pytorch_grad_cam"):  # checked without importing torch
        return "Grad-CAM maps need PyTorch: pip install 'frugalvision[torch]'"
    return None


def map_support(model, method: str = "auto") -> MapSupport:
    """The map method this model supports for ``method`` ('auto' resolved), or None with the reason.

    Raises DataError only for a name that is not a method at all.
    """
    if method not in METHODS:
        raise DataError(f"Unknown method '{method}'. Choose one of {', '.join(METHODS)}.")
    cam_problem = _exact_cam_problem(model)
    if method == "cam" or (method == "auto" and cam_problem is None):
        if cam_problem:
            return MapSupport(None, cam_problem + "; use --method gradcam")
        return MapSupport("cam", "exact class activation maps (CAM)")
    plain = model.info.backbone.pooled_is_plain_avg
    if method == "gradient" or (method == "auto" and plain):
        if not plain:
            return MapSupport(None, f"gradient maps need an embedding that is the plain average of the last feature "
                                    f"map; backbone '{model.info.backbone.name}' pools differently; use --method gradcam")
        return MapSupport("gradient", "Grad-CAM maps computed with numpy (the head's gradient with respect to the "
                                      "pooled features, times the feature map)")
    grad = "gradcam" if method == "auto" else method
    problem = _gradient_problem(model)
    if problem:
        return MapSupport(None, problem)
    return MapSupport(grad, f"{grad} maps")


def probabilities(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, calibrated probabilities)`` of embeddings ``X``: the head, then the softmax temperature."""
    from .heads import softmax

    X = np.asarray(X)
    if len(X) == 0:
        k = len(model.classes)
        return np.zeros((0, k)), np.zeros((0, k))
    logits = model.head.logits(X)
    return logits, softmax(logits / model.temperature)


def decisions(model, proba: np.ndarray, embeddings: np.ndarray, logits: np.ndarray) -> Decisions:
    """The model's :class:`~frugalvision.decision.Decisions` for a batch: its "none of these" score and threshold,
    then its operating point, through :func:`frugalvision.decision.decide` (the one place a label is made)."""
    scores = None
    if model.ood_state is not None and len(proba):
        scores = _ood_scores(model, embeddings, logits)
    return decide(proba, model.classes, operating_point=model.operating_point, ood_scores=scores,
                  reject_threshold=model.reject_thresholds)


def label_names(classes, labels) -> list[str]:
    """Class names for decided indices; -1 is :data:`UNKNOWN`."""
    return [UNKNOWN if i < 0 else classes[i] for i in labels]


def _ood_scores(model, X, logits) -> np.ndarray:
    from .ood import ood_score

    return ood_score(model.ood_state, np.asarray(X, np.float32), np.asarray(logits, np.float32))


def unusualness(model, X, logits, proba) -> tuple[np.ndarray, str]:
    """Per image, higher = more unusual: the model's "none of these" score, or 1 - max probability when it
    has none. Returns ``(scores, name of the score)``."""
    if model.ood_state is not None:
        return _ood_scores(model, X, logits), f"none-of-these score ({model.ood_state.method})"
    return 1.0 - np.asarray(proba).max(axis=1, initial=0), "1 - top probability"


def resolve_classes(spec, decision, classes: list, true_label=None) -> list[int]:
    """Class indices to explain for one image, following its decision (a row of
    :class:`~frugalvision.decision.Decisions`: ``decision.label`` / ``.runner_up`` / ``.probabilities``).

    ``'top1'`` is the decided class, ``'top2'`` the decided class and the runner-up, ``'topK'`` those then the next
    by probability, ``'second'`` the runner-up; an image decided unknown gets none of these (no class map unless
    a class is asked by name, ``'true'`` or ``'all'``). Also ``'all'``, ``'true'``, a class name, or a list.
    """
    if isinstance(spec, (list, tuple)):
        out = []
        for s in spec:
            out.extend(i for i in resolve_classes(s, decision, classes, true_label) if i not in out)
        return out
    if isinstance(spec, (int, np.integer)):
        if not 0 <= spec < len(classes):
            raise DataError(f"Class index {spec} is out of range for {len(classes)} classes.")
        return [int(spec)]
    label, runner, proba = decision
    s = str(spec)
    if s == "all":
        return list(range(len(classes)))
    if s == "true":
        if true_label is None:
            raise DataError("cls='true' needs the image's true label (labels=...).")
        if str(true_label) not in classes:
            raise DataError(f"True label {true_label!r} is not a class of this model ({classes}).")
        return [classes.index(str(true_label))]
    if s in classes:  # a class named like a selector ('top2', 'all') is still that class
        return [classes.index(s)]
    if "," in s:  # a comma-separated list, where a class name may itself hold commas
        return resolve_classes(_split_selectors(s, classes), decision, classes, true_label)
    ranked = [] if label < 0 else [int(label)] + ([int(runner)] if runner >= 0 else [])
    ranked += [int(i) for i in np.argsort(-np.asarray(proba), kind="stable") if i not in ranked]
    if s.startswith("top") and s[3:].isdigit():
        return [] if label < 0 else ranked[:max(1, min(int(s[3:]), len(classes)))]
    if s == "second":
        return [] if label < 0 or runner < 0 else [int(runner)]
    raise DataError(f"Unknown class selector '{s}'. Use top1, top2, topK, all, true, or a class name: {classes}.")


def _split_selectors(text: str, classes) -> list[str]:
    """``"top1,comma,class"`` -> ``["top1", "comma,class"]`` when "comma,class" is a class: at each comma-separated
    part, the longest run of parts that names a class, else the part alone."""
    parts, out, i = text.split(","), [], 0
    while i < len(parts):
        j = next((j for j in range(len(parts), i, -1) if ",".join(parts[i:j]) in classes), None)
        if j is None:
            out.append(parts[i].strip())
            i += 1
        else:
            out.append(",".join(parts[i:j]))
            i = j
    return out


@dataclass
class Outputs:
    """What the model says about a batch of decoded images.

    Attributes
    ----------
    embeddings : ndarray (n, D)
    logits, probabilities : ndarray (n, K)
        ``probabilities`` are calibrated (temperature applied).
    maps : ndarray (n, r, h, w) or None
        Maps of the classes in ``map_classes`` (raw CAM: signed logit contributions; Grad-CAM: [0, 1]).
    map_classes : list of list of int, or None
        Per image, the explained class indices (``r`` = the longest list; shorter lists are padded
        by repeating their last class).
    maps_note : str
        The method used, or why there are no maps.
    decisions : Decisions
        The model's answer per image (:mod:`frugalvision.decision`): decided label (-1 = unknown), rule,
        most probable class, runner-up, "none of these" score.
    """

    embeddings: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    decisions: Decisions
    maps: np.ndarray | None = None
    map_classes: list | None = None
    method: str | None = None
    maps_note: str = ""

    @property
    def labels(self) -> np.ndarray:
        """Decided class indices, -1 for unknown."""
        return self.decisions.label

    @property
    def ood_scores(self) -> np.ndarray | None:
        return self.decisions.ood_score


class Predictor:
    """A model bound to a backbone engine: ``run(images)`` is the one way to predict on decoded pixels.

    Parameters
    ----------
    model : Model
    engine : Engine, optional
        A backbone engine (``features.engine``); default: the model's extractor engine (ONNX Runtime).
    """

    def __init__(self, model, engine=None):
        self.model = model
        self._engine = engine

    @property
    def engine(self):
        if self._engine is None:
            self._engine = self.model.extractor(progress=False).engine
        return self._engine

    def run(self, images: np.ndarray, *, classes=None, method: str = "auto", labels=None,
            strict: bool = True) -> Outputs:
        """Predict on uint8 NHWC images of the model's input size.

        ``classes`` (a selector, see :func:`resolve_classes`) asks for maps of those classes. When this model
        cannot give maps for ``method``: ``strict`` raises DataError with the reason, else ``maps`` is None
        and ``maps_note`` says why.
        """
        model = self.model
        support = map_support(model, method) if classes is not None else MapSupport(None, "no maps asked")
        if classes is not None and not support.available and strict:
            raise DataError(f"No maps for this model: {support.reason}.")
        want_fmaps = support.method in ("cam", "gradient")
        multi = model.info.backbone.features == "multi"
        if multi and want_fmaps:
            got = self.engine.run_outputs(np.ascontiguousarray(images), maps=True)
            fmaps, emb = got["features"], got["embedding"]
            stage_fmaps = [got[stage_map_name(k)] for k in MULTI_STAGES]
        else:
            fmaps, emb = self.engine.run(np.ascontiguousarray(images), maps=want_fmaps)
        logits, proba = probabilities(model, emb)
        dec = decisions(model, proba, emb, logits)
        out = Outputs(embeddings=emb, logits=logits, probabilities=proba, decisions=dec,
                      method=support.method, maps_note=support.reason)
        if not support.available or len(images) == 0:
            return out
        labels = list(labels) if labels is not None else [None] * len(images)
        picks = [resolve_classes(classes, (dec.label[j], dec.runner_up[j], proba[j]), model.classes, labels[j])
                 for j in range(len(images))]
        width = max(len(p) for p in picks)
        out.map_classes = picks
        if width == 0:  # every image decided unknown and no class asked by name: no maps
            out.maps = np.zeros((len(images), 0, 1, 1), np.float32)
            return out
        padded = [p + [p[-1] if p else 0] * (width - len(p)) for p in picks]
        if multi and want_fmaps:  # the logit split over the image at stride 16 (maps/stage_cam.py)
            from .maps.head_gradient import head_gradients
            from .maps.stage_cam import stage_class_maps

            out.maps = stage_class_maps(fmaps, stage_fmaps, head_gradients(model.head, emb, padded))
        elif support.method == "cam":
            from .maps.cam import class_activation_maps

            allmaps = class_activation_maps(fmaps, model.head.coef_)
            out.maps = np.stack([allmaps[j, padded[j]] for j in range(len(images))])
        elif support.method == "gradient":
            from .maps.head_gradient import gradient_maps

            out.maps = gradient_maps(fmaps, emb, model.head, padded)
        else:
            from .maps.gradcam import gradient_cams

            out.maps = gradient_cams(self._torch_backbone(), model.head, images, padded, support.method,
                                     cam_layer=model.info.backbone.cam_layer)
        return out

    def _torch_backbone(self):
        # Grad-CAM needs gradients, so it runs the PyTorch network (built once per model).
        if self.model._torch_backbone is None:
            self.model._torch_backbone = self.model.backbone()
        return self.model._torch_backbone


def predictor(model, *, engine: str = "auto", cache_dir=None) -> Predictor:
    """The :class:`Predictor` of ``model``: decoded pixels -> probabilities, decisions and maps."""
    return Predictor(model, model.extractor(engine=engine, cache_dir=cache_dir, progress=False).engine)


def predict(model, paths, *, progress: bool = True, engine: str = "auto", cache_dir=None) -> pd.DataFrame:
    """Decide on image files or folders: one row per file (see :func:`predictions_table`)."""
    from .data.discover import list_image_files

    files = list_image_files(paths)
    emb = model.embed(files, progress=progress, engine=engine, cache_dir=cache_dir)
    logits, probs = probabilities(model, emb.X)
    return predictions_table(emb, decisions(model, probs, emb.X, logits))


def predictions_table(emb, dec: Decisions) -> pd.DataFrame:
    """One row per input: path, the decision's columns (:meth:`~frugalvision.decision.Decisions.columns`: label,
    probability, rule, most probable class and probability, runner-up and probability, ood_score when the model
    has one) for the readable rows, and ``error`` (the reason a file was skipped, else empty)."""
    reasons = dict(emb.failures)
    n, rows_ok = len(emb.paths), np.flatnonzero(emb.ok)
    cols = {"path": list(emb.paths)}
    for name, values in dec.columns().items():
        values = np.asarray(values, dtype=object if name in _TEXT else float)
        full = np.full(n, "" if name in _TEXT else np.nan, dtype=object if name in _TEXT else float)
        full[rows_ok] = values
        cols[name] = full
    cols["error"] = [reasons.get(p, "") for p in emb.paths]
    return pd.DataFrame(cols)


_TEXT = {"label", "rule", "most_probable", "runner_up"}


