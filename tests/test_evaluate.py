"""Evaluation numbers match scikit-learn, CIs are seeded, the bias audit finds a planted gap."""

from __future__ import annotations

import frugalvision as fv
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from frugalvision.cli.main import main
from frugalvision.evaluation import evaluate_predictions, expected_calibration_error
from frugalvision.evaluation.calibration import fit_temperature

CLASSES = ["fragrance", "haircare", "make-up", "skincare"]


def _synthetic(n=800, seed=0, acc_by_group=None, sizes=None):
    """Rows with a true label and probabilities whose argmax is right with a chosen rate per group."""
    rng = np.random.default_rng(seed)
    groups = []
    for g, size in (sizes or {"all": n}).items():
        groups += [g] * size
    groups = np.array(groups)
    y = rng.integers(0, len(CLASSES), len(groups))
    proba = rng.dirichlet(np.ones(len(CLASSES)), len(groups)) * 0.5
    for i, g in enumerate(groups):
        acc = (acc_by_group or {}).get(g, 0.8)
        target = y[i] if rng.random() < acc else (y[i] + rng.integers(1, len(CLASSES))) % len(CLASSES)
        proba[i, target] += 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    table = pd.DataFrame({"path": [f"/img/{i}.jpg" for i in range(len(groups))],
                          "label": np.array(CLASSES)[y], "group": groups})
    return table, proba


