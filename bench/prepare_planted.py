"""Precision / recall of ``frugalvision prepare`` on Fashion-MNIST with planted problems, and on a clean set.

    python bench/prepare_planted.py [--root /tmp/fv_prepare_bench] [--n 2000] [--label-seeds 10] [--verify-synthetic]

Data: Fashion-MNIST training images from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``,
see ``bench/datasets.py``), written as 28x28 PNG files, train 80 % / test 20 %.

Planted in 2,000 images (:func:`plant`; every planted file records the Fashion-MNIST index it comes from):

* 5 exact duplicates (byte copies under another name, same class folder);
* 6 train/test leaks: a train image copied into ``test/`` re-encoded (JPEG q75), resized (32 px, JPEG q85;
  56 px PNG) or cropped by 1 px (JPEG q85);
* 9 near-duplicates inside ``train/``: JPEG at quality 50 / 70 / 90, resized (40 px JPEG q70, 22 px JPEG q90,
  56 px PNG), cropped (1 px on every side, JPEG q70; 2 px left + 1 px bottom, PNG; 1 px top + 2 px right then
  resized to 32 px, JPEG q85);
* 3 corrupt files (a truncated PNG, an empty file, random bytes named .jpg);
* 12 mislabelled images (moved to a random other class folder);
* 3 very dark images (the same image at 5 %, 8 % and 12 % brightness) and 2 blurry ones (Gaussian blur
  radius 1.5 px);
* 2 label conflicts (a byte copy in another class folder; the copy is the wrong one).

The clean set is 2,000 other Fashion-MNIST images with nothing planted.

How precision is judged
    *Recall* of a planted copy (exact, near, leak): the copy is in one duplicate group with the image it
    was made from, and the group carries the flag (for a leak: ``leak`` on the train copy). Each
    reported pair of a duplicate group is judged **true** when both files come from the same Fashion-MNIST
    image (planted), or when their 28x28 grey pixels differ by less than 6 grey levels on average
    (Fashion-MNIST itself holds a few such re-uploads). The pairs that fail this judge are *unplanted*
    pairs between distinct originals: they are listed and drawn on ``pairs_unplanted.png`` so that a
    person can check whether they are the same photo after all (a reviewer's count goes into the report by
    hand). Near-duplicate precision = true pairs / reported pairs among groups that are not plain byte
    copies; leak precision = true pairs / reported pairs spanning train and test.
    *Label errors*: a flag is correct when the folder label differs from the Fashion-MNIST label
    (so the data set's own label noise counts as a false flag). *Dark, blurry, corrupt*: a flag is
    correct on a planted file.

``--label-seeds N`` also plants 12 label errors N times at random into the clean set (embeddings from
the cache, no files) and reports the label-error recall and flag count of each run: one planting is a
small sample. ``--verify-synthetic`` measures the near-duplicate verification alone
(:func:`verify_synthetic`): synthetic copies of the clean images, their look-alike candidate pairs, and
generated shapes moved, recoloured or drawn larger.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter



def _bench_datasets():
    """``bench/datasets.py`` under another module name: on sys.path it would hide Hugging Face's ``datasets``,
    which cleanlab's Datalab imports (``bench/prepare_compare.py``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fv_bench_datasets", Path(__file__).resolve().parent / "datasets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_bd = _bench_datasets()
FASHION_NAMES, _idx = _bd.FASHION_NAMES, _bd._idx

KINDS = ("exact_duplicate", "leak", "near_duplicate", "unreadable", "label_error", "too_dark", "blurry",
         "label_conflict")


def _save(img, p: Path, **kw):
    p.parent.mkdir(parents=True, exist_ok=True)
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(p, **kw)


