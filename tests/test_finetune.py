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

_KILL_AFTER_FIRST_EPOCH = textwrap.dedent("""
    import os, sys
    import frugalvision.finetune as ft
    real = ft._save_checkpoint
    def save_then_die(*a, **k):
        real(*a, **k)
        os._exit(9)                      # killed right after the first checkpoint
    ft._save_checkpoint = save_then_die
    ft.finetune(sys.argv[1], out=sys.argv[2], cache_dir=sys.argv[3], epochs=3, views=1, patience=5, progress=False)
""")


def test_parse_stages():
    assert parse_stages("last-stage") == 1 and parse_stages("2-stages") == 2 and parse_stages(3) == 3
    with pytest.raises(fv.DataError):
        parse_stages("everything")


def test_finetune_resumes_after_kill_and_round_trips(shapes_dir, tmp_path):
    run, cache = tmp_path / "ft", tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_FIRST_EPOCH, str(shapes_dir), str(run), str(cache)])
    assert proc.returncode == 9 and (run / "finetune_checkpoint.safetensors").exists()
    assert not (run / "model.safetensors").exists()
    model = finetune(shapes_dir, out=run, cache_dir=cache, epochs=3, views=1, patience=5, progress=False)
    f = model.finetune_
    assert f["resumed_from_epoch"] == 1 and f["epochs_run"] == 3
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
    a = model.predict(files, progress=False, cache_dir=cache)
    b = loaded.predict(files, progress=False, cache_dir=cache)
    pd.testing.assert_frame_equal(a, b)
    assert loaded.evaluate(progress=False, cache_dir=cache).headline["accuracy"] >= 0.6
    cam = loaded.explain(files[0], cls="top2", cache_dir=cache)  # exact CAM on the fine-tuned feature map
    assert cam.shape == (2, 7, 7)
