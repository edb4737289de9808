"""Augmented views are cached and reused; CV never sees test rows; MLP head; tune refits the best."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import frugalvision as fv
from frugalvision.features.augment import augmented_decoder, views_per_class
from frugalvision.heads import MLPHead
from frugalvision.tune import default_grid, select_config, tune, tune_embeddings

from conftest import make_shapes_dataset, needs_torch



def test_views_are_deterministic_and_cached(shapes_dir, tmp_path, monkeypatch):
    ex = fv.Extractor(cache_dir=tmp_path, progress=False)
    files = sorted(str(p) for p in shapes_dir.rglob("*.png"))[:6]
    dec = augmented_decoder(ex.preprocessing, "default", 0)
    a, b = dec(files[0]), dec(files[0])
    np.testing.assert_array_equal(a.array, b.array)  # view k of an image is always the same picture
    assert not np.array_equal(a.array, augmented_decoder(ex.preprocessing, "default", 1)(files[0]).array)
    first = ex(files, view="aug-default-0", decoder=dec)
    assert first.n_computed == 6
    again = fv.Extractor(cache_dir=tmp_path, progress=False)(files, view="aug-default-0", decoder=dec)
    assert again.n_computed == 0 and again.n_cached == 6
    np.testing.assert_array_equal(first.X, again.X)


def test_training_with_views_does_no_backbone_work_the_second_time(shapes_dir, tmp_path, monkeypatch):
    m1 = fv.train(shapes_dir, views=2, cache_dir=tmp_path, progress=False)
    assert m1.training_["augmentation"]["augmented_rows"] == 2 * sum(m1.training_["counts"]["train"].values())
    calls = []
    real = fv.Extractor.engine.fget
    monkeypatch.setattr(fv.Extractor, "engine", property(lambda self: calls.append(1) or real(self)))
    m2 = fv.train(shapes_dir, views=2, cache_dir=tmp_path, progress=False)
    assert calls == []
    np.testing.assert_allclose(m1.head.coef_, m2.head.coef_)


def test_balance_by_augmentation_gives_minority_classes_more_views():
    labels = ["a"] * 100 + ["b"] * 25
    per = views_per_class(labels, 2, balance=True)
    assert per["a"] == 2 and per["b"] > per["a"]
    assert (100 * (1 + per["a"])) / (25 * (1 + per["b"])) < 1.5


def test_cross_validation_never_sees_test_rows(shapes_dir, tmp_path, monkeypatch):
    seen = []
    import frugalvision.tune as tune_mod

    real = tune_mod.tune_embeddings

    def spy(X, y, grid, **kw):
        seen.append(X.copy())
        return real(X, y, grid, **kw)

    monkeypatch.setattr(tune_mod, "tune_embeddings", spy)
    grid = [{"head": "linear", "C": c} for c in (0.01, 0.1)] + [{"head": "mlp", "hidden": 32, "batch_size": 16}]
    res = tune(shapes_dir, grid=grid, cv=3, out=tmp_path / "run", cache_dir=tmp_path / "c", progress=False)
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    emb = fv.Extractor(cache_dir=tmp_path / "c", progress=False)(split["path"].tolist())
    test_rows = emb.X[(split["split"] == "test").to_numpy()]
    pool = seen[0]
    assert len(pool) == (split["split"] != "test").sum()
    assert not any(np.isclose(pool, r, atol=1e-6).all(axis=1).any() for r in test_rows)
    # 3 configurations on each feature kind (one multi-stage pass gives both: the last layer is its first columns)
    assert len(res.table) == 6 and res.table["mean_balanced_accuracy"].is_monotonic_decreasing
    assert sorted(res.table["features"].unique()) == ["last", "multi"]
    assert seen[1].shape[1] > seen[0].shape[1] and np.allclose(seen[1][:, :seen[0].shape[1]], seen[0])
    assert res.model.info.backbone.features == res.best["features"]
    assert (tmp_path / "run" / "tuning.csv").exists() and res.model is not None


def test_tune_embeddings_ranks_the_right_config():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    X = np.hstack([np.eye(3)[y] * 4 + rng.normal(size=(300, 3)), rng.normal(size=(300, 20))])
    res = tune_embeddings(X, y, [{"head": "linear", "C": 1e-6}, {"head": "linear", "C": 1.0}], cv=3, progress=False)
    assert res.best["C"] == 1.0 and res.table.iloc[0]["mean_accuracy"] > 0.8
    assert len(default_grid()) == 50


def test_mlp_head_learns_a_nonlinear_problem_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2)).astype(np.float32)
    y = np.where((X[:, 0] * X[:, 1]) > 0, "same", "diff")  # XOR-like: no linear head can do this
    mlp = MLPHead(hidden=32, dropout=0.0, lr=1e-2, max_epochs=200, patience=20).fit(X, y)
    assert (mlp.predict(X) == y).mean() > 0.9
    assert (fv.LinearHead().fit(X, y).predict(X) == y).mean() < 0.7
    again = MLPHead.from_state(mlp.get_params(), mlp.get_state(), mlp.classes_)
    np.testing.assert_allclose(again.predict_proba(X), mlp.predict_proba(X), atol=1e-6)


def test_compare_backbones_lists_unavailable_ones_with_the_reason(shapes_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from frugalvision.cli.main import main

    assert main(["compare-backbones", str(shapes_dir), "--backbones", "efficientnet_lite0,resnet18",
                 "--out", str(tmp_path / "cmp"), "-q"]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv", keep_default_na=False).set_index("backbone")
    assert float(table.loc["efficientnet_lite0", "test_accuracy"]) > 0.5
    assert float(table.loc["efficientnet_lite0", "ms_per_image"]) > 0
    # Offline with torch: no weights to download; in the core install: the torch extra is missing.
    assert any(r in table.loc["resnet18", "error"] for r in ("No pretrained weights", "needs PyTorch"))
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 10_000


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    X = (np.eye(4)[y] @ rng.normal(size=(4, 24)) * 1.5 + rng.normal(size=(n, 24))).astype(np.float32)
    return X, np.array(list("abcd"))[y]


def test_fitting_many_heads_at_once_equals_fitting_each_alone():
    X, y = _blobs()
    configs = [dict(C=c, class_weight=cw) for c in (0.003, 0.1, 1.0) for cw in (None, "balanced")]
    together = fv.LinearHead.fit_many([fv.LinearHead(**c, tol=1e-6) for c in configs], X, y)
    for c, h in zip(configs, together):
        alone = fv.LinearHead(**c, tol=1e-6).fit(X, y)
        np.testing.assert_allclose(h.predict_proba(X), alone.predict_proba(X), atol=1e-4)
    mlps = [dict(dropout=d, lr=lr, weight_decay=wd, hidden=16, batch_size=32)
            for d in (0.0, 0.5) for lr in (1e-3, 1e-2) for wd in (0.0, 0.01)]
    stacked = MLPHead.fit_many([MLPHead(**c) for c in mlps], X, y)
    for c, h in zip(mlps, stacked):
        # Each head has its own random stream, so its neighbours in the stack don't change it.
        alone = MLPHead(**c).fit(X, y)
        assert h.n_epochs_ == alone.n_epochs_
        np.testing.assert_allclose(h.predict_proba(X), alone.predict_proba(X), atol=2e-3)
    assert len({round(h.best_val_loss_, 6) for h in stacked}) > 1  # the configs really differ


def test_racing_scores_finalists_on_every_fold_and_skips_the_rest():
    X, y = _blobs(600)
    grid = [{"head": "linear", "C": c} for c in np.geomspace(1e-6, 1.0, 9)]
    full = tune_embeddings(X, y, grid, cv=3, progress=False)
    raced = tune_embeddings(X, y, grid, cv=3, racing=True, progress=False)
    assert (full.table["folds"] == 3).all()
    assert sorted(raced.table["folds"].tolist()) == [1] * 6 + [2] * 2 + [3]  # 9 -> 3 -> 1
    assert raced.table.iloc[0]["folds"] == 3 and np.isnan(raced.table.iloc[-1]["std_accuracy"])
    # The winner's 3-fold score is the same number full CV gives it, and it is among full CV's best.
    win = raced.table.iloc[0]
    for col in ("mean_accuracy", "mean_balanced_accuracy"):
        assert win[col] == full.table.set_index("config").loc[win["config"], col]
    assert win["mean_balanced_accuracy"] >= full.table["mean_balanced_accuracy"].max() - 0.01


def test_the_search_ranks_by_balanced_accuracy_so_a_rare_class_is_not_given_up():
    # 1 image in 10 of the rare class, and only partly separable: a head that calls everything common scores
    # 90 % accuracy and 50 % balanced accuracy; a class-weighted head finds most rare images at a lower accuracy.
    rng = np.random.default_rng(0)
    y = np.array(["common"] * 540 + ["rare"] * 60)
    X = np.hstack([(y == "rare")[:, None] * 1.2 + rng.normal(size=(600, 1)), rng.normal(size=(600, 5))])
    grid = [{"head": "linear", "C": 1e-5, "class_weight": None}, {"head": "linear", "C": 1.0, "class_weight": "balanced"}]
    by_acc = tune_embeddings(X, y, grid, cv=3, scoring="accuracy", progress=False)
    by_bal = tune_embeddings(X, y, grid, cv=3, progress=False)
    timid = by_acc.table.set_index("config").loc[by_acc.table["config"][by_acc.table["p_C"] == 1e-5].iloc[0]]
    assert timid["mean_accuracy"] == pytest.approx(0.9) and timid["mean_balanced_accuracy"] == pytest.approx(0.5)
    assert by_acc.best["C"] == 1e-5  # accuracy prefers giving up the rare class ...
    assert by_bal.best["class_weight"] == "balanced" and by_bal.table.iloc[0]["mean_balanced_accuracy"] > 0.65
    assert "balanced acc." in by_bal.summary().splitlines()[0]
    with pytest.raises(fv.DataError, match="scoring must be one of balanced_accuracy, accuracy"):
        tune_embeddings(X, y, grid, cv=3, scoring="f1", progress=False)


def test_fewer_than_two_folds_is_a_clear_error(shapes_dir, capsys):
    from frugalvision.cli.main import main

    assert main(["tune", str(shapes_dir), "--cv", "1", "-q"]) == 1
    assert "cv must be a whole number of folds >= 2, got 1" in capsys.readouterr().err


def _table(rows):
    t = pd.DataFrame([{"config": str(i), "mean_log_loss": 0.3, "std_log_loss": 0.0, **r,
                       "mean_balanced_accuracy": r["mean_accuracy"], "std_balanced_accuracy": r["std_accuracy"]}
                      for i, r in enumerate(rows)])
    return t.sort_values(["folds", "mean_balanced_accuracy"], ascending=[False, False]).reset_index(drop=True)


def test_one_se_rule_refits_the_simplest_config_inside_the_noise_band():
    # std 0.02 over 4 folds -> standard error 0.01: configs down to 0.90 are as good as the best.
    t = _table([
        {"backbone": "big", "p_head": "mlp", "p_hidden": 512, "p_dropout": 0.2, "p_weight_decay": 1e-4, "p_views": 2,
         "mean_accuracy": 0.91, "std_accuracy": 0.02, "folds": 4},
        {"backbone": "big", "p_head": "linear", "p_C": 0.01, "p_views": 0, "mean_accuracy": 0.905, "std_accuracy": 0.02,
         "folds": 4},
        {"backbone": "small", "p_head": "linear", "p_C": 0.1, "p_views": 2, "mean_accuracy": 0.902,
         "std_accuracy": 0.01, "folds": 4},
        {"backbone": "small", "p_head": "linear", "p_C": 0.1, "p_views": 0, "mean_accuracy": 0.901,
         "std_accuracy": 0.01, "folds": 4},
        {"backbone": "small", "p_head": "linear", "p_C": 0.01, "p_views": 0, "mean_accuracy": 0.899,  # outside
         "std_accuracy": 0.01, "folds": 4},
        {"backbone": "small", "p_head": "linear", "p_C": 0.001, "p_views": 0, "mean_accuracy": 0.95,  # raced out
         "std_accuracy": np.nan, "folds": 1},
    ])
    cost = {"small": 0.4, "big": 2.0}
    assert t.loc[select_config(t, "best", cost), "mean_accuracy"] == 0.91
    pick = t.loc[select_config(t, "one-se", cost)]
    assert (pick["backbone"], pick["p_views"], pick["p_C"]) == ("small", 0, 0.1)
    # Unknown backbone costs: fewer views, then linear before MLP, then the smaller C.
    pick = t.loc[select_config(t, "one-se", {})]
    assert (pick["backbone"], pick["p_views"], pick["p_C"]) == ("big", 0, 0.01)
    assert t.loc[select_config(t.iloc[:2], "one-se", cost), "p_head"] == "linear"
    with pytest.raises(fv.DataError, match="select must be one of one-se, best"):
        select_config(t, "simplest")


def test_tune_marks_and_refits_the_chosen_config(shapes_dir, tmp_path):
    grid = [{"head": "linear", "C": c} for c in (1e-3, 0.03, 1.0)]
    res = tune(shapes_dir, grid=grid, cv=3, cache_dir=tmp_path / "c", progress=False)
    row = res.table[res.table["chosen"]].iloc[0]
    assert res.table["chosen"].sum() == 1 and res.best["C"] == row["p_C"]
    assert res.model.head.C == row["p_C"]
    top = res.table.iloc[0]
    assert row["mean_balanced_accuracy"] >= top["mean_balanced_accuracy"] - top["std_balanced_accuracy"] / np.sqrt(3) - 1e-12
    assert row["p_C"] <= top["p_C"]  # never a weaker penalty than the top score's
    assert "*" in res.summary()
    best = tune(shapes_dir, grid=grid, cv=3, cache_dir=tmp_path / "c", progress=False, refit=False, select="best")
    assert best.best["C"] == top["p_C"]


def test_budget_weighs_fine_tuning_against_the_frozen_winner(shapes_dir, tmp_path, monkeypatch):
    """--budget with a large validation split (here: any): the frozen winner and each fine-tuning candidate judged
    on the same validation images, inside the time; without PyTorch the candidates say why they were not tried."""
    from frugalvision import _budget
    from frugalvision._optional import has_torch
    from frugalvision.tune import parse_budget

    assert parse_budget("20m") == 1200 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    with pytest.raises(fv.DataError, match="duration"):
        parse_budget("soon")
    monkeypatch.setattr(_budget, "CV_BELOW", 0)  # the held-out path, as for a validation split of 300+ images
    grid = [{"head": "linear", "C": 0.1}]
    t = time.perf_counter()
    res = tune(shapes_dir, grid=grid, cv=3, features=("last",), out=tmp_path / "run", cache_dir=tmp_path / "c",
               progress=False, budget=400, finetune=("last-stage",),
               finetune_options={"epochs": 2, "views": 1, "finetune_params": {"patience": 1}})
    took = time.perf_counter() - t
    rows = res.candidates
    assert [r["candidate"].split(" (")[0] for r in rows] == ["frozen", "fine-tune last-stage"]
    assert sum(r["chosen"] for r in rows) == 1
    frozen, ft = rows
    assert frozen["validation_accuracy"] is not None and frozen["n_validation"] > 0
    if has_torch():
        assert ft["judged_on"] == frozen["judged_on"] and ft["judged_on"].startswith("validation")
        assert ft["n_images"] == ft["n_validation"] == frozen["n_validation"]
        assert 0 <= ft["most_probable_accuracy"] <= 1
        # Fine-tuning is kept only when it beats the frozen model by more than one standard error, paired.
        assert ft["chosen"] == (ft["gain_vs_frozen"] > _budget.KEEP_SE * ft["gain_se"])
        assert abs(ft["gain_vs_frozen"] - (ft["balanced_accuracy"] - frozen["balanced_accuracy"])) < 1e-9
        assert bool(res.model.info.finetune) == ft["chosen"]
        assert took < 400 + 60
        # The time limit ends fine-tuning after the epoch that passes it, keeping the best epoch so far.
        short = fv.train(shapes_dir, finetune="last-stage", epochs=3, views=1, progress=False,
                         cache_dir=tmp_path / "c", finetune_params={"max_seconds": 1e-3})
        assert short.info.finetune.stopped_by_budget and short.info.finetune.epochs_run == 0
    else:
        assert "needs PyTorch" in ft["note"] and frozen["chosen"] and ft["judged_on"] is None
    table = pd.read_csv(tmp_path / "run" / "tuning_budget.csv")
    assert list(table["candidate"]) == [r["candidate"] for r in rows]
    saved = fv.load_model(tmp_path / "run")
    assert saved.info.training.validation["accuracy"] == max(r["validation_accuracy"] for r in rows if r["chosen"])
    # The report of the kept model says what was measured of fine-tuning (or why it was not), read from the file.
    from frugalvision.reporting.verdict import _finetune_step

    step = _finetune_step(saved)
    if frozen["chosen"] and has_torch():
        assert step.startswith("tune --budget measured fine-tuning") and "on " in step and "min a training" in step
    elif frozen["chosen"]:
        assert step == "tune --budget did not measure fine-tuning: " + ft["note"] + "."
    else:
        assert step is None  # a fine-tuned model: the report says so elsewhere


def test_budget_decides_each_validation_half_with_thresholds_fitted_on_the_other(tmp_path, monkeypatch):
    """On the validation path a candidate's "none of these" threshold and operating point, fitted on the validation
    images themselves, would pin what they control (every model rejects the same share there). The judge refits
    them on one half and decides the other, with the same halves for every candidate."""
    from frugalvision import _budget
    from frugalvision.decision import choose_operating_point, decide
    from frugalvision.inference import _ood_scores, probabilities
    from frugalvision import fitting
    from frugalvision.artifact import RejectInfo
    from frugalvision.ood import class_thresholds, threshold_for_accept_rate

    # classes get thresholds of their own from 5 images (20 in the product): the halves here have ~9 a class
    monkeypatch.setattr(fitting, "MIN_REJECT_VALIDATION", 5)
    data = make_shapes_dataset(tmp_path / "shapes", n_per_class=36, seed=3)
    model = fv.train(data, val_size=0.5, test_size=0.1, targets=["circle:recall>=0.9"], progress=False,
                     cache_dir=tmp_path / "c")
    table = model.training_data.table
    val = table[table["split"] == "val"]
    y = val["label"].to_numpy(str)
    halves = _budget._halves(y, 0)
    for c in np.unique(y):  # each class dealt evenly into the two halves
        assert abs(int((halves[y == c] == 0).sum()) - int((halves[y == c] == 1).sum())) <= 1
    assert np.array_equal(halves, _budget._halves(y, 0)) and not np.array_equal(halves, _budget._halves(y, 1))
    run = {"cache_dir": tmp_path / "c"}
    out, top = _budget._decided(model, val["path"], run, y=y, halves=halves)
    _, plain_top = _budget._decided(model, val["path"], run)
    assert list(top) == list(plain_top)  # the most probable class needs no threshold
    emb = model.embed(list(val["path"]), progress=False, cache_dir=tmp_path / "c")
    logits, proba = probabilities(model, emb.X)
    scores = _ood_scores(model, emb.X, logits)
    assert (halves == 0).sum() >= 20 and model.info.reject.threshold is not None
    assert model.info.reject.class_thresholds  # the model's own, placed on all the validation images
    thresholds = []
    for h in (0, 1):
        mine, other = halves == h, halves != h
        a = model.info.reject.accept_rate
        own = class_thresholds(scores[other], proba[other].argmax(axis=1), model.classes, a, min_images=5)
        assert own  # each half's classes get their own, placed on the other half
        thresholds.append(threshold_for_accept_rate(scores[other], a))
        refit = RejectInfo(params={}, threshold=thresholds[-1], accept_rate=a, class_thresholds=own)
        aside = scores[other] > refit.thresholds(model.classes).astype(np.float32)[proba[other].argmax(axis=1)]
        op = choose_operating_point(proba[other], y[other], model.classes, ["circle:recall>=0.9"], rejected=aside)
        expect = decide(proba[mine], model.classes, operating_point=op, ood_scores=scores[mine],
                        reject_threshold=refit.thresholds(model.classes)).names()
        assert list(out[mine]) == expect
    # Each half's threshold comes from the other half, not from all the validation images as the model's did.
    assert thresholds[0] != thresholds[1]


def test_budget_cross_fitting_skips_unreadable_images_and_says_when_it_cannot_refit(tmp_path):
    """An unreadable validation image is wrong for every model (''), the others keep their rows; a model without a
    "none of these" threshold is decided by its most probable class; a half that cannot meet a target keeps the
    model's own operating point, and the note says so."""
    from frugalvision import _budget

    data = make_shapes_dataset(tmp_path / "shapes", n_per_class=24, seed=5)
    run = {"cache_dir": tmp_path / "c"}
    plain = fv.train(data, val_size=0.5, test_size=0.1, reject=False, progress=False, cache_dir=tmp_path / "c")
    val = plain.training_data.table
    val = val[val["split"] == "val"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    paths = [*val["path"], str(broken)]
    y = np.array([*val["label"], "circle"], dtype=str)
    halves = _budget._halves(y, 0)
    notes = []
    out, top = _budget._decided(plain, paths, run, y=y, halves=halves, notes=notes)
    assert out[-1] == "" and top[-1] == "" and (out[:-1] != "").all()
    assert list(out[:-1]) == list(top[:-1]) and notes == []  # no threshold, no target: the most probable class
    # A target no 'other half' can meet: both halves keep the model's own operating point, and say why.
    model = fv.train(data, val_size=0.5, test_size=0.1, reject=False, targets=["circle:precision>=0.5"],
                     progress=False, cache_dir=tmp_path / "c")
    impossible = np.where(y == "circle", "square", y)  # no circle left to be precise about in the other half
    notes = []
    out, _ = _budget._decided(model, paths, run, y=impossible, halves=halves, notes=notes)
    own, _ = _budget._decided(model, paths, run)
    assert list(out) == list(own)
    assert len(notes) == 2 and all("operating point not cross-fitted" in n for n in notes)


def test_paired_gain_is_balanced_accuracy_per_image():
    from frugalvision._budget import paired_gain

    y = np.array(["good"] * 8 + ["defect"] * 2)
    base = np.array([1] * 8 + [0, 0])
    found = np.array([1] * 7 + [0] + [1, 1])  # one good part lost, both defects found
    gain, se = paired_gain(found, base, y)
    assert gain == pytest.approx((1.0 + 7 / 8) / 2 - 0.5)  # balanced accuracy 0.5 -> 0.9375; accuracy 0.8 -> 0.9
    w = np.array([10 / 16] * 8 + [10 / 4] * 2)
    assert se == pytest.approx(np.std(w * (found - base), ddof=1) / np.sqrt(10))
    assert paired_gain(base[:8], base[:8], y[:8]) == (0.0, 0.0)


def _spy_train(monkeypatch, calls, skew=None):
    """Record every train() call on a DataFrame (a fold): its held-out paths and whether it fine-tunes; with
    ``skew``, each fine-tuning fold moves the budget's clock on by 1,000 s (a slow fold, played)."""
    import frugalvision.training as training
    from frugalvision import _budget

    real = training.train

    def spy(data, recipe=None, **kw):
        model = real(data, recipe, **kw)
        if isinstance(data, pd.DataFrame):
            calls.append((bool(recipe.finetune), frozenset(data.loc[data["split"] == "test", "path"]),
                          frozenset(data["path"])))
            if skew is not None and recipe.finetune:
                skew[0] += 1000.0
        return model

    monkeypatch.setattr(training, "train", spy)
    if skew is not None:
        monkeypatch.setattr(_budget, "_clock", lambda: time.perf_counter() + skew[0])


@needs_torch
def test_budget_cross_validates_on_a_small_validation_split(shapes_dir, tmp_path, monkeypatch):
    """9 validation images: frozen and fine-tuning judged by 3-fold CV over the 51 train + validation images, the
    same folds for both, never a test image; each row says how it was judged; a CV winner is refit on the split."""
    from frugalvision import _budget

    calls = []
    _spy_train(monkeypatch, calls)
    res = tune(shapes_dir, grid=[{"head": "linear", "C": 0.1}], cv=3, features=("last",), out=tmp_path / "run",
               cache_dir=tmp_path / "c", progress=False, budget=600, finetune=("last-stage",),
               finetune_options={"epochs": 2, "views": 1, "finetune_params": {"patience": 1}})
    frozen, ft = res.candidates
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    pool, test = set(split.loc[split["split"] != "test", "path"]), set(split.loc[split["split"] == "test", "path"])
    assert frozen["n_validation"] < 300
    for r in (frozen, ft):
        assert r["judged_on"] == "3-fold CV" and r["n_images"] == len(pool) == 51 and r["folds_run"] == "3 of 3"
    assert len(ft["epochs_run"].split("/")) == 3 and ft["note"] == ""
    assert ft["chosen"] == (ft["gain_vs_frozen"] > _budget.KEEP_SE * ft["gain_se"]) and frozen["chosen"] != ft["chosen"]
    assert abs(ft["gain_vs_frozen"] - (ft["balanced_accuracy"] - frozen["balanced_accuracy"])) < 1e-9
    folds = {kind: [held for f, held, _ in calls if f == kind] for kind in (False, True)}
    assert len(folds[False]) == len(folds[True]) == 3 and folds[False] == folds[True]  # paired: the same folds
    assert set().union(*folds[False]) == pool and sum(map(len, folds[False])) == len(pool)  # each image once
    assert all(rows <= pool for _, _, rows in calls)  # the test split never enters a fold
    assert bool(res.model.info.finetune) == ft["chosen"] == (ft.get("refit_seconds") is not None)
    table = pd.read_csv(tmp_path / "run" / "tuning_budget.csv")
    assert {"judged_on", "n_images", "gain_vs_frozen", "gain_se", "seconds", "folds_run"} <= set(table.columns)
    assert list(table["judged_on"]) == ["3-fold CV"] * 2


@needs_torch
def test_budget_stops_a_candidate_whose_folds_do_not_fit(shapes_dir, tmp_path, monkeypatch):
    """The first fold prices the others: when they would overrun the budget the candidate stops, is reported not
    finished and cannot win; the next candidate is not tried."""
    calls, skew = [], [0.0]
    _spy_train(monkeypatch, calls, skew)
    res = tune(shapes_dir, grid=[{"head": "linear", "C": 0.1}], cv=3, features=("last",), out=tmp_path / "run",
               cache_dir=tmp_path / "c", progress=False, budget=600, finetune=("last-stage", "2-stages"),
               finetune_options={"epochs": 1, "views": 1})
    frozen, last, two = res.candidates
    assert last["note"].startswith("not finished: 1 of 3 folds took") and last["folds_run"] == "1 of 3"
    assert last["judged_on"] is None and not last["chosen"] and frozen["chosen"]
    assert two["note"].startswith("not tried") and sum(f for f, _, _ in calls) == 1
    assert not res.model.info.finetune


def test_the_search_schedules_fits_across_folds_without_changing_a_score():
    """Every fold's fits run side by side (one per core): the table is the one a single thread gives, and an
    MLP's stack (fit_units) is how fit_many trains it."""
    from threadpoolctl import threadpool_limits

    X, y = _blobs(400)
    grid = default_grid(50)[::5] + [{"head": "mlp", "hidden": 16, "dropout": 0.2, "weight_decay": 1e-4, "lr": 1e-2,
                                     "batch_size": 64, "class_weight": None}]
    side_by_side = tune_embeddings(X, y, grid, cv=3, progress=False)
    with threadpool_limits(1):  # one BLAS thread: _run_jobs runs the fits one after the other
        one_thread = tune_embeddings(X, y, grid, cv=3, progress=False)
    pd.testing.assert_frame_equal(side_by_side.table, one_thread.table)
    # Each score is its own config's: the MLP refitted alone on the first fold scores what the table says for it.
    from sklearn.model_selection import StratifiedKFold

    from frugalvision.tune import _score, _search_head

    scores = []
    for tr, te in StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X, y):
        scores.append(_score(_search_head(grid[-1], 0).fit(X[tr], y[tr]), X[te], y[te])[0])
    row = side_by_side.table[side_by_side.table["p_head"] == "mlp"]
    row = row[row["p_hidden"] == 16].iloc[0]
    assert row["mean_accuracy"] == pytest.approx(np.mean(scores), abs=1e-12)
    units = MLPHead.fit_units([MLPHead(hidden=h, batch_size=b, lr=lr) for h in (16, 32) for b in (32, 64)
                               for lr in (1e-3, 3e-3, 1e-2)])
    assert sorted(len(u) for u in units) == [3] * 4  # grouped by hidden and batch size, never above 4
    assert all(len({(m.hidden, m.batch_size) for m in u}) == 1 for u in units)
    assert [u[0].hidden for u in units][:2] == [32, 32]  # costliest first


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_C_path_stops_once_validation_loss_rises_twice_and_reuses_its_head(n_classes):
    """C='auto' fits small C first and stops after two rises in validation log-loss; the head it returns is the
    path's head at the chosen C (no second fit), and the same as a plain fit at that C."""
    from frugalvision.fitting import C_GRID, _choose_C

    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, 700)
    X = (np.eye(n_classes)[y] @ rng.normal(size=(n_classes, 400)) * 0.1 + rng.normal(size=(700, 400)))
    X, y = X.astype(np.float32), np.array(list("abcd"))[y]
    C, curve, head = _choose_C("auto", X[:400], y[:400], X[400:], y[400:], "linear", None, 0)
    losses = [r["val_log_loss"] for r in curve]
    assert [r["C"] for r in curve] == list(C_GRID[:len(curve)]) and C == curve[int(np.argmin(losses))]["C"]
    assert len(curve) < len(C_GRID)  # 400 rows, 400 weak features: overfitting sets in well before C=1
    assert losses[-1] > losses[-2] > losses[-3] and not any(
        losses[i] > losses[i - 1] > losses[i - 2] for i in range(2, len(losses) - 1))
    assert head.C == C
    alone = fv.LinearHead(C=C).fit(X[:400], y[:400])
    np.testing.assert_allclose(head.predict_proba(X[400:]), alone.predict_proba(X[400:]), atol=2e-3)


