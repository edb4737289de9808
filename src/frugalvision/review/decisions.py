"""Review decisions: what they do to a manifest (pure), and where they are kept (two files, written atomically).

A decision is about one row of ``manifest.csv``, named by its position (0 = the first data row):

* ``accept``  - take the audit's ``suggested_label`` as the label, and keep the image (status ``keep``);
* ``keep``    - keep the image as it is (status ``keep``, label unchanged);
* ``exclude`` - leave the image out (status ``exclude``: ``train`` drops it).

:func:`apply_decisions` turns a manifest and decisions into the reviewed manifest (a new DataFrame; the
input is not touched). :class:`ReviewSession` holds the decisions of one prepared folder and writes, after
every change, ``review_decisions.json`` (to resume) and ``manifest.reviewed.csv`` (to train on). It never
writes ``manifest.csv``, the audit files or any image.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import os
import threading
import warnings
from pathlib import Path

import pandas as pd

from .._io import csv_text, read_csv, read_json, write_json, write_text
from ..exceptions import DataError, DataWarning

__all__ = ["DECISIONS", "MANIFEST_NAME", "REVIEWED_NAME", "DECISIONS_NAME", "apply_decisions", "read_manifest",
           "load_decisions", "save_decisions", "ReviewSession"]

DECISIONS = ("accept", "keep", "exclude")
#: The manifest status each decision leaves (``keep`` is what ``prepare`` writes for rows it keeps).
STATUS_OF = {"accept": "keep", "keep": "keep", "exclude": "exclude"}
MANIFEST_NAME = "manifest.csv"
REVIEWED_NAME = "manifest.reviewed.csv"
DECISIONS_NAME = "review_decisions.json"
FORMAT = "frugalvision.review_decisions/1"


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return str(value).strip() == ""


def _row_number(key, n: int) -> int:
    """``key`` as a row position in ``range(n)`` (ints, numpy ints and digit strings such as JSON keys)."""
    row = None
    if isinstance(key, bool):
        row = None
    elif isinstance(key, numbers.Integral):
        row = int(key)
    elif isinstance(key, str) and key.strip().isdigit() and key.strip().isascii():
        row = int(key.strip())
    if row is None:
        raise ValueError(f"Unknown row {key!r}: rows are named by their position in the manifest "
                         f"(an integer from 0 to {n - 1}).")
    if not 0 <= row < n:
        raise ValueError(f"Unknown row {row}: the manifest has {n} rows (0 to {n - 1}).")
    return row


def _validated(manifest: pd.DataFrame, decisions) -> dict[int, str]:
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"manifest must be a pandas DataFrame, got {type(manifest).__name__}.")
    if "label" not in manifest.columns:
        raise ValueError("The manifest has no 'label' column; decisions need the labels to change.")
    if decisions is None:
        return {}
    if not hasattr(decisions, "items"):
        raise TypeError(f"decisions must be a dict {{row: decision}}, got {type(decisions).__name__}.")
    n = len(manifest)
    suggested = manifest["suggested_label"] if "suggested_label" in manifest.columns else None
    out: dict[int, str] = {}
    for key, decision in decisions.items():
        row = _row_number(key, n)
        if not isinstance(decision, str) or decision not in DECISIONS:
            raise ValueError(f"Unknown decision {decision!r} for row {row}: use one of {', '.join(DECISIONS)}.")
        if decision == "accept" and (suggested is None or _missing(suggested.iloc[row])):
            raise ValueError(f"Row {row} has no suggested_label, so there is nothing to accept: "
                             f"decide 'keep' or 'exclude' instead.")
        if row in out and out[row] != decision:
            raise ValueError(f"Row {row} has two decisions ({out[row]!r} and {decision!r}).")
        out[row] = decision
    return out


def apply_decisions(manifest: pd.DataFrame, decisions: dict) -> pd.DataFrame:
    """The reviewed manifest: ``manifest`` with the decisions applied (``manifest`` itself is not modified).

    Parameters
    ----------
    manifest : pandas.DataFrame
        A manifest from ``frugalvision prepare`` (columns ``path``, ``label``, ``status``, ``suggested_label``...).
    decisions : dict
        ``{row: decision}``; ``row`` is the position of the row in ``manifest`` (0 = first row; an int or a
        digit string), ``decision`` one of ``"accept"`` (label := suggested_label, status ``keep``),
        ``"keep"`` (status ``keep``) or ``"exclude"`` (status ``exclude``).

    Returns
    -------
    pandas.DataFrame
        Same rows, index and columns, with ``label`` and ``status`` changed by the decisions, plus
        ``review_decision`` (the decision, or ``""``) and ``original_label`` (the label before review).

    Raises
    ------
    ValueError
        For an unknown row, an unknown decision, or ``accept`` on a row without a suggested label.
    """
    return _apply(manifest, _validated(manifest, decisions))


def _apply(manifest: pd.DataFrame, decided: dict[int, str]) -> pd.DataFrame:
    """:func:`apply_decisions` on decisions already validated by :func:`_validated`."""
    out = manifest.copy()
    labels = out["label"].tolist()
    if "original_label" in out.columns:  # reviewing a reviewed manifest: the first label stays the original
        original = [o if not _missing(o) else lab for o, lab in zip(out["original_label"].tolist(), labels)]
    else:
        original = list(labels)
    status = out["status"].tolist() if "status" in out.columns else ["keep"] * len(out)
    previous = out["review_decision"].tolist() if "review_decision" in out.columns else [""] * len(out)
    review = ["" if _missing(v) else v for v in previous]
    for row, decision in decided.items():
        if decision == "accept":
            labels[row] = str(out["suggested_label"].iloc[row]).strip()
        status[row] = STATUS_OF[decision]
        review[row] = decision
    out["label"] = labels
    out["status"] = status
    out["review_decision"] = review
    out["original_label"] = original
    return out


def read_manifest(path) -> pd.DataFrame:
    """A manifest as text, exactly as written (no ``NA``/``None`` labels turned into missing values)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"'{path}' not found. Run 'frugalvision prepare DATA --out {path.parent}' first: "
                        f"review works on the folder it writes.")
    try:
        df = read_csv(path)
    except Exception as exc:
        raise DataError(f"Could not read manifest '{path}' as CSV ({exc}).") from exc
    for col in ("path", "label"):
        if col not in df.columns:
            raise DataError(f"Manifest '{path}' has no '{col}' column (columns: {list(df.columns)}).")
    return df.reset_index(drop=True)


