"""The exported ONNX graph against predict, image by image: decisions equal, largest probability difference.

    python bench/export_agreement.py --precision int8 --out bench/results/export_agreement_int8.json

For each seed: the export test's data (three shapes, 60 images a class, a recall target so the model has an
operating point and a "none of these" threshold), `train`, `export`, then the export test's 42 images (20 EXIF-rotated
1080p JPEGs, 20 small PNGs in every mode, two TIFFs) through `predict` and through examples/onnx_client.py.
Run it on two commits (PYTHONPATH=<other checkout>/src) to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--seeds", default="21,22,23")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import test_export_clients as clients
    from conftest import make_shapes_dataset

    import frugalvision as fv
    from frugalvision.cli.main import main as cli

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in (int(s) for s in args.seeds.split(",")):
            data = make_shapes_dataset(tmp / f"data{seed}", n_per_class=60, size=48, seed=seed)
            run = tmp / f"run{seed}"
            fv.train(data, out=run, targets=["circle:recall>=0.97"], progress=False, precision=args.precision)
            onnx = tmp / f"m{seed}.onnx"
            assert cli(["export", str(run), "--out", str(onnx)]) == 0
            jpegs, pngs, extra = clients.make_images(tmp / f"images{seed}")
            files = jpegs + pngs + extra
            table = fv.predict(fv.load_model(run), files, progress=False).set_index("path").loc[files]
            got = [clients._client_module().Client(str(onnx)).classify(f) for f in files]
            p = np.array([g["probabilities"] for g in got]).max(1)
            row = {"seed": seed, "images": len(files),
                   "same_decision": int(sum(g["label"] == x for g, x in zip(got, table["label"]))),
                   "max_probability_difference": float(np.abs(p - table["most_probable_probability"]).max())}
            print(row, flush=True)
            rows.append(row)
    result = {"precision": args.precision, "rows": rows,
              "same_decision": sum(r["same_decision"] for r in rows), "images": sum(r["images"] for r in rows),
              "max_probability_difference": max(r["max_probability_difference"] for r in rows)}
    print(f"{args.precision}: {result['same_decision']} of {result['images']} decisions equal, largest probability "
          f"difference {result['max_probability_difference']:.1e}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