def test_metrics_match_scikit_learn():
    table, proba = _synthetic()
    r = evaluate_predictions(table, proba, CLASSES, n_boot=200)
    y = table["label"].to_numpy()
    pred = np.array(CLASSES)[proba.argmax(1)]
    assert r.headline["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r.headline["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r.headline["macro"]["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert r.headline["weighted"]["precision"] == pytest.approx(skm.precision_score(y, pred, average="weighted"))
    assert r.headline["top2_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, proba, k=2, labels=CLASSES))
    assert r.headline["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=CLASSES))
    np.testing.assert_allclose(r.per_class["recall"], skm.recall_score(y, pred, average=None, labels=CLASSES))
    np.testing.assert_array_equal(r.confusion, skm.confusion_matrix(y, pred, labels=CLASSES))
    top = r.confused_pairs[0]
    assert top["count"] == r.confusion[CLASSES.index(top["true"]), CLASSES.index(top["predicted"])]
    assert len(r.cell_files(top["true"], top["predicted"])) == top["count"]


def test_proportions_get_wilson_intervals_and_gaps_a_seeded_bootstrap():
    from frugalvision.evaluation.bootstrap import wilson_ci

    table, proba = _synthetic(400)
    a = evaluate_predictions(table, proba, CLASSES, seed=3)
    b = evaluate_predictions(table, proba, CLASSES, seed=3)
    c = evaluate_predictions(table, proba, CLASSES, seed=4)
    k = int(a.predictions["correct"].sum())
    assert a.accuracy_ci == wilson_ci(k, 400) == c.accuracy_ci  # Wilson: no resampling, no seed
    lo, hi = a.accuracy_ci
    assert lo < a.headline["accuracy"] < hi and 0.04 < hi - lo < 0.12  # ~±4 points for n=400
    assert (a.per_class["recall_ci_low"] <= a.per_class["recall"]).all()
    assert (a.per_class["recall"] <= a.per_class["recall_ci_high"]).all()
    # The class gap is a difference of two recalls: Newcombe's interval from the two Wilson intervals (no seed,
    # valid on few images), exactly what newcombe_diff_ci gives for the two classes' counts.
    from frugalvision.evaluation.bootstrap import newcombe_diff_ci

    g = a.class_gap
    assert g == b.class_gap == c.class_gap  # no resampling: the seed changes nothing
    pc = a.per_class.set_index("class")
    kb, nb = round(pc.loc[g["best"], "recall"] * pc.loc[g["best"], "support"]), pc.loc[g["best"], "support"]
    kw, nw = round(pc.loc[g["worst"], "recall"] * pc.loc[g["worst"], "support"]), pc.loc[g["worst"], "support"]
    assert (g["ci_low"], g["ci_high"]) == pytest.approx(newcombe_diff_ci(kb, nb, kw, nw))
    assert g["ci_low"] < g["difference"] < g["ci_high"]
    assert a.settings["ci_methods"]["accuracy"] == "Wilson" and "Newcombe" in a.settings["ci_methods"]["class recall gap"]
    out = a.summary()
    assert "95 % Wilson CI" in out and "Newcombe" in out and "Intervals: Wilson for single proportions" in out


def test_all_right_does_not_give_a_collapsed_interval():
    table, proba = _synthetic(50)
    proba = np.eye(len(CLASSES))[[CLASSES.index(t) for t in table["label"]]] * 0.9 + 0.025
    r = evaluate_predictions(table, proba, CLASSES, n_boot=200)
    assert r.headline["accuracy"] == 1.0
    lo, hi = r.accuracy_ci
    assert hi == 1.0 and 0.92 < lo < 0.935  # 50 of 50: 92.9-100 %, not the bootstrap's 100-100 %
    assert "(95 % Wilson CI 92.9-100.0)" in r.summary()


def test_vectorised_roc_auc_and_average_precision_match_scikit_learn():
    from frugalvision.evaluation.open_world import average_precision_rows, roc_auc_rows

    rng = np.random.default_rng(0)
    pos = rng.random((30, 80)) < 0.3
    scores = np.round(rng.random((30, 80)) + 0.4 * pos, 1)  # rounded: many ties
    auc, ap = roc_auc_rows(pos, scores), average_precision_rows(pos, scores)
    for i in range(30):
        assert auc[i] == pytest.approx(skm.roc_auc_score(pos[i], scores[i]))
        assert ap[i] == pytest.approx(skm.average_precision_score(pos[i], scores[i]))
    assert np.isnan(roc_auc_rows(np.zeros((1, 5), bool), np.arange(5.0))[0])
    assert np.isnan(average_precision_rows(np.zeros((1, 5), bool), np.arange(5.0))[0])


def test_group_audit_finds_the_planted_gap_and_flags_small_groups():
    table, proba = _synthetic(seed=1, acc_by_group={"easy": 0.9, "hard": 0.6, "tiny": 0.5},
                              sizes={"easy": 1000, "hard": 1000, "tiny": 12})
    r = evaluate_predictions(table, proba, CLASSES, group_by="group", n_boot=500)
    audit = r.groups["group"]
    gap = audit["gap"]
    assert gap["best"] == "easy" and gap["worst"] == "hard"
    assert gap["difference"] == pytest.approx(0.3, abs=0.05)
    assert gap["ci_low"] > 0.2 and gap["ci_high"] < 0.4 and gap["significant"]
    assert audit["too_small"] == ["tiny"]
    t = audit["table"].set_index("group")
    assert t.loc["tiny", "n"] == 12 and bool(t.loc["tiny", "too_small"])
    assert "By group: best easy" in r.summary()


def test_unknown_group_column_is_explained():
    table, proba = _synthetic(50)
    with pytest.raises(ValueError, match="not a column of the data"):
        evaluate_predictions(table, proba, CLASSES, group_by="country")


def test_expected_calibration_error_and_temperature():
    y = np.array(["a"] * 60 + ["b"] * 40)
    proba = np.tile([0.9, 0.1], (100, 1))  # always 90 % sure of "a", right 60 % of the time
    assert expected_calibration_error(y, proba, ["a", "b"]) == pytest.approx(0.3)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 3)) * 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(3 * z, labels) == pytest.approx(3.0, rel=0.1)


def test_evaluate_trained_model_and_save(trained, tmp_path):
    model, run = trained
    r = fv.evaluate(model, progress=False)
    assert r.headline["n"] == 9 and r.headline["accuracy"] >= 0.6
    assert set(r.balance.columns) == {"train", "val", "test"}
    written = r.save(tmp_path / "ev")
    assert {p.name for p in written} >= {"metrics.json", "predictions.csv", "confusion.png", "reliability.png"}
    with pytest.raises(FileExistsError):
        r.save(tmp_path / "ev")


def test_cli_evaluate_with_group_by(tmp_path, capsys):
    from conftest import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "d", n_per_class=12, seed=21)
    rows = [{"path": str(p), "label": p.parent.name, "source": "web" if i % 3 else "shop"}
            for i, p in enumerate(sorted(root.rglob("*.png")))]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    assert main(["train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "run"), "-q"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--group-by", "source", "--min-group-size", "100", "-q"]) == 0
    assert "too small to judge (< 100 images): shop, web" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "m.csv"), "--group-by", "source",
                 "--out", str(tmp_path / "ev"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "Accuracy" in out and "By source" in out
    assert (tmp_path / "ev" / "groups_source.csv").exists()


def test_paired_difference_matches_rows_by_path_and_is_narrower_than_separate_intervals():
    from frugalvision import DataError
    from frugalvision.evaluation import paired_difference

    rng = np.random.default_rng(0)
    n = 2000
    base = rng.random(n) < 0.9
    better = base | (rng.random(n) < 0.2)  # B fixes ~20 % of A's mistakes and breaks nothing
    paths = [f"img{i}.png" for i in range(n)]
    a = pd.DataFrame({"path": paths, "true": "x", "correct": base})
    b = pd.DataFrame({"path": paths, "true": "x", "correct": better}).iloc[::-1]  # order must not matter
    d = paired_difference(a, b)
    assert d.difference == pytest.approx(better.mean() - base.mean())
    assert d.only_a_right == 0 and d.only_b_right == int((better & ~base).sum())
    assert 0 < d.ci[0] < d.difference < d.ci[1]
    # Separate 95 % intervals of two accuracies near 0.9 on 2,000 rows are ~±1.3 points each; paired is far narrower.
    assert d.ci[1] - d.ci[0] < 0.015
    same = paired_difference(a, a)
    assert same.difference == 0 and same.ci == (0.0, 0.0)
    with pytest.raises(DataError, match="not on the same images"):
        paired_difference(a, b.iloc[1:])
    with pytest.raises(DataError, match="different true labels"):
        paired_difference(a, b.assign(true="y"))


def test_compare_models_uses_the_same_images_and_refuses_ones_a_model_learned_from(trained, shapes_dir, tmp_path, capsys):
    import frugalvision as fv
    from frugalvision import DataError
    from frugalvision.evaluation import compare_models

    model, run = trained
    other = fv.train(shapes_dir, C=1e-4, out=tmp_path / "weak", progress=False)  # same split (seed 0), weaker head
    ra, rb, d = compare_models(model, other, progress=False)
    assert ra.headline["n"] == rb.headline["n"] == d.n
    assert list(ra.predictions["path"]) == list(rb.predictions["path"])
    assert d.difference == pytest.approx(rb.headline["accuracy"] - ra.headline["accuracy"])
    # Another seed draws another split: that model learned from some of A's test images.
    reshuffled = fv.train(shapes_dir, seed=3, out=tmp_path / "s3", progress=False)
    with pytest.raises(DataError, match=r"Model B was trained or validated on \d+ of these"):
        compare_models(model, reshuffled, progress=False)
    assert main(["compare-models", str(run), str(tmp_path / "weak"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "B - A:" in out and "=>" in out and f"on {d.n} images" in out


def test_a_confused_pair_counts_every_image_of_its_class_unknown_answers_too():
    """'defect -> good: 1 of 1' was shown for a class of 2 test images when the other was answered unknown."""
    from frugalvision.decision import decide

    classes = ["defect", "good"]
    table = pd.DataFrame({"path": [f"/nowhere/{i}.png" for i in range(6)],
                          "label": ["defect", "defect", "good", "good", "good", "good"]})
    proba = np.array([[0.2, 0.8], [0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    scores = np.array([0.0, 5.0, 0.0, 0.0, 0.0, 0.0])  # the second defect is answered "none of these"
    r = evaluate_predictions(table, proba, classes, n_boot=50,
                             decisions=decide(proba, classes, ood_scores=scores, reject_threshold=1.0))
    assert (r.predictions["pred"] == "unknown").sum() == 1
    (pair,) = r.confused_pairs
    assert (pair["true"], pair["predicted"], pair["count"], pair["of"], pair["rate"]) == ("defect", "good", 1, 2, 0.5)


def test_a_paired_difference_without_an_interval_says_so():
    from frugalvision.evaluation.paired import PairedDifference

    nan = float("nan")
    text = str(PairedDifference(5, 0.8, 0.6, -0.2, (nan, nan), 1, 0))
    assert "nan" not in text and "too few images for an interval" in text


def test_evaluate_refuses_to_overwrite_before_the_work(trained, tmp_path, monkeypatch, capsys):
    """The refusal came after every result was computed and printed (minutes with --unknown)."""
    import frugalvision.evaluation as evaluation

    model, _ = trained
    out = tmp_path / "ev"
    assert main(["evaluate", str(model.run_dir), "--out", str(out), "-q"]) == 0
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("worked")))
    assert main(["evaluate", str(model.run_dir), "--out", str(out), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err