def load_decisions(path, manifest: pd.DataFrame) -> dict[int, str]:
    """The decisions saved in ``path`` that still fit ``manifest`` (``{}`` if there is no file).

    Every decision is saved with its file's path: if ``manifest.csv`` was written again and rows moved,
    a decision follows its file; decisions whose file left the manifest, or ``accept`` on a row that has no
    suggestion any more, are dropped with a warning.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        saved = read_json(path)
        entries = saved["decisions"]
        if not isinstance(entries, dict):
            raise TypeError("'decisions' is not an object")
    except Exception as exc:
        raise DataError(f"Could not read saved review decisions '{path}' ({exc}). Move it away to start the "
                        f"review again.") from exc
    paths = manifest["path"].astype(str).tolist()
    row_of = {p: i for i, p in reversed(list(enumerate(paths)))}
    out: dict[int, str] = {}
    dropped = []
    for key, entry in entries.items():
        entry = entry if isinstance(entry, dict) else {"decision": entry}
        file = entry.get("path")
        try:
            row = _row_number(key, len(paths))
        except ValueError:
            row = None
        if file is not None and (row is None or paths[row] != file):
            row = row_of.get(file)
        try:
            if row is None:
                raise ValueError("its file is not in the manifest")
            out.update(_validated(manifest, {row: entry.get("decision")}))
        except ValueError:
            dropped.append(str(file if file is not None else key))
    if dropped:
        warnings.warn(f"{len(dropped)} saved review decisions no longer fit {MANIFEST_NAME} and were dropped "
                      f"(first: {dropped[0]!r}).", DataWarning, stacklevel=2)
    return out


def save_decisions(prepared_dir, decisions: dict, manifest: pd.DataFrame | None = None) -> Path:
    """Write ``review_decisions.json`` and ``manifest.reviewed.csv`` into ``prepared_dir``; returns the latter.

    For notebooks: the same files the review page writes. ``manifest`` defaults to ``prepared_dir/manifest.csv``.
    """
    prepared_dir = Path(prepared_dir)
    if manifest is None:
        manifest = read_manifest(prepared_dir / MANIFEST_NAME)
    return _write(prepared_dir, manifest, _validated(manifest, decisions))  # validated before anything is written


def _write(prepared_dir: Path, manifest: pd.DataFrame, decided: dict[int, str]) -> Path:
    """:func:`save_decisions` on decisions already validated by :func:`_validated`."""
    reviewed = _apply(manifest, decided)
    paths = manifest["path"].astype(str).tolist()
    write_json(prepared_dir / DECISIONS_NAME, {
        "format": FORMAT, "manifest": MANIFEST_NAME, "reviewed": REVIEWED_NAME, "rows": len(manifest),
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "decisions": {str(r): {"decision": d, "path": paths[r]} for r, d in sorted(decided.items())}})
    target = prepared_dir / REVIEWED_NAME
    write_text(target, csv_text(reviewed))
    return target


class ReviewSession:
    """The decisions of one prepared folder: loaded on start (resume), saved after every change.

    Thread-safe: the web app's requests may come from several threads.
    """

    def __init__(self, prepared_dir):
        prepared_dir = Path(prepared_dir)
        if prepared_dir.is_file() and prepared_dir.name == MANIFEST_NAME:
            prepared_dir = prepared_dir.parent
        if not prepared_dir.is_dir():
            raise DataError(f"'{prepared_dir}' is not a folder. Pass the folder 'frugalvision prepare' wrote "
                            f"(the one holding {MANIFEST_NAME}).")
        self.dir = prepared_dir
        self.manifest_path = prepared_dir / MANIFEST_NAME
        self.reviewed_path = prepared_dir / REVIEWED_NAME
        self.decisions_path = prepared_dir / DECISIONS_NAME
        self.manifest = read_manifest(self.manifest_path)
        self.decisions = load_decisions(self.decisions_path, self.manifest)
        self._lock = threading.Lock()
        base = self.manifest_path.parent
        self.files = [p if os.path.isabs(p) else os.path.abspath(base / p)
                      for p in self.manifest["path"].astype(str)]

    def __len__(self) -> int:
        return len(self.manifest)

    def decide(self, row, decision: str | None) -> dict[int, str]:
        """Set (or, with ``None``, clear) the decision of ``row``, then save; returns all decisions."""
        with self._lock:
            new = dict(self.decisions)
            r = _row_number(row, len(self.manifest))
            if decision is None:
                new.pop(r, None)
            else:
                new[r] = decision
            decided = _validated(self.manifest, new)
            _write(self.dir, self.manifest, decided)
            self.decisions = decided
            return dict(decided)

    def save(self, decisions: dict | None = None) -> Path:
        return save_decisions(self.dir, self.decisions if decisions is None else decisions, self.manifest)

    def reviewed(self) -> pd.DataFrame:
        with self._lock:
            return apply_decisions(self.manifest, self.decisions)
