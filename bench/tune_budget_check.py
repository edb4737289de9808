"""Was ``tune --budget``'s choice right? Its kept model against the frozen winner on a set's fixed test images.

``tune DATA --budget 30m --out RUN`` keeps the frozen search winner or a fine-tuned model. This trains the frozen
winner again (the kept model's recipe without fine-tuning: same split, cached embeddings), or, when tune kept the
frozen model, the fine-tuning it turned down (``--candidate``), and scores both on the test images tune never saw
("other" in the output): the model's decisions (operating point, "none of these"), accuracy, balanced accuracy
and the smallest class's recall, each paired (kept minus other) with a 95 % bootstrap interval.

    python bench/tune_budget_check.py RUN DATA TEST_FOLDER [--cache-dir DIR]
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
    args = ap.parse_args(argv)
    kept = fv.load_model(args.run)
    recipe = Recipe.from_json(kept.info.training.recipe)
    split = Path(args.run) / "split.csv"
    if recipe.finetune:
        other = fv.train(args.data, recipe.replace(finetune=None, finetune_params={}, epochs=24), progress=False,
                         split_file=split, cache_dir=args.cache_dir)
    else:
        print(f"tune kept the frozen model; training fine-tune {args.candidate} on the same split to compare")
        other = fv.train(args.data, recipe.replace(finetune=args.candidate), progress=False, split_file=split,
                         cache_dir=args.cache_dir)
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
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
