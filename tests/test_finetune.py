"""Partial fine-tuning: resumes after a killed process; the artifact round-trips; CAM still works."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import frugalvision as fv
from frugalvision.finetune import finetune, parse_stages

from conftest import needs_torch

pytestmark = needs_torch  # fine-tuning is the torch extra's

_KILL_AFTER_CHECKPOINT = textwrap.dedent("""
    import os, sys
    import frugalvision.finetune as ft
    real, left = ft._save_checkpoint, [int(sys.argv[4])]
    def save_then_die(*a, **k):
        real(*a, **k)
        left[0] -= 1
        if left[0] == 0:
            os._exit(9)                  # killed right after the n-th checkpoint
    ft._save_checkpoint = save_then_die
    ft.finetune(sys.argv[1], out=sys.argv[2], cache_dir=sys.argv[3], epochs=3, views=1, patience=5, progress=False)
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
    # The reported validation accuracy is the fine-tuned network's at the selected epoch.
    assert model.training_["validation"]["accuracy"] == pytest.approx(f["history"][f["best_epoch"] - 1]["val_accuracy"])
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
    base = fv.train(shapes_dir, cache_dir=cache, progress=False)
    np.testing.assert_allclose(model.head.coef_, base.head.coef_, rtol=0, atol=1e-5)
