"""curate: groups that cannot chain, label conflicts, test rows kept, dark vs blurry, scan failures reported."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from frugalvision.curate import prepare
from frugalvision.curate.duplicates import complete_linkage_groups
from frugalvision.curate.quality import quality_flags, quality_metrics

from conftest import draw_shape, make_split_shapes


def test_complete_linkage_does_not_chain():
    # 0~1, 1~2, 2~3 but 0 and 2, 1 and 3, 0 and 3 are not near: a chain, never one group
    groups = complete_linkage_groups(5, [(0, 1, 0.99), (1, 2, 0.98), (2, 3, 0.97)])
    assert all(len(g) == 2 for g in groups) and len(groups) == 2
    # a clique is one group
    assert complete_linkage_groups(4, [(0, 1, .9), (0, 2, .9), (1, 2, .9), (2, 3, .99)]) in ([[0, 1], [2, 3]],
                                                                                           [[0, 1, 2]])
    full = [(a, b, 0.9) for a in range(4) for b in range(a + 1, 4)]
    assert complete_linkage_groups(4, full) == [[0, 1, 2, 3]]


def test_dark_is_dark_not_blurry_and_blur_is_independent_of_brightness():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(30):
        rows.append(quality_metrics(np.asarray(draw_shape("circle", rng, 48))))
    sharp = np.asarray(draw_shape("square", rng, 48))
    rows.append(quality_metrics((sharp * 0.05).astype(np.uint8)))  # very dark copy of a sharp image
    rows.append(quality_metrics(np.asarray(Image.fromarray(sharp).resize((6, 6)).resize((48, 48), Image.BICUBIC))))
    q = pd.DataFrame(rows).assign(width=48, height=48)
    flags = {i: [k for k, *_ in f] for i, f in quality_flags(q).items()}
    assert "too_dark" in flags[30] and "blurry" not in flags[30]
    assert "blurry" in flags[31] and "too_dark" not in flags[31]
    assert not any(i < 30 for i in flags), flags  # ordinary images are not flagged


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Small train/test shapes set (48 px) with planted problems and a set of distinct look-alikes."""
    root = make_split_shapes(tmp_path_factory.mktemp("curate"), {"train": 10, "test": 4}, size=48,
                             rng=np.random.default_rng(3))
    tr = root / "train"
    # Same bytes, different labels: a label conflict, neither copy excluded.
    (tr / "square" / "conflict_copy.png").write_bytes((tr / "circle" / "circle_01.png").read_bytes())
    # Two copies inside test: kept by default.
    (root / "test" / "circle" / "test_copy.png").write_bytes((root / "test" / "circle" / "circle_00.png").read_bytes())
    # A leak: a train image copied into test -> the train copy goes, the test copy stays.
    (root / "test" / "triangle" / "leak.png").write_bytes((tr / "triangle" / "triangle_02.png").read_bytes())
    # Very dark copy of a sharp image.
    arr = np.asarray(Image.open(tr / "square" / "square_03.png"))
    Image.fromarray((arr * 0.04).astype(np.uint8)).save(tr / "square" / "dark.png")
    # Look-alikes: the same shape and colour drawn at slightly different places -> distinct images.
    for i in range(4):
        img = Image.new("RGB", (48, 48), (40, 40, 40))
        from PIL import ImageDraw

        ImageDraw.Draw(img).ellipse([10 + 3 * i, 12, 30 + 3 * i, 32], fill=(200, 60, 60))
        img.save(tr / "circle" / f"lookalike_{i}.png")
    return root


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep")
    res = prepare(planted, out, progress=False)
    m = res.manifest.copy()
    m["rel"] = [p.split(str(planted) + "/", 1)[1] for p in m["path"]]
    return res, m.set_index("rel"), out


def test_label_conflict_reviews_every_copy(audited):
    _, m, _ = audited
    for rel in ("train/circle/circle_01.png", "train/square/conflict_copy.png"):
        assert m.at[rel, "status"] == "review", rel
        assert "label_conflict" in m.at[rel, "issues"]
        assert "'circle'" in m.at[rel, "reason"] and "'square'" in m.at[rel, "reason"]
    assert m.at["train/square/conflict_copy.png", "suggested_label"] == "circle"


def test_test_rows_are_never_excluded_by_default(audited, planted, tmp_path):
    res, m, _ = audited
    assert not ((m["split"] == "test") & (m["status"] == "exclude")).any()
    assert res.summary["test_rows_excluded"] == 0
    assert m.at["train/triangle/triangle_02.png", "status"] == "exclude" and "leak" in m.at[
        "train/triangle/triangle_02.png", "issues"]
    assert m.at["test/triangle/leak.png", "status"] == "keep"
    copies = m.loc[["test/circle/circle_00.png", "test/circle/test_copy.png"], "status"]
    assert set(copies) == {"keep", "review"}
    strict = prepare(planted, tmp_path / "strict", progress=False, exclude_test_duplicates=True).manifest
    assert ((strict["split"] == "test") & (strict["status"] == "exclude")).sum() == 1


def test_dark_and_lookalikes(audited):
    _, m, _ = audited
    assert "too_dark" in m.at["train/square/dark.png", "issues"] and "blurry" not in m.at["train/square/dark.png",
                                                                                           "issues"]
    looks = m.loc[[f"train/circle/lookalike_{i}.png" for i in range(4)]]
    assert (looks["duplicate_group"] == "").all(), looks[["duplicate_group", "reason"]]
    # only planted copies form groups
    grouped = set(m.index[m["duplicate_group"] != ""])
    assert grouped <= {"train/circle/circle_01.png", "train/square/conflict_copy.png", "test/circle/circle_00.png",
                       "test/circle/test_copy.png", "train/triangle/triangle_02.png", "test/triangle/leak.png"}


def test_audit_page_is_complete_escaped_and_has_no_raw_dict(audited):
    res, m, out = audited
    html = (out / "audit.html").read_text()
    assert "{'" not in html and "Summary" in html
    assert 'id="label_conflict"' in html and 'id="too_dark"' in html and "… and" not in html
    # every flagged row appears in its grid
    assert html.count('class="card') >= (m["issues"] != "").sum()


def test_quality_scan_failure_is_reported(planted, tmp_path, monkeypatch):
    import frugalvision.data.decode as decode

    real = decode.load_rgb_array
    target = str(planted / "train" / "square" / "square_00.png")

    def failing(source, *a, **k):
        if str(source) == target and k.get("min_side") == 256:
            raise RuntimeError("simulated scan failure")
        return real(source, *a, **k)

    monkeypatch.setattr(decode, "load_rgb_array", failing)
    m = prepare(planted, tmp_path / "p", progress=False).manifest.set_index("path")
    assert m.at[target, "status"] == "review" and "scan_failed" in m.at[target, "issues"]
    assert "simulated scan failure" in m.at[target, "reason"]
