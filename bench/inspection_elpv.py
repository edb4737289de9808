"""Solar cells, the inspection case of #28, on the public ELPV data set (Buerhop-Lutz et al. 2018; Deitsch et al.
2019: SVM on hand-made features 82.4 %, fine-tuned VGG19 88.4 %): 2,624 electroluminescence images of cells,
300 x 300 grey, each with a defect probability (0, 1/3, 2/3, 1) from experts. As in Deitsch et al., a cell is
'defective' at probability >= 0.5, and 25 % of the cells are held out for test, stratified by probability and
cell type (mono/poly), seed 0: 1,970 training cells (617 defective) and 654 test cells (204 defective).

Each configuration is trained with the product (`frugalvision.train`, the recipe's options only) and judged on
the same test cells: accuracy of the decisions ("unknown" counted wrong, as evaluate does), defect recall and
false alarms per 100 functional cells, each with its Wilson interval, and the training's wall time.

    git clone https://github.com/zae-bayern/elpv-dataset   # or any copy of its src/elpv_dataset/data
    python bench/inspection_elpv.py --elpv elpv-dataset --out bench/results/inspection_elpv.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

CONFIGS = {
    "last": {},
    "multi": {"features": "multi"},
    "last, no reject": {"reject": False},
    "multi, no reject": {"features": "multi", "reject": False},
    "multi, no reject, defective:recall>=0.85": {"features": "multi", "reject": False,
                                                  "targets": ("defective:recall>=0.85",)},
    "multi, defective:recall>=0.85": {"features": "multi", "targets": ("defective:recall>=0.85",)},
}


def build_split(elpv: Path, work: Path) -> Path:
    """``work/cells/{train,test}/{defective,functional}/`` from the data set's labels.csv (idempotent)."""
    data = next(p for p in (elpv / "src" / "elpv_dataset" / "data", elpv) if (p / "labels.csv").exists())
    out = work / "cells"
    if (out / "done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    groups = defaultdict(list)
    for line in (data / "labels.csv").read_text().splitlines():
        if line.strip():
            path, prob, kind = line.split()
            groups[(prob, kind)].append(path)
    rng = random.Random(0)
    for (prob, kind), paths in sorted(groups.items()):
        paths = sorted(paths)
        rng.shuffle(paths)
        n_test = round(len(paths) * 0.25)
        for i, p in enumerate(paths):
            split = "test" if i < n_test else "train"
            label = "defective" if float(prob) >= 0.5 else "functional"
            dest = out / split / label / f"{kind}_{Path(p).name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data / p, dest)
    (out / "done").write_text("")
    return out


def judge(pred, true) -> dict:
    from frugalvision.evaluation.bootstrap import wilson_ci

    d = [p for p, t in zip(pred, true) if t == "defective"]
    g = [p for p, t in zip(pred, true) if t == "functional"]
    right = sum(p == t for p, t in zip(pred, true))
    found, alarms = sum(p == "defective" for p in d), sum(p == "defective" for p in g)
    return {"accuracy": right / len(true), "accuracy_ci": wilson_ci(right, len(true)),
            "defect_recall": found / len(d), "defect_recall_ci": wilson_ci(found, len(d)),
            "false_alarms_per_100": 100 * alarms / len(g),
            "false_alarms_ci": [100 * v for v in wilson_ci(alarms, len(g))],
            "unknown": sum(p == "unknown" for p in pred), "n_test": len(true), "n_defective": len(d)}


def main(argv=None):
    import frugalvision as fv

    ap = argparse.ArgumentParser()
    ap.add_argument("--elpv", required=True, help="a copy of github.com/zae-bayern/elpv-dataset")
    ap.add_argument("--work", default="/tmp/fv-bench-elpv")
    ap.add_argument("--only", default=None, help="comma-separated configuration names")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cells = build_split(Path(args.elpv), Path(args.work))
    results = {}
    for name, options in CONFIGS.items():
        if args.only and name not in args.only.split(","):
            continue
        run = Path(args.work) / "runs" / name.replace(" ", "_").replace(",", "").replace(":", "_").replace(">=", "")
        t0 = time.perf_counter()
        model = fv.train(cells, out=run, progress=False, overwrite=True, **options)
        seconds = time.perf_counter() - t0
        ev = fv.evaluate(model, progress=False, n_boot=200)
        p = ev.predictions
        row = {"options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
               "train_seconds": round(seconds, 1), **judge(list(p["pred"].astype(str)), list(p["true"].astype(str)))}
        results[name] = row
        print(f"{name:45s} acc {100 * row['accuracy']:.1f} %  recall {100 * row['defect_recall']:.1f} %  false alarms "
              f"{row['false_alarms_per_100']:.1f}/100  unknown {row['unknown']}  ({seconds:.0f} s)", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
