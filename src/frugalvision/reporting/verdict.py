"""The verdict first: is the model good enough for the stated goal, and what to do next.

A goal reads ``accuracy>=0.9``, ``balanced_accuracy>=0.85`` or, per class, ``defective:recall>=0.9`` /
``defective:precision>=0.95`` (``>=90%`` works too). Each goal is judged on the test images with a Wilson
interval (a bootstrap for balanced accuracy): **met** when the whole interval is at or above the goal,
**not met** when it is all below, **cannot tell yet** when it straddles the goal.
"""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np

from ..evaluation.bootstrap import MIN_BOOTSTRAP_N, bootstrap_indices, percentile_ci, wilson_ci
from ..exceptions import DataError
from .render import pct as _pct

__all__ = ["parse_goal", "judge_goals", "next_steps", "verdict_section"]

_GLOBAL = re.compile(r"^\s*(?P<metric>accuracy|balanced_accuracy|balanced accuracy)\s*>=\s*(?P<value>[0-9.]+%?)\s*$")


def parse_goal(text: str, classes) -> dict:
    """``'accuracy>=0.9'`` or ``'CLASS:recall>=0.9'`` -> {name, metric, cls, value}; DataError when unclear."""
    m = _GLOBAL.match(str(text))
    if m:
        raw = m.group("value")
        value = float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
        if not 0 < value <= 1:
            raise DataError(f"Goal {text!r}: the value must be between 0 and 1 (or 0 % and 100 %).")
        metric = m.group("metric").replace(" ", "_")
        return {"name": f"{metric}>={value:g}", "metric": metric, "cls": None, "value": value}
    from ..decision import parse_target

    try:
        t = parse_target(text, classes)
    except DataError as exc:
        if ":" in str(text):  # the target form, wrong class or value: its own message says which
            raise DataError(f"Goal {exc}") from None
        raise DataError(f"Goal {text!r} is not of the form accuracy>=0.9, balanced_accuracy>=0.85, "
                        f"CLASS:recall>=0.9 or CLASS:precision>=0.95.") from None
    return {"name": str(t), "metric": t.metric, "cls": t.cls, "value": t.value}


def _value_and_ci(goal, y, pred, seed=0):
    if goal["cls"] is None and goal["metric"] == "balanced_accuracy":
        classes = np.unique(y)

        def bal(rows):
            yy, pp = y[rows], pred[rows]
            r = [np.mean(pp[yy == c] == c) for c in classes if (yy == c).any()]
            return float(np.mean(r)) if r else np.nan

        v = bal(np.arange(len(y)))
        idx = bootstrap_indices(len(y), 400, seed)
        return v, percentile_ci([bal(r) for r in idx], n=len(y)), len(y), "bootstrap"
    if goal["cls"] is None:
        k, n = int((pred == y).sum()), len(y)
    elif goal["metric"] == "recall":
        k, n = int(((pred == goal["cls"]) & (y == goal["cls"])).sum()), int((y == goal["cls"]).sum())
    else:
        k, n = int(((pred == goal["cls"]) & (y == goal["cls"])).sum()), int((pred == goal["cls"]).sum())
    return (k / n if n else None), wilson_ci(k, n), n, "Wilson"


def _rejection_cost(ev, model) -> str:
    """What "none of these" cost on the test images: how many it set aside that its most probable class had right
    (only without an operating point, where the most probable class is what would have been answered)."""
    p = ev.predictions
    if model.operating_point is not None or p is None or not len(p) or "most_probable" not in p:
        return ""
    out = (p["pred"].astype(str) == "unknown").to_numpy()
    if not out.any():
        return ""
    right = int((p["most_probable"].astype(str).to_numpy()[out] == p["true"].astype(str).to_numpy()[out]).sum())
    return (f"; {right} of those {int(out.sum())} would have been right, {100 * right / len(p):.1f} points of "
            f"accuracy on {len(p)} images")


