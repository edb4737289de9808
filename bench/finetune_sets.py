"""Frozen last / multi-stage / fine-tuned (1 and 2 stages) per data set, paired against the default (#28).

Each model is trained on the data set's pool with the same recipe otherwise (15 % validation for C, the epoch and the
operating point) and scored on the fixed test images: accuracy of the most probable class and recall of the smallest
class, each paired against the default (frozen, last layer) with a 95 % bootstrap interval; CPU minutes of the process
(all threads, so a busy machine inflates it less than wall time) and wall minutes. Needs the torch extra.

    python bench/finetune_sets.py --sets digits,defects --out bench/results/finetune_sets.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from multi_stage import paired_ci, pool_and_test  # noqa: E402

import frugalvision as fv  # noqa: E402

KINDS = {"frozen last (default)": {}, "frozen multi": {"features": "multi"},
         "fine-tune last stage": {"finetune": "last-stage"}, "fine-tune 2 stages": {"finetune": "2-stages"}}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--work", default="/tmp/fv-bench-data")
    ap.add_argument("--sets", default="digits,defects")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    work = Path(args.work)
    results = {}
    for name in args.sets.split(","):
        pool, test = pool_and_test(name, Path(args.shared), work)
        minority = str(pool.label.value_counts().idxmin())
        y = test.label.to_numpy(dtype=str)
        rows, right = {}, {}
        with tempfile.TemporaryDirectory() as cache:
            for kind, opts in KINDS.items():
                c0, w0 = time.process_time(), time.perf_counter()
                model = fv.train(pool, out=None, test_size=0, progress=False, cache_dir=cache, **opts)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                mp = fv.predict(model, list(test.path), progress=False, cache_dir=cache)["most_probable"]
                right[kind] = mp.to_numpy(dtype=str) == y
                m = y == minority
                rows[kind] = {"accuracy": float(right[kind].mean()), "minority": minority,
                              "minority_recall": float(right[kind][m].mean()), "n_test": int(len(y)),
                              "n_minority": int(m.sum()), "cpu_minutes": round(cpu / 60, 2),
                              "wall_minutes": round(wall / 60, 2)}
                if kind != "frozen last (default)":
                    base = right["frozen last (default)"]
                    rows[kind]["diff_accuracy"] = paired_ci(right[kind], base)
                    rows[kind]["diff_minority_recall"] = paired_ci(right[kind][m], base[m])
                print(name, kind, json.dumps(rows[kind]), flush=True)
        results[name] = rows
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
