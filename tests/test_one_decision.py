"""One image, one answer: predict, evaluate, explain, the report's galleries and the web page read one decision.

A two-class set with an operating point (some labels flipped, so the recall target really moves decisions away
from the most probable class) and a four-class set without one; 50 test images each.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import frugalvision as fv
from conftest import draw_shape


def _dataset(root, kinds, n, *, flip=0.0, seed=0):
    rng = np.random.default_rng(seed)
    for kind in kinds:
        (root / kind).mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        for i in range(n):
            drawn = "plain" if kind == "plain" else kind
            img = (Image.fromarray(rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)) if drawn == "plain"
                   else draw_shape(drawn, rng, 64))
            label = kind
            if rng.random() < flip:  # label noise: what makes a recall target lower the bar
                label = [k for k in kinds if k != kind][0]
            img.save(root / label / f"{kind}_{i:03d}.png")
    return root


def _check_one_answer(model, n_test=50):
    from fastapi.testclient import TestClient

    from frugalvision.explanation import explain_images
    from frugalvision.explanation.panels import readable_maps
    from frugalvision.reporting.sections import build_sections
    from frugalvision.serve import create_app

    ev = fv.evaluate(model, progress=False, n_boot=50)
    paths = ev.predictions["path"].tolist()[:n_test]
    assert len(paths) == n_test
    pred = fv.predict(model, paths, progress=False).set_index("path")
    evp = ev.predictions.set_index("path").loc[paths]
    assert (evp["pred"] == pred.loc[paths, "label"]).all()
    assert (evp["runner_up"] == pred.loc[paths, "runner_up"]).all()
    decided = pred[pred["label"] != "unknown"]
    assert (decided["runner_up"] != decided["label"]).all()
    # explain: the first map is the decided class, the second the runner-up, and the titles say so.
    expl, failed = explain_images(model, paths, cls="top2")
    assert not failed
    for e in expl:
        row = pred.loc[e.path]
        assert e.decision.label == row["label"] and e.decision.runner_up == row["runner_up"]
        if row["label"] != "unknown":
            assert e.class_names == [row["label"], row["runner_up"]]
            rm = readable_maps(e, longest=64)
            assert any(h.startswith(f"decided: {row['label']}") for h in rm.heading)
            assert rm.tiles[0].title[0] == f"decided: {row['label']}"
            assert rm.tiles[1].title[0] == f"runner-up: {row['runner_up']}"
        else:
            assert e.class_names == []
    # The report's galleries: captions and panels from the same decision.
    s = build_sections(model, ev, faithfulness=False, learning_curve=False, data_map=False, n_mistakes=8)
    rows = s["mistakes"] + s["unsure"]
    for r in rows:
        p = ev.predictions.set_index("path").loc[r["path"]]
        assert r["pred"] == p["pred"] and r["runner_up"] == p["runner_up"]
        if r["panel"] is not None and r["pred"] != "unknown":
            assert f"decided: {r['pred']}" in r["panel"]["heading"]
    # The web page: the same decision and the same probabilities (1e-5) as predict, for the same files.
    app = create_app(model)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for path in paths[:12]:
            with open(path, "rb") as fh:
                body = client.post("/explain", files={"file": ("x.png", fh.read(), "image/png")}).json()
            row = pred.loc[path]
            assert body["label"] == row["label"] and body["rule"] == row["rule"]
            assert body["most_probable"]["label"] == row["most_probable"]
            assert body["most_probable"]["probability"] == pytest.approx(row["most_probable_probability"], abs=1e-5)
            if row["label"] != "unknown":
                assert body["runner_up"]["label"] == row["runner_up"]
                assert body["probability"] == pytest.approx(row["probability"], abs=1e-5)
                assert body["runner_up"]["probability"] == pytest.approx(row["runner_up_probability"], abs=1e-5)
                assert body["cams"][0]["caption"].startswith(f"decided: {row['label']}")
            else:
                assert body["top"] == [] and not body.get("cams")
    return pred, ev


def test_two_classes_with_an_operating_point_give_one_answer_everywhere(tmp_path):
    data = _dataset(tmp_path / "two", ["defective", "functional"], 90, flip=0.12, seed=1)
    model = fv.train(data, targets=["defective:recall>=0.97"], test_size=0.3, progress=False)
    assert model.operating_point is not None
    pred, ev = _check_one_answer(model)
    # The test means something only if the operating point decided some images against the most probable class.
    assert (ev.predictions["rule"] == "operating point").any()
    op = ev.predictions[ev.predictions["rule"] == "operating point"]
    assert (op["pred"] == "defective").all() and (op["most_probable"] == "functional").all()


def test_four_classes_without_an_operating_point_give_one_answer_everywhere(tmp_path):
    data = _dataset(tmp_path / "four", ["circle", "square", "triangle", "plain"], 45, seed=2)
    model = fv.train(data, test_size=0.3, progress=False)
    pred, _ = _check_one_answer(model)
    known = pred[pred["label"] != "unknown"]
    assert (known["rule"] == "most probable").all() and (known["label"] == known["most_probable"]).all()
