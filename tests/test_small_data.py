"""Few labels: the small-data path, thresholds and intervals that admit their sample size, learning-curve advice."""

from __future__ import annotations

import numpy as np
import pytest

import frugalvision as fv
from conftest import make_shapes_dataset
from frugalvision.cli.main import main


@pytest.fixture(scope="module")
def five_per_class(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("five"), n_per_class=5, seed=31)


def test_five_per_class_uses_every_image_and_says_what_to_expect(five_per_class, tmp_path, capsys):
    assert main(["train", str(five_per_class), "--out", str(tmp_path / "run"), "-q", "--test-size", "0",
                 "--target", "circle:recall>=0.9"]) == 0
    out = capsys.readouterr().out
    assert "Small-data path" in out and "fewer than 20" in out and "Expect about" in out
    model = fv.load_model(tmp_path / "run")
    split = model.info.training["counts"]
    assert set(split) == {"train"} and sum(split["train"].values()) == 15  # no image held out
    sd = model.info.training["small_data"]
    assert sd["folds"] == 5 and len(sd["candidates"]) >= 3 and sd["head"] in [c["head"] for c in sd["candidates"]]
    est = sd["estimate"]
    lo, hi = est["ci"]
    assert est["n"] == 15 and lo < est["accuracy"] <= hi and hi - lo > 0.1  # Wilson on 15 images: wide, never 0
    # The operating point was chosen on out-of-fold predictions and says it rests on too few images.
    v = model.info.operating_point.validation["circle:recall>=0.9"]
    assert v["n"] == 5 and v["ci"][1] - v["ci"][0] > 0.3 and "too few" in v["note"] and "out-of-fold" in v["judged_on"]
    # "None of these" is not placed from 15 images, and the model says why.
    assert model.info.reject.threshold is None and "too few" in model.info.reject.note
    assert "evaluate RUN --data" in out
    with pytest.raises(fv.DataError, match="small-data path.*cross-validated estimate"):
        fv.evaluate(model, progress=False)
    # By default the small-data path still holds out test images, so evaluate and report work as usual.
    default = fv.train(five_per_class, progress=False)
    assert default.info.training["small_data"] and set(default.info.training["counts"]) == {"train", "test"}
    assert fv.evaluate(default, progress=False, n_boot=50).headline["n"] == 3


def test_the_small_data_head_is_an_exact_linear_head(five_per_class):
    model = fv.train(five_per_class, progress=False)
    assert model.info.training["small_data"]
    path = str(sorted(five_per_class.rglob("*.png"))[0])
    maps = fv.explain(model, path, cls="all")  # exact CAM: the maps average to the logits minus the intercept
    emb = model.embed([path], progress=False).X
    np.testing.assert_allclose(maps.mean(axis=(1, 2)) + model.head.intercept_, model.head.logits(emb)[0], atol=1e-3)


def test_the_usual_path_is_kept_when_asked_and_refusals_say_why(five_per_class, tmp_path, capsys):
    mlp = fv.train(five_per_class, head="mlp", progress=False, val_size=0.35, test_size=0.0)
    assert not mlp.info.training.get("small_data")
    assert any("asks for the usual path" in n for n in mlp.info.training["notes"])
    with pytest.raises(fv.DataError, match="--few-shot cannot go with --head mlp"):
        fv.Recipe(few_shot=True, head="mlp")
    assert main(["train", str(five_per_class), "--few-shot", "--C", "0.1", "--out", str(tmp_path / "r")]) == 1
    assert "cannot go with --C" in capsys.readouterr().err


def test_none_of_these_threshold_from_out_of_fold_scores_with_enough_images(tmp_path):
    data = make_shapes_dataset(tmp_path / "d", n_per_class=8, seed=32)  # 24 images: enough for a threshold
    model = fv.train(data, progress=False)
    assert model.info.training["small_data"] and model.info.reject.threshold is not None
    assert model.info.reject.n_validation == 20 and "out-of-fold" in model.info.reject.note  # 24 less 4 test images
    # On its own training images the model rejects about what it promised (5 %), not most of them.
    rejected = (fv.predict(model, [data], progress=False)["label"] == "unknown").mean()
    assert rejected <= 0.25


