"""CAM: exact, equal to Grad-CAM for a linear head, points at the object, faithful, mapped back correctly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import frugalvision as fv
from frugalvision.cli.main import main
from frugalvision.explanation import explain_images, resolve_classes
from frugalvision.explanation.faithfulness import deletion_insertion
from frugalvision.explanation.overlay import overlay, to_image_coordinates

from conftest import needs_torch
from frugalvision.inference import probabilities as _probs


def _proba(model, X):
    return _probs(model, X)[1]



@pytest.fixture(scope="module")
def localisation(tmp_path_factory):
    """Real objects (cup, cat, rocket from scikit-image) pasted at random places on smooth backgrounds."""
    from skimage import data

    objects = {"cup": Image.fromarray(data.coffee()).crop((170, 20, 470, 320)),
               "cat": Image.fromarray(data.chelsea()).crop((60, 10, 300, 250)),
               "rocket": Image.fromarray(data.rocket()).crop((240, 40, 420, 420))}
    root = tmp_path_factory.mktemp("loc")
    rng = np.random.default_rng(0)
    rows = []
    W, H = 320, 240  # non-square: the network sees the centred 240x240 square
    for split, n in (("train", 14), ("test", 10)):
        for kind, obj in objects.items():
            for i in range(n):
                base = rng.uniform(60, 200, 3) + 25 * rng.normal(size=(6, 8, 3))
                img = Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((W, H), Image.Resampling.BICUBIC)
                s = int(rng.integers(70, 100))
                o = obj.resize((s, int(s * obj.height / obj.width)))
                x = int(rng.integers(int(W * 0.15), int(W * 0.85) - o.width))
                y = int(rng.integers(0, H - o.height))
                img.paste(o, (x, y))
                p = root / split / kind / f"{i}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                img.save(p, quality=90)
                rows.append({"path": str(p), "label": kind, "split": split, "box": (x, y, x + o.width, y + o.height)})
    model = fv.train(root, progress=False)
    return model, pd.DataFrame(rows)


def test_pointing_game_at_least_90_percent(localisation):
    model, df = localisation
    test = df[df["split"] == "test"]
    expl, failed = explain_images(model, test["path"].tolist(), cls="true", labels=test["label"].tolist())
    assert not failed and len(expl) == len(test) == 30
    tol = 15  # pixels, the standard pointing-game tolerance (Zhang et al., ECCV 2016)
    hits = []
    for e, (x0, y0, x1, y1) in zip(expl, test["box"]):
        heat = e.heat(0)  # in original 320x240 coordinates
        assert heat.shape == (240, 320)
        y, x = np.unravel_index(np.nanargmax(heat), heat.shape)
        hits.append(x0 - tol <= x <= x1 + tol and y0 - tol <= y <= y1 + tol)
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_deletion_auc_is_below_random_order(localisation):
    model, df = localisation
    test = df[df["split"] == "test"].iloc[::3]
    expl, _ = explain_images(model, test["path"].tolist(), cls="true", labels=test["label"].tolist())
    ex = model.extractor(progress=False)
    res = deletion_insertion(lambda a: _proba(model, ex.run_arrays(a)[1]),
                             np.stack([e.input for e in expl]), np.stack([e.maps[0] for e in expl]),
                             [model.classes.index(c) for c in test["label"]], n_steps=8)
    assert res["deletion_auc"].mean() < res["deletion_random_auc"].mean()
    assert res["insertion_auc"].mean() > res["insertion_random_auc"].mean()


def _top_corr(model, paths, method, ranks):
    cam, _ = explain_images(model, paths, cls="top2", method="cam")
    grad, _ = explain_images(model, paths, cls="top2", method=method)
    corr = []
    for a, b in zip(cam, grad):
        for k in ranks:
            pos = np.maximum(a.maps[k], 0).ravel()
            if pos.max() > 0 and b.maps[k].max() > 0:
                corr.append(np.corrcoef(pos, b.maps[k].ravel())[0, 1])
    return np.array(corr)


@pytest.fixture(scope="module")
def trained_fp32(tmp_path_factory, shapes_dir):
    """The shapes model on the fp32 network: PyTorch Grad-CAM explains only that one."""
    run = tmp_path_factory.mktemp("run_fp32") / "model"
    return fv.train(shapes_dir, out=run, progress=False, precision="fp32"), run


def test_an_int8_model_refuses_maps_of_another_network(trained):
    """The default model decides on the int8 graph; torch's Grad-CAM would explain the fp32 network instead."""
    from frugalvision.inference import map_support

    model, _ = trained
    assert model.info.backbone.precision == "int8"  # the default where the shipped int8 graph can run
    for method in ("gradcam", "gradcam++", "layercam", "scorecam"):
        support = map_support(model, method)
        assert support.method is None and "int8" in support.reason and "--precision fp32" in support.reason
    assert map_support(model, "cam").method == "cam" and map_support(model, "gradient").method == "gradient"


