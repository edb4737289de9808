"""Pointing game at stride 32 (--features last: 7x7 CAM) vs stride 16 (--features multi: 14x14 stage maps).

Small objects (16-32 px disks, squares and bars in random colours) pasted on 224 px crops of real textures and
photos (scikit-image); the class is the object's shape. A model is trained per feature kind on the same images;
on held-out images the map of the decided class "hits" when its maximum falls within 15 px of the object's box
(the pointing game's usual tolerance, Zhang et al. 2016). Hit rates with Wilson intervals, and the paired difference.

    python bench/stride16_maps.py --out bench/results/stride16_maps.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))
from multi_stage import paired_ci  # noqa: E402

import frugalvision as fv  # noqa: E402
from frugalvision.evaluation.bootstrap import wilson_ci  # noqa: E402
from frugalvision.data.decode import decode_for_input  # noqa: E402
from frugalvision.inference import predictor  # noqa: E402

SHAPES = ("disk", "square", "bar")
TOL = 15


def backgrounds():
    from skimage import data as skd

    out = []
    for n in ("brick", "grass", "gravel", "coffee", "chelsea", "astronaut", "rocket", "camera"):
        a = np.asarray(Image.fromarray(getattr(skd, n)()).convert("RGB"))
        out.append(a)
    return out


def make(root: Path, n: int, seed: int):
    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    rows = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        bg = bgs[rng.integers(len(bgs))]
        y, x = rng.integers(0, bg.shape[0] - 224), rng.integers(0, bg.shape[1] - 224)
        img = Image.fromarray(np.ascontiguousarray(bg[y:y + 224, x:x + 224]))
        s = int(rng.integers(16, 33))
        x0, y0 = int(rng.integers(4, 224 - s - 4)), int(rng.integers(4, 224 - s - 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        d = ImageDraw.Draw(img)
        if shape == "disk":
            d.ellipse([x0, y0, x0 + s, y0 + s], fill=colour)
        elif shape == "square":
            d.rectangle([x0, y0, x0 + s, y0 + s], fill=colour)
        else:  # a bar: as long as the others, a third as wide
            d.rectangle([x0, y0 + s // 3, x0 + s, y0 + 2 * s // 3], fill=colour)
        p = root / shape / f"{seed}-{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        img.save(p)
        rows.append((str(p), shape, x0, y0, s))
    return pd.DataFrame(rows, columns=["path", "label", "x0", "y0", "size"])


def hits(model, test: pd.DataFrame):
    images = np.stack([decode_for_input(p, size=224, crop_pct=1.0, interpolation="bicubic").array for p in test.path])
    out = predictor(model).run(images, classes="top1")
    res = []
    for j, row in enumerate(test.itertuples()):
        m = out.maps[j, 0]
        cell = 224 / m.shape[0]
        r, c = np.unravel_index(np.argmax(m), m.shape)
        cy, cx = (r + 0.5) * cell, (c + 0.5) * cell
        inside = (row.x0 - TOL <= cx <= row.x0 + row.size + TOL) and (row.y0 - TOL <= cy <= row.y0 + row.size + TOL)
        res.append(inside)
    return np.array(res), out.maps.shape[-1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=450)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = make(root / "train", args.n_train, 0)
        test = make(root / "test", args.n_test, 1)
        hit = {}
        for kind in ("last", "multi"):
            model = fv.train(train[["path", "label"]], out=None, features=kind, test_size=0, progress=False,
                             cache_dir=root / "cache")
            pred = fv.predict(model, list(test.path), progress=False, cache_dir=root / "cache")
            acc = float(np.mean(pred["most_probable"].to_numpy(dtype=str) == test.label.to_numpy(dtype=str)))
            h, grid = hits(model, test)
            hit[kind] = h
            lo, hi = wilson_ci(int(h.sum()), len(h))
            results[kind] = {"grid": f"{grid}x{grid}", "pointing_hits": int(h.sum()), "n": int(len(h)),
                             "hit_rate": float(h.mean()), "ci": [lo, hi], "accuracy": acc}
            print(kind, json.dumps(results[kind]), flush=True)
        results["diff_hit_rate_multi_minus_last"] = paired_ci(hit["multi"], hit["last"])
        print("multi - last", results["diff_hit_rate_multi_minus_last"], flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
