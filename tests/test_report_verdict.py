"""The report's verdict, next steps, learning curve, per-group class gaps and honest intervals."""

from __future__ import annotations

import frugalvision as fv
import json

import numpy as np
import pandas as pd
import pytest

from frugalvision.evaluation import evaluate_predictions
from frugalvision.evaluation.bootstrap import newcombe_diff_ci, wilson_ci
from frugalvision.evaluation.groups import class_metrics_by_group
from frugalvision.exceptions import DataError
from frugalvision.reporting.learning_curve import extrapolate, refit_predictions
from frugalvision.reporting.verdict import judge_goals, parse_goal


def test_wilson_does_not_collapse_at_0_or_100_percent():
    lo, hi = wilson_ci(50, 50)
    assert hi == 1.0 and 0.92 < lo < 0.935  # not 100.0-100.0
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.3
    lo, hi = newcombe_diff_ci(50, 50, 50, 50)
    assert lo < 0 < hi and hi - lo > 0.1
    assert np.isnan(wilson_ci(0, 0)[0])


def test_parse_goal_forms_and_errors():
    classes = ["defective", "ok"]
    assert parse_goal("accuracy>=0.9", classes) == {"name": "accuracy>=0.9", "metric": "accuracy", "cls": None,
                                                    "value": 0.9}
    assert parse_goal("balanced_accuracy >= 85%", classes)["value"] == pytest.approx(0.85)
    g = parse_goal("defective:recall>=0.9", classes)
    assert (g["cls"], g["metric"], g["value"]) == ("defective", "recall", 0.9)
    for bad in ("accuracy>0.9", "nope:recall>=0.9", "accuracy>=1.5"):
        with pytest.raises(DataError):
            parse_goal(bad, classes)


def _ev(y, pred, groups=None, classes=("defective", "ok")):
    classes = list(classes)
    proba = np.full((len(y), len(classes)), 0.1)
    proba[np.arange(len(y)), [classes.index(p) for p in pred]] = 0.9
    proba /= proba.sum(axis=1, keepdims=True)
    table = pd.DataFrame({"path": [f"/nowhere/{i}.png" for i in range(len(y))], "label": y})
    if groups is not None:
        table["site"] = groups
    return evaluate_predictions(table, proba, classes, group_by="site" if groups is not None else None, n_boot=200)


def test_verdicts_met_not_met_and_cannot_tell():
    y = np.array(["defective"] * 100 + ["ok"] * 100)
    pred = y.copy()
    pred[:5] = "ok"  # recall of defective 95 %
    ev = _ev(y, pred)
    rows = {r["name"]: r for r in judge_goals([parse_goal(g, ev.classes) for g in
                                               ("accuracy>=0.9", "defective:recall>=0.99", "defective:recall>=0.93")], ev)}
    assert rows["accuracy>=0.9"]["verdict"] == "met"          # 97.5 %, CI 94.3-98.9 %
    assert rows["defective:recall>=0.99"]["verdict"] == "not met"
    assert rows["defective:recall>=0.93"]["verdict"] == "cannot tell yet"
    assert rows["defective:recall>=0.93"]["n_to_decide"] > 100


def test_images_needed_to_decide_are_where_the_wilson_interval_decides():
    """The number the verdict asks for is the total at which the same share would decide by the interval the verdict
    uses (Wilson), never at or below the images it already has (it said 1 for 100 % of 2 against 50 %); none for a
    goal judged by a bootstrap (balanced accuracy), where Wilson at the current n may already "decide"."""
    from frugalvision.evaluation.bootstrap import wilson_ci
    from frugalvision.reporting.verdict import _n_to_decide

    for value, goal, n in ((1.0, 0.5, 2), (0.9, 0.8, 20), (0.7, 0.8, 20), (0.95, 0.93, 100), (0.6, 0.5, 7)):
        need = _n_to_decide(value, goal, n)
        assert need > n
        lo, hi = wilson_ci(value * need, need)
        assert (lo >= goal) if value > goal else (hi < goal)
        before = wilson_ci(value * (need - 1), need - 1)
        assert not ((before[0] >= goal) if value > goal else (before[1] < goal))
    assert _n_to_decide(1.0, 0.5, 2) == 4
    y = np.array(["defective"] * 2 + ["ok"] * 18)
    ev = _ev(y, y.copy())
    row = judge_goals([parse_goal("defective:recall>=0.5", ev.classes)], ev)[0]
    assert row["verdict"] == "cannot tell yet" and row["n_to_decide"] == 4
    from frugalvision.reporting.verdict import _goal_sentence

    assert "About 4 test images of this kind in all (2 more)" in _goal_sentence(row)
    y = np.array(["defective"] * 10 + ["ok"] * 290)
    pred = y.copy()
    pred[:3] = "ok"
    ev = _ev(y, pred)
    row = judge_goals([parse_goal("balanced_accuracy>=0.8", ev.classes)], ev)[0]
    assert row["verdict"] == "cannot tell yet" and row.get("n_to_decide") is None and "more)" not in _goal_sentence(row)


