"""Find labelled images: a folder of class sub-folders, a train/test layout, or a CSV manifest.

The result is a plain :class:`pandas.DataFrame` with one row per file and the
columns ``path`` (absolute), ``label`` (may be missing for prediction), ``split``
(``train``/``val``/``test`` when the layout says so, else empty) and any extra
manifest columns, kept as metadata for subgroup analysis.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from .._text import printable
from ..decision import UNKNOWN
from ..exceptions import DataError, DataWarning

__all__ = ["discover", "list_image_files", "IMAGE_SUFFIXES"]

#: Suffixes looked for when scanning a folder without labels. Labelled folders take every
#: non-hidden file, so that a mislabelled or broken file is reported rather than ignored.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif", ".ppm", ".pgm"}
_SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


def _absolute(path: Path) -> str:
    """The absolute, symlink-resolved path; a link loop or a broken link keeps its own path (reading it
    later reports the reason for that one file instead of stopping the whole scan)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(path)


def _utf8(name: str) -> bool:
    """Whether a file name decoded from the file system is text: bytes that are not UTF-8 come back as lone
    surrogates, which no table, CSV or report can hold (pandas' string columns refused them mid-training)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _warn_not_utf8(names: list, where) -> None:
    if names:
        warnings.warn(f"Skipped {len(names)} file or folder name(s) under '{printable(str(where), quote=False)}' that "
                      f"are not valid UTF-8 (e.g. {printable(names[0])}): names are kept as text in every table and "
                      f"report. Rename them to UTF-8 (e.g. with convmv) to use them.", DataWarning, stacklevel=4)


def _visible_files(folder: Path) -> list[Path]:
    out, bad = [], []
    for root, dirs, files in os.walk(folder):
        bad += [d for d in dirs if not _utf8(d)]
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _utf8(d))
        bad += [f for f in files if not _utf8(f)]
        out.extend(Path(root) / f for f in sorted(files) if not f.startswith(".") and _utf8(f))
    _warn_not_utf8(bad, folder)
    return out


def list_image_files(paths) -> list[str]:
    """Expand files and folders into a sorted list of image files (by suffix inside folders)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(_absolute(f) for f in _visible_files(p) if f.suffix.lower() in IMAGE_SUFFIXES)
        elif not _utf8(str(p)):
            _warn_not_utf8([str(p)], p.parent)
        elif p.exists() or p.is_symlink():
            out.append(_absolute(p))
        else:
            raise DataError(f"'{p}' does not exist. Pass image files or folders that contain images.")
    return out


def _class_folders(folder: Path, split: str | None) -> list[dict]:
    rows = []
    _warn_not_utf8([d.name for d in folder.iterdir() if d.is_dir() and not _utf8(d.name)], folder)
    for class_dir in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and _utf8(d.name)):
        files = _visible_files(class_dir)
        if not files:
            warnings.warn(f"Class folder '{class_dir}' is empty: no class '{class_dir.name}' is learned from it.",
                          DataWarning, stacklevel=3)
        for f in files:
            rows.append({"path": _absolute(f), "label": class_dir.name, "split": split or ""})
    return rows


