"""--features multi: pooled intermediate stages from the same pass, through train, predict and maps (#28)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import frugalvision as fv
from frugalvision.backbones.shipped import shipped_graph
from frugalvision.backbones.stages import MULTI_STAGES, stage_map_name, stage_tensors, with_stage_outputs
from frugalvision.exceptions import DataError
from frugalvision.maps.stage_cam import area_matrix, stage_class_maps
from frugalvision.recipe import Recipe

LITE0_MULTI = 1280 + 2 * (80 + 112 + 192 + 320)


@pytest.mark.parametrize("graph", ["efficientnet_lite0", "efficientnet_lite0.int8"])
def test_stage_outputs_are_the_pooled_stage_maps(graph):
    path, _ = shipped_graph(graph)
    model = onnx.load(str(path))
    assert sorted(stage_tensors(model)) == list(range(7))
    sess = ort.InferenceSession(with_stage_outputs(model).SerializeToString(), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    names = ["embedding", "stages"] + [stage_map_name(k) for k in MULTI_STAGES]
    emb, stages, *maps = sess.run(names, {"images": images})
    assert emb.shape == (2, 1280) and stages.shape == (2, LITE0_MULTI - 1280)
    expected = np.concatenate([np.concatenate([m.mean(axis=(2, 3)), m.max(axis=(2, 3))], axis=1) for m in maps], 1)
    np.testing.assert_allclose(stages, expected, rtol=1e-4, atol=1e-4)
    assert [m.shape[-1] for m in maps] == [14, 14, 7, 7]  # stages 3-4 at stride 16, 5-6 at stride 32
    # The graph without the extra outputs gives the same embedding (the surgery only adds).
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["embedding"], {"images": images})[0]
    np.testing.assert_allclose(emb, plain, rtol=1e-5, atol=1e-5)


def test_a_graph_without_stages_is_refused_with_the_reason():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match="no stage"):
        with_stage_outputs(helper.make_model(g))


def test_area_resampling_keeps_the_mean():
    rng = np.random.default_rng(1)
    for n_in, n_out in ((7, 14), (8, 15), (14, 14), (5, 3)):
        m = rng.normal(size=(n_in, n_in))
        R = area_matrix(n_out, n_in)
        np.testing.assert_allclose((R @ m @ R.T).mean(), m.mean(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(R.sum(axis=1), 1.0)


def test_stage_maps_split_the_logit_exactly_and_put_a_maximum_where_it_is():
    rng = np.random.default_rng(2)
    last = rng.random((1, 3, 2, 2)).astype(np.float32)
    s = np.zeros((1, 2, 4, 4), np.float32)
    s[0, 1, 3, 0] = 5.0  # one bright spot in channel 1, bottom-left
    emb = np.concatenate([last.mean((2, 3)), s.mean((2, 3)), s.max((2, 3))], axis=1)
    W = np.zeros((1, emb.shape[1]), np.float32)
    W[0, 3 + 2 + 1] = 1.0  # the class reads only channel 1's maximum
    W[0, :3] = rng.normal(size=3)
    maps = stage_class_maps(last, [s], W[None].repeat(1, 0))
    assert maps.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(maps[0, 0].mean(), float((emb @ W[0])[0]), rtol=1e-5)
    spike = maps[0, 0] - stage_class_maps(last, [np.zeros_like(s)], W[None])[0, 0]
    assert np.unravel_index(np.argmax(spike), spike.shape) == (3, 0)
    with pytest.raises(ValueError, match="head reads"):
        stage_class_maps(last, [s], np.zeros((1, 1, emb.shape[1] + 1), np.float32))


def test_recipe_and_engine_refuse_what_cannot_work():
    with pytest.raises(Exception, match="features"):
        Recipe(features="deep")
    from frugalvision.features.engine import make_engine

    with pytest.raises(DataError, match="ONNX Runtime"):
        make_engine("efficientnet_lite0", engine="torch", features="multi")


def test_train_predict_and_maps_with_multi_stage_features(tmp_path, shapes_dir):
    model = fv.train(shapes_dir, out=tmp_path / "run", progress=False, features="multi")
    b = model.info.backbone
    assert (b.features, b.embed_dim) == ("multi", LITE0_MULTI)
    assert model.extractor(progress=False).id.endswith("-multi3456")
    files = sorted(str(p) for p in shapes_dir.rglob("*.png"))[:6]
    before = fv.predict(model, files, progress=False)
    loaded = fv.load_model(tmp_path / "run")
    assert loaded.info.backbone.features == "multi"
    after = fv.predict(loaded, files, progress=False)
    assert list(before["label"]) == list(after["label"])
    np.testing.assert_allclose(before["probability"], after["probability"], atol=1e-6)
    # Maps: stride 16 and exact (mean + bias = logit) for the decided class.
    from frugalvision.data.decode import decode_for_input
    from frugalvision.inference import predictor

    images = np.stack([decode_for_input(f, size=224, crop_pct=1.0, interpolation="bicubic").array for f in files])
    out = predictor(loaded).run(images, classes="top1")
    assert out.maps.shape == (len(files), 1, 14, 14) and out.method == "cam"
    for j, picks in enumerate(out.map_classes):
        k = picks[0]
        np.testing.assert_allclose(out.maps[j, 0].mean() + loaded.head.intercept_[k], out.logits[j, k],
                                   rtol=1e-4, atol=1e-4)
    # The exported graph reads the same multi-stage embedding: predict's probabilities and decisions.
    from frugalvision.export import export_onnx_model

    onnx_path = export_onnx_model(loaded, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    proba, decision, cams = sess.run(["probabilities", "decision", "cams"], {"images": images})
    np.testing.assert_allclose(proba, out.probabilities, atol=1e-4)
    assert list(decision) == list(out.decisions.label)
    # ... and its maps are explain's stride-16 maps, computed in the graph.
    assert cams.shape[-2:] == (14, 14)
    for j, picks in enumerate(out.map_classes):
        np.testing.assert_allclose(cams[j, picks[0]], out.maps[j, 0], rtol=1e-3, atol=1e-3)


def test_report_names_the_measured_alternative_when_the_features_cap(tmp_path, trained):
    import shutil

    import pandas as pd

    from frugalvision.reporting.verdict import _features_step

    model, run = trained
    shutil.copy(run / "model.safetensors", tmp_path / "model.safetensors")
    copy = fv.load_model(tmp_path)
    step = _features_step(copy, capped=True)  # no tune yet: how to measure, and what it costs
    assert "tune DATA --features last,multi" in step and "min here" in step
    assert _features_step(copy, capped=False) is None
    pd.DataFrame({"backbone": ["b"] * 3, "features": ["multi", "last", "last"], "mean_accuracy": [0.93, 0.90, 0.89],
                  "std_accuracy": [0.01, 0.01, 0.01]}).to_csv(tmp_path / "tuning.csv", index=False)
    step = _features_step(copy, capped=False)  # tune measured multi better: say so with both numbers
    assert "--features multi" in step and "93" in step and "90" in step
    pd.DataFrame({"backbone": ["b"] * 2, "features": ["multi", "last"], "mean_accuracy": [0.905, 0.90],
                  "std_accuracy": [0.01, 0.01]}).to_csv(tmp_path / "tuning.csv", index=False)
    assert _features_step(copy, capped=True) is None  # within the noise: nothing to say


def test_report_names_what_tune_budget_measured_of_fine_tuning(tmp_path, trained):
    """A frozen model kept by tune --budget: the next step gives each fine-tuning candidate's paired gain, its minutes
    a training and the smallest gain tune would have kept; not for a model trained into the folder afterwards, and
    never a crash on a file edited by hand."""
    import shutil

    import pandas as pd

    from frugalvision.reporting.verdict import _finetune_step

    model, run = trained
    shutil.copy(run / "model.safetensors", tmp_path / "model.safetensors")
    copy = fv.load_model(tmp_path)
    assert _finetune_step(copy) is None  # no tune --budget here
    mine = copy.info.training.finished
    on = "validation (thresholds cross-fitted on its halves)"
    table = pd.DataFrame({
        "candidate": ["frozen (last features, linear head)", "fine-tune last-stage", "fine-tune 2-stages"],
        "judged_on": [on] * 3, "n_images": [450] * 3, "gain_vs_frozen": [0.0, 0.0, -0.0022],
        "gain_se": [0.0, 0.0, 0.0097], "kept_above": [0.0, 0.0, 0.0194], "seconds": [4.2, 309.1, 674.0],
        "folds_run": [None] * 3, "model_finished": [mine, "x", "y"], "note": ["", "", ""],
        "chosen": [True, False, False]})
    table.to_csv(tmp_path / "tuning_budget.csv", index=False)
    step = _finetune_step(copy)
    assert "tune --budget measured fine-tuning" in step and "on 450 validation images" in step
    assert "the last stage +0.0 ± 0.0 points (it would have kept it only above +0.0), about 5 min a training" in step
    assert "2 stages -0.2 ± 1.0 points (it would have kept it only above +1.9), about 11 min a training" in step
    # By 5-fold CV the seconds are five trainings'.
    table.assign(judged_on="5-fold CV", folds_run="5 of 5").to_csv(tmp_path / "tuning_budget.csv", index=False)
    assert "by 5-fold CV over 450 images" in _finetune_step(copy) and "about 2 min a training" in _finetune_step(copy)
    table.assign(model_finished=["2020-01-01T00:00:00", "x", "y"]).to_csv(tmp_path / "tuning_budget.csv", index=False)
    assert _finetune_step(copy) is None  # the folder's model is not the one tune kept
    table.drop(columns=["model_finished"]).to_csv(tmp_path / "tuning_budget.csv", index=False)
    assert _finetune_step(copy) is None  # a file from before the column: nothing said rather than a guess
    note = "not tried: fine-tuning needs PyTorch"
    table.assign(judged_on=[on, None, None], n_images=[450, None, None], gain_vs_frozen=[0.0, None, None],
                 gain_se=[0.0, None, None], kept_above=[0.0, None, None], note=["", note, note]) \
        .to_csv(tmp_path / "tuning_budget.csv", index=False)
    assert _finetune_step(copy) == f"tune --budget did not measure fine-tuning: {note}."
    for bad in ({"seconds": float("inf")}, {"n_images": "many"}, {"candidate": 7}, {"gain_se": None}):
        table.assign(**bad).to_csv(tmp_path / "tuning_budget.csv", index=False)
        _finetune_step(copy)  # whatever it says, it does not raise
    table.drop(columns=["gain_se"]).to_csv(tmp_path / "tuning_budget.csv", index=False)
    assert _finetune_step(copy) is None
