"""prepare: duplicates, near-duplicates, leaks, quality, label errors found; the user's folder unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image, ImageFilter

import frugalvision as fv
from frugalvision.cli.main import main
from frugalvision.curate import prepare, suggest_labels

from conftest import draw_shape, make_split_shapes


def _snapshot(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """train/test layout of shapes with planted problems."""
    root = make_split_shapes(tmp_path_factory.mktemp("messy"), {"train": 14, "test": 6}, size=128,
                             rng=(rng := np.random.default_rng(7)))
    base = Image.open(root / "train" / "circle" / "circle_00.png")
    (root / "train" / "circle" / "exact_copy.png").write_bytes((root / "train" / "circle" / "circle_00.png").read_bytes())
    base.resize((100, 100)).save(root / "train" / "circle" / "resized_copy.jpg", quality=80)
    base.crop((4, 4, 124, 124)).save(root / "train" / "circle" / "cropped_copy.png")
    leak = Image.open(root / "train" / "square" / "square_03.png")
    leak.resize((120, 120)).save(root / "test" / "square" / "leaked_square.jpg", quality=85)
    draw_shape("triangle", rng, 128).save(root / "train" / "circle" / "mislabelled_triangle.png")
    Image.new("RGB", (128, 128), (3, 3, 3)).save(root / "train" / "square" / "dark.png")
    draw_shape("square", rng, 128).filter(ImageFilter.GaussianBlur(6)).save(root / "train" / "square" / "blurry.png")
    draw_shape("square", rng, 128).resize((20, 20)).save(root / "train" / "square" / "tiny.png")
    (root / "train" / "triangle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return root


def test_audit_finds_the_planted_problems_and_changes_nothing(messy, tmp_path):
    before = _snapshot(messy)
    res = prepare(messy, tmp_path / "prep", progress=False, copy_clean=tmp_path / "clean")
    assert _snapshot(messy) == before  # the user's folder is byte-for-byte unchanged
    # Index by file name; the planted files and circle_00.png are looked up in train/ (test/ has its own circle_00).
    m = res.manifest[~res.manifest["path"].str.contains("/test/") | res.manifest["path"].str.contains("leaked")]
    m = m.set_index(m["path"].str.rsplit("/", n=1).str[1])
    assert m.loc["exact_copy.png", "status"] == "exclude" and "exact duplicate" in m.loc["exact_copy.png", "reason"]
    # The byte copy, the 100-px JPEG and the 4-px crop are all copies of circle_00 (and of each other): one group.
    for name in ("exact_copy.png", "resized_copy.jpg", "cropped_copy.png"):
        assert m.loc[name, "duplicate_group"] != "" and m.loc[name, "duplicate_group"] == m.loc["circle_00.png", "duplicate_group"], name
        assert m.loc[name, "status"] == "exclude"
    assert m.loc["circle_00.png", "status"] != "exclude"  # the largest copy is the one kept
    assert "near-duplicate of" in m.loc["resized_copy.jpg", "reason"]
    # What is not flagged: the other 60 generated shapes (distinct images of one kind each) are in no group,
    # and nothing but the planted files carries an issue.
    planted = {"exact_copy.png", "resized_copy.jpg", "cropped_copy.png", "leaked_square.jpg", "square_03.png",
               "mislabelled_triangle.png", "dark.png", "blurry.png", "tiny.png", "broken.png"}
    everything = res.manifest.assign(name=res.manifest["path"].str.rsplit("/", n=1).str[1])
    assert set(everything.loc[everything["issues"] != "", "name"]) <= planted
    assert set(everything.loc[everything["duplicate_group"] != "", "name"]) == {
        "circle_00.png", "exact_copy.png", "resized_copy.jpg", "cropped_copy.png", "square_03.png", "leaked_square.jpg"}
    assert not ((everything["split"] == "test") & (everything["status"] == "exclude")).any()
    assert res.summary["findings"]["leaks"] >= 1
    # A leak removes the train copy; the test copy is never excluded by default.
    assert "leak" in m.loc["square_03.png", "reason"] and m.loc["square_03.png", "status"] == "exclude"
    assert m.loc["leaked_square.jpg", "status"] != "exclude"
    assert m.loc["mislabelled_triangle.png", "suggested_label"] == "triangle"
    assert "possible label error" in m.loc["mislabelled_triangle.png", "reason"]
    assert "too dark" in m.loc["dark.png", "reason"] or "nearly constant" in m.loc["dark.png", "reason"]
    assert "blurry" in m.loc["blurry.png", "reason"]
    assert "tiny" in m.loc["tiny.png", "reason"]
    assert m.loc["broken.png", "status"] == "exclude" and "unreadable" in m.loc["broken.png", "reason"]
    assert (tmp_path / "prep" / "audit.html").read_text().count("<tr>") > 5
    copied = {p.name for p in (tmp_path / "clean").rglob("*.*")}
    assert "exact_copy.png" not in copied and "circle_00.png" in copied
    # The manifest trains: excluded rows are dropped, groups stay in one split.
    model = fv.train(tmp_path / "prep" / "manifest.csv", progress=False, out=tmp_path / "run")
    used = set(model.data_.table["path"])
    assert not any(p.endswith("exact_copy.png") or p.endswith("broken.png") for p in used)
    assert model.data_.table.groupby("duplicate_group")["split"].nunique().drop("", errors="ignore").max() <= 1
    html = fv.report(model, tmp_path / "run" / "report.html", explain=False, progress=False).read_text()
    assert 'id="data-audit"' in html and "label issues" in html


def test_suggest_ranks_uncertain_images_first(messy, tmp_path, capsys):
    few = tmp_path / "few"
    for kind in ("circle", "square", "triangle"):
        (few / kind).mkdir(parents=True)
        for i in range(5):
            (few / kind / f"{i}.png").write_bytes((messy / "train" / kind / f"{kind}_{i:02d}.png").read_bytes())
    table = suggest_labels(few, messy / "test", progress=False)
    assert list(table["rank"]) == list(range(1, len(table) + 1)) and table["margin"].is_monotonic_increasing
    truth = table["path"].str.rsplit("/", n=2).str[1]
    assert (table["suggested_label"] == truth).mean() > 0.7
    assert main(["prepare", str(few), "--suggest", str(messy / "test"), "--out", str(tmp_path / "s"), "-q"]) == 0
    assert (tmp_path / "s" / "suggestions.csv").exists()