def discover(source, *, require_labels: bool = True) -> pd.DataFrame:
    """Describe a dataset as a table.

    Parameters
    ----------
    source : path
        A folder of class sub-folders (``data/cat/*.jpg``), a folder with ``train/`` and
        ``test/`` (and optionally ``val/``) each holding class sub-folders, or a CSV manifest
        with columns ``path,label`` (relative paths are relative to the CSV's folder) and
        any extra columns. A ``status`` column from ``frugalvision prepare`` is honoured:
        rows marked ``exclude`` are dropped.
    require_labels : bool
        Raise if labels are missing (training and evaluation need them).

    Returns
    -------
    pandas.DataFrame
        Columns ``path``, ``label``, ``split`` and the manifest's extras.
    """
    src = Path(source)
    if not src.exists():
        raise DataError(f"Dataset '{src}' does not exist. Pass a folder of class sub-folders or a CSV manifest.")
    if src.is_file():
        df = _read_manifest(src)
    else:
        subdirs = {d.name.lower(): d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")}
        split_dirs = {name: d for name, d in subdirs.items() if name in _SPLIT_DIRS}
        if split_dirs and "train" in {_SPLIT_DIRS[n] for n in split_dirs}:
            rows = []
            for name, d in sorted(split_dirs.items()):
                rows.extend(_class_folders(d, _SPLIT_DIRS[name]))
        else:
            rows = _class_folders(src, None)
        if not rows:
            raise DataError(
                f"No images found under '{src}'. Expected one sub-folder per class "
                f"('{src}/<class>/<image>'), optionally inside train/ and test/ folders."
            )
        df = pd.DataFrame(rows, columns=["path", "label", "split"])
    if require_labels:
        missing = df["label"].isna() | (df["label"].astype(str).str.strip() == "")
        if missing.any():
            raise DataError(
                f"{int(missing.sum())} rows of '{src}' have no label (first: {df.loc[missing, 'path'].iloc[0]}). "
                f"Every training image needs a label."
            )
        if df["label"].nunique() < 2:
            found = f"a single class ({df['label'].iloc[0]!r})" if len(df) else "no usable rows"
            raise DataError(f"Found {found} in '{src}'. A classifier needs images of at least 2 classes.")
        if (df["label"].astype(str) == UNKNOWN).any():
            raise DataError(f"'{src}' has a class named '{UNKNOWN}': that is the answer for an image of none of the "
                            f"classes, so predictions, evaluations and reports could not tell the two apart. Rename "
                            f"the class (e.g. '{UNKNOWN}_class' or 'other').")
        _warn_look_alike_labels(df["label"].astype(str), src)
    return df.reset_index(drop=True)


def _warn_look_alike_labels(labels: pd.Series, src) -> None:
    """Labels that differ only in Unicode normalisation, case or surrounding spaces become separate classes:
    say so, since it is almost never meant (``café`` typed on two keyboards, ``Cat`` and ``cat ``)."""
    import unicodedata

    groups: dict = {}
    for lab in labels.unique():
        groups.setdefault(unicodedata.normalize("NFKC", lab).casefold().strip(), []).append(lab)
    alike = [sorted(g) for g in groups.values() if len(g) > 1]
    if alike:
        shown = "; ".join(" / ".join(ascii(x) for x in g) for g in alike[:5])
        warnings.warn(f"'{src}' has labels that look alike but are different classes: {shown}. Rename them to one "
                      f"spelling if they are the same class.", DataWarning, stacklevel=3)


def _read_manifest(csv: Path) -> pd.DataFrame:
    try:
        from .._io import read_csv

        df = read_csv(csv)
    except Exception as exc:
        raise DataError(f"Could not read manifest '{csv}' as CSV ({exc}).") from exc
    if df.empty:
        raise DataError(f"Manifest '{csv}' has a header but no rows. Add one line 'path,label' per image.")
    cols = {c.lower().strip(): c for c in df.columns}
    if "path" not in cols:
        raise DataError(
            f"Manifest '{csv}' has no 'path' column (columns: {list(df.columns)}). "
            f"Expected a CSV with a header line 'path,label' and one image per row."
        )
    df = df.rename(columns={cols["path"]: "path", **({cols["label"]: "label"} if "label" in cols else {})})
    if "label" not in df.columns:
        df["label"] = ""
    if "status" in df.columns:
        df = df[df["status"].str.lower() != "exclude"]
    nul = df["path"].str.contains("\x00", regex=False) | df["label"].astype(str).str.contains("\x00", regex=False)
    if nul.any():
        row = int(nul.to_numpy().nonzero()[0][0]) + 2  # +1 for the header, +1 for counting from 1
        raise DataError(f"Manifest '{csv}' line {row} has a NUL byte in its path or label "
                        f"({ascii(df['path'][nul].iloc[0])}); no file name can contain one. Fix or remove that line.")
    base = csv.parent
    # Normalised: '/a/img/../img/x.png' and '/a/img/x.png' are one file, listed once.
    df["path"] = [_absolute(base / p) if not os.path.isabs(p) else _absolute(Path(p)) for p in df["path"]]
    df = _without_repeated_paths(df, csv)
    if "split" not in df.columns:
        df["split"] = ""
    df["split"] = df["split"].str.lower().map(lambda s: _SPLIT_DIRS.get(s, ""))
    return df


def _without_repeated_paths(df: pd.DataFrame, csv: Path) -> pd.DataFrame:
    """One row per file: a file listed twice would otherwise land in train and test at once."""
    repeated = df["path"].duplicated(keep=False)
    if not repeated.any():
        return df
    labels = df[repeated].groupby("path")["label"].agg(lambda s: sorted(set(s)))
    conflicts = labels[labels.map(len) > 1]
    if len(conflicts):
        first = conflicts.index[0]
        raise DataError(
            f"Manifest '{csv}' lists {len(conflicts)} files more than once with different labels (first: '{first}' "
            f"as {', '.join(repr(x) for x in conflicts.iloc[0])}). Keep one row per file with its right label.")
    n = int(df["path"].duplicated().sum())
    warnings.warn(f"Manifest '{csv}' lists {labels.size} files more than once; the {n} repeated rows are ignored.",
                  DataWarning, stacklevel=4)
    return df.drop_duplicates("path").reset_index(drop=True)
