"""Reproducible stratified train/validation/test splits, saved with the outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ..exceptions import DataError

__all__ = ["assign_splits", "together_groups"]


def together_groups(table: pd.DataFrame) -> pd.Series:
    """Which rows must stay in one split (or one fold): prepare's near-duplicate group where a row has one, else
    its content hash (copies of one image). Needs a ``hash`` column."""
    dup = (table["duplicate_group"].fillna("").astype(str) if "duplicate_group" in table.columns
           else pd.Series("", index=table.index))
    return dup.where(dup == "", "dup:" + dup).where(dup != "", "content:" + table["hash"].astype(str))


def assign_splits(df: pd.DataFrame, *, val_size: float = 0.15, test_size: float = 0.15, seed: int = 0,
                  group_col: str | None = None) -> pd.DataFrame:
    """Fill the ``split`` column with ``train``/``val``/``test``.

    Rows that already have a split (a ``train/``+``test/`` layout, or a manifest column)
    keep it; ``val`` is then carved out of ``train`` only. The assignment depends only on
    the rows' paths, labels and ``seed``, so it is the same on every machine.

    Parameters
    ----------
    group_col : str, optional
        Column of group ids (e.g. near-duplicate groups from ``prepare``): rows of a group always
        land in the same split. Empty ids count as singletons.
    """
    for name, v in (("val_size", val_size), ("test_size", test_size)):
        if not 0 <= v < 1:
            raise DataError(f"{name} must be in [0, 1), got {v}.")
    out = df.sort_values("path", kind="stable").reset_index(drop=True).copy()
    if "split" not in out.columns:
        out["split"] = ""
    out["split"] = out["split"].fillna("")
    counts = out["label"].value_counts()
    carving = (test_size > 0 and not (out["split"] == "test").any()) or (val_size > 0 and not (out["split"] == "val").any())
    if carving and (counts < 2).any():
        small = ", ".join(f"'{k}' ({v})" for k, v in counts[counts < 2].items())
        raise DataError(f"Classes with fewer than 2 images cannot be split: {small}. Add images or drop the class.")
    rng = np.random.RandomState(seed)
    groups = None
    if group_col is not None and group_col in out.columns:
        groups = out[group_col].astype(str).where(out[group_col].astype(str) != "", "row:" + out.index.astype(str))
    carved_test = False
    if not (out["split"] == "test").any() and test_size > 0:
        out.loc[_pick(out[out["split"] == ""], test_size, rng, groups), "split"] = "test"
        carved_test = True
    if not (out["split"] == "val").any() and val_size > 0:
        pool = out[out["split"].isin(["", "train"])]
        # val_size is a fraction of the whole dataset when we carved test ourselves.
        frac = val_size / (1 - test_size) if carved_test else val_size
        out.loc[_pick(pool, frac, rng, groups), "split"] = "val"
    out.loc[out["split"] == "", "split"] = "train"
    return out


def _pick(sub: pd.DataFrame, frac: float, rng, groups) -> pd.Index:
    """Indices of a stratified ``frac`` of ``sub`` (by label), keeping groups whole."""
    frac = min(max(frac, 0.0), 0.9)
    if groups is not None:
        g = groups.loc[sub.index]
        first = sub.assign(_g=g).drop_duplicates("_g")
        chosen = _pick(first, frac, rng, None)
        return sub.index[g.isin(g.loc[chosen])]
    labels = sub["label"]
    n_take = max(int(round(len(sub) * frac)), labels.nunique())
    if n_take >= len(sub):
        raise DataError(f"{len(sub)} images are too few to hold out one image per class ({labels.nunique()} classes) "
                        f"and still train on the rest. Use the small-data path (--few-shot: every image trains, "
                        f"cross-validation estimates), or label more images.")
    try:
        _, taken = train_test_split(sub.index, test_size=n_take, stratify=labels, random_state=rng)
    except ValueError:  # too few per class to stratify: fall back to a seeded plain split
        _, taken = train_test_split(sub.index, test_size=n_take, random_state=rng)
    return pd.Index(taken)
