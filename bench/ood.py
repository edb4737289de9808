"""Out-of-distribution ("none of these") scores for the fashion4 model: which family measures best?

    python bench/ood.py --out /tmp/ood.json                 # ~6 min with a cold cache on 2 cores, ~1 min warm
    python bench/ood.py --out /tmp/ood.json --speed         # also: kNN search time, numpy vs faiss/usearch

Everything is computed from what the pipeline already has for each prediction: the 1280-d pooled embedding
and the head's logits (no extra backbone pass).

Data (all Fashion-MNIST images are 28 px greys, as PNG files under --work):

* fit           the head's own training split of fashion4 (``fv.train``; its validation split is held out)
* val-ID        the head's validation split + 1,200 Fashion-MNIST *training-file* images of the 4 classes that
                fashion4 did not use (300 a class): in-distribution data for tuning and for the 95 % threshold
* tune-OOD      Fashion-MNIST training-file images of the 6 other classes (300 a class), for tuning only
* test-ID       all 4,000 Fashion-MNIST *test-file* images of the 4 classes (fashion4's 400 test images among them)
* near          all 6,000 test-file images of the 6 other classes (t-shirt/shirt vs pullover/coat/dress,
                sandal vs sneaker/ankle-boot, ...)
* far           scikit-image photos (20 sources x 4 random crops/flips), each rendered 3 ways: as is (colour where
                the source has it), greyscale, and greyscale shrunk to 28x28 like Fashion-MNIST; plus 100 of its
                25x25 LFW faces. Colour or resolution alone must not be the tell.

Honest tuning: every hyper-parameter (k, PCA size, fusion weight) is chosen on val-ID vs tune-OOD of 2 classes,
and the near numbers are reported on the test-file images of the 4 *other* classes. Three pre-declared folds
rotate the 2 tuning classes; the table shows each method's mean over folds, the JSON every fold. The far
photos and the test files are never used to choose anything. "near-6" is the test-file images of all 6 other
classes with hyper-parameters chosen on training-file images of all 6 (image-disjoint, class-seen).
CIs: 1,000-sample percentile bootstrap, ID and OOD rows resampled separately.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
import datasets

from frugalvision.ood import fit_ood, ood_score, threshold_for_accept_rate

SHARED = Path(os.environ.get("FRUGALVISION_SHARED", HERE.parent.parent / "shared"))
ID_CLASSES = ("t-shirt", "sandal", "shirt", "bag")
OOD_CLASSES = ("trouser", "pullover", "dress", "coat", "sneaker", "ankle-boot")
# Pre-declared tuning pairs (one "top" and one "shoe/other" class each); each fold reports on the other four.
FOLDS = (("pullover", "sneaker"), ("coat", "ankle-boot"), ("dress", "trouser"))
PER_CLASS_TUNE = 300


def log(msg: str) -> None:
    print(msg, flush=True)


# -- image sets ---------------------------------------------------------------------------------------------------
def _save(arr: np.ndarray, p: Path) -> str:
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(p)
    return str(p)


def fashion_sets(work: Path, fashion4: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """val-ID extras, tune-OOD, test-ID and near as PNG files; returns name -> (paths, labels)."""
    used = {int(p.stem.split("-")[1]) for p in fashion4.glob("train/*/train-*.png")}
    tr_img, tr_lab = datasets._idx("train-images-idx3-ubyte"), datasets._idx("train-labels-idx1-ubyte")
    te_img, te_lab = datasets._idx("t10k-images-idx3-ubyte"), datasets._idx("t10k-labels-idx1-ubyte")
    names = np.array(datasets.FASHION_NAMES)
    rng = np.random.default_rng(0)
    sets: dict[str, tuple[list[str], list[str]]] = {"val_extra": ([], []), "tune": ([], []), "test_id": ([], []),
                                                   "near": ([], [])}
    for c in datasets.FASHION_NAMES:
        idx = np.flatnonzero(names[tr_lab] == c)
        idx = rng.permutation([i for i in idx if i not in used])[:PER_CLASS_TUNE]
        key = "val_extra" if c in ID_CLASSES else "tune"
        for i in sorted(idx):
            sets[key][0].append(_save(tr_img[i], work / "fmnist-train" / c / f"train-{i:05d}.png"))
            sets[key][1].append(c)
        key = "test_id" if c in ID_CLASSES else "near"
        for i in np.flatnonzero(names[te_lab] == c):
            sets[key][0].append(_save(te_img[i], work / "fmnist-t10k" / c / f"t10k-{i:05d}.png"))
            sets[key][1].append(c)
    return {k: (v[0], np.array(v[1])) for k, v in sets.items()}


FAR_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "horse",
               "hubble_deep_field", "immunohistochemistry", "retina", "logo", "clock", "brick", "grass", "gravel",
               "cell", "stereo_motorcycle")


def far_set(work: Path, crops: int = 4, faces: int = 100) -> tuple[list[str], np.ndarray]:
    """scikit-image photos: random crops/flips, each as is, greyscale, and greyscale 28x28; plus LFW faces."""
    from skimage import data

    rng = np.random.default_rng(1)
    paths, kinds = [], []
    for name in FAR_SOURCES:
        src = getattr(data, name)()
        src = src[0] if isinstance(src, tuple) else src
        src = np.asarray(src)
        if src.dtype == bool:
            src = src.astype(np.uint8) * 255
        if src.ndim == 3 and src.shape[2] == 4:
            src = src[..., :3]
        h, w = src.shape[:2]
        for j in range(crops):
            ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = src[y:y + ch, x:x + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = np.ascontiguousarray(crop)
            grey = np.asarray(Image.fromarray(crop).convert("L"))
            tiny = np.asarray(Image.fromarray(grey).resize((28, 28), Image.Resampling.BOX))
            for kind, arr in (("photo", crop), ("grey", grey), ("grey28", tiny)):
                paths.append(_save(arr, work / "far" / kind / f"{name}_{j}.png"))
                kinds.append(kind)
    lfw = data.lfw_subset()
    for i in rng.permutation(len(lfw))[:faces]:
        face = (np.asarray(lfw[i]) * 255).clip(0, 255).astype(np.uint8)
        face = np.asarray(Image.fromarray(face).resize((28, 28), Image.Resampling.BICUBIC))
        paths.append(_save(face, work / "far" / "face28" / f"lfw_{i:03d}.png"))
        kinds.append("face28")
    return paths, np.array(kinds)


def embed(ex, paths: list[str]) -> np.ndarray:
    emb = ex(paths)
    if not emb.ok.all():
        raise SystemExit(f"{(~emb.ok).sum()} images failed to decode: {emb.failures[:3]}")
    return emb.X.astype(np.float32)


def load_all(work: Path, cache_dir: Path) -> dict:
    import frugalvision as fv
    from frugalvision.features.extract import Extractor

    fashion4 = datasets.fashion4(SHARED)
    t0 = time.perf_counter()
    model = fv.train(fashion4, progress=False, cache_dir=cache_dir)
    X_fit, y_fit, _ = model.data_.part("train")
    X_val0, y_val0, _ = model.data_.part("val")
    log(f"head trained on {len(y_fit)} images (val {len(y_val0)}), {time.perf_counter() - t0:.0f} s")
    ex = Extractor("efficientnet_lite0", cache_dir=cache_dir, progress=False)
    sets = fashion_sets(work, fashion4)
    far_paths, far_kind = far_set(work)
    out = {"model": model, "X_fit": X_fit, "y_fit": y_fit}
    for name, (paths, labels) in sets.items():
        t0 = time.perf_counter()
        out[f"X_{name}"], out[f"y_{name}"] = embed(ex, paths), labels
        log(f"{name}: {len(paths)} images, {time.perf_counter() - t0:.0f} s")
    out["X_val"] = np.vstack([X_val0, out.pop("X_val_extra")])
    out["y_val"] = np.concatenate([y_val0, out.pop("y_val_extra")])
    out["X_far"], out["far_kind"] = embed(ex, far_paths), far_kind
    return out


# -- metrics ------------------------------------------------------------------------------------------------------
def auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """P(score of an OOD image > score of an ID image), ties counted half (Mann-Whitney)."""
    s = np.concatenate([s_in, s_out])
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    r_out = ranks[len(s_in):].sum()
    n_in, n_out = len(s_in), len(s_out)
    return float((r_out - n_out * (n_out + 1) / 2) / (n_in * n_out))


def fpr_at_tpr(s_in: np.ndarray, s_out: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD images accepted (score below the threshold) when 95 % of ID images are accepted."""
    t = np.quantile(s_in, tpr)
    return float(np.mean(s_out <= t))