def test_no_collapsed_interval_on_a_handful_of_images():
    from frugalvision.evaluation.groups import class_gap
    from frugalvision.evaluation.open_world import class_curves, unknown_detection

    y = np.array(["a", "b", "a", "b", "a", "b", "a", "b", "a"])
    proba = np.where(y[:, None] == np.array(["a", "b"]), 0.9, 0.1)
    idx = np.random.default_rng(0).integers(0, len(y), (200, len(y)))
    for c in class_curves(y, proba, ["a", "b"], idx):
        assert c["roc_auc"] == 1.0 and all(np.isnan(v) for v in c["roc_auc_ci"])  # too few to tell, not 1.0-1.0
    gap = class_gap(np.array(["a", "a", "b"]), np.array(["a", "a", "a"]), ["a", "b"])
    assert gap["ci_high"] - gap["ci_low"] > 0.5  # 2 of 2 vs 0 of 1: Newcombe, not "100.0 to 100.0"
    u = unknown_detection(np.linspace(0, 1, 9), np.linspace(2, 3, 5), threshold=1.5, n_boot=100)
    assert all(np.isnan(v) for v in u["auroc_ci"])


def test_learning_curve_advice_never_calls_a_rising_curve_flat_nor_asks_more_for_a_met_goal():
    from frugalvision.reporting.learning_curve import refit_predictions
    from frugalvision.reporting.verdict import _lc_step

    row = {"cls": None, "value": 0.99, "what": "accuracy", "n": 200}
    assert _lc_step({"multiple": float("inf")}, {**row, "n": 4}, {}) is None  # 4 test images: no curve reading
    rising = {"multiple": float("inf"), "multiple_interval": [float("nan"), float("nan")], "n_now": 40,
              "values": [0.6, 0.7, 0.78, 0.82], "n_train": [10, 20, 30, 40], "rising": True}
    text = _lc_step(rising, row, {})
    assert "too flat" not in text and "still rises" in text
    flat = {**rising, "values": [0.8, 0.8, 0.8, 0.8], "rising": False}
    assert "too flat" in _lc_step(flat, row, {})
    met = {**rising, "multiple": 1.0, "values": [0.9, 0.95, 0.99, 0.995]}
    assert _lc_step(met, {**row, "value": 0.9}, {}) is None
    # Five images per class: the 25 % and 50 % refits both hold 2 per class; one column, not two alike.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 4))
    y = np.repeat(["a", "b"], 5)
    lc = refit_predictions(X, y, X[:3], lambda: fv.LinearHead(C=1.0))
    assert len(set(lc["n_train"])) == len(lc["n_train"]) and lc["n_train"] == sorted(lc["n_train"])


def test_none_of_these_keeps_its_rate_on_new_images_when_the_folds_are_smaller_than_the_final_fit():
    """The threshold is placed on out-of-fold scores; new images are scored by the final scorer. Both must be the
    same kind of score: with 120 images the final fit alone crossed ViM's 100-row line (kNN + ViM z-scores) while the
    folds (~96 rows) scored with kNN, and 55-65 % of new normal images were rejected (a user's texture set)."""
    from frugalvision.fitting import fit_small_data_stage
    from frugalvision.ood import ood_score
    from frugalvision.recipe import Recipe

    rng = np.random.default_rng(5)
    dim, centres = 64, rng.normal(size=(2, 64)) * 1.5
    base = rng.gamma(2.0, 1.0, size=dim)  # non-negative, uneven channels, like pooled ReLU features

    def draw(n, c):
        return np.abs(base + centres[c] + rng.normal(size=(n, dim))).astype(np.float32)

    X = np.vstack([draw(104, 0), draw(16, 1)])
    y = np.array(["good"] * 104 + ["defect"] * 16)
    fit, _ = fit_small_data_stage(X, y, Recipe(), n_clean=len(y))
    assert fit.reject is not None and fit.reject.threshold is not None
    # 'good' is predicted for 100+ out-of-fold images: a threshold of its own; 'defect' shares the pooled one
    assert set(fit.reject.class_thresholds) == {"good"}
    new = np.vstack([draw(400, 0), draw(100, 1)])
    logits = fit.head.logits(new).astype(np.float32)
    rejected = ood_score(fit.ood_state, new, logits) > fit.reject.thresholds(list(fit.head.classes_))[
        logits.argmax(axis=1)]
    assert rejected.mean() <= 0.15, f"{rejected.mean():.0%} of new normal images rejected (promised 5 %)"


