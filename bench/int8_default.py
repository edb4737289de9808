"""Should `--precision auto` be the default? The int8 model against the fp32 model on every development set.

For each set: train the fp32 model and the int8 model (same split, usual path), score both on the set's fixed test
images, paired (McNemar counts and a paired bootstrap CI of int8 - fp32), and record what `--precision auto`
chooses on its own validation check. Issue rule: auto becomes the default only if, on every set, int8 keeps
accuracy within 0.5 point (paired).

    python bench/int8_default.py --out bench/results/int8_default.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from few_shot import digits_sets, fashion10_sets, fashion4_sets  # noqa: E402

import frugalvision as fv  # noqa: E402


def _test_accuracy(model, test):
    ex = model.extractor(progress=False)
    emb = ex(test["path"].tolist())
    y = test["label"].to_numpy()[emb.ok]
    return model.head.predict(emb.X).astype(str) == y


def run(name, pool, test, log):
    out = {"n_train_pool": len(pool), "n_test": len(test)}
    models = {}
    for precision in ("fp32", "int8", "auto"):
        models[precision] = fv.train(pool, precision=precision, few_shot=False, reject=False, progress=False)
    a, b = _test_accuracy(models["fp32"], test), _test_accuracy(models["int8"], test)
    d = b.astype(float) - a
    rng = np.random.default_rng(0)
    boots = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
    out.update(fp32=float(a.mean()), int8=float(b.mean()), diff=float(d.mean()),
               diff_ci=[float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
               only_fp32_right=int((a & ~b).sum()), only_int8_right=int((b & ~a).sum()),
               auto=models["auto"].info.training["precision_check"])
    log(f"{name:>10}: fp32 {100 * out['fp32']:.2f} %  int8 {100 * out['int8']:.2f} %  int8-fp32 "
        f"{100 * out['diff']:+.2f} pt (95 % CI {100 * out['diff_ci'][0]:+.2f} to {100 * out['diff_ci'][1]:+.2f})  "
        f"auto chose {out['auto']['chosen']}: {out['auto']['reason']}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fv_bench_few_shot"))
    ap.add_argument("--sets", default="fashion4,fashion10,digits")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    makers = {"fashion4": lambda: fashion4_sets(a.shared), "fashion10": lambda: fashion10_sets(a.work),
              "digits": lambda: digits_sets(a.work)}
    res = {name: run(name, *makers[name](), lambda s: print(s, flush=True)) for name in a.sets.split(",")}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
