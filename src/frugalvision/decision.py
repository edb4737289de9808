"""The one decision: probabilities -> "none of these" -> operating point -> one label per image.

:func:`decide` builds :class:`Decisions` (the decided label, the rule that decided it, the most probable class
and the runner-up) and is the only place a label is made; predict, evaluate, explain, the report, the web page
and the Ray worker all read its result, and the exported ONNX graph computes the same rule (tested equal).

Operating points turn probabilities into a label for a stated goal, not always the arg-max.

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

__all__ = ["UNKNOWN", "RULES", "Target", "OperatingPoint", "Decision", "Decisions", "parse_target",
           "choose_operating_point", "decide", "operating_point_indices", "reject_rule", "score_vectors"]

#: The label of an image the "none of these" score rejects.
UNKNOWN = "unknown"
#: Which rule decided an image: the arg-max, an operating point's threshold, or the "none of these" score.
MOST_PROBABLE, OPERATING_POINT, REJECTED = "most probable", "operating point", "rejected"
RULES = (MOST_PROBABLE, OPERATING_POINT, REJECTED)

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


def operating_point_indices(proba: np.ndarray, op: OperatingPoint | None, classes) -> np.ndarray:
    """Class indices for ``proba`` (n, K) under the operating point (arg-max when there is none); the class step
    of :func:`decide`, before "none of these"."""
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


def choose_operating_point(proba_val: np.ndarray, y_val, classes, targets, *, rejected=None) -> OperatingPoint:
    """Thresholds on validation probabilities meeting each target (in order), as loose as they can be.

    ``rejected``: the validation images "none of these" answers unknown (a boolean mask). They count as the
    decisions count them, as evaluate judges a target: a rejected image of a class is not found (recall), and is
    no answer of any class (precision). Ignoring them placed a recall threshold that fell short by the share
    rejected (solar cells: 85 % asked on validation, 79.4 % found on the test cells).

    Raises DataError when the validation split has no image of a targeted class, or no threshold meets a
    target (the message says what was reached).
    """
    classes = [str(c) for c in classes]
    out = np.zeros(len(proba_val), bool) if rejected is None else np.asarray(rejected, bool)

    def decided():
        return np.where(out, -1, operating_point_indices(proba_val, op, classes))

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
            value = _metric(decided(), y, k, t.metric)
            reached.append(value)
            if value >= t.value:
                best = table[t.cls]
                break
        if best is None:
            del table[t.cls]
            n_out = int((out & (y == k)).sum())
            why = (f" {n_out} of the {int((y == k).sum())} '{t.cls}' images there were answered unknown by 'none of "
                   f"these' and count as not found: a higher --accept-rate or --no-reject lets more through."
                   if n_out and t.metric == "recall" else "")
            raise DataError(f"Target {t} cannot be met on the validation split: the best {t.metric} reached is "
                            f"{max(reached):.3f}.{why} Lower the target, or add images of '{t.cls}'.")
        pred = decided()
        op.validation[str(t)] = {"threshold": best, "value": _metric(pred, y, k, t.metric),
                                 "n": int((y == k).sum() if t.metric == "recall" else (pred == k).sum())}
    return op


@dataclass(frozen=True)
class Decision:
    """One image's answer: ``label`` (a class or ``unknown``), ``rule`` (see :data:`RULES`), its probability (None
    when unknown), the most probable class, and the runner-up (the best class other than the decided one; for an
    unknown image, the class it would have had)."""

    label: str
    rule: str
    probability: float | None
    most_probable: str
    most_probable_probability: float
    runner_up: str | None
    runner_up_probability: float | None
    ood_score: float | None = None

    @property
    def unknown(self) -> bool:
        return self.rule == REJECTED


@dataclass(frozen=True)
class Decisions:
    """The decisions of a batch (arrays of length n); ``label`` is a class index, -1 for unknown."""

    classes: tuple
    label: np.ndarray
    rule: np.ndarray
    most_probable: np.ndarray
    runner_up: np.ndarray          # -1 when there is no other class
    probabilities: np.ndarray      # (n, K), calibrated
    ood_score: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    @property
    def unknown(self) -> np.ndarray:
        return self.label < 0

    def _p(self, idx) -> np.ndarray:
        rows = np.arange(len(idx))
        return np.where(np.asarray(idx) >= 0, self.probabilities[rows, np.maximum(idx, 0)], np.nan)

    @property
    def probability(self) -> np.ndarray:
        """Probability of the decided class; NaN for unknown images."""
        return self._p(self.label)

    @property
    def most_probable_probability(self) -> np.ndarray:
        return self._p(self.most_probable)

    @property
    def runner_up_probability(self) -> np.ndarray:
        return self._p(self.runner_up)

    def names(self, which: str = "label") -> list:
        """Class names of ``label`` / ``most_probable`` / ``runner_up`` (-1: :data:`UNKNOWN` or '')."""
        idx = getattr(self, which)
        empty = UNKNOWN if which == "label" else ""
        return [empty if i < 0 else self.classes[i] for i in idx]

    def __getitem__(self, i: int) -> Decision:
        lab, ru, mp = int(self.label[i]), int(self.runner_up[i]), int(self.most_probable[i])
        p = self.probabilities[i]
        return Decision(label=UNKNOWN if lab < 0 else self.classes[lab], rule=str(self.rule[i]),
                        probability=None if lab < 0 else float(p[lab]), most_probable=self.classes[mp],
                        most_probable_probability=float(p[mp]),
                        runner_up=None if ru < 0 else self.classes[ru],
                        runner_up_probability=None if ru < 0 else float(p[ru]),
                        ood_score=None if self.ood_score is None else float(self.ood_score[i]))

    @classmethod
    def concat(cls, parts: list, classes) -> "Decisions":
        """One Decisions from the decisions of consecutive batches."""
        classes = tuple(str(c) for c in classes)
        if not parts:
            return decide(np.zeros((0, len(classes)), np.float32), classes)
        scores = None if any(p.ood_score is None for p in parts) else np.concatenate([p.ood_score for p in parts])
        return cls(classes=classes, label=np.concatenate([p.label for p in parts]),
                   rule=np.concatenate([p.rule for p in parts]),
                   most_probable=np.concatenate([p.most_probable for p in parts]),
                   runner_up=np.concatenate([p.runner_up for p in parts]),
                   probabilities=np.concatenate([p.probabilities for p in parts]), ood_score=scores)

    def columns(self) -> dict:
        """The decision columns of predictions.csv, in order."""
        out = {"label": self.names(), "probability": self.probability, "rule": list(self.rule),
               "most_probable": self.names("most_probable"),
               "most_probable_probability": self.most_probable_probability,
               "runner_up": self.names("runner_up"), "runner_up_probability": self.runner_up_probability}
        if self.ood_score is not None:
            out["ood_score"] = self.ood_score
        return out


def decide(proba, classes, *, operating_point: OperatingPoint | None = None, ood_scores=None,
           reject_threshold=None) -> Decisions:
    """The decision for each row of ``proba`` (n, K calibrated probabilities), in three steps:

    1. "none of these": a score above ``reject_threshold`` labels the image unknown (rule ``rejected``); one
       number, or one per class (``RejectInfo.thresholds``), read at the image's most probable class;
    2. the operating point's thresholds, when it has any (rule ``operating point`` where they change the arg-max);
    3. else the most probable class (rule ``most probable``).
    The runner-up is the most probable class other than the decided one (for unknown: the most probable).
    """
    classes = tuple(str(c) for c in classes)
    proba = np.asarray(proba, dtype=np.float32).reshape(-1, len(classes))
    n = len(proba)
    top = proba.argmax(axis=1) if n else np.zeros(0, int)
    label = operating_point_indices(proba, operating_point, classes) if n else np.zeros(0, int)
    rule = np.where(label == top, MOST_PROBABLE, OPERATING_POINT).astype(object)
    scores = None if ood_scores is None else np.asarray(ood_scores, dtype=np.float32)
    if scores is not None and reject_threshold is not None and n:
        thr = np.asarray(reject_threshold, dtype=np.float32)  # as the exported graph compares
        rejected = scores > (thr[top] if thr.ndim else thr)
        label = np.where(rejected, -1, label)
        rule[rejected] = REJECTED
    masked = proba.copy()
    rows = np.arange(n)
    masked[rows, np.where(label >= 0, label, top)] = -np.inf
    runner = masked.argmax(axis=1) if n else np.zeros(0, int)
    runner = np.where(label < 0, top, runner) if len(classes) > 1 else np.full(n, -1)
    return Decisions(classes=classes, label=label.astype(int), rule=rule, most_probable=top.astype(int),
                     runner_up=runner.astype(int), probabilities=proba, ood_score=scores)


def reject_rule(thresholds: dict) -> str:
    """Which images "none of these" labels unknown, in words, from ``{class: threshold}`` (each image meets the
    threshold of its most probable class)."""
    values = sorted(set(float(v) for v in thresholds.values()))
    if len(values) == 1:
        return f"images scoring above {values[0]:.3f}"
    if len(thresholds) <= 4:
        each = ", ".join(f"{c} {float(v):.3f}" for c, v in thresholds.items())
        return f"images scoring above the threshold of their most probable class ({each})"
    return (f"images scoring above the threshold of their most probable class ({values[0]:.3f} to {values[-1]:.3f} "
            f"over the {len(thresholds)} classes)")
