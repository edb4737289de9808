"""The labelling manifest: one CSV row per decision, written atomically after every change.

Columns: ``path`` (absolute), ``label`` (the class, empty for "none of these" and "skip"), ``labelled_by``,
``labelled_at`` (UTC, ISO 8601), ``decision`` (``label``, ``none`` or ``skip``), ``status`` (``keep`` for a
class, ``exclude`` otherwise: ``frugalvision train`` drops excluded rows) and ``model_guess`` (what the model
proposed when the image was shown; empty without a model). ``frugalvision train labelled/manifest.csv`` reads it
as it is. A plain ``path,label`` CSV (from another tool) is read too: every row is a class label.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .._io import write_text
from ..exceptions import DataError

__all__ = ["COLUMNS", "MANIFEST_NAME", "NONE", "SKIP", "read_labels", "write_labels"]

COLUMNS = ["path", "label", "labelled_by", "labelled_at", "decision", "status", "model_guess"]
#: The two answers that are not a class.
NONE, SKIP = "none", "skip"
MANIFEST_NAME = "manifest.csv"


def read_labels(path) -> pd.DataFrame:
    """The manifest at ``path`` as text (no ``NA`` turned into missing), with every column of :data:`COLUMNS`."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"Could not read the labelling manifest '{path}' as CSV ({exc}). Move it away to start "
                        f"again, or pass another --out.") from exc
    for col in ("path", "label"):
        if col not in df.columns:
            raise DataError(f"Labelling manifest '{path}' has no '{col}' column (columns: {list(df.columns)}); "
                            f"expected at least 'path,label'.")
    if "decision" not in df.columns:
        excluded = df["status"].str.lower() == "exclude" if "status" in df.columns else False
        df["decision"] = "label"
        df.loc[excluded, "decision"] = SKIP
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = ""
    bad = ~df["decision"].isin(["label", NONE, SKIP])
    if bad.any():
        raise DataError(f"Labelling manifest '{path}' has an unknown decision {df.loc[bad, 'decision'].iloc[0]!r} "
                        f"(expected label, none or skip).")
    return df[COLUMNS].reset_index(drop=True)


def write_labels(path, records: list[dict]) -> Path:
    """Write ``records`` (dicts with the :data:`COLUMNS` keys) to ``path`` atomically."""
    df = pd.DataFrame(records, columns=COLUMNS)
    return write_text(path, df.to_csv(index=False))