@needs_torch
def test_cam_equals_gradcam_for_a_linear_head(trained_fp32, shapes_dir):
    """Grad-CAM (pytorch-grad-cam) on GAP + linear head is ReLU(CAM) up to scale, for top-1 and runner-up."""
    model, _ = trained_fp32
    paths = sorted(str(p) for p in shapes_dir.rglob("*.png"))[::10]
    corr = _top_corr(model, paths, "gradcam", ranks=(0, 1))
    assert len(corr) >= 8 and corr.min() > 0.99, corr


@needs_torch
@pytest.mark.parametrize("method", ["gradcam++", "layercam"])
def test_other_gradient_methods_agree_on_the_top_class(trained_fp32, shapes_dir, method):
    # They weight activations differently (second-order / element-wise), so only broad agreement is expected.
    model, _ = trained_fp32
    paths = sorted(str(p) for p in shapes_dir.rglob("*.png"))[::10]
    corr = _top_corr(model, paths, method, ranks=(0,))
    assert corr.mean() > 0.8, corr


@needs_torch
def test_gradient_hooks_are_released(trained_fp32, shapes_dir):
    model, _ = trained_fp32
    path = str(next(shapes_dir.rglob("*.png")))
    for _ in range(5):
        explain_images(model, [path], method="gradcam")
    layer = model._torch_backbone.model.get_submodule(model.spec.cam_layer)
    assert not layer._forward_hooks and not layer._backward_hooks


def test_cam_is_exact_logit_decomposition(trained, shapes_dir):
    model, _ = trained
    path = str(next(shapes_dir.rglob("*.png")))
    maps = fv.explain(model, path, cls="all")
    assert maps.shape == (3, 7, 7)
    emb = model.embed([path], progress=False).X
    np.testing.assert_allclose(maps.mean(axis=(1, 2)) + model.head.intercept_, model.head.logits(emb)[0], atol=1e-3)


def test_map_lands_on_the_right_pixels_of_a_non_square_image():
    cam = np.zeros((7, 7), np.float32)
    cam[1, 5] = 1.0  # hot cell: row 1, column 5 of the network's square
    heat = to_image_coordinates(cam, (1 / 6, 0.0, 5 / 6, 1.0), (300, 200))  # 300x200 image, centred 200x200 crop
    assert heat.shape == (200, 300)
    assert np.isnan(heat[:, :49]).all() and np.isnan(heat[:, 251:]).all()  # outside the crop: not seen
    y, x = np.unravel_index(np.nanargmax(heat), heat.shape)
    assert abs(x - (50 + 5.5 / 7 * 200)) <= 3 and abs(y - 1.5 / 7 * 200) <= 3
    grey = np.full((200, 300, 3), 128, np.uint8)
    out = overlay(grey, heat / np.nanmax(heat))  # RGB uint8 in, RGB uint8 out
    assert out.dtype == np.uint8 and out.shape == (200, 300, 3)
    assert (out[:, :40] == 64).all()  # unseen border: dimmed, no colour
    assert out[y, x, 0] > out[y, x, 2] + 40  # hot spot is red in the 'jet' map (RGB order, not BGR)


