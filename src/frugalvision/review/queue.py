"""What the review page shows: one section per issue kind (the audit page's order and titles), each sorted by
severity, most severe first; copies of one image (same ``duplicate_group``) are one set, side by side.

Everything here is data for the page as JSON; the page puts every string into the document as text.
"""

from __future__ import annotations

import math
from pathlib import PurePath

import pandas as pd

__all__ = ["GROUPED_KINDS", "review_sections", "card_fields"]

#: Kinds whose rows are shown with every copy of their duplicate group, side by side.
GROUPED_KINDS = ("label_conflict", "leak", "exact_duplicate", "near_duplicate")
_STATUS_ORDER = {"keep": 0, "review": 1, "exclude": 2}


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _severity(manifest: pd.DataFrame) -> pd.Series:
    if "severity" not in manifest.columns:
        return pd.Series(0.0, index=manifest.index)
    return pd.to_numeric(manifest["severity"], errors="coerce").fillna(0.0).clip(0.0, 1.0)


def card_fields(manifest: pd.DataFrame, row: int, severity: float) -> dict:
    """The text of one card (file name, label, split, reason, suggestion, audit status, group)."""
    r = manifest.iloc[row]
    path = _text(r.get("path"))
    name = PurePath(path.replace("\\", "/")).name or path
    return {"row": int(row), "name": name, "path": path, "label": _text(r.get("label")),
            "split": _text(r.get("split")), "status": _text(r.get("status")), "reason": _text(r.get("reason")),
            "suggested": _text(r.get("suggested_label")).strip(), "group": _text(r.get("duplicate_group")),
            "issues": _text(r.get("issues")), "severity": round(float(severity), 4)}


def _kind_rows(manifest: pd.DataFrame, severity: pd.Series) -> dict[str, list[int]]:
    """Row positions per issue kind, most severe first, then by path (the audit page's order)."""
    from ..curate.issues import ISSUE_KINDS
    from ..curate.html import issue_rows

    frame = manifest.reset_index(drop=True).assign(severity=severity.to_numpy())
    out = {k: [int(i) for i in rows.index] for k, rows in issue_rows(frame).items()}
    # Kinds this version does not know (a newer prepare, a hand-made manifest) still get a section.
    if "issues" in frame.columns:
        listed = frame["issues"].fillna("").astype(str).str.split(";")
        extra = sorted({k.strip() for ks in listed for k in ks if k.strip()} - set(ISSUE_KINDS))
        for k in extra:
            mask = listed.map(lambda ks, k=k: k in [x.strip() for x in ks])
            rows = frame[mask].sort_values(["severity", "path"], ascending=[False, True], kind="stable")
            out[k] = [int(i) for i in rows.index]
        flagged = listed.map(lambda ks: any(x.strip() for x in ks))
    else:
        flagged = pd.Series(False, index=frame.index)
        for rows in out.values():
            flagged.iloc[rows] = True
    # Rows marked 'review' by hand, without a finding.
    if "status" in frame.columns:
        rest = frame[(frame["status"].astype(str).str.strip().str.lower() == "review") & ~flagged]
        rest = rest.sort_values(["severity", "path"], ascending=[False, True], kind="stable")
        out["marked_for_review"] = [int(i) for i in rest.index]
    return {k: v for k, v in out.items() if v}


def review_sections(manifest: pd.DataFrame) -> dict:
    """``{"sections": [...], "cards": {row: fields}, "rows": [every row shown, page order]}``.

    A section is ``{"kind", "title", "sets": [{"group", "rows"}]}``; a set of one row is a single card.
    """
    from ..curate.html import ISSUE_TITLES

    titles = {**ISSUE_TITLES, "marked_for_review": "Marked for review"}
    severity = _severity(manifest)
    sev = severity.to_numpy()
    groups: dict[str, list[int]] = {}
    if "duplicate_group" in manifest.columns:
        for i, g in enumerate(manifest["duplicate_group"].tolist()):
            g = _text(g).strip()
            if g:
                groups.setdefault(g, []).append(i)
    status = [_STATUS_ORDER.get(_text(s).strip().lower(), 1) for s in
              (manifest["status"] if "status" in manifest.columns else [""] * len(manifest))]
    paths = manifest["path"].astype(str).tolist()
    sections, shown = [], {}
    for kind, rows in _kind_rows(manifest, severity).items():
        sets = []
        if kind in GROUPED_KINDS:
            seen = set()
            for r in rows:  # most severe first: a set appears where its most severe member would be
                g = _text(manifest["duplicate_group"].iloc[r]).strip() if "duplicate_group" in manifest else ""
                if g and g in seen:
                    continue
                if g:
                    seen.add(g)
                    members = sorted(groups[g], key=lambda i: (status[i], paths[i]))
                    sets.append({"group": g, "rows": members})
                else:
                    sets.append({"group": "", "rows": [r]})
        else:
            sets = [{"group": "", "rows": [r]} for r in rows]
        for s in sets:
            for r in s["rows"]:
                shown.setdefault(r, None)
        sections.append({"kind": kind, "title": titles.get(kind, kind.replace("_", " ")), "sets": sets,
                         "count": sum(len(s["rows"]) for s in sets)})
    order = list(shown)
    return {"sections": sections, "rows": order, "cards": {r: card_fields(manifest, r, sev[r]) for r in order}}
