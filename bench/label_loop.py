"""Label less: how many labels each way of choosing the next images needs, with a simulated labeller.

The labeller answers with the true label. Every strategy starts from no labels and asks for batches (2 images
at a time up to 10 labels, then a fifth of the labels so far, at most 20); after every batch the loop's model
(logistic regression on CL2N embeddings, C=10 - one of the small-data path's candidates, the one the loop
refits for its guesses) is fitted on the labels and scored on the data set's test images. "Labels needed" is the
first count whose test accuracy reaches 90 % (95 %) of the same model's accuracy on the whole pool; a run that
never gets there within --max-labels counts as --max-labels (shown with ">").

Strategies: random order, margin only (smallest top-1 minus top-2 probability; the first batch at random),
TypiClust only, margin + diversity (cluster-margin; TypiClust first batch) and auto (TypiClust until
SWITCH_PER_CLASS labels per class, then margin + diversity). Data (offline): fashion4 (../shared), the 10
Fashion-MNIST classes (Debian's dataset-fashion-mnist; 300 per class pool, 100 per class test) and the 8x8
digits upscaled (half pool, half test). Also the loop's latency: refit + next batch at 2,000 labelled /
10,000 unlabelled (synthetic embeddings of the backbone's width).

    python bench/label_loop.py --out bench/results/label_loop.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from frugalvision.label import strategy as S
from frugalvision.label.session import LabelSession, loop_model

STRATS = ("random", "margin", "typiclust", "margin_diverse", "auto")


def batch_size(n_labelled: int) -> int:
    return 2 if n_labelled < 10 else int(np.clip(round(n_labelled * 0.2), 2, 20))


def accuracy(X, y, classes, Xt, yt) -> float:
    model = loop_model(X, y, classes)
    return float(np.mean(np.asarray(classes)[model.predict_index(Xt)] == yt))


def run(strategy, X, y, classes, Xt, yt, Z, seed, max_labels):
    """[(labels, test accuracy)] after every batch."""
    labelled = np.zeros(len(X), bool)
    curve, proba = [], None
    while labelled.sum() < max_labels:
        n = batch_size(int(labelled.sum()))
        pick, _ = S.choose(strategy, Z, proba, labelled, n, n_classes=len(classes), seed=seed)
        if len(pick) == 0:
            break
        labelled[pick] = True
        idx = np.flatnonzero(labelled)
        model = loop_model(X[idx], y[idx], classes)
        proba = model.proba(X) if len(np.unique(y[idx])) > 1 else None
        acc = float(np.mean(np.asarray(classes)[model.predict_index(Xt)] == yt))
        curve.append((int(labelled.sum()), acc))
    return curve


def needed(curve, target, max_labels):
    for n, acc in curve:
        if acc >= target:
            return n
    return max_labels


def bench_set(name, pool, test, ex, seeds, max_labels, log, strategies=STRATS):
    e, et = ex(pool["path"].tolist()), ex(test["path"].tolist())
    X, y = e.X, pool["label"].to_numpy()[e.ok]
    Xt, yt = et.X, test["label"].to_numpy()[et.ok]
    classes = sorted(set(y))
    full = accuracy(X, y, classes, Xt, yt)
    Z = S.selection_space(X)
    res = {"pool": len(X), "test": len(Xt), "classes": len(classes), "full_data_accuracy": full, "strategies": {}}
    for strat in strategies:
        t0 = time.perf_counter()
        runs = [run(strat, X, y, classes, Xt, yt, Z, seed, max_labels) for seed in range(seeds)]
        out = {"seconds": time.perf_counter() - t0}
        for frac in (0.90, 0.95):
            ns = np.array([needed(c, frac * full, max_labels) for c in runs])
            out[f"labels_to_{int(frac * 100)}"] = {"mean": float(ns.mean()), "sd": float(ns.std(ddof=1)),
                                                   "min": int(ns.min()), "max": int(ns.max()),
                                                   "not_reached": int((ns >= max_labels).sum()), "runs": ns.tolist()}
        at = {}
        for n_at in (10, 20, 40, 100):
            accs = [next((a for n, a in c if n >= n_at), np.nan) for c in runs]
            at[str(n_at)] = float(np.nanmean(accs))
        out["accuracy_at"] = at
        res["strategies"][strat] = out
        a, b = out["labels_to_90"], out["labels_to_95"]
        log(f"{name:>9} {strat:>14}: 90 % of full: {a['mean']:6.1f} ± {a['sd']:5.1f} labels"
            f"{' (' + str(a['not_reached']) + ' not reached)' if a['not_reached'] else ''};  95 %: {b['mean']:6.1f}"
            f" ± {b['sd']:5.1f}{' (' + str(b['not_reached']) + ' not reached)' if b['not_reached'] else ''};  acc@10/20/40/100 "
            + " ".join(f"{100 * v:.1f}" for v in at.values()) + f"  [{out['seconds']:.0f} s]")
    log(f"{name:>9} full-data accuracy {100 * full:.1f} % (pool {len(X)}, test {len(Xt)})")
    return res


def latency(n_lab=2000, n_unl=10000, dim=1280, k=10, reps=3, log=print):
    """Refit + next batch on synthetic clustered embeddings: the time the page waits between batches."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    lab = rng.integers(0, k, n_lab + n_unl)
    X = (centres[lab] + 1.5 * rng.normal(size=(n_lab + n_unl, dim))).astype(np.float32)
    classes = [f"c{i}" for i in range(k)]
    paths = [f"/nowhere/{i}.png" for i in range(len(X))]
    s = LabelSession(paths, classes, embeddings=X)
    t0 = time.perf_counter()
    s.prepare()
    prep = time.perf_counter() - t0
    for i in range(n_lab):
        s.record(paths[i], classes[lab[i]], save=False)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        s.refit()
        s.next_batch(10)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    est = s.estimate()
    est_s = time.perf_counter() - t0
    log(f"latency at {n_lab} labelled / {n_unl} unlabelled ({dim}-d): one-time preparation {prep:.2f} s; "
        f"refit + next batch {np.median(times):.3f} s (median of {reps}); estimate (CV) {est_s:.1f} s "
        f"[{est['head']}]")
    return {"prepare_s": prep, "refit_next_batch_s": float(np.median(times)), "all_s": times, "estimate_s": est_s}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="fashion4,digits,fashion10")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--max-labels", type=int, default=400)
    ap.add_argument("--work", default="/tmp/frugalvision-bench")
    ap.add_argument("--out", default=None)
    ap.add_argument("--strategies", default=",".join(STRATS))
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args(argv)
    from few_shot import digits_sets, fashion4_sets, fashion10_sets

    from frugalvision.features.extract import Extractor

    ex = Extractor("efficientnet_lite0", progress=False)
    shared = Path(__file__).resolve().parents[2] / "shared"
    if not shared.exists():
        shared = Path("/work/shared")
    work = Path(args.work)
    loaders = {"fashion4": lambda: fashion4_sets(shared), "digits": lambda: digits_sets(work),
               "fashion10": lambda: fashion10_sets(work)}
    results = {"seeds": args.seeds, "max_labels": args.max_labels, "switch_per_class": S.SWITCH_PER_CLASS,
               "sets": {}}
    for name in args.sets.split(","):
        pool, test = loaders[name]()
        results["sets"][name] = bench_set(name, pool, test, ex, args.seeds, args.max_labels, print,
                                           args.strategies.split(","))
    if not args.no_latency:
        results["latency"] = latency()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
