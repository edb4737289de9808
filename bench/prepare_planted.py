"""Precision / recall of ``frugalvision prepare`` on Fashion-MNIST with planted problems, and on a clean set.

    python bench/prepare_planted.py [--root /tmp/fv_prepare_bench] [--n 2000]

Planted in 2,000 Fashion-MNIST training images (train 1,600 / test 400, 28x28 PNG):
5 exact duplicates (byte copies), 3 train/test leaks (a train image re-encoded as JPEG and resized into test/),
3 near-duplicates (resized+JPEG, cropped, re-encoded copies in train/), 1 corrupt file, 12 mislabelled images
(moved to another class folder), 1 very dark image, and 2 same-image/different-label copies (label conflicts).
The clean set is 2,000 other Fashion-MNIST images with nothing planted.

How pairs are judged: a reported near-duplicate (or leak) pair is *true* when both files come from the same
source image (planted) or, for pairs among the original images, when their 28x28 pixels are almost the same
(mean absolute difference < 6 grey levels after resizing to 28x28): Fashion-MNIST itself holds a few such copies.
The same judge labels every pair, so "precision" is judged pairs / reported pairs; a sample of the pairs that
fail the judge is written as a contact sheet (``pairs_false.png``) for a person to look at.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import FASHION_NAMES, _idx  # noqa: E402


def _save(arr, p: Path):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(p)


def plant(root: Path, n: int = 2000, offset: int = 0, planted: bool = True, seed: int = 0) -> dict:
    """Write the data set under ``root``; return the truth: {kind: [relative paths]} and source of each file."""
    images, labels = _idx("train-images-idx3-ubyte"), _idx("train-labels-idx1-ubyte")
    rng = np.random.default_rng(seed)
    if root.exists():
        shutil.rmtree(root)
    source, truth = {}, {k: [] for k in ("exact_duplicate", "leak", "near_duplicate", "unreadable", "label_error",
                                         "too_dark", "label_conflict")}
    idx = np.arange(offset, offset + n)
    split = np.where(rng.random(n) < 0.8, "train", "test")
    true_label = {}
    for k, i in enumerate(idx):
        rel = f"{split[k]}/{FASHION_NAMES[labels[i]]}/{i:05d}.png"
        _save(images[i], root / rel)
        source[rel] = int(i)
        true_label[rel] = FASHION_NAMES[labels[i]]
    if not planted:
        return {"truth": truth, "source": source, "true_label": true_label}
    train_rows = [k for k in range(n) if split[k] == "train"]
    pick = iter(rng.permutation(train_rows).tolist())

    def rel_of(k):
        i = idx[k]
        return f"{split[k]}/{FASHION_NAMES[labels[i]]}/{i:05d}.png"

    for j in range(5):  # exact duplicates: the same bytes under another name, same class folder
        k = next(pick)
        rel = rel_of(k).replace(".png", f"_copy{j}.png")
        shutil.copyfile(root / rel_of(k), root / rel)
        source[rel] = int(idx[k])
        truth["exact_duplicate"].append(rel)
    for j in range(3):  # leaks: a train image resized + JPEG into test/
        k = next(pick)
        rel = rel_of(k).replace("train/", "test/").replace(".png", "_leak.jpg")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[idx[k]]).resize((32, 32), Image.Resampling.BICUBIC).save(root / rel, quality=85)
        source[rel] = int(idx[k])
        truth["leak"].append(rel)
    for j, how in enumerate(("resize", "crop", "jpeg")):  # near-duplicates inside train/
        k = next(pick)
        im = Image.fromarray(images[idx[k]])
        rel = rel_of(k).replace(".png", f"_near{j}.jpg")
        if how == "resize":
            im = im.resize((40, 40), Image.Resampling.BILINEAR)
        elif how == "crop":
            im = im.crop((1, 1, 27, 27))
        im.save(root / rel, quality=70)
        source[rel] = int(idx[k])
        truth["near_duplicate"].append(rel)
    rel = "train/bag/corrupt.png"  # corrupt: a truncated PNG
    buf = io.BytesIO()
    Image.fromarray(images[idx[next(pick)]]).save(buf, format="PNG")
    (root / rel).write_bytes(buf.getvalue()[:60])
    truth["unreadable"].append(rel)
    for j in range(12):  # mislabelled: moved into another class folder
        k = next(pick)
        wrong = FASHION_NAMES[(labels[idx[k]] + 1 + rng.integers(0, 9)) % 10]
        old = rel_of(k)
        rel = f"train/{wrong}/{idx[k]:05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / old).rename(root / rel)
        source[rel] = source.pop(old)
        true_label[rel] = true_label.pop(old)
        truth["label_error"].append(rel)
    k = next(pick)  # very dark: the same image at 8 % brightness
    dark = (images[idx[k]].astype(np.float32) * 0.08).astype(np.uint8)
    old = rel_of(k)
    _save(dark, root / old)
    truth["too_dark"].append(old)
    for j in range(2):  # label conflict: byte copy in another class folder (the copy is the wrong one)
        k = next(pick)
        wrong = FASHION_NAMES[(labels[idx[k]] + 3) % 10]
        rel = f"train/{wrong}/{idx[k]:05d}_conflict.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel_of(k), root / rel)
        source[rel] = int(idx[k])
        true_label[rel] = FASHION_NAMES[labels[idx[k]]]
        truth["label_conflict"].append(rel)
    return {"truth": truth, "source": source, "true_label": true_label}


def _small(path: Path):
    try:
        return np.asarray(Image.open(path).convert("L").resize((28, 28), Image.Resampling.BILINEAR), np.float32)
    except Exception:
        return None


def judge_pair(root: Path, a: str, b: str, source: dict) -> bool:
    if a in source and b in source and source[a] == source[b]:
        return True
    x, y = _small(root / a), _small(root / b)
    return x is not None and y is not None and float(np.abs(x - y).mean()) < 6.0


def contact_sheet(root: Path, pairs, out: Path, max_pairs: int = 40):
    pairs = pairs[:max_pairs]
    if not pairs:
        return
    sheet = Image.new("L", (2 * 60 + 10, 60 * len(pairs)), 255)
    for r, (a, b) in enumerate(pairs):
        for c, p in enumerate((a, b)):
            x = _small(root / p)
            if x is not None:
                sheet.paste(Image.fromarray(x.astype(np.uint8)).resize((56, 56)), (c * 65, r * 60))
    sheet.save(out)


def evaluate(root: Path, out: Path, info: dict, **kw) -> dict:
    import pandas as pd

    from frugalvision.curate import prepare

    t0 = time.perf_counter()
    res = prepare(root, out, overwrite=True, progress=False, **kw)
    seconds = time.perf_counter() - t0
    m = res.manifest.copy()
    m["rel"] = [Path(p).resolve().relative_to(root.resolve()).as_posix() for p in m["path"]]
    m = m.set_index("rel")
    truth, source = info["truth"], info["source"]
    kinds = m["issues"].fillna("").str.split(";")
    flagged = {k: set(m.index[kinds.map(lambda s, k=k: k in s)]) for k in
               ("exact_duplicate", "near_duplicate", "leak", "unreadable", "label_error", "too_dark", "label_conflict",
                "blurry", "too_bright", "atypical", "tiny", "low_information", "odd_aspect", "scan_failed")}
    report = {"seconds": round(seconds, 1), "n_files": len(m), "status": m["status"].value_counts().to_dict(),
              "excluded_share": round(float((m["status"] == "exclude").mean()), 4),
              "test_rows_excluded": int(((m["split"] == "test") & (m["status"] == "exclude")).sum()),
              "flagged": {k: len(v) for k, v in flagged.items()}, "per_issue": {}}
    # Pairs of near-duplicate / leak groups, judged.
    groups = m[m["duplicate_group"].fillna("") != ""].groupby("duplicate_group")
    pairs, leak_pairs = [], []
    for _, g in groups:
        rels = list(g.index)
        for i in range(len(rels)):
            for j in range(i + 1, len(rels)):
                pr = (rels[i], rels[j])
                pairs.append(pr)
                if {m.at[rels[i], "split"], m.at[rels[j], "split"]} == {"train", "test"}:
                    leak_pairs.append(pr)
    judged = [judge_pair(root, a, b, source) for a, b in pairs]
    judged_leak = [judge_pair(root, a, b, source) for a, b in leak_pairs]
    report["group_sizes"] = groups.size().value_counts().sort_index().to_dict() if len(pairs) else {}
    report["pairs"] = {"reported": len(pairs), "judged_true": int(sum(judged)),
                       "precision": round(sum(judged) / len(pairs), 3) if pairs else None}
    report["leak_pairs"] = {"reported": len(leak_pairs), "judged_true": int(sum(judged_leak)),
                            "precision": round(sum(judged_leak) / len(leak_pairs), 3) if leak_pairs else None}
    contact_sheet(root, [p for p, ok in zip(pairs, judged) if not ok], out / "pairs_false.png")
    contact_sheet(root, [p for p, ok in zip(pairs, judged) if ok], out / "pairs_true.png")
    # Per planted kind: recall of the planted files and precision of the flag.
    for kind, files in truth.items():
        if not files:
            continue
        flag = flagged.get(kind, set())
        hit = [f for f in files if f in flag]
        if kind in ("near_duplicate", "leak"):
            # found = the planted copy sits in a group with its source, and the group carries the flag
            # (for a leak the flag is on the train copy, which is the one excluded)
            hit = []
            for f in files:
                g = m.at[f, "duplicate_group"] if f in m.index else ""
                mates = set(m.index[m["duplicate_group"] == g]) if g else set()
                if any(source.get(x) == source[f] for x in mates - {f}) and mates & flag:
                    hit.append(f)
        if kind in ("near_duplicate", "leak", "exact_duplicate", "label_conflict"):
            # precision judged per flagged file: it belongs to a group/pair that the judge calls a copy
            good = set()
            for (a, b), ok in zip(pairs, judged):
                if ok:
                    good |= {a, b}
            if kind in ("exact_duplicate", "label_conflict"):
                h = m["hash"]
                good = set(m.index[h.duplicated(keep=False)])
            prec = len(flag & good) / len(flag) if flag else None
        elif kind == "label_error":
            wrong = {r for r in m.index if r in info["true_label"] and info["true_label"][r] != m.at[r, "label"]}
            prec = len(flag & wrong) / len(flag) if flag else None
        else:
            prec = len(flag & set(files)) / len(flag) if flag else None
        report["per_issue"][kind] = {"planted": len(files), "found": len(hit), "recall": round(len(hit) / len(files), 3),
                                     "flagged": len(flag), "precision": None if prec is None else round(prec, 3),
                                     "missed": [f for f in files if f not in hit]}
    report["missed"] = {k: v["missed"] for k, v in report["per_issue"].items() if v["missed"]}
    for f in truth.get("label_conflict", []):
        report.setdefault("conflict_rows", []).append(m.loc[m.index[m["hash"] == m.at[f, "hash"]],
                                                            ["label", "status", "reason"]].to_dict("records"))
    return report


def datalab_compare(out: Path, root: Path, info: dict) -> dict:
    """cleanlab Datalab on the same features / out-of-fold probabilities, judged the same way."""
    import pandas as pd
    from cleanlab import Datalab

    from frugalvision.curate.labels import out_of_fold_proba
    from frugalvision.features.extract import Extractor

    m = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    m = m[m["issues"].str.contains("unreadable") == False].reset_index(drop=True)  # noqa: E712
    ex = Extractor("efficientnet_lite0", progress=False)
    emb = ex(m["path"].tolist())
    m = m[emb.ok].reset_index(drop=True)
    X = emb.X
    classes = sorted(set(m["label"]))
    pred = out_of_fold_proba(X, m["label"].to_numpy(str), classes, 5, 0)
    t0 = time.perf_counter()
    lab = Datalab(pd.DataFrame({"label": m["label"]}), label_name="label", verbosity=0)
    lab.find_issues(features=X, pred_probs=pred, issue_types={"near_duplicate": {}, "label": {}, "outlier": {}})
    sec = time.perf_counter() - t0
    iss = lab.get_issues()
    rel = [Path(p).resolve().relative_to(root.resolve()).as_posix() for p in m["path"]]
    nd = iss.index[iss["is_near_duplicate_issue"]].tolist()
    sets = lab.get_info("near_duplicate")["near_duplicate_sets"]
    pairs = {tuple(sorted((rel[i], rel[j]))) for i in nd for j in sets[i]}
    judged = [judge_pair(root, a, b, info["source"]) for a, b in pairs]
    li = {rel[i] for i in iss.index[iss["is_label_issue"]]}
    wrong = {r for r in rel if r in info["true_label"] and info["true_label"][r] != m.at[rel.index(r), "label"]}
    planted = set(info["truth"]["label_error"])
    nd_files = {rel[i] for i in nd}
    planted_nd = set(info["truth"]["near_duplicate"] + info["truth"]["leak"])
    return {"seconds": round(sec, 1),
            "near_duplicate": {"files_flagged": len(nd), "pairs": len(pairs), "judged_true": int(sum(judged)),
                               "precision": round(sum(judged) / max(len(pairs), 1), 3),
                               "recall_planted": round(len(planted_nd & nd_files) / len(planted_nd), 3)},
            "label": {"flagged": len(li), "recall_planted": round(len(planted & li) / len(planted), 3),
                      "precision": round(len(li & wrong) / max(len(li), 1), 3)},
            "outlier": {"flagged": int(iss["is_outlier_issue"].sum())}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/tmp/fv_prepare_bench"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--datalab", action="store_true", help="also run cleanlab Datalab on the planted set")
    a = ap.parse_args()
    results = {}
    for name, planted, offset in (("planted", True, 0), ("clean", False, 10000)):
        root = a.root / name / "data"
        info = plant(root, a.n, offset=offset, planted=planted)
        evaluate(root, a.root / name / "warm", info)  # fills the embedding cache
        results[name] = evaluate(root, a.root / name / "prepared", info)
        if a.datalab and planted:
            results["datalab_" + name] = datalab_compare(a.root / name / "prepared", root, info)
        print(name, json.dumps(results[name], indent=1, default=str), flush=True)
    (a.root / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