def test_per_group_recall_gap_of_the_rare_class_is_found_with_a_ci():
    # The case, made large enough to be real: the rare class is found 90 % in one group, 50 % in the other.
    y, pred, g = [], [], []
    for site, found in (("north", 36), ("south", 20)):
        y += ["defective"] * 40 + ["ok"] * 160
        pred += ["defective"] * found + ["ok"] * (40 - found) + ["ok"] * 160
        g += [site] * 200
    y, pred, g = np.array(y), np.array(pred), np.array(g)
    rows, gaps = class_metrics_by_group(y, pred, g, ["defective", "ok"])
    r = {(x["class"], x["group"]): x for x in rows}
    assert r[("defective", "north")]["recall"] == pytest.approx(0.9)
    assert r[("defective", "south")]["recall"] == pytest.approx(0.5)
    top = gaps[0]
    assert (top["class"], top["metric"], top["best"], top["worst"]) == ("defective", "recall", "north", "south")
    assert top["difference"] == pytest.approx(0.4) and top["significant"] and 0.2 < top["ci_low"] < 0.4 < top["ci_high"]


def test_report_shows_the_per_group_recall_gap_in_html_and_json(trained, tmp_path):
    from frugalvision.reporting import render_html, sections_to_json
    from frugalvision.reporting.sections import build_sections

    model, _ = trained
    c0, c1 = model.classes[0], model.classes[1]
    y, pred, g = [], [], []
    for site, found in (("north", 36), ("south", 20)):
        y += [c0] * 40 + [c1] * 60
        pred += [c0] * found + [c1] * (40 - found) + [c1] * 60
        g += [site] * 100
    ev = _ev(np.array(y), np.array(pred), np.array(g), classes=model.classes)
    s = build_sections(model, ev, explain=False, learning_curve=False, data_map=False,
                       goals=[f"{c0}:recall>=0.9"])
    html, data = render_html(s), json.loads(sections_to_json(s))
    gap = data["groups"]["site"]["class_gaps"][0]
    assert (gap["class"], gap["metric"], gap["worst"]) == (c0, "recall", "south")
    assert gap["difference"] == pytest.approx(0.4)
    assert "40.0" in html and "percentage points" in html and "Newcombe" in html
    v = data["verdict"]
    assert v["overall"] == "not met" and 2 <= len(v["next_steps"]) <= 4
    assert any("south" in st and "percentage points" in st for st in v["next_steps"])
    assert "NOT MET" in html


def _blobs(n_per_class, rng, d=64, k=3, sep=0.55):
    centres = np.random.default_rng(123).normal(size=(k, d)) * sep
    X = np.concatenate([centres[c] + rng.normal(size=(n_per_class, d)) for c in range(k)]).astype(np.float32)
    y = np.repeat([f"c{c}" for c in range(k)], n_per_class)
    return X, y


