"""Partial fine-tuning: resumes after a killed process; the artifact round-trips; CAM still works."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import frugalvision as fv
from frugalvision.finetune import parse_stages
from frugalvision.training import finetune

from conftest import needs_torch

pytestmark = needs_torch  # fine-tuning is the torch extra's

_KILL_AFTER_CHECKPOINT = textwrap.dedent("""
    import os, sys
    import frugalvision.finetune._partial as ft
    real, left = ft._save_checkpoint, [int(sys.argv[4])]
    def save_then_die(*a, **k):
        real(*a, **k)
        left[0] -= 1
        if left[0] == 0:
            os._exit(9)                  # killed right after the n-th checkpoint
    ft._save_checkpoint = save_then_die
    from frugalvision.training import finetune
    finetune(sys.argv[1], out=sys.argv[2], cache_dir=sys.argv[3], epochs=3, views=1, patience=5, progress=False)
""")


def _killed_run(shapes_dir, run, cache, after: int):
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_CHECKPOINT, str(shapes_dir), str(run), str(cache),
                           str(after)])
    assert proc.returncode == 9 and (run / "finetune_checkpoint.safetensors").exists()
    assert not (run / "model.safetensors").exists()


def test_parse_stages():
    assert parse_stages("last-stage") == 1 and parse_stages("2-stages") == 2 and parse_stages(3) == 3
    with pytest.raises(fv.DataError):
        parse_stages("everything")


def test_finetune_resumes_after_kill_and_round_trips(shapes_dir, tmp_path):
    run, cache = tmp_path / "ft", tmp_path / "cache"
    _killed_run(shapes_dir, run, cache, after=1)
    model = finetune(shapes_dir, out=run, cache_dir=cache, epochs=3, views=1, patience=5, progress=False)
    f = model.finetune_
    assert f["resumed_from_epoch"] == 1 and f["epochs_run"] == 3
    assert f["best_epoch"] >= 1
    # The reported validation accuracy is the saved model's own decisions on the validation images, run through
    # the fine-tuned network (the head is refitted on its embeddings, as for a frozen backbone).
    val = fv.evaluate(fv.load_model(run), split="val", progress=False, cache_dir=cache, n_boot=20)
    assert model.training_["validation"]["accuracy"] == pytest.approx(val.headline["accuracy"])
    assert set(model.training_["validation"]["per_class"]) == set(model.classes)
    assert [h["epoch"] for h in f["history"]] == [1, 2, 3]
    assert f["trainable"][0] == "blocks.6" and "conv_head" in f["trainable"]
    # The fine-tuned backbone really changed, and the file carries it.
    loaded = fv.load_model(run)
    base = fv.train(shapes_dir, cache_dir=cache, progress=False)
    assert loaded.meta["backbone"]["weights_id"].startswith("finetuned:")
    bb_ft, bb_base = loaded.backbone(), base.backbone()
    w_ft = bb_ft.model.blocks[6][0].conv_pw.weight.detach().numpy()
    w_base = bb_base.model.blocks[6][0].conv_pw.weight.detach().numpy()
    assert not np.allclose(w_ft, w_base)
    np.testing.assert_array_equal(bb_ft.model.blocks[0][0].conv_dw.weight.detach().numpy(),
                                  bb_base.model.blocks[0][0].conv_dw.weight.detach().numpy())  # frozen part intact
    files = sorted(str(p) for p in shapes_dir.rglob("*.png"))[::7]
    a = fv.predict(model, files, progress=False, cache_dir=cache)
    b = fv.predict(loaded, files, progress=False, cache_dir=cache)
    pd.testing.assert_frame_equal(a, b)
    assert fv.evaluate(loaded, progress=False, cache_dir=cache).headline["accuracy"] >= 0.6
    cam = fv.explain(loaded, files[0], cls="top2", cache_dir=cache)  # exact CAM on the fine-tuned feature map
    assert cam.shape == (2, 7, 7)


def test_a_damaged_checkpoint_is_set_aside_and_training_starts_again(shapes_dir, tmp_path):
    """A checkpoint cut short after a kill is never resumed from: named in one warning, moved aside, a fresh start."""
    import warnings

    run, cache = tmp_path / "ft", tmp_path / "cache"
    _killed_run(shapes_dir, run, cache, after=1)
    ckpt = run / "finetune_checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:-1000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = finetune(shapes_dir, out=run, cache_dir=cache, epochs=3, views=1, patience=5, progress=False)
    said = [str(w.message) for w in caught if "damaged" in str(w.message)]
    assert len(said) == 1 and str(ckpt) in said[0] and "starts again" in said[0], said
    assert model.finetune_["resumed_from_epoch"] is None and model.finetune_["epochs_run"] == 3
    assert list(run.glob("finetune_checkpoint.safetensors.bad-*"))


def test_resumed_run_equals_uninterrupted_run(shapes_dir, tmp_path):
    """Batches come from per-epoch generators and the schedule from the position in the run, so a run
    killed after its 2nd epoch and resumed ends with the same weights as one that was never stopped."""
    cache = tmp_path / "cache"
    whole = finetune(shapes_dir, out=tmp_path / "whole", cache_dir=cache, epochs=3, views=1, patience=5,
                     progress=False)
    _killed_run(shapes_dir, tmp_path / "killed", cache, after=2)
    resumed = finetune(shapes_dir, out=tmp_path / "killed", cache_dir=cache, epochs=3, views=1, patience=5,
                       progress=False)
    assert resumed.finetune_["resumed_from_epoch"] == 2
    assert resumed.finetune_["history"] == whole.finetune_["history"]
    for name, w in whole.backbone_tensors.items():
        np.testing.assert_allclose(resumed.backbone_tensors[name], w, rtol=0, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(resumed.head.coef_, whole.head.coef_, rtol=0, atol=1e-6)


def test_frozen_start_is_kept_when_no_epoch_beats_it(shapes_dir, tmp_path):
    """With a learning rate far too high, every epoch is worse on validation: the result is the frozen model."""
    cache = tmp_path / "cache"
    model = finetune(shapes_dir, cache_dir=cache, epochs=2, views=1, patience=5, lr_backbone=5.0, lr_head=50.0,
                     progress=False)
    f = model.finetune_
    assert f["best_epoch"] == 0
    assert all(h["val_loss"] > f["start_val_loss"] for h in f["history"])
    base = fv.train(shapes_dir, cache_dir=cache, progress=False, precision="fp32")  # fine-tuning starts from fp32
    np.testing.assert_allclose(model.head.coef_, base.head.coef_, rtol=0, atol=1e-5)


# -- every option of `train` composes with --finetune, or is refused with the reason --------------------------------

#: Each CLI option of `train`: how its effect shows on a model fine-tuned with it (run A or B below), or None for
#: the options that only say where and how to run (checked by every run), or 'refused' (refused with --finetune).
_RUN_A = ["--epochs", "2", "--views", "1", "--augment", "strong", "--head", "mlp", "--class-weight", "balanced",
          "--val-size", "0.35", "--test-size", "0.2", "--seed", "3", "--goal", "accuracy>=0.5",
          "--target", "circle:recall>=0.9", "--precision", "auto", "--accept-rate", "0.9", "--features", "multi"]
_RUN_B = ["--epochs", "1", "--views", "1", "--C", "0.1", "--no-reject"]
_EFFECT = {
    "backbone": lambda a, b: a.info.backbone.name == "efficientnet_lite0",
    "weights": lambda a, b: a.info.backbone.weights_file is None,
    "finetune": lambda a, b: a.info.finetune["stages"] == 1 and a.backbone_tensors,
    "epochs": lambda a, b: a.info.finetune["epochs"] == 2 and b.info.finetune["epochs"] == 1,
    "views": lambda a, b: a.info.finetune["views"] == 1 and a.training_["augmentation"]["views"] == 1,
    "augment": lambda a, b: a.info.finetune["augment"] == "strong",
    "head": lambda a, b: a.info.head.type == "MLPHead" and b.info.head.type == "LinearHead",
    "C": lambda a, b: b.training_["C"] == 0.1 and b.head.C == 0.1,
    "class_weight": lambda a, b: a.info.finetune["class_weight"] == "balanced" and a.head.class_weight == "balanced",
    "val_size": lambda a, b: a.training_["counts"]["val"] != b.training_["counts"]["val"],
    "test_size": lambda a, b: sum(a.training_["counts"]["test"].values()) == 12,
    "seed": lambda a, b: a.info.finetune["seed"] == 3 and a.training_["recipe"]["seed"] == 3,
    "goal": lambda a, b: a.info.training["goals"] == ["accuracy>=0.5"],
    "target": lambda a, b: a.operating_point is not None and b.operating_point is None,
    "precision": lambda a, b: a.training_["precision_check"]["chosen"] == "fp32",
    "accept_rate": lambda a, b: a.info.reject.accept_rate == 0.9,
    "no_reject": lambda a, b: b.info.reject is None and a.info.reject is not None,
    "features": lambda a, b: (a.info.backbone.features, b.info.backbone.features) == ("multi", "last")
    and a.info.backbone.embed_dim > b.info.backbone.embed_dim,
}
#: Where and how to run (Ray's options too: --engine ray itself is refused with --finetune, tested in test_train_ray).
_RUNTIME = {"data", "out", "engine", "cache_dir", "quiet", "overwrite", "address", "actors", "cpus_per_actor",
            "shard_size"}
_REFUSED = {"balance_by_augmentation": ["--balance-by-augmentation"], "few_shot": ["--few-shot"]}


def _train_options():
    import typer.main

    from frugalvision.cli.main import app

    command = next(c for c in typer.main.get_command(app).commands.values() if c.name == "train")
    return {p.name for p in command.params}


def test_every_train_option_composes_with_finetune_or_is_refused(shapes_dir, tmp_path, capsys):
    from frugalvision.cli.main import main

    options = _train_options()
    unaccounted = options - set(_EFFECT) - _RUNTIME - set(_REFUSED)
    assert not unaccounted, f"train options with no check of their effect under --finetune: {unaccounted}"
    cache = tmp_path / "cache"
    common = ["--finetune", "last-stage", "--cache-dir", str(cache), "-q"]
    assert main(["train", str(shapes_dir), "--out", str(tmp_path / "a"), *common, *_RUN_A]) == 0
    assert main(["train", str(shapes_dir), "--out", str(tmp_path / "b"), *common, *_RUN_B]) == 0
    a, b = fv.load_model(tmp_path / "a"), fv.load_model(tmp_path / "b")
    for name, effect in _EFFECT.items():
        assert effect(a, b), f"--{name} had no effect under --finetune"
    capsys.readouterr()
    refusals = {**_REFUSED, "precision int8": ["--precision", "int8"], "C with mlp": ["--C", "0.1", "--head", "mlp"]}
    for name, extra in refusals.items():
        assert main(["train", str(shapes_dir), "--out", str(tmp_path / "r"), *common, *extra]) == 1, name
        err = capsys.readouterr().err
        assert "cannot" in err and "Traceback" not in err, (name, err)
    assert not (tmp_path / "r" / "model.safetensors").exists()
    # The fine-tuned model with a target gets the verdict in the report, like a frozen one.
    html = fv.report(a, tmp_path / "a" / "report.html", explain=False, faithfulness=False, progress=False,
                     cache_dir=cache).read_text(encoding="utf-8")
    assert 'class="verdict' in html and "circle:recall" in html.replace("recall of circle", "circle:recall")
