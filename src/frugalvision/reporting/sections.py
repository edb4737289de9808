"""Report sections: plain data built from an evaluation (numbers, tables, PNG bytes).

Building a section may run the model (CAM panels, faithfulness curves); rendering never
does, so ``report.json`` and ``report.html`` always say the same thing.
"""

from __future__ import annotations

import datetime as _dt
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from .render import pct as _pct
from .verdict import chosen_on

__all__ = ["build_sections"]


def accuracy_wilson(ev) -> tuple[float, float]:
    """Wilson interval of the headline accuracy (does not collapse to 100.0–100.0 at 50 of 50)."""
    from ..evaluation.bootstrap import wilson_ci

    p = ev.predictions
    return wilson_ci(int(p["correct"].sum()), len(p))  # the same function as ev.accuracy_ci


def headline_sentences(ev) -> list[str]:
    h = ev.headline
    lo, hi = accuracy_wilson(ev)
    pc = ev.per_class.sort_values("recall", ascending=False)
    s = [f"On {h['n']} test images the model never saw during training, it picks the right category "
         f"{_pct(h['accuracy'])} of the time (95 % confidence interval {_pct(lo)} to {_pct(hi)})."]
    best, worst = pc.iloc[0], pc.iloc[-1]

    def found(row) -> str:
        n = int(row["support"])
        return f"{_pct(row['recall'])} found, {int(round(row['recall'] * n))} of {n}"

    if best["recall"] > worst["recall"]:  # with every class tied there is no best nor weakest to name
        s.append(f"It is best on {best['class']} ({found(best)}) and weakest on {worst['class']} ({found(worst)})"
                 + (" — too few images per class to rank them" if min(best["support"], worst["support"]) < 10
                    else "") + ".")
    if ev.confused_pairs:
        p = ev.confused_pairs[0]
        tied = sum(1 for q in ev.confused_pairs if q["count"] == p["count"])
        s.append((f"The most frequent mistake: {p['true']} taken for {p['predicted']} " if tied == 1 else
                  f"{tied} kinds of mistake are equally frequent, e.g. {p['true']} taken for {p['predicted']} ")
                 + f"({p['count']} of {p['of']} {p['true']} images).")
    return s


def build_sections(model, ev, *, explain: bool = True, n_mistakes: int = 8, n_typical: int = 3,
                   faithfulness: bool = True, faithfulness_per_class: int | None = None,
                   engine: str = "auto", cache_dir=None, goals=None, learning_curve: bool = True,
                   data_map: bool = True) -> dict:
    """All report content as plain data (see ``render.render_html``).

    ``goals``: strings such as ``"accuracy>=0.9"`` or ``"defective:recall>=0.9"`` (see
    :func:`frugalvision.reporting.verdict.parse_goal`); the summary then opens with a verdict against them.
    """
    from ..inference import map_support
    from .verdict import parse_goal

    parsed_goals = [parse_goal(g, model.classes) for g in (goals or [])]
    support = map_support(model)
    per_class = faithfulness_per_class or FAITHFULNESS_PER_CLASS
    checking = explain and support.available and faithfulness
    # The faithfulness check is backbone passes on every core; the rest is mostly single-threaded numpy and
    # matplotlib, so they run side by side (the demo's report: ~3 s less). Not for Grad-CAM methods: they hook one
    # shared torch module, which the panels use too.
    beside = checking and support.method in ("cam", "gradient")
    pool = check = None
    if beside:
        model.extractor(engine=engine, cache_dir=cache_dir, progress=False).engine  # one session, built here
        pool = ThreadPoolExecutor(max_workers=1)
        check = pool.submit(faithfulness_once, model, ev, per_class, engine, cache_dir)
    try:
        sections = _build(model, ev, explain, n_mistakes, n_typical, check, engine, cache_dir, parsed_goals,
                          learning_curve, data_map, support)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if checking and not beside:
        sections["faithfulness"] = faithfulness_once(model, ev, per_class, engine, cache_dir)
    return sections