def test_a_class_the_none_of_these_threshold_swallows_is_named():
    """One threshold for all classes falls hardest on a rare, spread-out class (the defects of an inspection set:
    10 of 16 answered unknown): training says so, with the counts it rests on."""
    from frugalvision.fitting import fit_small_data_stage, swallowed_classes
    from frugalvision.recipe import Recipe

    from frugalvision.artifact import RejectInfo

    one = RejectInfo(params={}, threshold=1.0)  # one threshold for all classes
    y = np.array(["good"] * 30 + ["defect"] * 10)
    top = (y == "good").astype(int)  # indices into ["defect", "good"]
    scores = np.r_[np.zeros(30), [0.0] * 6 + [2.0] * 4]
    (note,) = swallowed_classes(scores, y, one, top, ["defect", "good"], "validation")
    assert "4 of 10 validation images of 'defect' (40 %" in note and "--no-reject" in note
    # a class's own threshold is what its images meet: 2.5 keeps them all
    own = RejectInfo(params={}, threshold=1.0, class_thresholds={"defect": 2.5})
    assert swallowed_classes(scores, y, own, top, ["defect", "good"], "validation") == []
    # ... read at each image's most probable class, not its label: defects taken for 'good' meet good's 1.0
    taken = top.copy()
    taken[-4:] = 1
    (note,) = swallowed_classes(scores, y, own, taken, ["defect", "good"], "validation")
    assert "4 of 10 validation images of 'defect'" in note
    # one image is not a pattern
    assert swallowed_classes(np.r_[np.zeros(39), 2.0], y, one, top, ["defect", "good"], "validation") == []
    # 2 of 10 images of one of 10 balanced classes: what chance does, no note
    names = [f"d{i}" for i in range(10)]
    y10 = np.repeat(names, 10)
    assert swallowed_classes(np.r_[np.zeros(98), 2.0, 2.0], y10, one, np.repeat(np.arange(10), 10), names,
                             "validation") == []

    rng = np.random.default_rng(7)
    good = np.abs(3 + rng.normal(0, 0.5, (150, 32)))
    defect = np.abs(rng.normal(0, 1, (18, 32))) * 3 + np.abs(3 + rng.normal(0, 0.5, (18, 32)))
    defect[:, :16] *= rng.uniform(0, 3, (18, 16))  # each defect unusual in its own way
    fit, _ = fit_small_data_stage(np.vstack([good, defect]).astype(np.float32),
                                  np.array(["good"] * 150 + ["defect"] * 18), Recipe(), n_clean=168)
    assert any("of 'defect'" in n for n in fit.notes), fit.notes


def test_the_expected_accuracy_is_the_chosen_heads_cross_validated_accuracy():
    """'Expect about 91.3 %' was printed where every candidate's cross-validated accuracy was at most 89.5 %: the
    estimate read the first repeat only. It is now the chosen head's own number, its Wilson interval on the images."""
    from frugalvision.evaluation.bootstrap import wilson_ci
    from frugalvision.small_data import fit_small_data

    rng = np.random.default_rng(11)
    y = np.repeat(["a", "b", "c"], 8)
    X = rng.normal(size=(24, 16)) + np.repeat(np.eye(3, 16) * 1.2, 8, axis=0)  # overlapping: CV varies by repeat
    fit = fit_small_data(X, y, ["a", "b", "c"], repeats=3)
    chosen = next(c for c in fit.scores if c["head"] == fit.name)
    assert fit.estimate["accuracy"] == pytest.approx(chosen["cv_accuracy"])
    assert fit.estimate["accuracy"] <= max(c["cv_accuracy"] for c in fit.scores)
    assert fit.estimate["ci"] == pytest.approx(list(wilson_ci(round(chosen["cv_accuracy"] * 24), 24)))


def test_a_class_of_one_image_leaves_none_of_these_unset_with_the_reason():
    """24 images of one class and 1 of another (train --test-size 0): no out-of-fold scores exist, so no threshold;
    it crashed (a threshold placed on None)."""
    from frugalvision.fitting import fit_small_data_stage
    from frugalvision.recipe import Recipe

    X = np.abs(np.random.default_rng(2).normal(size=(25, 16))).astype(np.float32)
    fit, _ = fit_small_data_stage(X, np.array(["a"] * 24 + ["b"]), Recipe(), n_clean=25)
    assert fit.reject.threshold is None and "single image" in fit.reject.note
