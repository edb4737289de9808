"""Audit a labelled image set and write a clean manifest, without touching the user's files.

Findings, each with a reason a person can act on:

- unreadable files (why), exact duplicates (same bytes), near-duplicates (perceptual hash from
  ``imagehash`` *and* embedding cosine similarity), grouped, with the copy that is kept;
- leakage: near-duplicate groups that straddle train and test; the manifest keeps one copy and
  records a ``duplicate_group`` column so that ``train`` keeps any group inside one split;
- class balance: counts, imbalance ratio, a warning with remedies;
- quality outliers: too dark, too bright, near-constant, blurry and tiny (relative to the data set),
  extreme aspect ratio;
- non-representative images: embedding outliers within their class, and likely label errors from
  out-of-fold predicted probabilities (cleanlab's confident learning), with the suggested label.

Output: ``manifest.csv`` (one row per file: status ``keep``/``review``/``exclude`` and the reasons;
``train`` drops ``exclude`` rows), ``audit.json``, ``audit.html``. Nothing in the source folder is
moved, renamed, modified or deleted; ``copy_clean`` writes a cleaned *copy* elsewhere.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import refuse_overwrite, write_json, write_text
from ..exceptions import DataError
from .decode import load_rgb_array
from .discover import discover, list_image_files

__all__ = ["prepare", "suggest_labels", "AuditResult", "quality_metrics"]

DARK, BRIGHT, CONSTANT_STD, EXTREME_ASPECT = 20.0, 240.0, 4.0, 4.0


@dataclass
class AuditResult:
    manifest: pd.DataFrame
    summary: dict

    def text(self) -> str:
        s = self.summary
        lines = [f"Audited {s['n_files']} files in {s['seconds']:.1f} s: {s['status'].get('keep', 0)} keep, "
                 f"{s['status'].get('review', 0)} to review, {s['status'].get('exclude', 0)} excluded."]
        for k, v in s["findings"].items():
            if v:
                lines.append(f"  {k.replace('_', ' ')}: {v}")
        b = s["balance"]
        lines.append(f"Class balance (kept): {b['counts']} - imbalance ratio {b['imbalance_ratio']:.2f}")
        if b["warning"]:
            lines.append("  WARNING: " + b["warning"])
        return "\n".join(lines)


def quality_metrics(arr: np.ndarray) -> dict:
    """Brightness, contrast and sharpness of an RGB uint8 image (sharpness = variance of the Laplacian)."""
    import cv2

    grey = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)
    scale = 256 / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return {"brightness": float(grey.mean()), "contrast": float(grey.std()),
            "sharpness": float(cv2.Laplacian(grey, cv2.CV_64F).var())}


def _scan(paths):
    """Header size, quality metrics and perceptual hash per readable file (threads)."""
    from concurrent.futures import ThreadPoolExecutor

    import imagehash
    from PIL import Image

    def one(p):
        try:
            with Image.open(p) as im:
                w, h = im.size
            arr = load_rgb_array(p, min_side=256)
            ph = imagehash.phash(Image.fromarray(arr))
            return {"width": w, "height": h, **quality_metrics(arr), "phash": int(str(ph), 16)}
        except Exception:
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, paths))


def _union_find(n, pairs):
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def _near_pairs(X: np.ndarray, phash: np.ndarray, *, max_hamming: int, min_cos: float, min_cos_alone: float,
                max_hamming_alone: int = 2, block: int = 1024):
    """Pairs (i < j) that look like copies of each other.

    Either signal can miss alone: re-compression can move embeddings of noisy textures a lot while the
    perceptual hash barely changes, and a crop moves the hash while the embedding stays put. A pair is
    kept when pHash distance <= ``max_hamming_alone``, or pHash <= ``max_hamming`` with cosine >= ``min_cos``,
    or cosine >= ``min_cos_alone``.
    """
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    bits = np.unpackbits(phash.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    pairs = []
    for s in range(0, len(X), block):
        cos = Xn[s:s + block] @ Xn.T
        ham = (bits[s:s + block, None, :] != bits[None, :, :]).sum(axis=2) if len(X) <= 4096 else None
        cand = cos >= min_cos_alone
        if ham is not None:
            cand |= (ham <= max_hamming_alone) | ((ham <= max_hamming) & (cos >= min_cos))
        else:  # large sets: pHash only confirms embedding candidates
            c2 = np.argwhere(cos >= min_cos)
            for i, j in c2:
                if np.count_nonzero(bits[s + i] != bits[j]) <= max_hamming:
                    cand[i, j] = True
        for i, j in np.argwhere(cand):
            if s + i < j:
                pairs.append((s + i, int(j), float(cos[i, j])))
    return pairs


def prepare(data, out, *, backbone: str = "efficientnet_lite0", engine: str = "auto", cache_dir=None,
            max_hamming: int = 8, min_cos: float = 0.95, min_cos_alone: float = 0.98, max_hamming_alone: int = 2,
            outlier_z: float = 4.0, label_issue_folds: int = 5, copy_clean=None, overwrite: bool = False,
            progress: bool = True, seed: int = 0) -> AuditResult:
    """Audit ``data`` (folder or manifest) and write ``out/manifest.csv``, ``audit.json`` and ``audit.html``."""
    import time

    from ..features.extract import Extractor

    t0 = time.perf_counter()
    out = Path(out)
    for name in ("manifest.csv", "audit.json", "audit.html"):
        refuse_overwrite(out / name, overwrite, "audit file")
    df = discover(data, require_labels=True) if not isinstance(data, pd.DataFrame) else data.copy()
    df = df.sort_values("path", kind="stable").reset_index(drop=True)
    n = len(df)
    status = np.array(["keep"] * n, dtype=object)
    reasons: list[list[str]] = [[] for _ in range(n)]
    suggested = np.array([""] * n, dtype=object)
    findings = {k: 0 for k in ("unreadable", "exact_duplicates", "near_duplicates", "leaks", "label_conflicts",
                               "too_dark", "too_bright", "near_constant", "blurry", "tiny", "extreme_aspect",
                               "class_outliers", "label_issues")}

    def flag(i, st, why, key):
        reasons[i].append(why)
        findings[key] += 1
        if st == "exclude" or status[i] == "keep":
            status[i] = st

    ex = Extractor(backbone, engine=engine, cache_dir=cache_dir, progress=progress)
    emb = ex(df["path"].tolist())
    for p, why in emb.failures:
        flag(int(df.index[df["path"] == p][0]), "exclude", f"unreadable: {why}", "unreadable")
    ok = np.flatnonzero(emb.ok)
    X = emb.X
    df["hash"] = emb.hashes
    # Exact duplicates: same bytes. Keep the first path.
    first_of = {}
    for i in ok:
        h = df.at[i, "hash"]
        if h in first_of:
            flag(i, "exclude", f"exact duplicate of {df.at[first_of[h], 'path']}", "exact_duplicates")
        else:
            first_of[h] = i
    # Quality and perceptual hashes.
    scans = _scan(df["path"].iloc[ok].tolist())
    q = pd.DataFrame([s or {} for s in scans], index=ok)
    df = df.join(q)
    min_side = np.minimum(df["width"], df["height"])
    med_side, med_sharp = float(np.nanmedian(min_side)), float(np.nanmedian(df["sharpness"]))
    # Dark/bright only when unusual for this data set too (product shots on black are dark by design).
    bright = df["brightness"]
    b_med = float(np.nanmedian(bright))
    b_mad = float(np.nanmedian(np.abs(bright - b_med))) * 1.4826 + 1e-9
    for i in ok:
        r = df.loc[i]
        if pd.isna(r.get("brightness")):
            continue
        if r["brightness"] < DARK and (r["brightness"] - b_med) / b_mad < -3:
            flag(i, "review", f"too dark (mean brightness {r['brightness']:.0f}/255)", "too_dark")
        if r["brightness"] > BRIGHT and (r["brightness"] - b_med) / b_mad > 3:
            flag(i, "review", f"too bright (mean brightness {r['brightness']:.0f}/255)", "too_bright")
        if r["contrast"] < CONSTANT_STD:
            flag(i, "review", f"nearly constant image (contrast {r['contrast']:.1f})", "near_constant")
        elif r["sharpness"] < 0.1 * med_sharp:
            flag(i, "review", f"blurry (sharpness {r['sharpness']:.0f} vs data median {med_sharp:.0f})", "blurry")
        side = min(r["width"], r["height"])
        if side < max(16, 0.25 * med_side):
            flag(i, "review", f"tiny ({int(r['width'])}x{int(r['height'])} vs median side {med_side:.0f})", "tiny")
        if max(r["width"], r["height"]) / max(side, 1) > EXTREME_ASPECT:
            flag(i, "review", f"extreme aspect ratio {int(r['width'])}x{int(r['height'])}", "extreme_aspect")
    # Near-duplicates (among readable, non-exact-duplicate files).
    uniq = [i for i in ok if not any(r.startswith("exact duplicate") for r in reasons[i])]
    row_of = {i: k for k, i in enumerate(ok)}
    Xu = X[[row_of[i] for i in uniq]]
    ph = df.loc[uniq, "phash"].fillna(0).astype(np.uint64).to_numpy()
    pairs = _near_pairs(Xu, ph, max_hamming=max_hamming, min_cos=min_cos, min_cos_alone=min_cos_alone,
                        max_hamming_alone=max_hamming_alone)
    roots = _union_find(len(uniq), [(a, b) for a, b, _ in pairs])
    df["duplicate_group"] = ""
    groups: dict[int, list[int]] = {}
    for k, r in enumerate(roots):
        groups.setdefault(r, []).append(uniq[k])
    group_rows = []
    for members in (m for m in groups.values() if len(m) > 1):
        gid = f"g{members[0]}"
        pixels = {i: float(df.at[i, "width"] * df.at[i, "height"]) if not pd.isna(df.at[i, "width"]) else 0 for i in members}
        keep = max(members, key=lambda i: (pixels[i], -i))
        labels = set(df.loc[members, "label"])
        splits = set(df.loc[members, "split"]) - {""}
        for i in members:
            df.at[i, "duplicate_group"] = gid
            if i != keep:
                flag(i, "exclude", f"near-duplicate of {df.at[keep, 'path']}", "near_duplicates")
        if len(labels) > 1:
            for i in members:
                flag(i, "review", f"near-duplicates carry different labels: {sorted(labels)}", "label_conflicts")
        if {"train", "test"} <= splits or ({"val", "test"} <= splits):
            findings["leaks"] += 1
            for i in members:
                reasons[i].append(f"leak: this group spans {sorted(splits)}; only {df.at[keep, 'path']} is kept, "
                                  f"in split '{df.at[keep, 'split']}'")
        group_rows.append({"group": gid, "kept": df.at[keep, "path"], "members": df.loc[members, "path"].tolist(),
                           "labels": sorted(labels), "splits": sorted(splits)})
    # Class outliers and label issues on the kept rows.
    kept = [i for i in ok if status[i] != "exclude"]
    Xk = X[[row_of[i] for i in kept]]
    yk = df.loc[kept, "label"].to_numpy(dtype=str)
    classes = sorted(set(yk))
    Xn = Xk / np.maximum(np.linalg.norm(Xk, axis=1, keepdims=True), 1e-12)
    for c in classes:
        m = yk == c
        if m.sum() < 8:
            continue
        centre = Xn[m].mean(axis=0)
        d = 1 - Xn[m] @ (centre / np.linalg.norm(centre))
        mad = np.median(np.abs(d - np.median(d))) * 1.4826 + 1e-9
        z = (d - np.median(d)) / mad
        for i, zi in zip(np.asarray(kept)[m], z):
            if zi > outlier_z:
                flag(i, "review", f"atypical for class '{c}' (embedding outlier, z={zi:.1f})", "class_outliers")
    df["suggested_label"] = ""
    df["label_quality"] = np.nan
    if len(classes) >= 2 and min(np.unique(yk, return_counts=True)[1]) >= label_issue_folds:
        pred = _out_of_fold_proba(Xk, yk, classes, label_issue_folds, seed)
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        y_idx = np.array([classes.index(c) for c in yk])
        issues = find_label_issues(y_idx, pred, filter_by="prune_by_noise_rate")
        quality = get_label_quality_scores(y_idx, pred)
        for k, i in enumerate(kept):
            df.at[i, "label_quality"] = float(quality[k])
            if issues[k]:
                s_lab = classes[int(pred[k].argmax())]
                suggested[i] = s_lab
                flag(i, "review", f"possible label error: looks like '{s_lab}' (p={pred[k].max():.2f}), "
                                  f"labelled '{yk[k]}'", "label_issues")
    df["suggested_label"] = suggested
    df["status"] = status
    df["reason"] = ["; ".join(r) for r in reasons]
    counts = df[df["status"] != "exclude"]["label"].value_counts().sort_index()
    ratio = float(counts.max() / max(counts.min(), 1)) if len(counts) else float("nan")
    warning = ""
    if ratio > 1.5:
        warning = (f"classes are imbalanced (largest/smallest = {ratio:.1f}). Remedies: train with "
                   f"--class-weight balanced, add augmented views of the minority classes "
                   f"(--views 4 --balance-by-augmentation), or collect more images of {counts.idxmin()!r}.")
    summary = {
        "source": str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>", "n_files": n,
        "status": df["status"].value_counts().to_dict(), "findings": findings,
        "balance": {"counts": {str(k): int(v) for k, v in counts.items()}, "imbalance_ratio": ratio, "warning": warning},
        "near_duplicate_groups": group_rows, "backbone": backbone,
        "thresholds": {"max_hamming_alone": max_hamming_alone, "max_hamming": max_hamming, "min_cos": min_cos, "min_cos_alone": min_cos_alone,
                       "outlier_z": outlier_z, "dark": DARK, "bright": BRIGHT},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "seconds": time.perf_counter() - t0,
    }
    cols = ["path", "label", "split", "status", "reason", "suggested_label", "duplicate_group", "hash", "width", "height",
            "brightness", "contrast", "sharpness", "label_quality"]
    extra = [c for c in df.columns if c not in cols and c != "phash"]
    manifest = df[cols + extra]
    write_text(out / "manifest.csv", manifest.to_csv(index=False, float_format="%.4f"))
    write_json(out / "audit.json", summary)
    from .audit_html import audit_html

    write_text(out / "audit.html", audit_html(manifest, summary))
    if copy_clean is not None:
        _copy_clean(manifest, Path(copy_clean))
    return AuditResult(manifest, summary)


def _out_of_fold_proba(X, y, classes, folds, seed):
    from sklearn.model_selection import StratifiedKFold

    from ..heads import LinearHead

    pred = np.zeros((len(y), len(classes)))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        head = LinearHead(C=0.01).fit(X[tr], y[tr])
        p = head.predict_proba(X[te])
        for j, c in enumerate(head.classes_):
            pred[te, classes.index(c)] = p[:, j]
    return pred


def _copy_clean(manifest: pd.DataFrame, dest: Path) -> None:
    """Copy every non-excluded file to ``dest/[<split>/]<label>/<name>``; refuses to overwrite existing files.

    Two sources with the same name in one class folder get the content hash appended to the second.
    """
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
    """Rank unlabelled images by how much labelling them would help (most uncertain first).

    A linear head is trained on the few labelled examples (5-20 per class is enough to start);
    each unlabelled image gets the proposed label, its probability and the margin between the
    two most likely classes (small margin = uncertain = label it first).
    """
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