def boot(f, s_in, s_out, n_boot=1000, seed=0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = [f(s_in[rng.integers(0, len(s_in), len(s_in))], s_out[rng.integers(0, len(s_out), len(s_out))])
            for _ in range(n_boot)]
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


# -- methods ------------------------------------------------------------------------------------------------------
#: method -> grid of hyper-parameters passed to fit_ood (chosen per fold on val-ID vs tune-OOD).
def grids() -> dict[str, list[dict]]:
    ks = (1, 5, 10, 20, 50, 100)
    return {
        "msp": [{"method": "msp"}],
        "energy": [{"method": "energy"}],
        "mahalanobis": [{"method": "mahalanobis", "n_components": d} for d in (0, 64, 128, 256)],
        "relative_mahalanobis": [{"method": "rmd", "n_components": d} for d in (0, 64, 128, 256)],
        "knn (L2)": [{"method": "knn", "k": k, "normalize": "l2"} for k in ks],
        "knn (center+L2)": [{"method": "knn", "k": k, "normalize": "center_l2"} for k in ks],
        "knn (std+L2)": [{"method": "knn", "k": k, "normalize": "std_l2"} for k in ks],
        "knn (PCA-whiten+L2)": [{"method": "knn", "k": k, "normalize": "whiten_l2", "n_components": d}
                                for k in ks for d in (64, 128, 256)],
        "vim": [{"method": "vim", "n_components": d} for d in (32, 64, 128, 256, 512)],
        "max-z knn|vim": [{"method": "knn_vim", "k": k, "normalize": nm, "vim_components": d}
                            for k in (5, 10, 20) for nm in ("l2", "center_l2") for d in (64, 128, 256)],
        "knn+energy": [{"method": "knn_energy", "k": k, "normalize": "l2", "weight": w}
                       for k in (5, 10, 20, 50) for w in (0.25, 0.5, 0.75)],
    }


_FITTED: dict[str, tuple] = {}


def _fitted(hp: dict, D: dict) -> tuple:
    """(state, val-ID scores, tune-OOD scores) for one grid point, fitted once for all folds."""
    key = json.dumps(hp, sort_keys=True)
    if key not in _FITTED:
        st = fit_ood(D["X_fit"], D["y_fit"], D["L_fit"], head_coef=D["coef"], head_intercept=D["intercept"], **hp)
        _FITTED[key] = (st, ood_score(st, D["X_val"], D["L_val"]), ood_score(st, D["X_tune"], D["L_tune"]))
    return _FITTED[key]


def tune(name, grid, D, tune_classes) -> tuple[dict, float, object]:
    """The grid point with the best AUROC on val-ID vs tune-OOD images of ``tune_classes`` (ties: first)."""
    m_out = np.isin(D["y_tune"], tune_classes)
    best = None
    for hp in grid:
        st, s_val, s_tune = _fitted(hp, D)
        a = auroc(s_val, s_tune[m_out])
        if best is None or a > best[1] + 1e-9:
            best = (hp, a, st)
    return best


def evaluate(st, D, near_classes, n_boot) -> dict:
    s_val = ood_score(st, D["X_val"], D["L_val"])
    s_in = ood_score(st, D["X_test_id"], D["L_test_id"])
    m = np.isin(D["y_near"], near_classes)
    s_near = ood_score(st, D["X_near"][m], D["L_near"][m])
    s_far = ood_score(st, D["X_far"], D["L_far"])
    r = {"near_auroc": auroc(s_in, s_near), "near_fpr95": fpr_at_tpr(s_in, s_near),
         "far_auroc": auroc(s_in, s_far), "far_fpr95": fpr_at_tpr(s_in, s_far)}
    if n_boot:
        r["near_auroc_ci"] = boot(auroc, s_in, s_near, n_boot)
        r["near_fpr95_ci"] = boot(fpr_at_tpr, s_in, s_near, n_boot)
        r["far_auroc_ci"] = boot(auroc, s_in, s_far, n_boot)
        r["far_fpr95_ci"] = boot(fpr_at_tpr, s_in, s_far, n_boot)
    r["far_auroc_by_kind"] = {k: auroc(s_in, s_far[D["far_kind"] == k]) for k in np.unique(D["far_kind"])}
    r["near_auroc_by_class"] = {c: auroc(s_in, s_near[D["y_near"][m] == c]) for c in near_classes}
    # Accuracy on in-distribution test images accepted at the threshold that accepts 95 % of val-ID.
    t = threshold_for_accept_rate(s_val, 0.95)
    acc = D["pred_test_id"] == D["y_test_id"]
    keep = s_in <= t
    r.update(threshold=float(t), test_id_accept_rate=float(keep.mean()), acc_all=float(acc.mean()),
             acc_accepted=float(acc[keep].mean()), near_accept_rate=float(np.mean(s_near <= t)),
             far_accept_rate=float(np.mean(s_far <= t)))
    return r


def speed(D, out: dict) -> None:
    """kNN scoring time for 1,000 queries against 10k and 100k training rows: numpy vs faiss vs usearch."""
    from frugalvision.ood import _knn_kth_sqdist

    rng = np.random.default_rng(0)
    X = D["X_fit"]
    q = np.vstack([D["X_test_id"][:500], D["X_near"][:500]]).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    res = {}
    for n in (10_000, 100_000):
        # Training rows: real embeddings, jittered copies (the neighbour structure of a large real set).
        base = X[rng.integers(0, len(X), n)] * rng.normal(1, 0.05, (n, X.shape[1])).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        base = base.astype(np.float32)
        t0 = time.perf_counter()
        ref = _knn_kth_sqdist(base, q, 10)
        res[f"numpy_{n}"] = {"ms_per_1000": (time.perf_counter() - t0) * 1000, "build_s": 0.0}
        try:
            import faiss

            t0 = time.perf_counter()
            index = faiss.IndexFlatIP(base.shape[1])
            index.add(base)
            b = time.perf_counter() - t0
            t0 = time.perf_counter()
            sims, _ = index.search(q, 10)
            res[f"faiss_flat_{n}"] = {"ms_per_1000": (time.perf_counter() - t0) * 1000, "build_s": b,
                                      "max_abs_diff": float(np.abs((2 - 2 * sims[:, -1]) - ref).max())}
        except ImportError:
            pass
        try:
            from usearch.index import Index

            t0 = time.perf_counter()
            index = Index(ndim=base.shape[1], metric="ip", dtype="f32")
            index.add(np.arange(n), base)
            b = time.perf_counter() - t0
            t0 = time.perf_counter()
            m = index.search(q, 10)
            d = np.asarray(m.distances)[:, -1]  # usearch 'ip' distance = 1 - similarity
            res[f"usearch_hnsw_{n}"] = {"ms_per_1000": (time.perf_counter() - t0) * 1000, "build_s": b,
                                        "recall_kth_within_1e-3": float(np.mean(np.abs(2 * d - ref) < 1e-3))}
        except ImportError:
            pass
    out["knn_speed"] = res
    for k, v in res.items():
        log(f"  {k:>22}: {v['ms_per_1000']:8.1f} ms / 1000 queries, build {v['build_s']:.1f} s"
            + "".join(f", {a} {b:.3g}" for a, b in v.items() if a not in ("ms_per_1000", "build_s")))


def fmt_ci(v, ci) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_table(results: dict) -> None:
    """near-4: held-out classes, mean of the 3 folds; near-6/far/accuracy: the state tuned on all 6 (with CIs)."""
    nan = (np.nan, np.nan)
    log("\nID = 4,000 test-file images of the 4 classes. near-4 = the 2 tuning classes left out (mean of 3 folds); "
        "near-6 = all 6 other classes; far = photos + faces; acc = ID test accuracy, all vs accepted at the "
        "threshold accepting 95 % of val-ID")
    hdr = (f"{'method':<20} {'near-4 AUROC':>12} {'near-4 FPR95':>12} {'near-6 AUROC [CI]':<23} "
           f"{'near-6 FPR95 [CI]':<23} {'far AUROC [CI]':<23} {'far FPR95':>9} {'acc all':>7} {'acc acc.':>8} "
           f"{'ms/1k':>6}  chosen (near-6)")
    log(hdr)
    log("-" * len(hdr))
    for name, r in results["methods"].items():
        m, n6 = r["mean_over_folds"], r["near6"]
        chosen = {k: v for k, v in n6["chosen"].items() if k != "method"}
        log(f"{name:<20} {m['near_auroc']:12.3f} {m['near_fpr95']:12.3f} "
            f"{fmt_ci(n6['near_auroc'], n6.get('near_auroc_ci', nan)):<23} "
            f"{fmt_ci(n6['near_fpr95'], n6.get('near_fpr95_ci', nan)):<23} "
            f"{fmt_ci(n6['far_auroc'], n6.get('far_auroc_ci', nan)):<23} {n6['far_fpr95']:9.3f} "
            f"{n6['acc_all']:7.3f} {n6['acc_accepted']:8.3f} {r['ms_per_1000']:6.1f}  {chosen}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="JSON results file")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ood-bench"), help="where the PNG sets are written")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/ood-cache"))
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated method names (default: all)")
    ap.add_argument("--speed", action="store_true", help="also time kNN search: numpy vs faiss-cpu vs usearch")
    ap.add_argument("--extract-only", action="store_true")
    args = ap.parse_args(argv)

    D = load_all(args.work, args.cache_dir)
    if args.extract_only:
        return
    head = D["model"].head
    for s in ("fit", "val", "tune", "test_id", "near", "far"):
        D[f"L_{s}"] = head.logits(D[f"X_{s}"])
    D["pred_test_id"] = head.predict(D["X_test_id"])
    D["coef"], D["intercept"] = head.coef_, head.intercept_
    results: dict = {"protocol": __doc__, "folds": [list(f) for f in FOLDS], "methods": {}}
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    for name, grid in grids().items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        folds = []
        for pair in FOLDS:
            hp, a_tune, st = tune(name, grid, D, list(pair))
            report = [c for c in OOD_CLASSES if c not in pair]
            folds.append({"tune_classes": list(pair), "report_classes": report, "chosen": hp,
                          "tune_auroc": a_tune, **evaluate(st, D, report, args.boot)})
        hp6, a6, st6 = tune(name, grid, D, list(OOD_CLASSES))
        all6 = {"chosen": hp6, "tune_auroc": a6, **evaluate(st6, D, list(OOD_CLASSES), args.boot)}
        # Scoring time on 1,000 embeddings (+ logits), the fitted state of the near-6 choice.
        Xq, Lq = D["X_test_id"][:1000], D["L_test_id"][:1000]
        ood_score(st6, Xq, Lq)
        t1 = time.perf_counter()
        for _ in range(5):
            ood_score(st6, Xq, Lq)
        ms = (time.perf_counter() - t1) / 5 * 1000
        mean = {k: float(np.mean([f[k] for f in folds])) for k in
                ("near_auroc", "near_fpr95", "far_auroc", "far_fpr95", "acc_all", "acc_accepted")}
        results["methods"][name] = {"folds": folds, "near6": all6, "mean_over_folds": mean,
                                    "ms_per_1000": ms, "seconds": time.perf_counter() - t0}
        log(f"{name}: done in {time.perf_counter() - t0:.0f} s")

    print_table(results)
    if args.speed:
        speed(D, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
