"""Few labels: the small-data path against the usual one, on random draws of k images per class.

For each data set, k in --sizes and --draws seeded draws: train on the k images per class with the usual path
(`few_shot=False`: 15 % validation and 15 % test carved out of the draw, as `train` did before) and with the
small-data path (`few_shot=True, test_size=0`: every drawn image, head chosen by cross-validation), and score both on the data
set's fixed test images. Also the full-data model, and the small-data path's own cross-validated estimate against
the accuracy it then reached. Data sets (all offline): fashion4 (../shared), the 10 Fashion-MNIST classes (Debian's
dataset-fashion-mnist), scikit-learn's 8x8 digits upscaled to 32 px (ImageNet features are weak there).

    python bench/few_shot.py --out bench/results/few_shot.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from datasets import FASHION_NAMES, _idx, fashion4  # noqa: E402

import frugalvision as fv  # noqa: E402
from frugalvision.features.extract import Extractor  # noqa: E402
from frugalvision.small_data import CANDIDATES, _fit  # noqa: E402


def _table(root: Path) -> pd.DataFrame:
    rows = [(str(p), p.parent.name) for p in sorted(root.rglob("*.png"))]
    return pd.DataFrame(rows, columns=["path", "label"])


def fashion4_sets(shared: Path):
    root = fashion4(shared)
    return _table(root / "train"), _table(root / "test")


def fashion10_sets(work: Path, per_class_pool: int = 300, per_class_test: int = 100):
    out = []
    for split, imgs, labs, per in (("pool", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", per_class_pool),
                                   ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", per_class_test)):
        images, labels = _idx(imgs), _idx(labs)
        taken = {c: 0 for c in range(10)}
        rows = []
        for i, lab in enumerate(labels):
            lab = int(lab)
            if taken[lab] >= per:
                continue
            taken[lab] += 1
            p = work / "fashion10" / split / FASHION_NAMES[lab] / f"{i:05d}.png"
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i]).save(p)
            rows.append((str(p), FASHION_NAMES[lab]))
        out.append(pd.DataFrame(rows, columns=["path", "label"]))
    return out


def digits_sets(work: Path):
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = {"pool": [], "test": []}
    for i, (img, lab) in enumerate(zip(d.images, d.target)):
        split = "test" if i % 2 else "pool"
        p = work / "digits" / split / str(lab) / f"{i:04d}.png"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 16).clip(0, 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BICUBIC).save(p)
        rows[split].append((str(p), str(lab)))
    return [pd.DataFrame(rows[s], columns=["path", "label"]) for s in ("pool", "test")]


def _accuracy(model, X, y) -> float:
    return float(np.mean(model.head.predict(X).astype(str) == y))


def run_set(name, pool, test, ex, sizes, draws, log):
    t0 = time.perf_counter()
    emb_test = ex(test["path"].tolist())
    X_te, y_te = emb_test.X, test["label"].to_numpy()[emb_test.ok]
    ex(pool["path"].tolist())  # warm the cache once
    full = fv.train(pool, few_shot=False, reject=False, progress=False, extractor=ex)
    res = {"n_pool": len(pool), "n_test": int(len(y_te)), "classes": int(pool["label"].nunique()),
           "full_data": _accuracy(full, X_te, y_te), "sizes": {}}
    for k in sizes:
        rows = []
        for d in range(draws):
            draw = pd.concat([g.sample(min(k, len(g)), random_state=1000 * d + k)
                              for _, g in pool.groupby("label")]).reset_index(drop=True)
            row = {"draw": d}
            try:
                usual = fv.train(draw, few_shot=False, reject=False, progress=False, extractor=ex, seed=d)
                row["usual"] = _accuracy(usual, X_te, y_te)
            except fv.DataError as exc:  # too few images to split
                row["usual"], row["usual_error"] = None, str(exc)[:120]
            small = fv.train(draw, few_shot=True, test_size=0.0, reject=False, progress=False, extractor=ex, seed=d)
            row["small"] = _accuracy(small, X_te, y_te)
            sd = small.info.training["small_data"]
            row["head"] = sd["head"]
            row["cv_estimate"] = sd["estimate"].get("accuracy")
            # Every candidate fitted on the whole draw and scored on the test images: which one the CV should pick.
            Xd = ex(draw["path"].tolist()).X.astype(np.float64)
            classes = sorted(draw["label"].unique())
            yd = np.array([classes.index(v) for v in draw["label"]])
            for cname, kind, C in CANDIDATES:
                W, b = _fit(kind, C, Xd, yd, len(classes), None, d)
                row[f"test:{cname}"] = float(np.mean(np.asarray(classes)[(X_te @ W.T + b).argmax(1)] == y_te))
            rows.append(row)
        df = pd.DataFrame(rows)
        usual = df["usual"].dropna()
        paired = df.dropna(subset=["usual"])
        diff = paired["small"] - paired["usual"]
        out = {"small_mean": float(df["small"].mean()), "small_sd": float(df["small"].std()),
               "usual_mean": float(usual.mean()) if len(usual) else None,
               "usual_sd": float(usual.std()) if len(usual) > 1 else None,
               "usual_failed": int(df["usual"].isna().sum()),
               "paired_diff_mean": float(diff.mean()) if len(diff) else None,
               "paired_diff_ci": (list(np.percentile([diff.sample(len(diff), replace=True, random_state=i).mean()
                                                      for i in range(2000)], [2.5, 97.5]).round(4))
                                  if len(diff) > 1 else None),
               "cv_estimate_mean": float(df["cv_estimate"].dropna().mean()) if df["cv_estimate"].notna().any() else None,
               "heads": df["head"].value_counts().to_dict(),
               "candidates_test": {c[5:]: float(df[c].mean()) for c in df.columns if c.startswith("test:")}}
        res["sizes"][str(k)] = out
        log(f"{name:>10} k={k:<3} small {100 * out['small_mean']:.1f} ± {100 * out['small_sd']:.1f}   usual "
            + (f"{100 * out['usual_mean']:.1f} ± {100 * (out['usual_sd'] or 0):.1f}" if out["usual_mean"] is not None
               else "n/a") + f"   (full data {100 * res['full_data']:.1f}; CV estimate "
            + (f"{100 * out['cv_estimate_mean']:.1f})" if out["cv_estimate_mean"] is not None else "n/a)")
            + "\n" + " " * 12 + "; ".join(f"{c.split(',')[0][:22]}{c.split(',')[1] if ',' in c else ''} "
                                           f"{100 * v:.1f}" for c, v in out["candidates_test"].items()))
    res["seconds"] = time.perf_counter() - t0
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fv_bench_few_shot"))
    ap.add_argument("--sizes", default="1,2,5,10,20,50")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--sets", default="fashion4,fashion10,digits")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    ex = Extractor("efficientnet_lite0", progress=False)
    makers = {"fashion4": lambda: fashion4_sets(a.shared), "fashion10": lambda: fashion10_sets(a.work),
              "digits": lambda: digits_sets(a.work)}
    results = {}
    for name in a.sets.split(","):
        pool, test = makers[name]()
        results[name] = run_set(name, pool, test, ex, sizes, a.draws, lambda s: print(s, flush=True))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