def test_class_selectors_follow_the_decision():
    p = np.array([0.1, 0.6, 0.3])
    classes = ["a", "b", "c"]
    argmax = (1, 2, p)  # decided b, runner-up c
    assert resolve_classes("top1", argmax, classes) == [1]
    assert resolve_classes("top2", argmax, classes) == [1, 2]
    assert resolve_classes("true", argmax, classes, "a") == [0]
    assert resolve_classes(["c", "top1"], argmax, classes) == [2, 1]
    # An operating point decided c: top-1 is c (not the most probable b), and the runner-up is b.
    op = (2, 1, p)
    assert resolve_classes("top2", op, classes) == [2, 1] and resolve_classes("second", op, classes) == [1]
    assert resolve_classes("top3", op, classes) == [2, 1, 0]
    # Decided unknown: no class map unless a class is asked by name.
    unknown = (-1, 1, p)
    assert resolve_classes("top2", unknown, classes) == [] and resolve_classes("b", unknown, classes) == [1]
    with pytest.raises(fv.DataError, match="Unknown class selector"):
        resolve_classes("nope", argmax, classes)


def test_cli_explain_writes_readable_panels_and_sheet(trained, shapes_dir, tmp_path, capsys):
    model, run = trained
    src = shapes_dir / "circle"
    files = [src / "circle_000.png", src / "circle_001.png"]
    assert main(["explain", str(run), *map(str, files), "--out", str(tmp_path / "x"), "--classes", "top2",
                 "--colorbar"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "x").iterdir())
    assert "circle_000__panel.png" in names and "contact_sheet.png" in names
    # The panels are the report's rendering: a class below p = 0.05 gets no map (and no overlay file).
    expl, _ = explain_images(model, [str(f) for f in files], cls="top2")
    for f, e in zip(files, expl):
        shown = [c for c in e.class_names if e.probabilities[c] >= 0.05]
        got = sorted(n for n in names if n.startswith(f.stem + "__cam_"))
        want = sorted([f"{f.stem}__cam_{c}.png" for c in shown]
                      + ([f"{f.stem}__cam_{e.class_names[0]}_minus_{e.class_names[1]}.png"] if len(shown) == 2 else []))
        assert got == want
    hidden = sum(e.probabilities[c] < 0.05 for e in expl for c in e.class_names)
    assert (f"{hidden} maps not drawn" in out) == (hidden > 0) and "one colour scale" in out
    assert Image.open(tmp_path / "x" / "circle_000__panel.png").size[0] > 400
    assert main(["explain", str(run), str(files[0]), "--out", str(tmp_path / "x")]) == 1
    assert "already exists" in capsys.readouterr().err


def _synthetic_explanation(tmp_path, p_b=0.3):
    """Two maps on a grey 70x70 image: equal (2.0) everywhere but the bottom-right cell (A 4.0, B 0.0)."""
    from frugalvision.explanation import Explanation

    path = tmp_path / "grey.png"
    Image.new("RGB", (70, 70), (128, 128, 128)).save(path)
    maps = np.full((2, 7, 7), 2.0, np.float32)
    maps[0, 6, 6], maps[1, 6, 6] = 4.0, 0.0
    return Explanation(path=str(path), class_names=["A", "B"], maps=maps,
                       probabilities={"A": 1 - p_b - 0.01, "B": p_b, "C": 0.01}, box=(0, 0, 1, 1), size=(70, 70),
                       method="cam")


