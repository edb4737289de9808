"""``prepare``: audit a labelled image set and write a manifest, without touching the user's files.

Every finding is one *issue* of a known kind (column ``issues``, ``;``-separated) with a reason a
person can act on (column ``reason``) and a ``severity`` in [0, 1] used to sort the review grids:

=================  ======================================================================  =========
issue              meaning                                                                 status
=================  ======================================================================  =========
unreadable         the file does not decode (why)                                          exclude
scan_failed        decodes, but the quality scan failed (why): no quality checks ran       review
exact_duplicate    same bytes as another file with the same label                          exclude*
near_duplicate     re-encoded / resized / cropped copy, pixels verified (complete linkage) exclude*
leak               a copy of a *test* image in train/val: the train copy is removed        exclude
label_conflict     copies of one image carry different labels: every copy, both labels     review
label_error        out-of-fold linear head and kNN both reject it; ``suggested_label``     review
too_dark, too_bright, blurry, low_information, tiny, odd_aspect, atypical                  review
=================  ======================================================================  =========

(*) Of a group, the largest copy is kept and the others are excluded - except that **test rows are
never excluded** unless ``exclude_test_duplicates=True``: within the test split extra copies go to
review, and when a group spans train and test the train copies go.

Output: ``manifest.csv`` (``train`` drops ``exclude`` rows and keeps each ``duplicate_group`` in one
split), ``audit.json`` and ``audit.html``. Decisions are made on the review page (``frugalvision review``, :mod:`frugalvision.review`), which writes ``manifest.reviewed.csv``, or by editing the manifest's ``status`` and ``label`` columns.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import csv_text, refuse_overwrite, write_json, write_text
from ..exceptions import DataError
from .duplicates import MAX_RESIDUAL, MIN_NCC, complete_linkage_groups, near_pairs
from .issues import FINDING_OF, ISSUE_KINDS
from .labels import MAX_P
from .quality import DARK_FLOOR, quality_flags, scan

__all__ = ["prepare", "suggest_labels", "AuditResult", "ISSUE_KINDS", "FINDING_OF", "MANIFEST_COLUMNS"]

MANIFEST_COLUMNS = ["path", "label", "split", "status", "reason", "issues", "severity", "suggested_label",
                    "duplicate_group", "hash", "width", "height", "brightness", "highlights", "shadows", "contrast",
                    "sharpness", "label_quality"]
_RANK = {"keep": 0, "review": 1, "exclude": 2}


@dataclass
class AuditResult:
    manifest: pd.DataFrame
    summary: dict

    def text(self) -> str:
        s = self.summary
        lines = [f"Audited {s['n_files']} files in {s['seconds']:.1f} s: {s['status'].get('keep', 0)} keep, "
                 f"{s['status'].get('review', 0)} to review, {s['status'].get('exclude', 0)} excluded "
                 f"({s['excluded_share']:.1%})."]
        for k, v in s["findings"].items():
            if v:
                lines.append(f"  {k.replace('_', ' ')}: {v}")
        b = s["balance"]
        lines.append(f"Class balance (kept): {b['counts']} - imbalance ratio {b['imbalance_ratio']:.2f}")
        if b["warning"]:
            lines.append("  WARNING: " + b["warning"])
        return "\n".join(lines)


class _Rows:
    """Status, reasons, issues and severity per row; a status only ever moves keep -> review -> exclude."""

    def __init__(self, n):
        self.status = ["keep"] * n
        self.reasons = [[] for _ in range(n)]
        self.issues = [[] for _ in range(n)]
        self.severity = np.zeros(n)

    def flag(self, i, kind, why, status="review", severity=0.5):
        if kind not in self.issues[i]:
            self.issues[i].append(kind)
        self.reasons[i].append(why)
        self.severity[i] = max(self.severity[i], severity)
        if _RANK[status] > _RANK[self.status[i]]:
            self.status[i] = status


def prepare(data, out, *, backbone: str = "efficientnet_lite0", engine: str = "auto", cache_dir=None,
            min_cos: float = 0.9, min_thumb: float = 0.9, max_hamming: int | None = None, outlier_z: float = 4.0,
            label_issue_folds: int = 5, exclude_test_duplicates: bool = False, copy_clean=None,
            overwrite: bool = False, progress: bool = True, seed: int = 0, min_ncc: float = MIN_NCC,
            max_residual: float = MAX_RESIDUAL, max_label_p: float = MAX_P) -> AuditResult:
    """Audit ``data`` (folder or manifest) and write ``out/manifest.csv``, ``audit.json`` and ``audit.html``.

    Near-duplicates (:mod:`.duplicates`): candidate pairs are each image's 3 best partners by crop-thumbnail
    correlation (at least ``min_thumb``) and its 2 nearest embeddings (cosine at least ``min_cos``); a
    candidate is a copy when the aligned pixels correlate at least ``min_ncc``, differ, smoothed, by at
    most ``max_residual`` grey levels on average and nowhere by much (a seam, a print, a recoloured object),
    and one frame lies inside the other. ``max_hamming`` is ignored (perceptual hashes are no longer used).
    Label errors (:mod:`.labels`): the out-of-fold linear head gives the label less than ``max_label_p``
    and at most 1 of the 20 nearest neighbours carries it.
    """
    from ..data.discover import discover
    from ..features.extract import Extractor

    t0 = time.perf_counter()
    out = Path(out)
    for name in ("manifest.csv", "audit.json", "audit.html"):
        refuse_overwrite(out / name, overwrite, "audit file")
    df = discover(data, require_labels=True) if not isinstance(data, pd.DataFrame) else data.copy()
    df = df.sort_values("path", kind="stable").reset_index(drop=True)
    df["label"] = df["label"].astype(str)
    if "split" not in df.columns:
        df["split"] = ""
    n = len(df)
    R = _Rows(n)
    ex = Extractor(backbone, engine=engine, cache_dir=cache_dir, progress=progress)
    emb = ex(df["path"].tolist())
    row_of_path = {p: i for i, p in enumerate(df["path"])}
    for p, why in emb.failures:
        R.flag(row_of_path[p], "unreadable", f"unreadable: {why}", "exclude", 1.0)
    ok = np.flatnonzero(emb.ok)
    X = np.zeros((n, emb.X.shape[1]), np.float32) if len(ok) else np.zeros((n, 1), np.float32)
    X[ok] = emb.X
    df["hash"] = emb.hashes
    # Quality scan: every readable file; a failure is a finding with its reason.
    scans = scan(df["path"].iloc[ok].tolist(), progress=progress)
    q = pd.DataFrame(scans, index=ok)
    for col in ("width", "height", "brightness", "highlights", "shadows", "contrast", "sharpness", "pixels", "thumbs",
                "scan_error"):
        if col not in q.columns:
            q[col] = np.nan
    # Whole columns, not pandas cell by cell: at 50,000 rows the cell reads cost ~30 s and a list membership test
    # inside the loop ~55 s.
    errors = [e if isinstance(e, str) else None for e in q["scan_error"].tolist()]
    for i, err in zip(ok, errors):
        if err:
            R.flag(i, "scan_failed", f"quality scan failed ({err}); brightness, blur and size were not checked",
                   "review", 0.8)
    for i, found in quality_flags(q.drop(columns=["pixels", "thumbs"])).items():
        for kind, why, sev in found:
            R.flag(i, kind, why, "review", sev)
    df = df.join(q.drop(columns=["pixels", "thumbs", "scan_error"]))
    scanned = {int(i) for i, err in zip(ok, errors) if err == ""}
    area = (df["width"] * df["height"]).to_numpy(float)
    pixels = {int(i): float(area[i]) if i in scanned else 0.0 for i in ok}
    # Groups: exact copies (same content hash), then near copies among one representative per content.
    by_hash: dict[str, list[int]] = {}
    hashes = df["hash"].tolist()
    for i in ok:
        by_hash.setdefault(hashes[i], []).append(int(i))
    reps = [m[0] for m in by_hash.values() if m[0] in scanned]
    grey, thumbs = dict(zip(ok.tolist(), q["pixels"].tolist())), dict(zip(ok.tolist(), q["thumbs"].tolist()))
    pairs = near_pairs([grey[i] for i in reps],
                       np.stack([thumbs[i] for i in reps]) if reps else np.zeros((0, 1, 256), np.float32),
                       X[reps], min_ncc=min_ncc, max_residual=max_residual, min_thumb=min_thumb, min_cos=min_cos,
                       progress=progress)
    near_groups = [[reps[k] for k in g] for g in complete_linkage_groups(len(reps), pairs)]
    copies_of = {m[0]: m for m in by_hash.values()}
    df["duplicate_group"] = ""
    group_rows = []
    groups = [("exact", m) for m in by_hash.values() if len(m) > 1]
    in_near = set()
    for g in near_groups:
        members = sorted(x for r in g for x in copies_of[r])
        in_near |= set(members)
        groups.append(("near", members))
    groups = [(kind, m) for kind, m in groups if not (kind == "exact" and m[0] in in_near)]
    for gno, (kind, members) in enumerate(groups):
        gid = f"{'x' if kind == 'exact' else 'n'}{gno:04d}"
        group_rows.append(_resolve_group(df, R, members, gid, kind, pixels, exclude_test_duplicates))
    # Label errors and atypical images on the rows that stay.
    kept = [i for i in ok if R.status[i] != "exclude"]
    df["suggested_label"] = ""
    df["label_quality"] = np.nan
    yk = df.loc[kept, "label"].to_numpy(dtype=str)
    if kept:
        iss = label_issues_safe(X[kept], yk, label_issue_folds, seed, max_label_p, progress=progress)
        if iss is not None:
            df.loc[kept, "label_quality"] = iss["label_score"].to_numpy(float)
            suggested = df["suggested_label"].to_numpy(dtype=object)
            for k, (i, r) in enumerate(zip(kept, iss.itertuples(index=False))):
                pl = r.predicted_label
                if "label_conflict" in R.issues[i] and pl != yk[k]:
                    suggested[i] = pl
                if r.is_label_issue and pl != yk[k]:
                    suggested[i] = pl
                    R.flag(i, "label_error", f"possible label error: looks like '{pl}' "
                                             f"(p={r.p_predicted:.2f}), labelled '{yk[k]}' (out of fold: "
                                             f"linear head p={r.p_linear:.3f}, "
                                             f"{r.neighbour_share:.0%} of the nearest neighbours)",
                           "review", 1 - float(r.label_score))
            df["suggested_label"] = suggested
        from .labels import class_outliers

        for k, z in class_outliers(X[kept], yk, outlier_z).items():
            R.flag(kept[k], "atypical", f"atypical for class '{yk[k]}' (embedding outlier, z={z:.1f})", "review",
                   min(1.0, z / (4 * outlier_z)))
    df["status"] = R.status
    df["reason"] = ["; ".join(r) for r in R.reasons]
    df["issues"] = [";".join(k) for k in R.issues]
    df["severity"] = R.severity
    summary = _summary(df, R, data, group_rows, backbone, t0,
                       thresholds={"min_cos": min_cos, "min_thumb": min_thumb, "min_ncc": min_ncc,
                                   "max_residual": max_residual, "max_label_p": max_label_p,
                                   "outlier_z": outlier_z, "dark_floor": DARK_FLOOR,
                                   "exclude_test_duplicates": exclude_test_duplicates})
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    manifest = df[MANIFEST_COLUMNS + extra]
    write_text(out / "manifest.csv", csv_text(manifest, float_format="%.4f"))
    write_json(out / "audit.json", summary)
    from .html import audit_html

    write_text(out / "audit.html", audit_html(manifest, summary))
    if copy_clean is not None:
        _copy_clean(manifest, Path(copy_clean))
    return AuditResult(manifest, summary)


def label_issues_safe(X, y, folds, seed, max_p=MAX_P, progress=False):
    from .labels import label_issues

    return label_issues(X, y, folds=folds, seed=seed, max_p=max_p, progress=progress)


def _resolve_group(df, R, members, gid, kind, pixels, exclude_test_duplicates) -> dict:
    """Set statuses and reasons for one group of copies; returns its summary row."""
    labels = sorted(set(df.loc[members, "label"]))
    splits = sorted(set(df.loc[members, "split"]) - {""})
    name = "exact_duplicate" if kind == "exact" else "near_duplicate"
    noun = "exact duplicate" if kind == "exact" else "near-duplicate"
    for i in members:
        df.at[i, "duplicate_group"] = gid
    tests = [i for i in members if df.at[i, "split"] == "test"]
    leak = bool(tests) and len(tests) < len(members)
    if len(labels) > 1:
        for i in members:
            others = [f"{df.at[j, 'path']} ('{df.at[j, 'label']}')" for j in members if j != i]
            R.flag(i, "label_conflict", f"label conflict: the same image ({noun}) is labelled "
                                        f"{' and '.join(repr(x) for x in labels)}; copies: {', '.join(others)}",
                   "review", 1.0)
    if leak:
        for i in members:
            if df.at[i, "split"] != "test":
                R.flag(i, "leak", f"leak: {noun} of test image {df.at[tests[0], 'path']}; this "
                                  f"{df.at[i, 'split'] or 'unsplit'} copy is excluded, the test copy stays",
                       "exclude", 1.0)
        keep = tests[0]
    else:
        keep = max(members, key=lambda i: (pixels.get(i, 0), -i))
    if len(labels) == 1:
        for i in members:
            if i == keep or (leak and df.at[i, "split"] != "test"):
                continue
            name, noun = (("exact_duplicate", "exact duplicate") if df.at[i, "hash"] == df.at[keep, "hash"]
                          else ("near_duplicate", "near-duplicate"))
            if df.at[i, "split"] == "test" and not exclude_test_duplicates:
                R.flag(i, name, f"{noun} of {df.at[keep, 'path']} (test rows are kept; "
                                f"--exclude-test-duplicates removes them)", "review", 0.9 if kind == "exact" else 0.7)
            else:
                R.flag(i, name, f"{noun} of {df.at[keep, 'path']}, which is kept", "exclude",
                       0.9 if kind == "exact" else 0.7)
        R.reasons[keep].append(f"kept copy of {noun} group {gid} ({len(members)} files)")
    return {"group": gid, "kind": kind, "kept": df.at[keep, "path"] if len(labels) == 1 else "",
            "members": df.loc[members, "path"].tolist(), "labels": labels, "splits": splits, "leak": leak,
            "label_conflict": len(labels) > 1}


def _summary(df, R, data, group_rows, backbone, t0, thresholds) -> dict:
    findings = {FINDING_OF[k]: int(sum(k in iss for iss in R.issues)) for k in ISSUE_KINDS}
    counts = df[df["status"] != "exclude"]["label"].value_counts().sort_index()
    ratio = float(counts.max() / max(counts.min(), 1)) if len(counts) else float("nan")
    warning = ""
    if ratio > 1.5:
        warning = (f"classes are imbalanced (largest/smallest = {ratio:.1f}). Remedies: train with "
                   f"--class-weight balanced, add augmented views of the minority classes "
                   f"(--views 4 --balance-by-augmentation), or collect more images of {counts.idxmin()!r}.")
    status = df["status"].value_counts().to_dict()
    return {
        "source": str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>", "n_files": int(len(df)),
        "status": {k: int(v) for k, v in status.items()},
        "excluded_share": float(status.get("exclude", 0) / max(len(df), 1)),
        "test_rows_excluded": int(((df["split"] == "test") & (df["status"] == "exclude")).sum()),
        "findings": findings,
        "balance": {"counts": {str(k): int(v) for k, v in counts.items()}, "imbalance_ratio": ratio, "warning": warning},
        "duplicate_groups": group_rows, "backbone": backbone, "thresholds": thresholds,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "seconds": time.perf_counter() - t0,
    }


def _copy_clean(manifest: pd.DataFrame, dest: Path) -> None:
    """Copy every non-excluded file to ``dest/[<split>/]<label>/<name>``; refuses to overwrite existing files."""
    planned: set = set()
    for r in manifest[manifest["status"] != "exclude"].itertuples():
        folder = dest / str(r.split) / str(r.label) if str(r.split) else dest / str(r.label)
        target = folder / Path(r.path).name
        if target in planned:
            target = folder / f"{Path(r.path).stem}-{str(r.hash)[:8]}{Path(r.path).suffix}"
        planned.add(target)
        if target.exists():
            raise FileExistsError(f"'{target}' already exists; frugalvision never overwrites files. "
                                  f"Pass an empty folder to --copy-clean.")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(r.path, target)


def suggest_labels(labelled, unlabelled, *, backbone: str = "efficientnet_lite0", engine: str = "auto",
                   cache_dir=None, progress: bool = True) -> pd.DataFrame:
    """Rank unlabelled images by how much labelling them would help (most uncertain first)."""
    from ..data.discover import discover, list_image_files
    from ..features.extract import Extractor
    from ..heads import LinearHead

    ex = Extractor(backbone, engine=engine, cache_dir=cache_dir, progress=progress)
    lab = discover(labelled)
    e_lab = ex(lab["path"].tolist())
    y = lab["label"].to_numpy(dtype=str)[e_lab.ok]
    if len(set(y)) < 2:
        raise DataError("suggest needs labelled examples of at least 2 classes.")
    head = LinearHead(C=0.1).fit(e_lab.X, y)
    files = list_image_files(unlabelled)
    e_un = ex(files)
    p = head.predict_proba(e_un.X)
    order = np.argsort(-p, axis=1)
    top1 = p[np.arange(len(p)), order[:, 0]]
    top2 = p[np.arange(len(p)), order[:, 1]]
    ok_paths = [f for f, k in zip(files, e_un.ok) if k]
    table = pd.DataFrame({"path": ok_paths, "suggested_label": head.classes_[order[:, 0]], "probability": top1,
                          "runner_up": head.classes_[order[:, 1]], "margin": top1 - top2})
    table = table.sort_values("margin").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table
