"""Dataset discovery (folders, train/test layout, CSV manifests) and reproducible splits."""

from __future__ import annotations

import pandas as pd
import pytest

from frugalvision import DataError
from frugalvision.data.discover import discover
from frugalvision.data.split import assign_splits

from conftest import make_shapes_dataset


def _table(n_per_class=20, classes=("a", "b", "c")):
    return pd.DataFrame([{"path": f"/x/{c}/{i:03d}.png", "label": c, "split": ""}
                         for c in classes for i in range(n_per_class)])


def test_split_is_reproducible_stratified_and_order_independent():
    df = _table()
    a = assign_splits(df, seed=7)
    b = assign_splits(df.sample(frac=1, random_state=1), seed=7)
    pd.testing.assert_frame_equal(a.sort_values("path").reset_index(drop=True),
                                  b.sort_values("path").reset_index(drop=True))
    counts = a.groupby(["split", "label"]).size().unstack()
    assert (counts.loc["test"] == 3).all() and (counts.loc["val"] == 3).all() and (counts.loc["train"] == 14).all()
    assert not assign_splits(df, seed=8).equals(a)


def test_existing_test_split_is_respected():
    df = _table()
    df.loc[df.index % 5 == 0, "split"] = "test"
    out = assign_splits(df, seed=0).set_index("path")
    assert (out.loc[df.loc[df["split"] == "test", "path"], "split"] == "test").all()
    assert (out["split"] == "test").sum() == (df["split"] == "test").sum()
    assert set(out["split"]) == {"train", "val", "test"}


def test_groups_stay_in_one_split():
    df = _table(30)
    df["g"] = [p.rsplit("/", 1)[1][:2] for p in df["path"]]  # 10 rows per group and class
    out = assign_splits(df.sample(frac=1, random_state=3), group_col="g", seed=0)
    assert out.groupby(["label", "g"])["split"].nunique().max() == 1


def test_tiny_class_is_a_clear_error():
    df = _table(10)
    df = pd.concat([df, pd.DataFrame([{"path": "/x/z.png", "label": "z", "split": ""}])])
    with pytest.raises(DataError, match="fewer than 2 images"):
        assign_splits(df)


def test_discover_folder_layouts_and_manifest(tmp_path):
    flat = make_shapes_dataset(tmp_path / "flat", n_per_class=2)
    df = discover(flat)
    assert sorted(df["label"].unique()) == ["circle", "square", "triangle"] and (df["split"] == "").all()
    layered = tmp_path / "layered"
    make_shapes_dataset(layered / "train", n_per_class=3)
    make_shapes_dataset(layered / "test", n_per_class=1, seed=9)
    df2 = discover(layered)
    assert df2["split"].value_counts().to_dict() == {"train": 9, "test": 3}
    manifest = tmp_path / "m.csv"
    rows = [{"path": f"flat/{c}/{c}_000.png", "label": c, "source": s, "status": st}
            for c, s, st in (("circle", "web", "keep"), ("square", "shop", "keep"), ("triangle", "web", "exclude"))]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    df3 = discover(manifest)
    assert len(df3) == 2 and list(df3["source"]) == ["web", "shop"]
    assert all(p.startswith(str(tmp_path)) for p in df3["path"])


def test_discover_errors_are_specific(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No images found"):
        discover(tmp_path / "empty")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,cls\na.png,x\n")
    with pytest.raises(DataError, match="no 'path' column"):
        discover(bad)
    one = tmp_path / "one"
    make_shapes_dataset(one, n_per_class=1)
    for d in ("square", "triangle"):
        for f in (one / d).iterdir():
            f.unlink()
        (one / d).rmdir()
    with pytest.raises(DataError, match="at least 2 classes"):
        discover(one)


def test_a_class_named_unknown_is_refused_with_the_reason(tmp_path):
    """'unknown' is the answer for an image of none of the classes: a class of that name made evaluate count its
    correct answers as rejections ('3 of 11 answered unknown' at 100 % accuracy)."""
    import pytest as _pytest
    from PIL import Image

    from frugalvision.data.discover import discover
    from frugalvision.exceptions import DataError

    for c in ("cat", "unknown"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / c / f"{i}.png")
    with _pytest.raises(DataError, match="class named 'unknown'.*Rename"):
        discover(tmp_path)


def test_names_that_are_not_utf8_are_skipped_with_a_warning(tmp_path):
    """Bytes that are not UTF-8 in a file or class-folder name came back as lone surrogates and stopped training
    and predict mid-way (pandas' string columns refuse them); they are skipped with the reason."""
    import os

    import pytest as _pytest
    from PIL import Image

    from frugalvision.data.discover import discover, list_image_files
    from frugalvision.exceptions import DataWarning

    root = os.fsencode(tmp_path)
    for c in (b"cat", b"dog", b"bad\xffclass"):
        os.makedirs(root + b"/" + c)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root + b"/" + c + b"/%d.png" % i)
    Image.new("RGB", (8, 8)).save(root + b"/cat/bad\xfffile.png")
    with _pytest.warns(DataWarning, match="not valid UTF-8"):
        df = discover(tmp_path)
    assert sorted(set(df["label"])) == ["cat", "dog"] and len(df) == 6
    with _pytest.warns(DataWarning, match="not valid UTF-8"):
        files = list_image_files([tmp_path / "cat"])
    assert len(files) == 3
