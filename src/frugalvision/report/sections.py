"""Report sections: plain data built from an evaluation (numbers, tables, PNG bytes).

Building a section may run the model (CAM panels, faithfulness curves); rendering never
does, so ``report.json`` and ``report.html`` always say the same thing.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pandas as pd

from .render import pct as _pct

__all__ = ["build_sections"]


def headline_sentences(ev) -> list[str]:
    h = ev.headline
    lo, hi = ev.accuracy_ci
    pc = ev.per_class.sort_values("recall", ascending=False)
    s = [f"On {h['n']} test images the model never saw during training, it picks the right category "
         f"{_pct(h['accuracy'])} of the time (95 % confidence interval {_pct(lo)} to {_pct(hi)})."]
    best, worst = pc.iloc[0], pc.iloc[-1]
    s.append(f"It is best on {best['class']} ({_pct(best['recall'])} found) and weakest on {worst['class']} "
             f"({_pct(worst['recall'])} found).")
    if ev.confused_pairs:
        p = ev.confused_pairs[0]
        s.append(f"The most frequent mistake: {p['true']} taken for {p['predicted']} "
                 f"({p['count']} of {p['of']} {p['true']} images).")
    return s


def build_sections(model, ev, *, explain: bool = True, n_mistakes: int = 8, n_typical: int = 3,
                   faithfulness: bool = True, faithfulness_per_class: int = 4, engine: str = "auto",
                   cache_dir=None) -> dict:
    """All report content as plain data (see ``render.render_html``)."""
    from ..evaluate.plots import balance_png, bar_png, confusion_png, reliability_png

    meta = model.meta
    pc = ev.per_class
    sections = {
        "title": f"frugalvision report: {', '.join(ev.classes[:6])}{'…' if len(ev.classes) > 6 else ''}",
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": headline_sentences(ev),
        "headline": {**ev.headline, "accuracy_ci": list(ev.accuracy_ci), **ev.calibration},
        "per_class": pc.to_dict("records"),
        "per_class_png": bar_png(list(pc["class"]), list(pc["recall"]), list(pc["recall_ci_low"]),
                                 list(pc["recall_ci_high"]), xlabel="recall (share of the class found), 95 % CI"),
        "confusion_png": confusion_png(ev.confusion, ev.classes),
        "confused_pairs": [{**p, "files": ev.cell_files(p["true"], p["predicted"])[:5]} for p in ev.confused_pairs[:8]],
        "class_gap": ev.class_gap,
        "groups": {col: {"table": a["table"].to_dict("records"), "gap": a["gap"], "too_small": a["too_small"],
                         "min_group_size": a["min_group_size"],
                         "png": bar_png(list(a["table"]["group"]), list(a["table"]["accuracy"]),
                                        list(a["table"]["accuracy_ci_low"]), list(a["table"]["accuracy_ci_high"]),
                                        xlabel=f"accuracy by {col}, 95 % CI")}
                   for col, a in ev.groups.items()},
        "calibration": {**ev.calibration, "temperature": model.temperature,
                        "png": reliability_png(ev.reliability)},
        "data": _data_section(model, ev, balance_png),
        "model_card": _model_card(meta),
        "audit": _audit_section(meta),
        "open_world": _open_world_section(ev),
        "settings": ev.settings,
    }
    mistakes = ev.mistakes(n_mistakes)
    unsure = ev.least_confident_correct(n_mistakes)
    sections["mistakes"] = _gallery_rows(mistakes)
    sections["unsure"] = _gallery_rows(unsure)
    sections["typical"] = {}
    sections["faithfulness"] = None
    from ..inference import map_support

    support = map_support(model)
    sections["maps_note"] = None if support.available else support.reason
    if explain and support.available:
        _attach_panels(model, sections, mistakes, unsure, ev, n_typical, engine, cache_dir)
        if faithfulness:
            sections["faithfulness"] = _faithfulness(model, ev, faithfulness_per_class, engine, cache_dir)
    return sections


def _gallery_rows(df: pd.DataFrame) -> list[dict]:
    return [{"path": r.path, "true": r.true, "pred": r.pred, "p": float(r.probability), "top2": r.top2,
             "p2": float(r.top2_probability), "png": None} for r in df.itertuples()]


def _attach_panels(model, sections, mistakes, unsure, ev, n_typical, engine, cache_dir):
    from ..explain import explain_images, render_panel

    p = ev.predictions
    typical_paths, typical_labels = [], []
    for c in ev.classes:
        ok = p[(p["true"] == c) & p["correct"]].sort_values("probability", ascending=False)
        # "Typical": confidently right, taken from the middle of the confident ones rather than the extreme top.
        pick = ok.iloc[len(ok) // 4: len(ok) // 4 + n_typical] if len(ok) > 4 * n_typical else ok.head(n_typical)
        typical_paths += pick["path"].tolist()
        typical_labels += pick["true"].tolist()
    groups = [("mistakes", mistakes), ("unsure", unsure)]
    paths = [*typical_paths] + [x for _, df in groups for x in df["path"]]
    labels = [*typical_labels] + [x for _, df in groups for x in df["true"]]
    expl, _failed = explain_images(model, paths, cls="top2", labels=labels, engine=engine, cache_dir=cache_dir)
    by_path = {e.path: e for e in expl}
    label_of = dict(zip(paths, labels))
    for c, path in zip(typical_labels, typical_paths):
        if path in by_path:
            sections["typical"].setdefault(c, []).append(
                {"path": path, "png": render_panel(by_path[path], true_label=c)})
    for key in ("mistakes", "unsure"):
        for row in sections[key]:
            e = by_path.get(row["path"])
            if e is not None:
                row["png"] = render_panel(e, true_label=label_of[row["path"]])


def _faithfulness(model, ev, per_class, engine, cache_dir) -> dict:
    """Deletion/insertion AUC per class for CAM vs a random order, on correctly classified images."""
    from ..explain import explain_images
    from ..explain.faithfulness import deletion_insertion

    predictor = model.predictor(engine=engine, cache_dir=cache_dir)

    def prob_fn(arrays):
        return np.concatenate([predictor.run(arrays[i:i + 32]).probabilities for i in range(0, len(arrays), 32)])

    p = ev.predictions
    rows = []
    for c in ev.classes:
        paths = p[(p["true"] == c) & p["correct"]]["path"].head(per_class).tolist()
        if not paths:
            continue
        expl, _ = explain_images(model, paths, cls=c, engine=engine, cache_dir=cache_dir)
        if not expl:
            continue
        imgs = np.stack([e.input for e in expl])
        maps = np.stack([e.maps[0] for e in expl])
        r = deletion_insertion(prob_fn, imgs, maps, [model.classes.index(c)] * len(expl), n_steps=8)
        rows.append({"class": c, "n": len(expl),
                     "deletion_auc": float(r["deletion_auc"].mean()), "deletion_random_auc": float(r["deletion_random_auc"].mean()),
                     "insertion_auc": float(r["insertion_auc"].mean()), "insertion_random_auc": float(r["insertion_random_auc"].mean())})
    from ..inference import map_support

    return {"rows": rows, "method": map_support(model).method, "steps": 8}


def _data_section(model, ev, balance_png) -> dict:
    t = model.meta.get("training", {})
    bal = ev.balance
    counts = {str(k): {str(c): int(v) for c, v in col.items()} for k, col in bal.items()}
    totals = bal.sum(axis=1) if len(bal.columns) else pd.Series(dtype=int)
    ratio = float(totals.max() / max(totals.min(), 1)) if len(totals) else float("nan")
    return {"source": t.get("source"), "n_images": t.get("n_images"), "counts": counts,
            "classes": [str(c) for c in bal.index], "splits": [str(s) for s in bal.columns],
            "imbalance_ratio": ratio, "png": balance_png(bal),
            "skipped_training": t.get("skipped", []), "n_skipped_training": t.get("n_skipped", 0),
            "skipped_eval": ev.skipped}


def _audit_section(meta: dict) -> dict | None:
    """The ``prepare`` audit of the training data, when the model was trained from its manifest."""
    from pathlib import Path

    from .._io import read_json

    source = (meta.get("training") or {}).get("source")
    if not source:
        return None
    audit = Path(source).parent / "audit.json" if Path(source).suffix == ".csv" else None
    if audit is None or not audit.exists():
        return None
    a = read_json(audit)
    return {"path": str(audit), "n_files": a["n_files"], "status": a["status"], "findings": a["findings"],
            "balance": a["balance"], "date": a.get("date")}


def _model_card(meta: dict) -> dict:
    b = meta.get("backbone", {})
    t = meta.get("training", {})
    return {
        "backbone": b.get("name"), "timm_name": b.get("timm_name"), "weights_id": b.get("weights_id"),
        "weights_source": b.get("weights_source"), "weights_license": b.get("license"),
        "preprocessing": meta.get("preprocessing"), "head": meta.get("head"),
        "temperature": meta.get("temperature"), "training_settings": t.get("settings"),
        "C_chosen": t.get("C"), "trained": t.get("finished"), "versions": meta.get("versions"),
        "finetune": meta.get("finetune"),
    }


def _open_world_section(ev) -> dict:
    """Operating point in words, per-class ROC/PR, accuracy-coverage and unknown images, as the report shows them."""
    from ..evaluate.plots import coverage_png, curves_png

    ow = ev.open_world
    pc = ev.per_class.set_index("class")
    marks = {}
    for r in ow.get("operating_point", []):
        cls = r["target"].split(":", 1)[0]
        if cls in pc.index:
            marks[cls] = (float(pc.loc[cls, "recall"]), float(pc.loc[cls, "precision"]), r["false_alarm_rate"])
    unknown = ow.get("unknown")
    return {"operating_point": ow.get("operating_point", []), "rejection": ow.get("rejection"),
            "score": ow.get("unusualness_score"), "unknown": unknown,
            "curves": [{k: v for k, v in c.items() if k not in ("roc", "pr")} for c in ow.get("curves", [])],
            "curves_png": curves_png(ow.get("curves", []), marks),
            "coverage": ow.get("selective", []),
            "coverage_png": coverage_png(ow.get("selective", []),
                                         unknown.get("selective_with_unknown") if unknown else None)}
