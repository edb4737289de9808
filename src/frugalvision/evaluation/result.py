"""``EvaluationResult``: numbers only. Saving and rendering never recompute a metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import csv_text, path_inside, refuse_overwrite, safe_name, write_bytes, write_json, write_text

__all__ = ["EvaluationResult"]


#: The files :meth:`EvaluationResult.save` writes whatever the data (plus one CSV per group column).
SAVED_FILES = ("metrics.json", "predictions.csv", "per_class.csv", "confused_cells.csv", "confusion.png",
               "reliability.png")


def check_can_save(folder, overwrite: bool = False) -> dict:
    """``{name: path}`` of the evaluation files in ``folder``, after refusing any that exists unless ``overwrite``:
    called before the work too, so a refusal does not come after minutes of it."""
    folder = Path(folder)
    targets = {n: folder / n for n in SAVED_FILES}
    for p in targets.values():
        refuse_overwrite(p, overwrite, "evaluation file")
    return targets


@dataclass
class EvaluationResult:
    """Everything ``evaluate`` measured on one labelled set.

    Attributes
    ----------
    classes : list of str
    headline : dict
        accuracy, balanced_accuracy, macro/weighted P/R/F1, topk_accuracy, log_loss, n.
    accuracy_ci : (low, high)
        95 % Wilson interval (``k`` right of ``n``; see ``settings["ci_methods"]`` for every number's interval).
    per_class : DataFrame
        class, precision, recall, f1, support, recall_ci_low, recall_ci_high.
    confusion : ndarray (k, k)
        Rows = true class, columns = predicted, in ``classes`` order.
    confused_pairs : list of dict
        Off-diagonal cells, most frequent first: true, predicted, count, of, rate.
    predictions : DataFrame
        One row per evaluated image: path, true, pred (the decided label, ``unknown`` included), probability,
        rule, most_probable(_probability), runner_up(_probability), p_true, correct, p_<class>, plus manifest
        metadata columns.
    class_gap, groups, calibration, balance, skipped : see ``to_dict``.
    """

    classes: list
    headline: dict
    accuracy_ci: tuple
    per_class: pd.DataFrame
    confusion: np.ndarray
    confused_pairs: list
    predictions: pd.DataFrame
    class_gap: dict
    calibration: dict
    reliability: pd.DataFrame
    balance: pd.DataFrame
    groups: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    open_world: dict = field(default_factory=dict)  # operating point, ROC/PR per class, selective, unknown

    # -- reading ------------------------------------------------------------------------------
    def mistakes(self, n: int = 12) -> pd.DataFrame:
        """Up to ``n`` errors showing every kind of mistake (true -> decided, ``unknown`` included) in proportion
        to how often it happens (at least one of each while room is left), the most confident of each kind first.

        Confidence is the top class's probability: under an operating point a false alarm's decided class can be
        unlikely, so sorting by the decided class's probability alone would hide every false alarm.
        """
        p = self.predictions
        wrong = p[~p["correct"]].sort_values("most_probable_probability", ascending=False, kind="stable")
        if wrong.empty:
            return wrong
        kinds = wrong.groupby(["true", "pred"], sort=False).size().sort_values(ascending=False, kind="stable")
        share = {k: max(1, int(round(n * c / len(wrong)))) for k, c in kinds.items()}
        picked = []
        for (t, d), k in share.items():
            if len(picked) >= n:
                break
            rows = wrong[(wrong["true"] == t) & (wrong["pred"] == d)].head(min(k, n - len(picked)))
            picked.append(rows)
        return pd.concat(picked).sort_values("most_probable_probability", ascending=False, kind="stable")

    def least_confident_correct(self, n: int = 12) -> pd.DataFrame:
        p = self.predictions
        return p[p["correct"]].sort_values("probability", ascending=True).head(n)

    def cell_files(self, true: str, pred: str) -> list[str]:
        p = self.predictions
        return p.loc[(p["true"] == true) & (p["pred"] == pred), "path"].tolist()

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "headline": {**self.headline, "accuracy_ci": list(self.accuracy_ci)},
            "per_class": self.per_class.to_dict("records"),
            "confusion": self.confusion.tolist(),
            "confused_pairs": self.confused_pairs,
            "class_gap": self.class_gap,
            "groups": {col: {"table": g["table"].to_dict("records"), "gap": g["gap"],
                             "min_group_size": g["min_group_size"], "too_small": g["too_small"]}
                       for col, g in self.groups.items()},
            "calibration": self.calibration,
            "reliability": self.reliability.to_dict("records"),
            "open_world": self.open_world,
            "balance": {str(k): {str(c): int(v) for c, v in col.items()} for k, col in self.balance.items()},
            "skipped": self.skipped,
            "settings": self.settings,
        }

    def summary(self) -> str:
        h = self.headline
        lo, hi = self.accuracy_ci
        lines = [
            f"Test set: {h['n']} images, {len(self.classes)} classes",
            f"Accuracy {100 * h['accuracy']:.1f} % (95 % Wilson CI {100 * lo:.1f}-{100 * hi:.1f})   "
            f"balanced {100 * h['balanced_accuracy']:.1f} %   macro F1 {h['macro']['f1']:.3f}   "
            f"log-loss {h['log_loss']:.3f}   ECE {self.calibration['ece']:.3f}",
            f"{'class':<24}{'recall':>8}{'95 % Wilson':>16}{'precision':>11}{'F1':>7}{'n':>6}",
        ]
        n_unknown = int((self.predictions["pred"] == "unknown").sum()) if len(self.predictions) else 0
        if n_unknown:
            lines.insert(2, f"  {n_unknown} of {h['n']} images were answered 'unknown' (none of these) and count as "
                            f"not correct above")
        pc = self.settings.get("precision_check")
        if pc:
            lines.insert(2, f"  Precision: {pc['chosen']} ({pc['reason']})")
        for r in self.per_class.itertuples():
            lines.append(f"{str(r._1):<24}{100 * r.recall:7.1f}%{'':>3}{100 * r.recall_ci_low:5.1f}-{100 * r.recall_ci_high:5.1f}"
                         f"{100 * r.precision:10.1f}%{r.f1:7.3f}{r.support:6d}")
        if self.confused_pairs:
            lines.append("Most confused: " + "; ".join(
                f"{p['true']} -> {p['predicted']}: {p['count']} of {p['of']}" for p in self.confused_pairs[:3]))
        g = self.class_gap
        lines.append(f"Class gap: {g['best']} {100 * g['best_recall']:.1f} % vs {g['worst']} "
                     f"{100 * g['worst_recall']:.1f} % (difference {100 * g['difference']:.1f} points, "
                     f"95 % CI {100 * g['ci_low']:.1f} to {100 * g['ci_high']:.1f}, Newcombe)")
        for col, a in self.groups.items():
            if a["gap"]:
                gg = a["gap"]
                lines.append(f"By {col}: best {gg['best']} {100 * gg['best_accuracy']:.1f} %, worst {gg['worst']} "
                             f"{100 * gg['worst_accuracy']:.1f} % (gap {100 * gg['difference']:.1f} points, 95 % CI "
                             f"{100 * gg['ci_low']:.1f} to {100 * gg['ci_high']:.1f}, Newcombe)")
            if a["too_small"]:
                lines.append(f"By {col}: too small to judge (< {a['min_group_size']} images): {', '.join(a['too_small'])}")
        ow = self.open_world
        for r in ow.get("operating_point", []):
            lo, hi = r["value_ci"]
            lines.append(f"Operating point {r['target']}: {r['verdict']} ({_pc(r['value'])}, 95 % Wilson CI {_pc(lo)}-{_pc(hi)}). "
                         + r["in_words"])
        rej = ow.get("rejection")
        if rej:
            lines.append(f"'None of these': {_pc(rej['rejected_share'])} of these images labelled unknown; accuracy on "
                         f"the others {_pc(rej['accuracy_on_kept'])}")
        sel = {r["coverage"]: r for r in ow.get("selective", [])}
        if 0.9 in sel and 1.0 in sel:
            lines.append(f"Keeping only the 90 % most usual images: accuracy {_pc(sel[0.9]['accuracy'])} "
                         f"(all: {_pc(sel[1.0]['accuracy'])})")
        u = ow.get("unknown")
        if u:
            lo, hi = u["auroc_ci"]
            ci = (f"95 % bootstrap CI {lo:.3f}-{hi:.3f}" if np.isfinite(lo) and np.isfinite(hi)
                  else "too few images for an interval")
            lines.append(f"Unknown images ({u['n_unknown']}): AUROC {u['auroc']:.3f} ({ci}), "
                         f"{_pc(u['fpr_at_95_tpr'])} still accepted when 95 % of known images are"
                         + (f"; at the model's thresholds {_pc(u['unknown_rejected'])} rejected" if "unknown_rejected" in u
                            else ""))
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} unreadable files.")
        n_boot = self.settings.get("n_boot")
        lines.append("Intervals: Wilson for single proportions (accuracy, recall, operating point, shares); "
                     "Newcombe for gaps between classes or groups; percentile bootstrap"
                     f"{f' ({n_boot} resamples)' if n_boot else ''} for AUROC, none on fewer than 30 images.")
        return "\n".join(lines)

    # -- writing ------------------------------------------------------------------------------
    def save(self, folder, *, overwrite: bool = False) -> list[Path]:
        """Write metrics.json, predictions.csv, per_class.csv, confused_cells.csv and PNG charts."""
        from .plots import confusion_png, reliability_png

        folder = Path(folder)
        targets = check_can_save(folder, overwrite)
        write_json(targets["metrics.json"], self.to_dict())
        write_text(targets["predictions.csv"], csv_text(self.predictions, float_format="%.5f"))
        write_text(targets["per_class.csv"], csv_text(self.per_class, float_format="%.5f"))
        p = self.predictions
        cells = p[~p["correct"]][["true", "pred", "path", "probability"]].sort_values(["true", "pred"])
        write_text(targets["confused_cells.csv"], csv_text(cells, float_format="%.5f"))
        write_bytes(targets["confusion.png"], confusion_png(self.confusion, self.classes))
        write_bytes(targets["reliability.png"], reliability_png(self.reliability))
        written = list(targets.values())
        for col, a in self.groups.items():
            gp = path_inside(folder, f"groups_{safe_name(col)}.csv")  # a column name is data: never a path
            refuse_overwrite(gp, overwrite, "evaluation file")
            write_text(gp, csv_text(a["table"], float_format="%.5f"))
            written.append(gp)
        return written


def _pc(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f} %"