def _build(model, ev, explain, n_mistakes, n_typical, check, engine, cache_dir, parsed_goals, learning_curve,
           data_map, support) -> dict:
    from ..evaluation.plots import balance_png, bar_png, confusion_png, learning_curve_png, reliability_png
    from .verdict import verdict_section

    lc = None
    if learning_curve:
        from .learning_curve import learning_curve as _lc

        lc = _lc(model, ev, engine=engine, cache_dir=cache_dir)
    verdict = verdict_section(model, ev, parsed_goals, lc)

    meta = model.meta
    pc = ev.per_class
    sections = {
        "title": f"frugalvision report: {', '.join(ev.classes[:6])}{'…' if len(ev.classes) > 6 else ''}",
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "verdict": verdict,
        "summary": headline_sentences(ev),
        "headline": {**ev.headline, "accuracy_ci": list(accuracy_wilson(ev)), "accuracy_ci_method": "Wilson",
                     **ev.calibration,
                     "chance_log_loss": float(np.log(max(len(ev.classes), 2)))},
        "learning_curve": _learning_curve_section(lc, verdict, learning_curve_png),
        "per_class": pc.to_dict("records"),
        "per_class_png": bar_png(list(pc["class"]), list(pc["recall"]), list(pc["recall_ci_low"]),
                                 list(pc["recall_ci_high"]), xlabel="recall (share of the class found), 95 % CI"),
        "confusion_png": confusion_png(ev.confusion, ev.classes),
        "confused_pairs": [{**p, "files": ev.cell_files(p["true"], p["predicted"])[:5]} for p in ev.confused_pairs[:8]],
        "class_gap": ev.class_gap,
        "groups": {col: {"table": a["table"].to_dict("records"), "gap": a["gap"], "too_small": a["too_small"],
                         "min_group_size": a["min_group_size"], "per_class": a.get("per_class", []),
                         "class_gaps": a.get("class_gaps", []),
                         "png": bar_png(list(a["table"]["group"]), list(a["table"]["accuracy"]),
                                        list(a["table"]["accuracy_ci_low"]), list(a["table"]["accuracy_ci_high"]),
                                        xlabel=f"accuracy by {col}, 95 % CI")}
                   for col, a in ev.groups.items()},
        "calibration": {**ev.calibration, "temperature": model.temperature,
                        "png": reliability_png(ev.reliability)},
        "data": _data_section(model, ev, balance_png),
        "model_card": _model_card(meta, model),
        "audit": _audit_section(meta),
        "open_world": _open_world_section(ev),
        "n_unknown": int((ev.predictions["pred"] == "unknown").sum()), "n_test": int(len(ev.predictions)),
        "chosen_on": chosen_on(meta), "accept_rate": (meta.get("reject") or {}).get("accept_rate"),
        "settings": ev.settings,
    }
    mistakes = ev.mistakes(n_mistakes)
    unsure = ev.least_confident_correct(n_mistakes)
    sections["mistakes"] = _gallery_rows(mistakes)
    sections["unsure"] = _gallery_rows(unsure)
    sections["typical"] = {}
    sections["faithfulness"] = None
    sections["maps_note"] = None if support.available else support.reason
    sections["maps_hidden"] = 0
    sections["cam_legend"] = None
    if explain and support.available:
        from ..explanation.panels import DIFFERENCE_CMAP, EVIDENCE_CMAP, legend_bar, png_bytes

        sections["cam_legend"] = {k: png_bytes(legend_bar(c, 120, 10))
                                  for k, c in (("evidence", EVIDENCE_CMAP), ("difference", DIFFERENCE_CMAP))}
        _attach_panels(model, sections, mistakes, unsure, ev, n_typical, engine, cache_dir)
    sections["data_map"] = _data_map(model, ev, lc, engine, cache_dir) if data_map else None
    if check is not None:
        sections["faithfulness"] = check.result()
    return sections


