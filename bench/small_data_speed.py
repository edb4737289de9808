"""The small-data path's head choice (fit_small_data) on real embeddings: the chosen candidate, its test accuracy
and the seconds it took, per data set, images per class and draw. Run it on two commits and compare:

    python bench/small_data_speed.py --out bench/results/small_data_speed_new.json
    python bench/small_data_speed.py --compare OLD.json NEW.json

Data sets (offline): the 10 Fashion-MNIST classes (Debian's dataset-fashion-mnist), scikit-learn's 8x8 digits
upscaled, fashion4 (../shared). The embeddings come from the shared cache after the first run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def measure(shared: Path, work: Path, sizes, draws: int) -> dict:
    from few_shot import digits_sets, fashion4_sets, fashion10_sets

    from frugalvision.features.extract import Extractor
    from frugalvision.small_data import fit_small_data

    ex = Extractor("efficientnet_lite0")
    sets = {"fashion10": fashion10_sets(work), "digits": digits_sets(work), "fashion4": fashion4_sets(shared)}
    out = {}
    for name, (pool, test) in sets.items():
        et, ep = ex(test["path"].tolist()), ex(pool["path"].tolist())
        Xt, yt = et.X, test["label"].to_numpy()[et.ok]
        Xp, yp = ep.X, pool["label"].to_numpy()[ep.ok]
        classes = sorted(set(yp))
        for k in sizes:
            for d in range(draws):
                rng = np.random.default_rng(1000 * d + k)
                idx = np.concatenate([rng.choice(np.flatnonzero(yp == c), k, replace=False) for c in classes])
                t = time.perf_counter()
                f = fit_small_data(Xp[idx], yp[idx], classes, seed=d)
                t = time.perf_counter() - t
                acc = float(np.mean(np.array(classes)[(Xt @ f.coef.T + f.intercept).argmax(1)] == yt))
                out[f"{name}/{k}/{d}"] = {"head": f.name, "test_accuracy": acc, "n_test": int(len(yt)),
                                          "cv_accuracy": f.estimate["accuracy"], "seconds": t}
    return out


def compare(old: dict, new: dict) -> dict:
    """Per data set and size: mean test accuracy of each, the paired difference (mean ± SE over draws), how often
    the same head was chosen, total seconds."""
    groups: dict = {}
    for key in old:
        s, k, _ = key.split("/")
        groups.setdefault(f"{s}/{k}", []).append(key)
    rows = {}
    for g, keys in groups.items():
        d = np.array([new[k]["test_accuracy"] - old[k]["test_accuracy"] for k in keys])
        rows[g] = {"old_accuracy": float(np.mean([old[k]["test_accuracy"] for k in keys])),
                   "new_accuracy": float(np.mean([new[k]["test_accuracy"] for k in keys])),
                   "difference": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))),
                   "same_head": f"{sum(old[k]['head'] == new[k]['head'] for k in keys)}/{len(keys)}",
                   "old_seconds": float(sum(old[k]["seconds"] for k in keys)),
                   "new_seconds": float(sum(new[k]["seconds"] for k in keys))}
    rows["total_seconds"] = {"old": sum(r["old_seconds"] for r in rows.values()),
                             "new": sum(r["new_seconds"] for r in rows.values())}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fv_bench_small_data"))
    ap.add_argument("--sizes", default="5,10,19")
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    a = ap.parse_args()
    if a.compare:
        res = compare(*(json.loads(p.read_text()) for p in a.compare))
    else:
        res = measure(a.shared, a.work, [int(s) for s in a.sizes.split(",")], a.draws)
    text = json.dumps(res, indent=1)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    print(text if a.compare else f"{len(res)} fits")


if __name__ == "__main__":
    main()
