"""Operating points: turn probabilities into a label for a stated goal, not always the arg-max.

A target reads ``CLASS:recall>=0.9`` ("find at least 90 % of the defective parts") or
``CLASS:precision>=0.95`` ("when it says defective, be right 95 % of the time"). Each target gets a
threshold chosen on the validation split (never the test split), as scikit-learn's
``TunedThresholdClassifierCV`` does for one binary class, extended one-vs-rest to any number of classes:

- a recall target lowers the bar for its class: the class is predicted as soon as its probability
  reaches the threshold ``t`` (the highest ``t`` that still meets the target, so the fewest false alarms);
- a precision target raises it: the class is predicted only when its probability reaches ``u``
  (the lowest ``u`` that meets the target, so the most of the class still found), else the next best class.

The rule is one formula, the same in numpy (:func:`decide`) and in the exported ONNX graph: scores
``a_k = 1 + p_k / t_k`` where a recall threshold is reached, ``-1`` where a precision threshold is not,
else ``p_k``; the label is ``argmax a``. Without targets it is the arg-max of the probabilities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .exceptions import DataError

__all__ = ["Target", "OperatingPoint", "parse_target", "choose_operating_point", "decide", "score_vectors"]

_TARGET = re.compile(r"^\s*(?P<cls>.+?)\s*:\s*(?P<metric>recall|precision)\s*>=\s*(?P<value>[0-9.]+%?)\s*$")


@dataclass(frozen=True)
class Target:
    """``cls``'s ``metric`` (recall or precision) must be at least ``value`` (a fraction)."""

    cls: str
    metric: str
    value: float

    def __str__(self) -> str:
        return f"{self.cls}:{self.metric}>={self.value:g}"


def parse_target(text: str, classes) -> Target:
    """``'defective:recall>=0.9'`` (or ``>=90%``) -> Target, checked against the model's classes."""
    m = _TARGET.match(str(text))
    if not m:
        raise DataError(f"Target {text!r} is not of the form CLASS:recall>=0.9 or CLASS:precision>=0.95.")
    cls, metric, raw = m.group("cls"), m.group("metric"), m.group("value")
    value = float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
    if cls not in [str(c) for c in classes]:
        raise DataError(f"Target {text!r} names class {cls!r}, which is not one of the model's classes "
                        f"({', '.join(map(str, classes))}).")
    if not 0 < value <= 1:
        raise DataError(f"Target {text!r}: the {metric} must be between 0 and 1 (or 0 % and 100 %).")
    return Target(cls, metric, value)


@dataclass
class OperatingPoint:
    """Per-class thresholds chosen on validation for ``targets``, and what they gave there.

    ``recall_thresholds`` / ``precision_thresholds`` map a class to its probability threshold;
    ``validation`` holds, per target, the value reached on validation and how many images it was judged on.
    """

    targets: list = field(default_factory=list)
    recall_thresholds: dict = field(default_factory=dict)
    precision_thresholds: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"targets": [str(t) for t in self.targets], "recall_thresholds": self.recall_thresholds,
                "precision_thresholds": self.precision_thresholds, "validation": self.validation}

    @classmethod
    def from_json(cls, d: dict, classes) -> "OperatingPoint":
        return cls(targets=[parse_target(t, classes) for t in d.get("targets", [])],
                   recall_thresholds={str(k): float(v) for k, v in d.get("recall_thresholds", {}).items()},
                   precision_thresholds={str(k): float(v) for k, v in d.get("precision_thresholds", {}).items()},
                   validation=dict(d.get("validation", {})))


def score_vectors(op: OperatingPoint | None, classes) -> tuple[np.ndarray, np.ndarray]:
    """``(recall_thr, precision_thr)`` per class: +inf / 0 where a class has no such threshold."""
    classes = [str(c) for c in classes]
    r = np.full(len(classes), np.inf, np.float32)
    p = np.zeros(len(classes), np.float32)
    if op is not None:
        for c, t in op.recall_thresholds.items():
            r[classes.index(c)] = t
        for c, u in op.precision_thresholds.items():
            p[classes.index(c)] = u
    return r, p


def decide(proba: np.ndarray, op: OperatingPoint | None, classes) -> np.ndarray:
    """Class indices for ``proba`` (n, K) under the operating point (arg-max when there is none)."""
    proba = np.asarray(proba, dtype=np.float32)
    if op is None or not (op.recall_thresholds or op.precision_thresholds):
        return proba.argmax(axis=1)
    r, p = score_vectors(op, classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(proba >= r, 1.0 + proba / r, proba)
    a = np.where(proba < p, -1.0, a)
    out = a.argmax(axis=1)
    stuck = a.max(axis=1) < 0  # every class gated (only when every class has a precision target)
    out[stuck] = proba[stuck].argmax(axis=1)
    return out


def _metric(pred: np.ndarray, y: np.ndarray, k: int, metric: str) -> float:
    hit = (pred == k) & (y == k)
    denom = (y == k).sum() if metric == "recall" else (pred == k).sum()
    return float(hit.sum() / denom) if denom else (1.0 if metric == "precision" else 0.0)


def choose_operating_point(proba_val: np.ndarray, y_val, classes, targets) -> OperatingPoint:
    """Thresholds on validation probabilities meeting each target (in order), as loose as they can be.

    Raises DataError when the validation split has no image of a targeted class, or no threshold meets a
    target (the message says what was reached).
    """
    classes = [str(c) for c in classes]
    y = np.array([classes.index(str(v)) for v in y_val])
    op = OperatingPoint(targets=[t if isinstance(t, Target) else parse_target(t, classes) for t in targets])
    for t in op.targets:
        k = classes.index(t.cls)
        if not (y == k).any():
            raise DataError(f"Target {t}: the validation split has no '{t.cls}' image to choose a threshold on. "
                            f"Add images of '{t.cls}' (or a larger --val-size).")
        table = op.recall_thresholds if t.metric == "recall" else op.precision_thresholds
        candidates = np.unique(np.concatenate([proba_val[:, k], [0.0, 1.0]]))
        if len(candidates) > 1025:  # quantiles are enough to place a threshold; keeps this O(n) per target
            candidates = np.unique(np.quantile(candidates, np.linspace(0, 1, 1025)))
        # Recall: the highest threshold that meets it; precision: the lowest.
        order = candidates[::-1] if t.metric == "recall" else candidates
        best, reached = None, []
        for c in order:
            table[t.cls] = float(max(c, 1e-6))
            value = _metric(decide(proba_val, op, classes), y, k, t.metric)
            reached.append(value)
            if value >= t.value:
                best = table[t.cls]
                break
        if best is None:
            del table[t.cls]
            raise DataError(f"Target {t} cannot be met on the validation split: the best {t.metric} reached is "
                            f"{max(reached):.3f}. Lower the target, or add images of '{t.cls}'.")
        pred = decide(proba_val, op, classes)
        op.validation[str(t)] = {"threshold": best, "value": _metric(pred, y, k, t.metric),
                                 "n": int((y == k).sum() if t.metric == "recall" else (pred == k).sum())}
    return op