def _learning_curve_section(lc, verdict, learning_curve_png) -> dict | None:
    if lc is None:
        return None
    from .learning_curve import metric_curve

    y = lc["y_test"]
    series = {"accuracy": metric_curve(lc, {"metric": "accuracy", "cls": None}, y)}
    for g in verdict["goals"]:
        if g["cls"] is not None:
            series[f"{g['metric']} of {g['cls']}"] = metric_curve(lc, g, y)
    goal_lines = {(f"{g['metric']} of {g['cls']}" if g["cls"] else "accuracy"): g["value"]
                  for g in verdict["goals"] if g["metric"] != "balanced_accuracy"}
    notes = []
    if lc.get("finetuned"):
        notes.append("This model was fine-tuned; the refits use its fine-tuned embeddings with the backbone fixed.")
    if lc.get("augmented"):
        notes.append("The refits use clean training images only (no augmented views), so they slightly "
                     "underestimate the model.")
    return {"n_train": lc["n_train"], "series": series, "notes": notes, "head": lc["head"],
            "png": learning_curve_png(lc["n_train"], series, goal_lines)}


def _data_map(model, ev, lc, engine, cache_dir) -> dict | None:
    from .data_map import data_map

    p = ev.predictions
    if len(p) < 3:
        return None
    X = lc.get("X_test") if lc is not None else None
    if X is None:
        emb = model.embed(p["path"].tolist(), progress=False, engine=engine, cache_dir=cache_dir)
        if emb.ok.sum() != len(p):
            return None
        X = emb.X
    rejected = (p["pred"] == "unknown").to_numpy()  # the decision, not a second reading of the threshold
    return data_map(ev, X, rejected=rejected if rejected.any() else None)


def _gallery_rows(df: pd.DataFrame) -> list[dict]:
    """Caption data of a gallery, all from the decision: decided label and rule, runner-up, most probable class."""
    # Records, not itertuples: class-named columns (p_<class>) can collide as namedtuple fields (café in NFC
    # and NFD normalise to one Python identifier).
    return [{"path": r["path"], "true": r["true"], "pred": r["pred"], "rule": r["rule"],
             "p": None if pd.isna(r["probability"]) else float(r["probability"]),
             "runner_up": r["runner_up"],
             "p2": None if pd.isna(r["runner_up_probability"]) else float(r["runner_up_probability"]),
             "most_probable": r["most_probable"], "p_top": float(r["most_probable_probability"]), "panel": None}
            for r in df.to_dict("records")]


def _panel(e, true_label) -> dict:
    """The readable maps of one image (the rendering ``explain`` and the web page use), as tiles for HTML."""
    from ..explanation.panels import png_bytes, readable_maps

    rm = readable_maps(e, true_label=true_label)
    return {"heading": " · ".join(rm.heading), "image": png_bytes(rm.image), "scale": rm.scale,
            "hidden": rm.hidden, "difference": rm.difference,
            "tiles": [{"kind": t.kind, "label": t.label, "caption": t.caption, "hidden": t.hidden, "note": t.note,
                       "probability": t.probability, "png": None if t.overlay is None else png_bytes(t.overlay)}
                      for t in rm.tiles]}


def _attach_panels(model, sections, mistakes, unsure, ev, n_typical, engine, cache_dir):
    from ..explanation import explain_images

    def render_panel(e, true_label):
        panel = _panel(e, true_label)
        sections["maps_hidden"] += len(panel["hidden"])
        return panel

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
                {"path": path, "panel": render_panel(by_path[path], true_label=c)})
    for key in ("mistakes", "unsure"):
        for row in sections[key]:
            e = by_path.get(row["path"])
            if e is not None:
                row["panel"] = render_panel(e, true_label=label_of[row["path"]])


