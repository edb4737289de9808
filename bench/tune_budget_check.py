"""Was ``tune --budget``'s choice right? Its kept model against the frozen winner on a set's fixed test images.

``tune DATA --budget 30m --out RUN`` keeps the frozen search winner or a fine-tuned model. This trains the frozen
winner again (the kept model's recipe without fine-tuning: same split, cached embeddings), or, when tune kept the
frozen model, the fine-tuning it turned down (``--candidate``), and scores both on the test images tune never saw
("other" in the output): the model's decisions (operating point, "none of these"), accuracy, balanced accuracy
and the smallest class's recall, each paired (kept minus other) with a 95 % bootstrap interval. Then the same two
models as tune's judge sees them on the validation images (thresholds cross-fitted on halves, six draws of the
halves), and on the test images with the thresholds cross-fitted on the test images' halves and by the most probable
class alone: how much of a difference the "none of these" thresholds make, and how much the validation split sees.
Every difference is kept minus other (when tune kept the frozen model: frozen minus fine-tune).

    python bench/tune_budget_check.py RUN DATA TEST_FOLDER [--cache-dir DIR] [--other-run DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from multi_stage import paired_ci  # noqa: E402

import frugalvision as fv  # noqa: E402
from frugalvision.data.discover import discover  # noqa: E402
from frugalvision.recipe import Recipe  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("test")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--candidate", default="2-stages",
                    help="when tune kept the frozen model: the fine-tuning it turned down, trained here on the same "
                         "split, to see on the test images whether turning it down was right")
    ap.add_argument("--other-run", default=None,
                    help="a run folder holding the other model already trained on the same split (by an earlier run "
                         "of this script's --save-other) instead of training it again")
    ap.add_argument("--save-other", default=None, help="save the other model to this run folder")
    args = ap.parse_args(argv)
    kept = fv.load_model(args.run)
    recipe = Recipe.from_json(kept.info.training.recipe)
    split = Path(args.run) / "split.csv"
    if args.other_run:
        other = fv.load_model(args.other_run)
    elif recipe.finetune:
        other = fv.train(args.data, recipe.replace(finetune=None, finetune_params={}, epochs=24), progress=False,
                         split_file=split, cache_dir=args.cache_dir, out=args.save_other)
    else:
        print(f"tune kept the frozen model; training fine-tune {args.candidate} on the same split to compare")
        other = fv.train(args.data, recipe.replace(finetune=args.candidate), progress=False, split_file=split,
                         cache_dir=args.cache_dir, out=args.save_other)
    test = discover(args.test)
    y = test["label"].to_numpy(dtype=str)
    classes = np.unique(y)
    w = len(y) / (len(classes) * np.array([np.sum(y == c) for c in y]))  # balanced accuracy, per image
    minority = min(classes, key=lambda c: np.sum(y == c))
    right = {name: fv.predict(m, list(test["path"]), progress=False, cache_dir=args.cache_dir)["label"]
             .to_numpy(dtype=str) == y for name, m in (("kept", kept), ("other", other))}
    out = {"kept_finetune": recipe.finetune, "n_test": int(len(y)), "minority": str(minority),
           "other_is": "frozen" if recipe.finetune else f"fine-tune {args.candidate} (turned down)"}
    for name, r in right.items():
        out[name] = {"accuracy": float(r.mean()), "balanced_accuracy": float(np.mean(w * r)),
                     "minority_recall": float(r[y == minority].mean())}
    out["diff_accuracy"] = paired_ci(right["kept"], right["other"])
    out["diff_balanced_accuracy"] = paired_ci(w * right["kept"], w * right["other"])
    out["diff_minority_recall"] = paired_ci(right["kept"][y == minority], right["other"][y == minority])
    out["thresholds"] = _thresholds(kept, other, split, test, args.cache_dir)
    print(json.dumps(out, indent=1))


def _thresholds(kept, other, split, test, cache_dir) -> dict:
    """kept minus other, with the thresholds cross-fitted: tune's judge on the validation images (halves seeds 0-5)
    and the same on the test images; and the most probable class alone (no threshold)."""
    import pandas as pd

    from frugalvision import _budget

    run = {"cache_dir": cache_dir}
    table = pd.read_csv(split)
    out = {}
    for name, df in (("validation", table[table["split"] == "val"]), ("test", test)):
        y = df["label"].to_numpy(dtype=str)
        draws, seed0 = [], None
        for seed in range(6):
            h = _budget._halves(y, seed)
            k, o = (_budget._decided(m, df["path"], run, y=y, halves=h)[0] == y for m in (kept, other))
            draws.append(_budget.paired_gain(k, o, y))
            seed0 = seed0 or (k, o)
        plain = {n: _budget._decided(m, df["path"], run) for n, m in (("kept", kept), ("other", other))}
        out[name] = {"n": int(len(y)),
                     "cross_fitted_gain_and_se_by_seed": [[round(g, 4), round(se, 4)] for g, se in draws],
                     "cross_fitted_seed0_ci": paired_ci(*seed0),
                     "most_probable": paired_ci(plain["kept"][1] == y, plain["other"][1] == y),
                     "rejected_share": {n: float(np.mean(d[0] == "unknown")) for n, d in plain.items()}}
    return out


if __name__ == "__main__":
    main()
