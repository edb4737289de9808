"""--features last vs multi through the product: `train` on each data set's pool, decide on its fixed test images.

Same recipe otherwise (linear head, C chosen on validation, calibration, "none of these"); the difference is paired
on the same test images with a 95 % bootstrap interval, for accuracy of the most probable class and recall of the
smallest class. Also the training time (a cold cache: embeddings included) per kind.

    python bench/multi_stage_train.py --out bench/results/multi_stage_train.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from multi_stage import paired_ci, pool_and_test  # noqa: E402

import frugalvision as fv  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--work", default="/tmp/fv-bench-data")
    ap.add_argument("--sets", default="digits,defects,fashion4,fashion10")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    work = Path(args.work)
    results = {}
    for name in args.sets.split(","):
        pool, test = pool_and_test(name, Path(args.shared), work)
        counts = pool.label.value_counts()
        minority = str(counts.idxmin())
        y = test.label.to_numpy(dtype=str)
        rows, correct = {}, {}
        for kind in ("last", "multi"):
            with tempfile.TemporaryDirectory() as cache:
                t0 = time.perf_counter()
                model = fv.train(pool, out=None, features=kind, test_size=0, progress=False, cache_dir=cache)
                seconds = time.perf_counter() - t0
                pred = fv.predict(model, list(test.path), progress=False, cache_dir=cache)
            mp = pred["most_probable"].to_numpy(dtype=str)
            dec = pred["label"].to_numpy(dtype=str)
            correct[kind] = mp == y
            rows[kind] = {"accuracy": float(np.mean(mp == y)), "decided_accuracy": float(np.mean(dec == y)),
                          "unknown": int(np.sum(dec == "unknown")),
                          "minority": minority, "minority_recall": float(np.mean(mp[y == minority] == minority)),
                          "n_minority": int(np.sum(y == minority)), "n_test": int(len(y)),
                          "n_train": int(len(pool)), "train_seconds_cold": round(seconds, 1),
                          "width": int(model.info.backbone.embed_dim)}
            print(name, kind, json.dumps(rows[kind]), flush=True)
        m = y == minority
        rows["diff_accuracy"] = paired_ci(correct["multi"], correct["last"])
        rows["diff_minority_recall"] = paired_ci(correct["multi"][m], correct["last"][m])
        print(name, "multi - last", rows["diff_accuracy"], rows["diff_minority_recall"], flush=True)
        results[name] = rows
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