#: Correctly classified test images per class in the faithfulness test (all of them when a class has fewer).
FAITHFULNESS_PER_CLASS = 30  # the fewest images a bootstrap interval is given for (evaluation.bootstrap)
#: Points per deletion/insertion curve. Measured on fashion4 (200 images, 50 per class): 3 steps give the same
#: per-class verdicts as 6 steps with intervals ~5 % wider, at 10 instead of 22 backbone passes per image; 2
#: steps changed two of the eight per-class verdicts.
FAITHFULNESS_STEPS = 3


#: Where a run folder keeps the faithfulness check, with the identity of what it was computed from.
FAITHFULNESS_FILE = "faithfulness.json"


def _faithfulness_key(model, ev, per_class: int, steps: int) -> str | None:
    """What the check depends on: the model file's bytes, the evaluated images (path, size, mtime, label,
    correctness), the method and the settings; None for a model with no file."""
    import hashlib
    import json
    import os

    import xxhash

    from .. import __version__
    from ..inference import map_support

    if model.path is None or not model.path.exists():
        return None
    h = xxhash.xxh3_128()
    with open(model.path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    p = ev.predictions
    images = []
    for path, true, ok in zip(p["path"], p["true"], p["correct"]):
        try:
            st = os.stat(path)
            images.append([str(path), st.st_size, st.st_mtime_ns, str(true), bool(ok)])
        except OSError:
            images.append([str(path), None, None, str(true), bool(ok)])
    ident = {"model": h.hexdigest(), "images": images, "per_class": per_class, "steps": steps,
             "method": map_support(model).method, "version": __version__}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def faithfulness_once(model, ev, per_class, engine, cache_dir, steps: int = FAITHFULNESS_STEPS) -> dict:
    """The faithfulness check, computed once per model and evaluated images: kept in the run folder
    (``faithfulness.json``) with the identity of its inputs, and reused by every later report of the same model on
    the same images. A run folder that cannot be written only means it is computed again next time."""
    from .._io import read_json, write_json

    key = _faithfulness_key(model, ev, per_class, steps)
    path = model.run_dir / FAITHFULNESS_FILE if key is not None else None
    if path is not None and path.exists():
        try:
            saved = read_json(path)
            if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("result"), dict):
                return {**saved["result"], "cached": True}
        except (OSError, ValueError):
            pass  # unreadable or damaged: compute it again
    result = _faithfulness(model, ev, per_class, engine, cache_dir, steps)
    if path is not None:
        try:
            write_json(path, {"key": key, "result": result})
        except OSError:
            pass
    return result