def test_budget_lines_say_the_smallest_gain_that_would_be_kept():
    from frugalvision._budget import KEEP_SE
    from frugalvision.cli.tune import _judged

    row = {"judged_on": "validation", "n_images": 450, "balanced_accuracy": 0.842, "accuracy": 0.842,
           "most_probable_accuracy": 0.876, "gain_vs_frozen": -0.004, "gain_se": 0.0094, "seconds": 804.0,
           "kept_above": KEEP_SE * 0.0094,
           "candidate": "fine-tune 2-stages", "note": ""}
    text = _judged(row)
    assert "on 450 images" in text and "most probable class right: 87.6 %" in text
    assert f"-0.4 ± 0.9 points (one SE; kept only above +{100 * KEEP_SE * 0.0094:.1f})" in text


def test_explicit_int8_over_a_backbone_without_an_int8_graph_is_refused_before_any_work(shapes_dir, tmp_path):
    from frugalvision.backbones.shipped import shipped_graph
    from frugalvision.exceptions import DataError
    from frugalvision.recipe import Recipe

    assert shipped_graph("efficientnet_lite1.int8") is None  # only Lite0 ships quantized
    with pytest.raises(DataError, match="none ships for efficientnet_lite1"):
        tune(shapes_dir, Recipe(precision="int8"), backbones=("efficientnet_lite0", "efficientnet_lite1"),
             cache_dir=tmp_path, progress=False)
    assert not any(tmp_path.rglob("*.npy"))  # nothing was embedded first


def test_tune_refits_with_the_recipe_given_on_the_command_line(shapes_dir, tmp_path):
    """--target, --goal, --precision and --no-reject reach the refit winner as they reach train's model."""
    from frugalvision.cli.main import main
    from frugalvision.model import load_model

    cls = sorted(p.name for p in shapes_dir.iterdir() if p.is_dir() and p.name not in ("train", "test"))[0]
    out = tmp_path / "t"
    assert main(["tune", str(shapes_dir), "--out", str(out), "--cv", "3", "--features", "last",
                 "--target", f"{cls}:recall>=0.8", "--goal", "accuracy>=0.5", "--precision", "fp32", "--no-reject",
                 "--cache-dir", str(tmp_path / "c"), "-q"]) == 0
    recipe = load_model(out).training_["recipe"]
    assert recipe["targets"] == [f"{cls}:recall>=0.8"] and recipe["goals"] == ["accuracy>=0.5"]
    assert recipe["precision"] == "fp32" and recipe["reject"] is False
