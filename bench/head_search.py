"""Issue #29: time the 50-configuration full-CV head search (bench/run.py's grid section) on 10k embeddings.

    python bench/head_search.py [--work DIR] [--repeat 2] [--racing]

Embeddings of 10,000 Fashion-MNIST training PNGs (10 classes) are extracted once and kept in
``WORK/emb-10k.npz``; each repeat runs ``tune_embeddings(X, y, default_grid(50), cv=3)`` in this process
and prints its wall time, the top and the chosen (one-SE) configuration with their CV accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import datasets  # noqa: E402


def embeddings(work: Path, n: int):
    f = work / f"emb-{n // 1000}k.npz"
    if not f.exists():
        from frugalvision.features.extract import Extractor

        items = datasets.fashion_pngs(work / "f10k", n)
        emb = Extractor(cache_dir=work / f"cache-{n}", progress=False)([p for p, _ in items])
        np.savez(f, X=emb.X, y=np.array([lab for _, lab in items]))
    z = np.load(f)
    return z["X"], z["y"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/fv-head-search")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--racing", action="store_true")
    ap.add_argument("--out", default=None, help="JSON file for the runs and the last table.")
    args = ap.parse_args()
    from frugalvision.tune import default_grid, tune_embeddings

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    X, y = embeddings(work, args.n)
    grid = default_grid(n_configs=50)
    runs = []
    for r in range(args.repeat):
        t = time.perf_counter()
        res = tune_embeddings(X, y, grid, cv=3, racing=args.racing, progress=False)
        secs = time.perf_counter() - t
        tab = res.table
        top, ch = tab.iloc[0], tab[tab["chosen"]].iloc[0]
        mlp, lin = tab[tab["p_head"] == "mlp"], tab[tab["p_head"] == "linear"]
        run = {"seconds": round(secs, 2), "fits": int(tab["folds"].sum()),
               "top": str(top["config"]), "top_acc": float(top["mean_accuracy"]), "top_std": float(top["std_accuracy"]),
               "chosen": str(ch["config"]), "chosen_acc": float(ch["mean_accuracy"]),
               "chosen_std": float(ch["std_accuracy"]), "best_mlp_acc": float(mlp["mean_accuracy"].max()),
               "best_linear_acc": float(lin["mean_accuracy"].max()), "mean_mlp_acc": float(mlp["mean_accuracy"].mean())}
        runs.append(run)
        print(f"[{r + 1}/{args.repeat}] {len(tab)} configs x 3 folds ({run['fits']} fits) on {len(y)} rows: "
              f"{secs:.1f} s; top {run['top']} = {run['top_acc']:.4f} ± {run['top_std']:.4f}; chosen "
              f"{run['chosen']} = {run['chosen_acc']:.4f} ± {run['chosen_std']:.4f}; best MLP "
              f"{run['best_mlp_acc']:.4f}, best linear {run['best_linear_acc']:.4f}, mean of the MLPs "
              f"{run['mean_mlp_acc']:.4f}", flush=True)
    if args.out:
        cols = ["config", "mean_accuracy", "std_accuracy", "mean_log_loss", "folds", "chosen"]
        Path(args.out).write_text(json.dumps({"runs": runs, "table": res.table[cols].to_dict("records")}, indent=1,
                                             default=str))


if __name__ == "__main__":
    main()