def _faithfulness(model, ev, per_class, engine, cache_dir, steps: int = FAITHFULNESS_STEPS) -> dict:
    """Deletion/insertion AUC per class for the maps vs a random order, on correctly classified images, with CIs.

    Up to ``per_class`` images per class (all when fewer); the CIs are percentile bootstraps over images of the
    paired difference random - map (deletion: positive = the map finds what matters); a mean difference is not
    a proportion, so Wilson does not apply. All images go through the backbone together: one pass for the maps
    (whose probabilities are the curves' unperturbed point), then every perturbed copy in large batches.
    """
    from ..evaluation.bootstrap import percentile_ci
    from ..explanation import explain_images
    from ..explanation.faithfulness import deletion_insertion
    from ..inference import map_support, probabilities
    from ..inference import predictor as make_predictor

    p = ev.predictions
    chosen, available = [], {}
    for c in ev.classes:
        ok = p[(p["true"] == c) & p["correct"]]
        available[c] = int(len(ok))
        if len(ok):
            chosen += [(path, c) for path in ok.sample(min(per_class, len(ok)), random_state=0)["path"]]
    method = map_support(model).method
    out = {"rows": [], "method": method, "steps": steps, "per_class": per_class}
    if not chosen:
        return out
    label_of = dict(chosen)
    expl, _ = explain_images(model, list(label_of), cls="true", labels=list(label_of.values()), engine=engine,
                             cache_dir=cache_dir, batch_size=8)  # 32 grew the session arena by 0.7 GB
    if not expl:
        return out
    cls = np.asarray([label_of[e.path] for e in expl])
    if method in ("cam", "gradient"):  # the network's own engine gives the embeddings: run it on every lane
        ex = model.extractor(engine=engine, cache_dir=cache_dir, progress=False)

        def prob_fn(arrays):  # backbone then head: the inference path without its decisions (not needed here)
            return probabilities(model, ex.run_arrays(arrays)[1])[1]
    else:
        predictor = make_predictor(model, engine=engine, cache_dir=cache_dir)

        def prob_fn(arrays):
            return np.concatenate([predictor.run(arrays[i:i + 32]).probabilities for i in range(0, len(arrays), 32)])

    r = deletion_insertion(prob_fn, np.stack([e.input for e in expl]), np.stack([e.maps[0] for e in expl]),
                           [model.classes.index(c) for c in cls], n_steps=steps, batch_images=8,
                           full_probs=np.array([e.probabilities[c] for e, c in zip(expl, cls)]))
    rng = np.random.default_rng(0)

    def ci(a):
        a = np.asarray(a, float)
        if len(a) < 2:
            return [float("nan"), float("nan")]
        return list(percentile_ci(a[rng.integers(0, len(a), (1000, len(a)))].mean(axis=1), n=len(a)))

    d = r["deletion_random_auc"] - r["deletion_auc"]
    i = r["insertion_auc"] - r["insertion_random_auc"]
    for c in ev.classes:
        m = cls == c
        if not m.any():
            continue
        out["rows"].append({
            "class": c, "n": int(m.sum()), "available": available[c],
            "deletion_auc": float(r["deletion_auc"][m].mean()),
            "deletion_random_auc": float(r["deletion_random_auc"][m].mean()),
            "insertion_auc": float(r["insertion_auc"][m].mean()),
            "insertion_random_auc": float(r["insertion_random_auc"][m].mean()),
            "deletion_gain": float(d[m].mean()), "deletion_gain_ci": ci(d[m]),
            "insertion_gain": float(i[m].mean()), "insertion_gain_ci": ci(i[m])})
    dci, ici = ci(d), ci(i)
    out.update({"n": int(len(d)), "passes": int(r["passes"] + len(expl)), "deletion_gain": float(d.mean()),
                "deletion_gain_ci": dci, "insertion_gain": float(i.mean()), "insertion_gain_ci": ici})
    if not np.isfinite([*dci, *ici]).all():
        meaning = ("there are too few images to tell whether the maps beat random regions (a check needs at least "
                   "30)")
    elif dci[0] > 0 and ici[0] > 0:
        meaning = ("the maps point at what the model actually uses: removing the highlighted regions first "
                   "lowers its confidence faster than removing random ones, and restoring them first raises it faster")
    elif dci[1] < 0 or ici[1] < 0:
        meaning = "the maps do worse than random regions on one test: do not trust them to show what the model uses"
    elif dci[0] > 0 or ici[0] > 0:
        meaning = ("the maps are only partly faithful: they beat random regions on one test and cannot be told "
                   "from random on the other, so read them as a rough hint")
    else:
        meaning = "the maps cannot be told from random regions on these images: read them with caution"
    by = _gap_words
    out["sentence"] = (f"On {len(d)} correctly classified test images, {meaning}: the deletion area is "
                       f"{by(d.mean(), dci, 'lower', 'higher')} than random regions' on average, the insertion area "
                       f"{by(i.mean(), ici, 'higher', 'lower')}.")
    worse = [row["class"] for row in out["rows"] if row["deletion_gain_ci"][1] < 0 or row["insertion_gain_ci"][1] < 0]
    if worse:
        out["sentence"] += (f" For {', '.join(worse)}, the maps do worse than random regions on one test: read "
                            f"{'its' if len(worse) == 1 else 'their'} maps with caution.")
    return out