def test_learning_curve_extrapolation_on_data_where_more_images_help():
    """High-dimensional overlapping classes: accuracy keeps rising with data, so the projected number of images
    for a goal just above today's accuracy must be more than today, finite, and roughly right when checked."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X_tr, y_tr = _blobs(40, rng, d=128, sep=0.2)    # 120 training images
    X_te, y_te = _blobs(400, rng, d=128, sep=0.2)   # a large test set, so the check below is not noise
    make = lambda: LogisticRegression(C=0.05, max_iter=2000)  # noqa: E731
    lc = refit_predictions(X_tr, y_tr, X_te, make, repeats=3, seed=0)
    acc = [float(np.mean([np.mean(p == y_te) for p in P])) for P in lc["preds"]]
    assert acc[-1] > acc[0] + 0.03, acc  # more images do help here
    goal = min(acc[-1] + 0.04, 0.99)
    ext = extrapolate(lc, {"metric": "accuracy", "cls": None, "name": "acc"}, goal, y_te, n_boot=100)
    assert ext["exponent"] > 0.05
    assert 1.2 < ext["multiple"] < 10, ext  # 2.4x here
    lo, hi = ext["multiple_interval"]
    assert lo <= ext["multiple"] <= hi
    # Check the projection: train on that many images and measure.
    n_more = int(np.ceil(ext["multiple"] * 40))
    X_big, y_big = _blobs(n_more, np.random.default_rng(7), d=128, sep=0.2)
    reached = np.mean(make().fit(X_big, y_big).predict(X_te) == y_te)
    assert reached >= goal - 0.03, (reached, goal, ext)


def test_flat_learning_curve_says_more_images_will_not_help():
    rng = np.random.default_rng(1)
    X_tr, y_tr = _blobs(60, rng, sep=5.0)  # trivially separable: already at 100 %
    X_te, y_te = _blobs(50, rng, sep=5.0)
    from sklearn.linear_model import LogisticRegression

    lc = refit_predictions(X_tr, y_tr, X_te, lambda: LogisticRegression(max_iter=500), repeats=2)
    ext = extrapolate(lc, {"metric": "accuracy", "cls": None, "name": "acc"}, 0.9, y_te, n_boot=20)
    assert ext["multiple"] == 1.0  # the goal is already reached at 100 % of the data


def test_goals_given_at_train_time_are_stored_and_judged_by_the_report(shapes_dir, tmp_path):

    fv.train(shapes_dir, out=tmp_path / "run", goals=["accuracy>=50%"], progress=False)
    model = fv.load_model(tmp_path / "run")
    assert model.info.training["goals"] == ["accuracy>=0.5"]
    html = fv.report(model, tmp_path / "r.html", explain=False, progress=False).read_text(encoding="utf-8")
    assert "No goal was stated" not in html and 'class="verdict met"' in html
    with pytest.raises(Exception, match="Goal"):
        fv.train(shapes_dir, goals=["accuracy>=2"], progress=False)


def test_where_thresholds_were_chosen_is_said_as_it_was():
    """The small-data path has no validation split: the report must not say its temperature and operating point
    were chosen on one."""
    from frugalvision.reporting.verdict import chosen_on

    assert chosen_on({"training": {"small_data": {"head": "cl2n"}}}).startswith("the out-of-fold predictions")
    assert chosen_on({"training": {}}) == chosen_on({}) == "the validation split"


def test_the_learning_curve_trend_admits_when_the_test_images_cannot_tell():
    """65 -> 80 -> 75 -> 85 % on 20 test images was called "still rising"; the trend is judged by the change from the
    smallest refit to the full set with a paired bootstrap over the test images."""
    from frugalvision.reporting.learning_curve import trend

    def curve(n, accs, seed=0):
        order = np.random.default_rng(seed).permutation(n)  # nested errors: a refit on more images fixes some
        y = np.array(["a", "b"] * (n // 2))
        preds = []
        for acc in accs:
            p = y.copy()
            wrong = order[:round((1 - acc) * n)]
            p[wrong] = np.where(y[wrong] == "a", "b", "a")
            preds.append([p])
        return {"preds": preds}, y

    target = {"name": "accuracy", "metric": "accuracy", "cls": None}
    lc, y = curve(20, [0.65, 0.80, 0.75, 0.85])
    t = trend(lc, target, y)
    assert t["state"] == "unclear" and t["n"] == 20  # fewer than 30 test images: no interval, cannot tell
    lc, y = curve(60, [0.70, 0.72, 0.71, 0.75])
    t = trend(lc, target, y)
    assert t["state"] == "unclear" and t["ci"][0] <= 0 < t["ci"][1]
    lc, y = curve(1000, [0.70, 0.80, 0.86, 0.90])
    assert trend(lc, target, y)["state"] == "rising"
    lc, y = curve(1000, [0.90, 0.90, 0.90, 0.90])
    assert trend(lc, target, y)["state"] == "flat"


def test_two_mistakes_are_not_read_as_a_dominant_confusion(trained):
    from frugalvision.reporting.verdict import verdict_section

    model, _ = trained
    c0, c1 = model.classes[0], model.classes[1]
    y = np.array([c0] * 10 + [c1] * 10)
    pred = y.copy()
    pred[:2] = c1
    steps = verdict_section(model, _ev(y, pred, classes=model.classes), [], None)["next_steps"]
    assert any("2 images taken for another class one by one" in st for st in steps), steps
    assert not any("dominant confusions first" in st for st in steps)


def test_faithfulness_gap_words_never_print_nan_nor_a_negative_lower_by():
    from frugalvision.reporting.sections import _gap_words

    nan = float("nan")
    assert _gap_words(-0.044, [nan, nan], "lower", "higher") == "higher by 0.044"
    assert _gap_words(0.05, [0.02, 0.08], "lower", "higher") == "lower by 0.050 (95 % CI of the difference +0.020 to +0.080)"


def test_format_characters_from_data_are_shown_escaped_in_the_report(trained):
    """A name holding U+202E (right-to-left override) reversed the caption after it; the page shows it as an escape,
    in text and in image alt text alike, and files are named with their folder (13.png repeats in every class)."""
    from frugalvision.reporting import render_html
    from frugalvision.reporting.sections import build_sections

    model, _ = trained
    c0, c1 = model.classes[0], model.classes[1]
    y = np.array([c0] * 40 + [c1] * 40)
    pred = y.copy()
    pred[:6] = c1
    ev = _ev(y, pred, np.array(["evil\u202eside", "plain"] * 40), classes=model.classes)
    html = render_html(build_sections(model, ev, explain=False, learning_curve=False, data_map=False))
    assert "\u202e" not in html and "evil\\u202eside" in html
    assert "nowhere/0.png" in html  # folder/name in the confused pair's examples


def test_a_goal_without_an_interval_does_not_claim_one():
    from frugalvision.reporting.verdict import _goal_sentence

    y = np.array(["defective"] * 5 + ["ok"] * 15)
    pred = y.copy()
    pred[0] = "ok"
    row = judge_goals([parse_goal("balanced_accuracy>=0.9", ["defective", "ok"])], _ev(y, pred))[0]
    text = _goal_sentence(row)
    assert row["verdict"] == "cannot tell yet" and "n/a" not in text and "straddles" not in text
    assert "too few for an interval" in text


def test_the_summary_gives_counts_and_names_no_best_class_among_ties():
    from frugalvision.reporting.sections import headline_sentences

    y = np.array(["defective"] * 4 + ["ok"] * 16)
    pred = y.copy()
    pred[0] = "ok"
    text = " ".join(headline_sentences(_ev(y, pred)))
    assert "best on ok (100.0 % found, 16 of 16) and weakest on defective (75.0 % found, 3 of 4)" in text
    assert "too few images per class to rank them" in text
    assert "best on" not in " ".join(headline_sentences(_ev(y, y.copy())))


def test_the_next_step_on_rejection_says_what_it_cost_and_when_to_turn_it_off(trained):
    """On a closed inspection line every image shows a class: 'none of these' set aside 5 % of the solar cells and
    cost 3.8 points. The next step says how many of the images it set aside were right, and names --no-reject."""
    import copy
    import dataclasses

    from frugalvision.artifact import RejectInfo
    from frugalvision.decision import decide
    from frugalvision.reporting.verdict import verdict_section

    model, _ = trained
    model = copy.copy(model)
    model.info = dataclasses.replace(model.info, reject=RejectInfo(params={}, threshold=1.0), operating_point=None)
    c0, c1 = model.classes[0], model.classes[1]
    y = np.array([c0] * 10 + [c1] * 10)
    proba = np.full((20, len(model.classes)), 0.1 / max(1, len(model.classes) - 1))
    proba[:10, 0], proba[10:, 1] = 0.9, 0.9
    proba[3] = proba[13]  # one image of c0 most probably c1
    scores = np.zeros(20)
    scores[[0, 1, 2, 3]] = 2.0  # four set aside: three of them were right
    dec = decide(proba, model.classes, ood_scores=scores, reject_threshold=1.0)
    table = pd.DataFrame({"path": [f"/nowhere/{i}.png" for i in range(20)], "label": y})
    ev = evaluate_predictions(table, proba, model.classes, n_boot=200, decisions=dec)
    steps = verdict_section(model, ev, [], None)["next_steps"]
    (step,) = [st for st in steps if "rejection is on" in st]
    assert "3 of those 4 would have been right, 15.0 points of accuracy on 20 images" in step, step
    assert "--no-reject" in step