def plant(root: Path, n: int = 2000, offset: int = 0, planted: bool = True, seed: int = 0) -> dict:
    """Write the data set under ``root``; return the truth: {kind: [relative paths]} and the source of each file."""
    images, labels = _idx("train-images-idx3-ubyte"), _idx("train-labels-idx1-ubyte")
    rng = np.random.default_rng(seed)
    if root.exists():
        shutil.rmtree(root)
    source, truth = {}, {k: [] for k in KINDS}
    idx = np.arange(offset, offset + n)
    split = np.where(rng.random(n) < 0.8, "train", "test")
    true_label = {}
    for k, i in enumerate(idx):
        rel = f"{split[k]}/{FASHION_NAMES[labels[i]]}/{i:05d}.png"
        _save(images[i], root / rel)
        source[rel] = int(i)
        true_label[rel] = FASHION_NAMES[labels[i]]
    info = {"truth": truth, "source": source, "true_label": true_label}
    if not planted:
        return info
    train_rows = [k for k in range(n) if split[k] == "train"]
    pick = iter(rng.permutation(train_rows).tolist())

    def rel_of(k):
        return f"{split[k]}/{FASHION_NAMES[labels[idx[k]]]}/{idx[k]:05d}.png"

    def add(kind, rel, k, label_of_copy=None):
        source[rel] = int(idx[k])
        true_label[rel] = FASHION_NAMES[labels[idx[k]]]
        truth[kind].append(rel)

    for j in range(5):  # exact duplicates: the same bytes under another name, same class folder
        k = next(pick)
        rel = rel_of(k).replace(".png", f"_copy{j}.png")
        shutil.copyfile(root / rel_of(k), root / rel)
        add("exact_duplicate", rel, k)
    leaks = (("jpeg75", lambda im: im, {"quality": 75}, "jpg"),
             ("resize32", lambda im: im.resize((32, 32), Image.Resampling.BICUBIC), {"quality": 85}, "jpg"),
             ("resize32b", lambda im: im.resize((32, 32), Image.Resampling.BICUBIC), {"quality": 85}, "jpg"),
             ("resize56", lambda im: im.resize((56, 56), Image.Resampling.BILINEAR), {}, "png"),
             ("crop1", lambda im: im.crop((1, 1, 27, 27)), {"quality": 85}, "jpg"),
             ("jpeg75b", lambda im: im, {"quality": 75}, "jpg"))
    for name, how, kw, ext in leaks:  # leaks: a train image copied into test/
        k = next(pick)
        rel = rel_of(k).replace("train/", "test/").replace(".png", f"_leak_{name}.{ext}")
        _save(how(Image.fromarray(images[idx[k]])), root / rel, **kw)
        add("leak", rel, k)
    nears = (("jpeg50", lambda im: im, {"quality": 50}, "jpg"),
             ("jpeg70", lambda im: im, {"quality": 70}, "jpg"),
             ("jpeg90", lambda im: im, {"quality": 90}, "jpg"),
             ("resize40", lambda im: im.resize((40, 40), Image.Resampling.BILINEAR), {"quality": 70}, "jpg"),
             ("resize22", lambda im: im.resize((22, 22), Image.Resampling.LANCZOS), {"quality": 90}, "jpg"),
             ("resize56", lambda im: im.resize((56, 56), Image.Resampling.BICUBIC), {}, "png"),
             ("crop1", lambda im: im.crop((1, 1, 27, 27)), {"quality": 70}, "jpg"),
             ("crop_l2b1", lambda im: im.crop((2, 0, 28, 27)), {}, "png"),
             ("crop_t1r2_resize", lambda im: im.crop((0, 1, 26, 28)).resize((32, 32), Image.Resampling.BICUBIC),
              {"quality": 85}, "jpg"))
    for name, how, kw, ext in nears:  # near-duplicates inside train/
        k = next(pick)
        rel = rel_of(k).replace(".png", f"_near_{name}.{ext}")
        _save(how(Image.fromarray(images[idx[k]])), root / rel, **kw)
        add("near_duplicate", rel, k)
    buf = io.BytesIO()  # corrupt: a truncated PNG, an empty file, random bytes named .jpg
    Image.fromarray(images[idx[next(pick)]]).save(buf, format="PNG")
    for rel, data in (("train/bag/corrupt_truncated.png", buf.getvalue()[:60]), ("train/coat/corrupt_empty.png", b""),
                      ("train/dress/corrupt_random.jpg", rng.integers(0, 256, 900, dtype=np.uint8).tobytes())):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
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
    for factor in (0.05, 0.08, 0.12):  # very dark: the same image at 5-12 % brightness
        k = next(pick)
        _save((images[idx[k]].astype(np.float32) * factor).astype(np.uint8), root / rel_of(k))
        truth["too_dark"].append(rel_of(k))
    for j in range(2):  # blurry: Gaussian blur radius 1.5 px
        k = next(pick)
        _save(Image.fromarray(images[idx[k]]).filter(ImageFilter.GaussianBlur(1.5)), root / rel_of(k))
        truth["blurry"].append(rel_of(k))
    for j in range(2):  # label conflict: byte copy in another class folder (the copy is the wrong one)
        k = next(pick)
        wrong = FASHION_NAMES[(labels[idx[k]] + 3) % 10]
        rel = f"train/{wrong}/{idx[k]:05d}_conflict.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel_of(k), root / rel)
        add("label_conflict", rel, k)
    return info