def _gap_words(value: float, ci, better: str, worse: str) -> str:
    """'lower by 0.050 (95 % CI of the difference +0.020 to +0.080)'; the other word when the gain is negative, and no
    interval when there is none (fewer than 30 images: it printed 'nan to nan')."""
    words = f"{better if value >= 0 else worse} by {abs(value):.3f}"
    return words + (f" (95 % CI of the difference {ci[0]:+.3f} to {ci[1]:+.3f})" if np.isfinite(ci).all() else "")


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


_SOFTWARE = {"frugalvision": "this toolkit", "timm": "model zoo the backbone comes from",
             "torch": "deep-learning library (PyTorch)", "scikit-learn": "fits the classifier head",
             "onnxruntime": "runs the backbone on the CPU", "numpy": "numerical arrays",
             "Pillow": "reads and resizes images", "pillow": "reads and resizes images"}


def _model_card(meta: dict, model=None) -> dict:
    """The model card as plain sentences and a small table (no raw dictionaries)."""
    b = meta.get("backbone", {}) or {}
    t = meta.get("training", {}) or {}
    st = t.get("recipe") or {}
    pre = meta.get("preprocessing") or {}
    head = meta.get("head") or {}
    hp = (head.get("params") or {})
    kind = head.get("type", st.get("head", "?"))
    counts = t.get("counts") or {}
    n_train = sum((counts.get("train") or {}).values()) if counts else None
    sentences = []
    sentences.append(
        f"The model turns each image into {b.get('embed_dim', 'a')} numbers with the pre-trained network "
        f"{b.get('name')} ({b.get('timm_name')}, weights from {b.get('weights_source')}, licence "
        f"{b.get('license')}), then a {'linear (logistic-regression)' if kind == 'LinearHead' else 'small neural-network'} "
        f"classifier trained on {n_train if n_train is not None else 'the'} training images decides the class.")
    if pre:
        sentences.append(f"Each image is resized to {pre.get('input_size')}×{pre.get('input_size')} pixels "
                         f"({pre.get('interpolation')} interpolation, {100 * float(pre.get('crop_pct') or 1):.0f} % "
                         f"centre crop) before it reaches the network.")
    if kind == "LinearHead":
        cw = hp.get("class_weight") or st.get("class_weight")
        sentences.append(f"Regularisation strength C = {hp.get('C', t.get('C'))}"
                         + (" (chosen by cross-validated accuracy among the small-data path's heads)"
                            if t.get("small_data") else " (chosen by validation log-loss)" if st.get("C") == "auto"
                            else "")
                         + "; smaller C means a simpler, more cautious classifier. "
                         + ("Classes are weighted to balance their sizes." if cw == "balanced"
                            else "Classes are not re-weighted."))
    if meta.get("temperature"):
        sentences.append(f"Probabilities are calibrated by temperature scaling (T = {meta['temperature']:.3g}, "
                         f"fitted on {chosen_on(meta)}).")
    op = meta.get("operating_point")
    if op and op.get("targets"):
        sentences.append(f"Decisions follow the operating point {', '.join(op['targets'])} chosen on {chosen_on(meta)}, "
                         f"not simply the most probable class.")
    rej = meta.get("reject")
    if rej and rej.get("threshold") is not None:
        keep = f"{100 * float(rej.get('accept_rate', 0.95)):.0f} %"
        own, n_classes = rej.get("class_thresholds") or {}, len(meta.get("classes") or [])
        if not own:
            sentences.append(f"Images too unlike the training images are labelled 'unknown' (threshold placed on "
                             f"{chosen_on(meta)} to keep {keep} of normal images).")
        else:
            shared = (f" ({len(own)} of {n_classes} classes have their own; the others share one placed on all the "
                      f"images)" if len(own) < n_classes else "")
            sentences.append(f"Images too unlike the training images are labelled 'unknown': each is compared with "
                             f"the threshold of its most probable class, placed on {chosen_on(meta)} to keep {keep} "
                             f"of the normal images predicted as that class{shared}.")
        sentences += [f"Note: {n[0].upper()}{n[1:]}." for n in t.get("notes") or [] if n.startswith("'none of these'")]
    else:
        sentences.append("There is no 'unknown' label: every image gets one of the classes.")
    if meta.get("finetune"):
        sentences.append("The backbone was fine-tuned on these images.")
    pc = t.get("precision_check")
    if pc:
        sentences.append(f"Precision: {pc['chosen']}, chosen by --precision auto: {pc['reason']}.")
    elif b.get("precision") == "int8" and (t.get("recipe") or {}).get("precision") == "int8":
        sentences.append("The backbone runs in int8 (asked for with --precision int8).")
    elif b.get("precision") == "int8":
        sentences.append("The backbone runs in int8, the shipped quantized graph: the default where it can run, "
                         "within 0.5 point of fp32 on each data set we measured (--precision fp32 retrains on the "
                         "full-precision network, --precision auto compares both on the validation images).")
    aug = (t.get("augmentation") or {})
    if aug.get("views"):
        sentences.append(f"Training used {aug['views']} augmented view(s) per image ({aug.get('policy')} policy).")
    table = [("backbone", f"{b.get('name')} ({b.get('timm_name')})"),
             ("weights", f"{b.get('weights_source')} · licence {b.get('license')}"),
             ("classifier head", f"{kind}" + (f", C = {hp.get('C')}" if "C" in hp else "")),
             ("trained", str(t.get("finished"))),
             ("split", f"validation {st.get('val_size') if st.get('val_size') is not None else 'default'}, test "
                       f"{st.get('test_size') if st.get('test_size') is not None else 'default'}, seed {st.get('seed')}"
                       + (" (small-data path: cross-validation on every labelled image)" if t.get("small_data") else ""))]
    versions = meta.get("versions") or {}
    software = [{"name": k, "version": "not installed" if v is None else str(v), "what": _SOFTWARE.get(k, "")}
                for k, v in versions.items()]
    return {
        "sentences": sentences, "table": [{"field": k, "value": v} for k, v in table], "software": software,
        "backbone": b.get("name"), "timm_name": b.get("timm_name"), "weights_id": b.get("weights_id"),
        "weights_source": b.get("weights_source"), "weights_license": b.get("license"),
        "preprocessing": pre, "head": head,
        "temperature": meta.get("temperature"), "training_settings": st,
        "C_chosen": t.get("C"), "trained": t.get("finished"), "versions": versions,
        "finetune": meta.get("finetune"),
    }


