"""Issue #29: ``frugalvision prepare`` at the founding case's scale, wall time and peak RSS.

    python bench/prepare_scale.py --n 10000 [--work DIR] [--warm] [--repeat 1]

Writes ``n / 10`` Fashion-MNIST training images of each of the 10 classes as PNGs (``WORK/f<n>/<class>/``),
then runs ``/usr/bin/time -v frugalvision prepare`` on them in a fresh process, with a fresh embedding
cache (cold: extraction included) unless ``--warm``, and prints the wall time, the peak RSS and the
audit's findings. ``--recall`` also compares the near-duplicate candidates of the index with all pairs.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import datasets  # noqa: E402


def balanced_pngs(root: Path, n: int) -> Path:
    images, labels = datasets._idx("train-images-idx3-ubyte"), datasets._idx("train-labels-idx1-ubyte")
    per = n // 10
    for c, name in enumerate(datasets.FASHION_NAMES):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == c)[:per]:
            p = d / f"{i:05d}.png"
            if not p.exists():
                Image.fromarray(images[i]).save(p)
    return root


def run_prepare(data: Path, out: Path, cache: Path, exe: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-v", exe, "prepare", str(data), "--out", str(out), "--cache-dir", str(cache)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
    audit = json.loads((out / "audit.json").read_text())
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(rss), "audit_s": round(audit["seconds"], 1),
            "findings": {k: v for k, v in audit["findings"].items() if v}, "status": audit["status"],
            "stdout_tail": p.stdout.strip().splitlines()[:12]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--work", default="/tmp/fv-prepare-scale")
    ap.add_argument("--warm", action="store_true", help="Keep the embedding cache of an earlier run.")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--exe", default=str(Path(sys.executable).parent / "frugalvision"))
    ap.add_argument("--out", default=None, help="JSON file for the results.")
    args = ap.parse_args()
    work = Path(args.work)
    data = balanced_pngs(work / f"f{args.n}", args.n)
    runs = []
    for r in range(args.repeat):
        cache = work / f"cache-{args.n}"
        if not args.warm:
            shutil.rmtree(cache, ignore_errors=True)
        res = run_prepare(data, work / f"out-{args.n}", cache, args.exe)
        runs.append(res)
        print(f"[{r + 1}/{args.repeat}] prepare on {args.n} images ({'warm' if args.warm else 'cold'} cache): "
              f"{res['wall_s']} s wall, peak RSS {res['peak_rss_mb']} MB; findings {res['findings']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