def test_one_colour_scale_per_image_and_the_difference_map(tmp_path):
    from frugalvision.explanation.panels import readable_maps, readable_panel_png

    rm = readable_maps(_synthetic_explanation(tmp_path), longest=140)
    a, b, diff = rm.tiles
    assert (a.kind, b.kind, diff.kind) == ("class", "class", "difference") and rm.scale == pytest.approx(4.0)
    # The same CAM value (2.0, top-left) gets the same colour in the top-1 and the top-2 tile...
    np.testing.assert_array_equal(a.overlay[20, 20], b.overlay[20, 20])
    # ...which is the middle of the scale, not its top (each map scaled to its own maximum made B's 2.0 dark red).
    assert a.overlay[20, 20, 1] > a.overlay[20, 20, 0] and a.overlay[20, 20, 1] > a.overlay[20, 20, 2]
    assert a.overlay[135, 135, 0] > a.overlay[135, 135, 2] + 40       # A's 4.0: (dark) red
    assert b.overlay[135, 135, 2] > b.overlay[135, 135, 0] + 40       # B's 0.0: blue
    # Why A, not B: red where A's evidence exceeds B's, neutral where they are equal.
    assert diff.overlay[135, 135, 0] > diff.overlay[135, 135, 2] + 30
    assert abs(int(diff.overlay[20, 20, 0]) - int(diff.overlay[20, 20, 2])) < 10
    assert diff.caption.startswith("why A, not B") and "red" in diff.caption
    png, info = readable_panel_png(_synthetic_explanation(tmp_path), colorbar=True)
    assert info == {"hidden": [], "difference": True, "scale": pytest.approx(4.0), "difference_scale": pytest.approx(4.0)}
    assert Image.open(__import__("io").BytesIO(png)).size[0] > 4 * 240


def test_a_map_below_p_005_is_hidden_with_a_note(tmp_path):
    from frugalvision.explanation.panels import readable_maps, readable_panel_png

    rm = readable_maps(_synthetic_explanation(tmp_path, p_b=0.02))
    a, b = rm.tiles  # no difference map without the runner-up's map
    assert not a.hidden and a.overlay is not None
    assert b.hidden and b.overlay is None and "no map: p < 0.05" in b.note and "no map" in b.caption
    assert rm.hidden == ["B"] and not rm.difference
    png, info = readable_panel_png(_synthetic_explanation(tmp_path, p_b=0.02))
    assert info["hidden"] == ["B"] and not info["difference"]
    img = np.asarray(Image.open(__import__("io").BytesIO(png)).convert("RGB"))
    assert ((img == 236).all(axis=2)).sum() > 100 * 100  # the grey "no map" tile is drawn in its place


@needs_torch
def test_gradcam_maps_of_one_image_share_a_scale(trained_fp32, shapes_dir):
    """pytorch-grad-cam scales each map to [0, 1] on its own; ours keep top-1 and top-2 comparable, as ReLU(CAM) is."""
    model, _ = trained_fp32
    paths = sorted(str(p) for p in shapes_dir.rglob("*.png"))[::15]
    cam, _ = explain_images(model, paths, cls="top2", method="cam")
    grad, _ = explain_images(model, paths, cls="top2", method="gradcam")
    for a, g in zip(cam, grad):
        pos = np.maximum(a.maps, 0)
        assert g.maps.max() == pytest.approx(1.0, abs=1e-4)
        assert g.maps[1].max() == pytest.approx(pos[1].max() / pos.max(), abs=0.02)


def test_panel_text_with_control_characters_is_drawn_escaped():
    """A newline or a lone surrogate (an undecodable byte in a file name) in a title made the text layout fail
    ("raqm_layout() failed") and ended `explain`; they are drawn as escapes."""
    from frugalvision.explanation.panels import _fit, _font, _wrap

    font = _font(12)
    for name in ("new\nline.png", "bad\udcffbyte.png", "tab\there.png", "\u202eevil.png"):
        lines = _wrap(f"true: cat · {name}", font, 120)
        assert all("\n" not in ln and ln.isprintable() for ln in lines)
        assert _fit(name, font, 60).isprintable()
    assert "new\\x0aline.png" in "".join(_wrap("new\nline.png", font, 400))


def test_class_selectors_split_at_commas_by_the_model_classes():
    """A class name may hold a comma ('comma,class'): `explain --classes "comma,class"` asked for classes 'comma' and
    'class' and failed. The list is split by the model's classes."""
    from frugalvision.inference import resolve_classes

    classes = ["comma,class", "b", "c"]
    decision = (1, 2, np.array([0.2, 0.7, 0.1]))
    assert resolve_classes("comma,class", decision, classes) == [0]
    assert resolve_classes("top1,comma,class", decision, classes) == [1, 0]
    assert resolve_classes("c,b", decision, classes) == [2, 1]
    with pytest.raises(Exception, match="Unknown class selector 'comma'"):
        resolve_classes("comma,b", decision, classes)