def _open_world_section(ev) -> dict:
    """Operating point in words, per-class ROC/PR, accuracy-coverage and unknown images, as the report shows them."""
    from ..evaluation.plots import coverage_png, curves_png

    ow = ev.open_world
    pc = ev.per_class.set_index("class")
    marks = {}
    for r in ow.get("operating_point", []):
        cls = r["target"].split(":", 1)[0]
        if cls in pc.index:
            marks[cls] = (float(pc.loc[cls, "recall"]), float(pc.loc[cls, "precision"]), r["false_alarm_rate"])
    unknown = ow.get("unknown")
    rejection = ow.get("rejection")
    if rejection:
        from ..decision import reject_rule

        t = rejection.get("threshold")  # one per class; a single number in evaluations saved before
        rejection = {**rejection, "rule": reject_rule(t if isinstance(t, dict) else {"all": t})}
    return {"operating_point": ow.get("operating_point", []), "rejection": rejection,
            "score": ow.get("unusualness_score"), "unknown": unknown,
            "curves": [{k: v for k, v in c.items() if k not in ("roc", "pr")} for c in ow.get("curves", [])],
            "curves_png": curves_png(ow.get("curves", []), marks),
            "coverage": ow.get("selective", []),
            "coverage_png": coverage_png(ow.get("selective", []),
                                         unknown.get("selective_with_unknown") if unknown else None)}
