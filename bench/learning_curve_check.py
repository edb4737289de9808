"""Does the learning-curve advice predict what more data gives? Checked against the truth on fashion4.

For k images per class (k in --sizes, --draws draws), refit the head on 25/50/75/100 % of the k per class (what the
report does), fit the report's power law, and predict the accuracy at the full training set (400 per class); then
compare with the accuracy a model trained on all of it actually reaches on the same 400 test images.

    python bench/learning_curve_check.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from few_shot import fashion4_sets  # noqa: E402

from frugalvision.features.extract import Extractor  # noqa: E402
from frugalvision.heads import LinearHead  # noqa: E402
from frugalvision.reporting.learning_curve import fit_saturating, predicted_value, refit_predictions  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--sizes", default="5,10,20,50")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    pool, test = fashion4_sets(a.shared)
    ex = Extractor("efficientnet_lite0", progress=False)
    e_pool, e_test = ex(pool["path"].tolist()), ex(test["path"].tolist())
    Xp, yp = e_pool.X, pool["label"].to_numpy()[e_pool.ok]
    Xt, yt = e_test.X, test["label"].to_numpy()[e_test.ok]
    full = LinearHead(C=0.01).fit(Xp, yp)
    truth = float(np.mean(full.predict(Xt) == yt))
    res = {"truth_full_data": truth, "n_full": int(len(yp)), "sizes": {}}
    for k in (int(s) for s in a.sizes.split(",")):
        preds = []
        for d in range(a.draws):
            rows = pd.Series(np.arange(len(yp))).groupby(yp).apply(
                lambda g: g.sample(min(k, len(g)), random_state=100 * d + k)).to_numpy()
            lc = refit_predictions(Xp[rows], yp[rows], Xt, lambda: LinearHead(C=0.01), seed=d)
            acc = [float(np.mean([np.mean(r == yt) for r in P])) for P in lc["preds"]]  # mean over repeats
            floor = 0.5 / len(yt)
            c, A, B = fit_saturating(lc["n_train"], [1 - v for v in acc], floor)
            preds.append({"curve": acc, "n_train": lc["n_train"],
                          "predicted_at_full": predicted_value(c, A, B, len(yp)), "exponent": B, "floor": c})
        p = np.array([r["predicted_at_full"] for r in preds])
        res["sizes"][str(k)] = {"predicted_mean": float(p.mean()), "predicted_sd": float(p.std()),
                                "error_vs_truth_mean": float(p.mean() - truth), "draws": preds}
        print(f"k={k:<3} predicted accuracy at {len(yp)} images {100 * p.mean():.1f} ± {100 * p.std():.1f} "
              f"(truth {100 * truth:.1f}; error {100 * (p.mean() - truth):+.1f} points)", flush=True)
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