def _n_to_decide(value, goal_value, n_now: int = 0) -> int | None:
    """Test images (of what the metric counts, in all) at which the same observed share would decide: its Wilson
    interval would clear the goal (met) or fall below it (not met), as :func:`judge_goals` judges. None when the value
    sits within half a point of the goal. (A normal approximation said 1 image for 100 % on 2 images against 50 %,
    which 2 images could not decide, and 35 for 90 % against 80 %, where Wilson still straddles 80 % at 35.)"""
    if abs(value - goal_value) < 0.005:
        return None

    def decides(n: int) -> bool:  # the same share, as a fractional count: then more images never decide less
        lo, hi = wilson_ci(value * n, n)
        return lo >= goal_value if value > goal_value else hi < goal_value

    lo = max(int(n_now), 1)
    if decides(lo):  # only a goal judged by another interval (balanced accuracy: bootstrap) gets here
        return None
    hi = 2 * lo
    while not decides(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # the smallest n that decides (monotone in n: the count is fractional)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decides(mid) else (mid, hi)
    return hi


def judge_goals(goals, ev) -> list[dict]:
    p = ev.predictions
    y, pred = p["true"].astype(str).to_numpy(), p["pred"].astype(str).to_numpy()
    out = []
    for g in goals:
        v, (lo, hi), n, method = _value_and_ci(g, y, pred)
        if v is None or n == 0:
            verdict = "cannot tell yet"
        elif lo >= g["value"]:
            verdict = "met"
        elif hi < g["value"]:
            verdict = "not met"
        else:
            verdict = "cannot tell yet"
        what = (g["metric"].replace("_", " ") if g["cls"] is None
                else f"{g['metric']} of {g['cls']}")
        row = {**g, "value_reached": v, "ci": [lo, hi], "n": n, "ci_method": method, "verdict": verdict, "what": what}
        if verdict == "cannot tell yet" and v is not None and method == "Wilson":
            row["n_to_decide"] = _n_to_decide(v, g["value"], n)
        out.append(row)
    return out


def _overall(rows):
    if not rows:
        return None
    vs = [r["verdict"] for r in rows]
    return "not met" if "not met" in vs else "cannot tell yet" if "cannot tell yet" in vs else "met"


def _goal_sentence(r) -> str:
    if r["value_reached"] is not None and not np.isfinite(r["ci"]).all():  # a bootstrap on fewer than 30 images
        return (f"Goal {r['what']} ≥ {_pct(r['value'])}: {r['verdict'].upper()} — reached {_pct(r['value_reached'])} "
                f"on {r['n']} test images, too few for an interval: this test set cannot decide.")
    base = (f"Goal {r['what']} ≥ {_pct(r['value'])}: {r['verdict'].upper()} — reached {_pct(r['value_reached'])} "
            f"on {r['n']} test images (95 % CI {_pct(r['ci'][0])} to {_pct(r['ci'][1])}).")
    if r["verdict"] == "met":
        return base + " Even the low end of the interval clears the goal."
    if r["verdict"] == "not met":
        return base + " Even the high end of the interval is below the goal."
    extra = ""
    if r.get("n_to_decide"):
        if r["n_to_decide"] > 10 * max(r["n"], 1):
            extra = (f" It sits so close to the goal that only a far larger test set (about {r['n_to_decide']} images) "
                     f"could decide: treat it as borderline.")
        else:
            extra = (f" About {r['n_to_decide']} test images of this kind in all ({r['n_to_decide'] - r['n']} more) "
                     f"would be needed to decide, if the share reached stayed the same.")
    return base + " The interval straddles the goal, so this test set cannot decide yet." + extra


def _lc_step(ext, r, class_counts) -> str | None:
    """A next step from the learning-curve extrapolation for goal row ``r`` (none when the goal's metric rests on fewer
    than 30 test images: "the curve still rises" was read from 4 images, "too flat" from 2)."""
    if ext is None or ext.get("multiple") is None or r.get("n", 0) < MIN_BOOTSTRAP_N:
        return None
    m, (lo, hi) = ext["multiple"], ext["multiple_interval"]
    who = (f"of {r['cls']} (and of the other classes in proportion, as the refits did)" if r["cls"]
           else "(all classes, in the current proportions)")
    now = class_counts.get(r["cls"]) if r["cls"] else int(ext["n_now"])
    vals = " → ".join(f"{_pct(v)} ({int(n)} images)" for v, n in zip(ext["values"], ext["n_train"]))
    curve = f"refitting the head on parts of the training images gave {vals}"
    if m <= 1:  # the curve already reaches the goal: more of the same data is not what is missing
        return None
    if not np.isfinite(m) or m > 10:
        if ext.get("rising"):
            return (f"The curve still rises ({curve}), but at its rate it would take more than 10× the data to reach "
                    f"{_pct(r['value'])}. Collect more images and re-check, and look at the mistakes, a stronger "
                    f"backbone or fine-tuning meanwhile.")
        return (f"More images of the same kind are unlikely to be enough: {curve}, a curve too flat to reach "
                f"{_pct(r['value'])} within 10× the data. Look at the mistakes, try a stronger backbone or fine-tuning, "
                f"or collect different images (other conditions, clearer views).")
    more = int(round((m - 1) * now))
    rng = ""
    if np.isfinite(lo) and np.isfinite(hi):
        lo_n = max(0, int(round((lo - 1) * now)))
        rng = (f" (uncertain: between {lo_n} and {int(round((hi - 1) * now))} more)" if hi <= 10
               else f" (uncertain: from {lo_n} to more than 10× the current data)")
    return (f"Collect about {more} more training images {who} (now {now}){rng}: {curve}; a power law with a floor through "
            f"these points reaches {_pct(r['value'])} at about {m:.1f}× the current data. A rough guide, not a promise.")


def _beside(model, name: str) -> Path | None:
    """The file ``name`` in the model's run folder (what tune wrote there), if there is one."""
    folder = getattr(model, "path", None)
    table = Path(folder).parent / name if folder else None
    return table if table is not None and table.is_file() else None


def _tuned_features(model) -> dict | None:
    """``{kind: (best mean CV score, its std, what the score is)}`` from the tuning.csv beside the model, if tune ran:
    balanced accuracy (what tune ranks by), or accuracy in a table written before tune had it."""
    table = _beside(model, "tuning.csv")
    if table is None:
        return None
    import pandas as pd

    try:
        t = pd.read_csv(table)
        if "features" not in t.columns:
            return None
        metric = "balanced_accuracy" if "mean_balanced_accuracy" in t.columns else "accuracy"
        best = t.sort_values(f"mean_{metric}", ascending=False).groupby("features").head(1)
        return {str(r.features): (float(getattr(r, f"mean_{metric}")),
                                  float(getattr(r, f"std_{metric}", float("nan"))), metric.replace("_", " "))
                for r in best.itertuples()}
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def _features_step(model, capped: bool) -> str | None:
    """When the frozen features look like the ceiling: the measured alternative (tune's CV), or how to measure it."""
    kind = model.info.backbone.features
    tuned = _tuned_features(model)
    if tuned and len(tuned) > 1:
        other = "multi" if kind == "last" else "last"
        if other in tuned and kind in tuned:
            (a, sa, metric), (b, sb, _) = tuned[other], tuned[kind]
            if a - b > max(sb if np.isfinite(sb) else 0.0, 0.005):
                return (f"tune measured {other}-stage features at {_pct(a)} {metric} against {_pct(b)} for this model's "
                        f"{kind} features (cross-validation on the training images, tuning.csv): retrain with "
                        f"--features {other}.")
        return None
    if not capped or kind != "last" or model.meta.get("finetune"):
        return None
    started, finished = model.info.training.started, model.info.training.finished
    minutes = ""
    try:
        import datetime as _dt

        secs = (_dt.datetime.fromisoformat(finished) - _dt.datetime.fromisoformat(started)).total_seconds()
        minutes = f" (about {max(1, round(3 * secs / 60))} min here: one more backbone pass and the search)"
    except (TypeError, ValueError):
        pass
    return ("The frozen last layer may be the ceiling (the learning curve is flat, or would not reach the goal within "
            "10× the data). Measure the alternatives on your "
            f"images: 'frugalvision tune DATA --features last,multi'{minutes} compares multi-stage features by "
            "cross-validation (on our development sets they added 0.5 to 3.1 points, most on data unlike "
            "ImageNet); fine-tuning ('train --finetune 2-stages') costs minutes per epoch on a CPU.")


def _budget_rows(model) -> list[dict] | None:
    """The rows of the tuning_budget.csv beside the model (``tune --budget``), when its kept row is this model (the
    same end of training: a model trained into the folder later is not described by it)."""
    table = _beside(model, "tuning_budget.csv")
    if table is None:
        return None
    import pandas as pd

    try:
        rows = pd.read_csv(table, keep_default_na=False, na_values=[""]).to_dict("records")
        kept = [r for r in rows if str(r.get("chosen")).lower() == "true"]
        finished = model.info.training.finished
        if len(kept) != 1 or not finished or str(kept[0].get("model_finished")) != finished:
            return None
        return rows
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finite(*values) -> bool:
    try:
        return all(np.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def _finetune_step(model) -> str | None:
    """What ``tune --budget`` measured of fine-tuning against this frozen model, with its cost in minutes: the
    measured alternative, and how large a gain it could not have seen. None when there is nothing (or nothing
    readable: the file may be old or edited by hand)."""
    rows = _budget_rows(model)
    if not rows or model.meta.get("finetune"):
        return None
    try:
        return _finetune_words([r for r in rows if str(r.get("candidate", "")).startswith("fine-tune ")])
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        return None


def _finetune_words(cands: list[dict]) -> str | None:
    judged = [r for r in cands if _finite(r.get("gain_vs_frozen"), r.get("gain_se"), r.get("kept_above"),
                                          r.get("seconds"), r.get("n_images"))]
    if not judged:
        notes = list(dict.fromkeys(str(r["note"]) for r in cands if isinstance(r.get("note"), str) and r["note"]))
        return f"tune --budget did not measure fine-tuning: {'; '.join(notes)}." if notes else None

    def stages(r):
        st = str(r["candidate"])[len("fine-tune "):]
        return "the last stage" if st == "last-stage" else st.replace("-", " ")

    def minutes(r):  # one training: a CV candidate's seconds are all its folds'
        done = str(r.get("folds_run") or "").split(" of ")[0]
        per = float(r["seconds"]) / (int(done) if done.isdigit() and int(done) > 0 else 1)
        return max(1, round(per / 60))

    parts = [f"{stages(r)} {100 * float(r['gain_vs_frozen']):+.1f} ± {100 * float(r['gain_se']):.1f} points "
             f"(it would have kept it only above {100 * float(r['kept_above']):+.1f}), about {minutes(r)} min a "
             f"training" for r in judged]
    on, n = str(judged[0].get("judged_on") or ""), int(float(judged[0]["n_images"]))
    where = (f"on {n} validation images" if on.startswith("validation")
             else f"by {on} over {n} images" if on else f"on {n} images")
    return (f"tune --budget measured fine-tuning against this frozen model (gain in balanced accuracy ± one standard "
            f"error, paired, {where}): {'; '.join(parts)}. It keeps a fine-tune only above two standard errors, so a "
            f"smaller gain may be there unseen; if it is worth those minutes at every retraining, train with "
            f"--finetune and compare the two on your test images.")


def next_steps(ev, rows, lc, lc_ext, model, groups_gaps) -> list[str]:
    steps = []
    class_counts = (lc or {}).get("class_counts", {})
    for r in sorted(rows, key=lambda r: r["verdict"] != "not met"):  # goals not met first
        if r["verdict"] == "met":
            continue
        s = _lc_step(lc_ext.get(r["name"]), r, class_counts)
        if s:
            steps.append(s)
        if r["verdict"] == "cannot tell yet" and not any(st.startswith("Add test images") for st in steps):
            kind = (f"images of {r['cls']}" if r["cls"] and r["metric"] == "recall"
                    else f"images called {r['cls']}" if r["cls"] else "test images")
            need = r.get("n_to_decide")
            steps.append(f"Add test images before deciding: {r['what']} was judged on only {r['n']} {kind}"
                         + (f"; about {need} in all ({need - r['n']} more) would narrow the interval enough to "
                            f"tell." if need
                            else "; the value sits on the goal, so only a much larger test set can tell."
                            if abs(r["value_reached"] - r["value"]) < 0.005
                            else "; more test images will narrow the interval."))
    if not rows and lc_ext.get("_accuracy"):  # no goal: say whether more images of the same kind would help
        e = lc_ext["_accuracy"]
        tr = e["trend"]
        vals = " → ".join(_pct(v) for v in e["values"])
        change = (f"{100 * tr['change']:+.1f} points from the smallest refit to all of them on {tr['n']} test images"
                  + (f", 95 % CI {100 * tr['ci'][0]:+.1f} to {100 * tr['ci'][1]:+.1f}" if np.isfinite(tr["ci"]).all()
                     else ", too few for an interval"))
        steps.append(f"Refitting the head on parts of the training images gave accuracy {vals} ({change}): "
                     + {"rising": "still rising, so more training images of the same kind should help (state a goal "
                                  "with --goal to get a number).",
                        "flat": "flat, so more images of the same kind will not help much; look at the mistakes "
                                "instead.",
                        }.get(tr["state"], "too few test images to tell a rising curve from a flat one; add test "
                                           "images before deciding whether more training images would help."))
    read = {r["name"] for r in rows if r.get("n", 0) >= MIN_BOOTSTRAP_N}  # goals whose curve rests on enough images
    capped = any(not np.isfinite(e.get("multiple") or 0) or (e.get("multiple") or 0) > 10
                 for k, e in lc_ext.items() if k in read and e) \
        or bool(lc_ext.get("_accuracy") and lc_ext["_accuracy"]["trend"]["state"] == "flat")
    feature_step, finetune_step = _features_step(model, capped), _finetune_step(model)
    if capped:  # the features look like the ceiling: the measured alternatives come first
        steps[:0] = [s for s in (feature_step, finetune_step) if s]
    elif feature_step:
        steps.append(feature_step)
    # class-for-class mistakes only: an image answered "unknown" is not a confusion between two classes
    errors = sum(p["count"] for p in ev.confused_pairs)
    if ev.confused_pairs and errors:
        top = ev.confused_pairs[:2]
        share = sum(p["count"] for p in top) / errors
        pairs = " and ".join(f"{p['true']} taken for {p['predicted']} ({p['count']})" for p in top)
        if errors < MIN_PATTERN or top[0]["count"] < 2:  # a pattern of single images is not a pattern
            steps.append(f"Look at the {errors} image{'s' if errors > 1 else ''} taken for another class one by one "
                         f"in the gallery below ({pairs}{', ...' if len(ev.confused_pairs) > 2 else ''}): no confusion "
                         f"repeats often enough to show a pattern.")
        elif share >= 0.3:
            steps.append(f"Look at the dominant confusions first: {pairs} make {_pct(share)} of the {errors} images taken for another class; "
                         f"add training images that show what tells them apart (see the 'why A, not B' maps).")
        else:
            steps.append(f"No single confusion dominates: the {errors} images taken for another class are spread over "
                         f"{len(ev.confused_pairs)} pairs of classes (the most frequent, {pairs.split(' and ')[0]}); "
                         f"more and more varied images of every class will help more than fixing one pair.")
    for g in groups_gaps[:1]:
        if g["significant"] or g["difference"] >= 0.1:
            counted = "images" if g["metric"] == "recall" else f"images called {g['class']}"
            fix = (f"Add images of {g['class']} from that group." if g["metric"] == "recall"
                   else f"Add images from that group of the classes it mistakes for {g['class']}.")
            steps.append(f"{g['metric'].capitalize()} of {g['class']} is {100 * g['difference']:.1f} percentage points lower "
                         f"for {g['column']} = {g['worst']} ({_pct(g['worst_value'])}, {g['n_worst']} {counted}) than for "
                         f"{g['best']} ({_pct(g['best_value'])}); 95 % CI of the gap {100 * g['ci_low']:.1f} to "
                         f"{100 * g['ci_high']:.1f} points"
                         + (f". {fix}" if g["significant"]
                            else f" — could be chance at this size. {fix[:-1]} to find out."))
    rej = model.info.reject
    if rej is None or rej.threshold is None:
        steps.append("Unknown-image rejection is off: a photo of something else still gets one of the classes. "
                     "Retrain with rejection on, and test with report --unknown FOLDER.")
    elif not (ev.open_world or {}).get("unknown"):
        share = ((ev.open_world or {}).get("rejection") or {}).get("rejected_share")
        steps.append(f"Unknown-image rejection is on ({_pct(share)} of these test images were set aside as unknown"
                     f"{_rejection_cost(ev, model)}); check it on real out-of-scope photos with report --unknown "
                     f"FOLDER. If every image the model will see shows one of the classes (an inspection line, say), "
                     f"retrain with --no-reject.")
    if finetune_step and not capped:  # measured, but the curve does not call for it: after the other advice
        steps.append(finetune_step)
    seen: set = set()
    steps = [s for s in steps if not (s in seen or seen.add(s))]  # one bullet per piece of advice
    return steps[:4]


#: Fewest mistakes the next steps read a dominant confusion (or its absence) from.
MIN_PATTERN = 5


def chosen_on(meta: dict) -> str:
    """Where the model's temperature, operating point and thresholds were chosen, in words: the validation split, or
    on the small-data path (no validation split) the out-of-fold predictions of cross-validation."""
    if ((meta or {}).get("training") or {}).get("small_data"):
        return "the out-of-fold predictions of cross-validation on the training images"
    return "the validation split"


def verdict_section(model, ev, goals, lc) -> dict:
    """Goals judged, overall verdict, operating point in words, and 2–4 next steps."""
    from .learning_curve import extrapolate, trend

    rows = judge_goals(goals, ev)
    lc_ext = {}
    if lc is not None:
        for r in rows:
            lc_ext[r["name"]] = extrapolate(lc, r, r["value"], lc["y_test"])
        if not rows and len(lc["y_test"]) >= 20:
            t = {"name": "accuracy", "metric": "accuracy", "cls": None}
            lc_ext["_accuracy"] = {**extrapolate(lc, t, 0.99, lc["y_test"], n_boot=0),
                                   "trend": trend(lc, t, lc["y_test"])}
    gaps = [{**g, "column": col} for col, a in ev.groups.items() for g in a.get("class_gaps", [])]
    gaps.sort(key=lambda d: (-d["significant"], -d["difference"]))
    ops = (ev.open_world or {}).get("operating_point", [])
    op_words = [f"Decisions use an operating point chosen on {chosen_on(model.meta)}: {o['target']} "
                f"(probability threshold {o['threshold']:.3f}). {o['in_words']}" for o in ops]
    overall = _overall(rows)
    headline = {"met": "Good enough for the stated goal.", "not met": "Not good enough yet for the stated goal.",
                "cannot tell yet": "Cannot tell yet whether it meets the goal.", None: None}[overall]
    return {"goals": rows, "overall": overall, "headline": headline,
            "sentences": [_goal_sentence(r) for r in rows], "operating_point": op_words,
            "next_steps": next_steps(ev, rows, lc, lc_ext, model, gaps),
            "learning_curve": {k: v for k, v in lc_ext.items()},
            "group_gaps": gaps[:10]}