def _small(path: Path):
    try:
        return np.asarray(Image.open(path).convert("L").resize((28, 28), Image.Resampling.BILINEAR), np.float32)
    except Exception:
        return None


def judge_pair(root: Path, a: str, b: str, source: dict) -> bool:
    """True: both files come from one Fashion-MNIST image, or their 28x28 pixels are almost the same."""
    if a in source and b in source and source[a] == source[b]:
        return True
    x, y = _small(root / a), _small(root / b)
    return x is not None and y is not None and float(np.abs(x - y).mean()) < 6.0


def contact_sheet(root: Path, pairs, out: Path, max_pairs: int = 48):
    """Pairs side by side (4 pairs a row, 84 px per image), numbered, for a person to judge."""
    from PIL import ImageDraw

    pairs = list(pairs)[:max_pairs]
    if not pairs:
        return
    z, cols = 84, 4
    rows = (len(pairs) + cols - 1) // cols
    sheet = Image.new("L", (cols * (2 * z + 16), rows * (z + 14)), 110)
    draw = ImageDraw.Draw(sheet)
    for k, (a, b) in enumerate(pairs):
        x0, y0 = (k % cols) * (2 * z + 16), (k // cols) * (z + 14)
        draw.text((x0 + 2, y0), f"#{k}", fill=255)
        for c, p in enumerate((a, b)):
            x = _small(root / p)
            if x is not None:
                sheet.paste(Image.fromarray(x.astype(np.uint8)).resize((z, z), Image.Resampling.NEAREST),
                            (x0 + c * z, y0 + 12))
    sheet.save(out)


def group_pairs(m):
    """(pairs, kinds): every pair inside each duplicate group; kind 'exact' when the group is byte copies only."""
    pairs, exact = [], []
    for _, g in m[m["duplicate_group"].fillna("") != ""].groupby("duplicate_group"):
        rels = list(g.index)
        only_bytes = g["hash"].nunique() == 1
        for i in range(len(rels)):
            for j in range(i + 1, len(rels)):
                pairs.append((rels[i], rels[j]))
                exact.append(only_bytes)
    return pairs, exact


def score_pairs(root, m, pairs, exact, source) -> dict:
    judged = [judge_pair(root, a, b, source) for a, b in pairs]
    near = [(p, ok) for p, ok, ex in zip(pairs, judged, exact) if not ex]
    leak = [(p, ok) for p, ok in zip(pairs, judged)
            if {m.at[p[0], "split"], m.at[p[1], "split"]} == {"train", "test"}]
    planted = [(p, ok) for p, ok in near if p[0] in source and p[1] in source and source[p[0]] == source[p[1]]]

    def prec(lst):
        return {"reported": len(lst), "judged_true": int(sum(ok for _, ok in lst)),
                "precision": round(sum(ok for _, ok in lst) / len(lst), 3) if lst else None}

    return {"near_pairs": prec(near), "leak_pairs": prec(leak), "near_pairs_same_source": len(planted),
            "unplanted": sorted({p for p, ok in near + leak if not ok}),
            "judged": dict(zip(pairs, judged))}


def found_copy(m, f, source, flag) -> bool:
    """The planted copy ``f`` is in a group with its source and the group carries ``flag``."""
    if f not in m.index:
        return False
    g = m.at[f, "duplicate_group"]
    mates = set(m.index[m["duplicate_group"] == g]) if g else set()
    return any(source.get(x) == source[f] for x in mates - {f}) and bool(mates & flag)


def evaluate(root: Path, out: Path, info: dict, **kw) -> dict:
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
               KINDS + ("too_bright", "atypical", "tiny", "low_information", "odd_aspect", "scan_failed")}
    report = {"seconds": round(seconds, 1), "n_files": len(m), "status": m["status"].value_counts().to_dict(),
              "excluded_share": round(float((m["status"] == "exclude").mean()), 4),
              "test_rows_excluded": int(((m["split"] == "test") & (m["status"] == "exclude")).sum()),
              "flagged": {k: len(v) for k, v in flagged.items()}, "per_issue": {}}
    pairs, exact = group_pairs(m)
    sc = score_pairs(root, m, pairs, exact, source)
    report.update({k: sc[k] for k in ("near_pairs", "leak_pairs", "near_pairs_same_source")})
    report["unplanted_pairs"] = sc["unplanted"]
    contact_sheet(root, sc["unplanted"], out / "pairs_unplanted.png")
    good_files = {x for p, ok in sc["judged"].items() if ok for x in p}
    wrong_label = {r for r in m.index if r in info["true_label"] and info["true_label"][r] != m.at[r, "label"]}
    for kind, files in truth.items():
        if not files:
            continue
        flag = flagged.get(kind, set())
        if kind in ("near_duplicate", "leak", "exact_duplicate"):
            hit = [f for f in files if found_copy(m, f, source, flag)]
            prec = len(flag & good_files) / len(flag) if flag else None
        elif kind == "label_conflict":
            hit = [f for f in files if f in flag]
            prec = len(flag & set(m.index[m["hash"].duplicated(keep=False)])) / len(flag) if flag else None
        elif kind == "label_error":
            hit = [f for f in files if f in flag]
            prec = len(flag & wrong_label) / len(flag) if flag else None
        else:
            hit = [f for f in files if f in flag]
            prec = len(flag & set(files)) / len(flag) if flag else None
        report["per_issue"][kind] = {"planted": len(files), "found": len(hit),
                                     "recall": round(len(hit) / len(files), 3), "flagged": len(flag),
                                     "precision": None if prec is None else round(prec, 3),
                                     "missed": [f for f in files if f not in hit]}
    report["missed"] = {k: v["missed"] for k, v in report["per_issue"].items() if v["missed"]}
    report["label_error_false_flags"] = sorted(flagged["label_error"] - wrong_label)
    return report


