"""Which intermediate stages and poolings pay, per data set (the probe behind --features multi).

One pass of the shipped efficientnet_lite0 graph with every stage's output pooled (average and max), on four
offline data sets: fashion4 (../shared), 10 Fashion-MNIST classes (Debian's dataset-fashion-mnist), scikit-learn's
8x8 digits upscaled, and textures with small planted defects (scikit-image brick/grass/gravel crops, half with a thin
dark line or a spot: two classes, "defect" the minority). For each feature set a standardised, class-balanced
logistic regression (C chosen by 5-fold CV on the training part) is scored on the fixed test part; the difference to
"last" is paired on the same test images, with a 95 % bootstrap interval.

    python bench/multi_stage.py --out bench/results/multi_stage.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from few_shot import digits_sets, fashion4_sets, fashion10_sets  # noqa: E402

from frugalvision.backbones.shipped import shipped_graph  # noqa: E402
from frugalvision.backbones.stages import with_stage_outputs  # noqa: E402
from frugalvision.data.decode import decode_for_input  # noqa: E402

ALL_STAGES = (1, 2, 3, 4, 5, 6)
SETS = {
    "last": [],
    "avg3-6": [("avg", k) for k in (3, 4, 5, 6)],
    "max3-6": [("max", k) for k in (3, 4, 5, 6)],
    "avgmax3-6": [(p, k) for k in (3, 4, 5, 6) for p in ("avg", "max")],
    "avgmax4-5": [(p, k) for k in (4, 5) for p in ("avg", "max")],
    "avgmax2-6": [(p, k) for k in (2, 3, 4, 5, 6) for p in ("avg", "max")],
}


def defects_sets(work: Path, n_per_class: int = 200, size: int = 128, seed: int = 0):
    """Texture crops, half with a planted thin dark line or spot (the 'defect' class), split pool/test 50/50."""
    import pandas as pd
    from skimage import data as skd
    from skimage.draw import disk, line_aa

    rng = np.random.default_rng(seed)
    textures = [np.asarray(Image.fromarray(getattr(skd, n)()).convert("RGB")) for n in ("brick", "grass", "gravel")]
    rows = {"pool": [], "test": []}
    for i in range(2 * n_per_class * 2):
        split = "test" if i % 2 else "pool"
        label = "defect" if (i // 2) % 4 == 0 else "good"  # 1 in 4: the minority class, as in inspection
        p = work / "defects" / split / label / f"{i:05d}.png"
        if not p.exists():
            t = textures[rng.integers(len(textures))]
            y, x = rng.integers(0, t.shape[0] - size), rng.integers(0, t.shape[1] - size)
            crop = t[y:y + size, x:x + size].astype(np.float32)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if label == "defect":
                if rng.random() < 0.5:  # a thin crack, 15-40 px long
                    r0, c0 = rng.integers(10, size - 10, 2)
                    ang, ln = rng.uniform(0, np.pi), rng.integers(15, 40)
                    r1 = int(np.clip(r0 + ln * np.sin(ang), 0, size - 1))
                    c1 = int(np.clip(c0 + ln * np.cos(ang), 0, size - 1))
                    rr, cc, val = line_aa(r0, c0, r1, c1)
                    crop[rr, cc] *= (1 - 0.7 * val)[:, None]
                else:  # a dark spot, radius 2-4 px
                    rr, cc = disk(tuple(rng.integers(8, size - 8, 2)), rng.integers(2, 5), shape=crop.shape[:2])
                    crop[rr, cc] *= 0.35
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop.clip(0, 255).astype(np.uint8)).save(p)
        rows[split].append((str(p), label))
    return [pd.DataFrame(rows[s], columns=["path", "label"]) for s in ("pool", "test")]


def pool_and_test(name: str, shared: Path, work: Path):
    """``(pool, test)`` tables of one development set by name: fashion4, fashion10, digits or defects."""
    makers = {"fashion4": lambda: fashion4_sets(shared), "fashion10": lambda: fashion10_sets(work),
              "digits": lambda: digits_sets(work), "defects": lambda: defects_sets(work)}
    if name not in makers:
        raise SystemExit(f"Unknown data set {name!r}: choose among {', '.join(makers)}.")
    return makers[name]()


def session():
    path, _ = shipped_graph("efficientnet_lite0")
    model = with_stage_outputs(onnx.load(str(path)), ALL_STAGES, maps=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def features(sess, paths, batch=32):
    emb, stages = [], []
    for i in range(0, len(paths), batch):
        arr = np.stack([decode_for_input(p, size=224, crop_pct=1.0, interpolation="bicubic").array
                        for p in paths[i:i + batch]])
        e, s = sess.run(["embedding", "stages"], {"images": arr})
        emb.append(e)
        stages.append(s)
    return np.concatenate(emb), np.concatenate(stages)


def columns(widths):
    """``{(pool, stage): slice}`` in the 'stages' output: per stage, avg then max."""
    out, at = {}, 0
    for k, w in zip(ALL_STAGES, widths):
        out[("avg", k)] = slice(at, at + w)
        out[("max", k)] = slice(at + w, at + 2 * w)
        at += 2 * w
    return out


def fit_score(Xtr, ytr, Xte, yte):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=3000))
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.003, 0.01, 0.03, 0.1]},
                        cv=StratifiedKFold(5, shuffle=True, random_state=0), n_jobs=1)
    grid.fit(Xtr, ytr)
    return grid.predict(Xte) == yte, grid.predict(Xte)


def paired_ci(a, b, n_boot=2000, seed=0):
    rng = np.random.default_rng(seed)
    d = a.astype(float) - b.astype(float)
    idx = rng.integers(0, len(d), (n_boot, len(d)))
    boots = d[idx].mean(1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--work", default="/tmp/fv-bench-data")
    ap.add_argument("--sets", default="fashion4,fashion10,digits,defects")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    work = Path(args.work)
    sess = session()
    widths = None
    results = {}
    for name in args.sets.split(","):
        pool, test = pool_and_test(name, Path(args.shared), work)
        t0 = time.perf_counter()
        e_tr, s_tr = features(sess, list(pool.path))
        e_te, s_te = features(sess, list(test.path))
        if widths is None:
            m = onnx.shape_inference.infer_shapes(onnx.load(str(shipped_graph("efficientnet_lite0")[0])))
            from frugalvision.backbones.stages import stage_tensors

            found = stage_tensors(m)
            vi = {v.name: v for v in m.graph.value_info}
            widths = [vi[found[k][0]].type.tensor_type.shape.dim[1].dim_value for k in ALL_STAGES]
        cols = columns(widths)
        ytr, yte = pool.label.to_numpy(), test.label.to_numpy()
        minority = pd_minority(ytr)
        res, base = {}, None
        for fs, parts in SETS.items():
            Xtr = np.hstack([e_tr] + [s_tr[:, cols[p]] for p in parts])
            Xte = np.hstack([e_te] + [s_te[:, cols[p]] for p in parts])
            correct, pred = fit_score(Xtr, ytr, Xte, yte)
            m_mask = yte == minority
            row = {"accuracy": float(correct.mean()), "n_test": int(len(yte)), "width": int(Xtr.shape[1]),
                   "minority": minority, "minority_recall": float(np.mean(pred[m_mask] == minority))}
            if base is None:
                base = correct
            else:
                row["diff_vs_last"] = paired_ci(correct, base)
            res[fs] = row
            print(name, fs, json.dumps(row), flush=True)
        results[name] = {"feature_sets": res, "n_train": int(len(ytr)), "seconds": time.perf_counter() - t0}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


def pd_minority(y):
    vals, counts = np.unique(y, return_counts=True)
    return str(vals[np.argmin(counts)])


if __name__ == "__main__":
    main()