def label_error_seeds(root: Path, seeds: int, n_wrong: int = 12) -> list[dict]:
    """Plant ``n_wrong`` random label errors into the clean set ``seeds`` times (embeddings from the cache)."""
    from frugalvision.curate.labels import label_issues
    from frugalvision.data.discover import discover
    from frugalvision.features.extract import Extractor

    df = discover(root, require_labels=True).sort_values("path").reset_index(drop=True)
    emb = Extractor("efficientnet_lite0", progress=False)(df["path"].tolist())
    y0 = df["label"].to_numpy(str)[emb.ok]
    names = sorted(set(y0))
    out = []
    for s in range(seeds):
        rng = np.random.default_rng(100 + s)
        y = y0.copy()
        flip = rng.choice(len(y), n_wrong, replace=False)
        for i in flip:
            y[i] = rng.choice([c for c in names if c != y[i]])
        iss = label_issues(emb.X, y, seed=s)
        flagged = set(np.flatnonzero(iss["is_label_issue"].to_numpy()))
        out.append({"seed": s, "found": len(flagged & set(flip.tolist())), "flags": len(flagged)})
    return out


def verify_synthetic(root: Path, per_kind: int = 80, seed: int = 2) -> dict:
    """The pixel verification alone (no embeddings), on the clean set's images.

    Copies: ``per_kind`` images per kind re-encoded (JPEG q50-95), resized (0.75-2.5x), cropped (1-3 px,
    any position), cropped and resized, 1-px cropped (JPEG q70), resized to 32 px (JPEG q85): share
    verified. Look-alikes: every candidate pair of the distinct clean images (thumbnail top-3), and
    generated shapes on a plain background moved, recoloured or drawn larger: how many pass.
    """
    from PIL import ImageDraw

    from frugalvision.curate.duplicates import candidate_pairs, crop_thumbnails, match_pixels, verify_pair

    files = sorted(p for p in root.rglob("*.png"))
    greys = [np.asarray(Image.open(f).convert("L")) for f in files]
    rng = np.random.default_rng(seed)

    def jpeg(im, q):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(q))
        return Image.open(io.BytesIO(buf.getvalue())).convert("L")

    def copy(g, kind):
        im, m = Image.fromarray(g), g.shape[0]
        if kind == "jpeg":
            return jpeg(im, rng.integers(50, 96))
        if kind == "resize":
            return jpeg(im.resize((round(m * rng.uniform(0.75, 2.5)),) * 2, Image.Resampling.BILINEAR),
                        rng.integers(60, 96))
        if kind == "crop":
            cx, cy = rng.integers(1, 4), rng.integers(0, 4)
            left, top = rng.integers(0, cx + 1), rng.integers(0, cy + 1)
            return jpeg(im.crop((left, top, m - (cx - left), m - (cy - top))), rng.integers(60, 96))
        if kind == "crop_resize":
            c = rng.integers(1, 3)
            im = im.crop((c, c, m - c, m - c))
            return jpeg(im.resize((round(im.width * rng.uniform(0.9, 2.0)),) * 2, Image.Resampling.BICUBIC),
                        rng.integers(60, 96))
        if kind == "crop1":
            return jpeg(im.crop((1, 1, m - 1, m - 1)), 70)
        return jpeg(im.resize((32, 32), Image.Resampling.BICUBIC), 85)

    pix = [match_pixels(np.stack([g] * 3, -1)) for g in greys]
    out = {"copies_verified": {}, "lookalikes_passed": {}}
    for kind in ("jpeg", "resize", "crop", "crop_resize", "crop1", "resize32"):
        ok = []
        for i in rng.choice(len(greys), per_kind, replace=False):
            r = verify_pair(pix[i], match_pixels(np.asarray(copy(greys[i], kind).convert("RGB"))))
            ok.append(bool(r and r["copy"]))
        out["copies_verified"][kind] = round(float(np.mean(ok)), 3)
    thumbs = np.stack([crop_thumbnails(p) for p in pix])
    cand = sorted(candidate_pairs(thumbs))
    passed = [(files[i].name, files[j].name) for i, j in cand if (lambda r: bool(r and r["copy"]))(
        verify_pair(pix[i], pix[j]))]
    out["lookalikes_passed"]["fashion_candidate_pairs"] = f"{len(passed)} of {len(cand)}"
    out["fashion_pairs_passed"] = passed

    def shape(kind, cx, cy, r, col, size):
        im = Image.new("RGB", (size, size), (40, 40, 40))
        d = ImageDraw.Draw(im)
        box = [cx - r, cy - r, cx + r, cy + r]
        if kind == 0:
            d.ellipse(box, fill=col)
        elif kind == 1:
            d.rectangle(box, fill=col)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
        return np.asarray(im)

    counts = {"moved 1-6 px": [], "recoloured": [], "drawn larger": []}
    for t in range(225):
        kind, size = t % 3, (48, 96, 128)[t % 3]
        r = int(rng.integers(size // 6, size // 3))
        cx, cy = (int(v) for v in rng.integers(r + 7, size - r - 7, 2))
        col = tuple(int(v) for v in rng.integers(120, 256, 3))
        a = shape(kind, cx, cy, r, col, size)
        mode = t % 3
        if mode == 0:
            b, key = shape(kind, cx + int(rng.integers(1, 7)), cy, r, col, size), "moved 1-6 px"
        elif mode == 1:
            b, key = shape(kind, cx, cy, r, tuple(min(255, c + 40) for c in col), size), "recoloured"
        else:
            b, key = shape(kind, cx, cy, r + int(rng.integers(1, 4)), col, size), "drawn larger"
        res = verify_pair(match_pixels(a), match_pixels(b))
        counts[key].append(bool(res and res["copy"]))
    out["lookalikes_passed"].update({k: f"{sum(v)} of {len(v)}" for k, v in counts.items()})
    return out


def table(results: dict, before: dict | None = None) -> str:
    """Markdown table: recall and precision per issue type (and 'before' when given)."""
    p = results["planted"]
    rows = ["| issue | planted | found | flagged | precision |"
            + (" before: found / flagged / precision |" if before else ""),
            "|---|---|---|---|---|" + ("---|" if before else "")]
    for kind, v in p["per_issue"].items():
        b = ""
        if before and kind in before["per_issue"]:
            bv = before["per_issue"][kind]
            b = f" {bv['found']}/{bv['planted']} / {bv['flagged']} / {bv['precision']} |"
        elif before:
            b = " n/a |"
        rows.append(f"| {kind} | {v['planted']} | {v['found']} | {v['flagged']} | {v['precision']} |{b}")
    rows.append(f"| near-duplicate pairs | | | {p['near_pairs']['reported']} | {p['near_pairs']['precision']} |"
                + (" |" if before else ""))
    rows.append(f"| leak pairs | | | {p['leak_pairs']['reported']} | {p['leak_pairs']['precision']} |"
                + (" |" if before else ""))
    c = results.get("clean", {})
    rows.append(f"\nexcluded: planted {p['excluded_share']:.1%} (test rows excluded: {p['test_rows_excluded']}), "
                f"clean {c.get('excluded_share', float('nan')):.1%}; audit time warm: planted {p['seconds']} s, "
                f"clean {c.get('seconds')} s")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/tmp/fv_prepare_bench"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--label-seeds", type=int, default=0, help="also plant random label errors N times (clean set)")
    ap.add_argument("--verify-synthetic", action="store_true",
                    help="also measure the pixel verification on synthetic copies and look-alikes (clean set)")
    a = ap.parse_args()
    results = {}
    for name, planted, offset in (("planted", True, 0), ("clean", False, 10000)):
        root = a.root / name / "data"
        info = plant(root, a.n, offset=offset, planted=planted)
        evaluate(root, a.root / name / "warm", info)  # fills the embedding cache
        results[name] = evaluate(root, a.root / name / "prepared", info)
        print(name, json.dumps(results[name], indent=1, default=str), flush=True)
    if a.label_seeds:
        runs = label_error_seeds(a.root / "clean" / "data", a.label_seeds)
        results["label_seeds"] = {"runs": runs, "mean_found": float(np.mean([r["found"] for r in runs])),
                                  "mean_flags": float(np.mean([r["flags"] for r in runs]))}
        print("label seeds", json.dumps(results["label_seeds"]), flush=True)
    if a.verify_synthetic:
        results["verify_synthetic"] = verify_synthetic(a.root / "clean" / "data")
        print("verify synthetic", json.dumps(results["verify_synthetic"], default=str), flush=True)
    (a.root / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(table(results))


if __name__ == "__main__":
    main()
