"""train --engine ray sizing (issue #29 item 5): per-core extraction rate of training images on Ray actors, the
same images on the local engine (one lane = one core, and every lane), and the driver's head-fit memory per row.

    python bench/train_ray.py [--n 300] [--head-rows 20000]

Prints one JSON document (also written to bench/results/train_ray.json). Images: 1080p JPEGs from scikit-image's
photos (bench/datasets.py), 3 class folders. Each contender gets a cold cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def steady_rate(timeline, actors: int) -> float:
    """Images per second per actor once running: each actor's shards after its first, over their span."""
    per = {}
    for pid, start, end, n in sorted(timeline, key=lambda r: r[1]):
        per.setdefault(pid, []).append((start, end, n))
    rates = []
    for rows in per.values():
        if len(rows) > 1:
            rows = rows[1:]
            rates.append(sum(n for *_, n in rows) / (rows[-1][1] - rows[0][0]))
    return sum(rates) / len(rates) if rates else float("nan")


def head_memory(rows: int, dim: int = 1280) -> dict:
    """Peak memory (tracemalloc: numpy's allocations) of the driver's head stage (linear, C='auto', "none of
    these") on ``rows`` float32 embeddings (70 % train, 15 % validation), in a fresh process, as bytes per
    embedding value of the whole X (X itself included)."""
    code = f"""
import numpy as np, time, json, tracemalloc
from frugalvision.fitting import fit_head_stage
from frugalvision.recipe import Recipe
rng = np.random.default_rng(0)
n, d = {rows}, {dim}
tracemalloc.start()
X = rng.standard_normal((n, d), dtype=np.float32)
y = np.array(['a', 'b', 'c'])[rng.integers(0, 3, n)]
X[np.arange(n), (y == 'b') * 1 + (y == 'c') * 2] += 2
ntr = int(0.7 * n); nva = int(0.15 * n)
t = time.perf_counter()
fit_head_stage(X[:ntr], y[:ntr], X[ntr:ntr + nva], y[ntr:ntr + nva], Recipe())
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({{"rows": n, "seconds": time.perf_counter() - t, "peak_traced_mb": peak / 2 ** 20,
                  "bytes_per_value": peak / (n * d)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--head-rows", type=int, default=20000)
    args = ap.parse_args()
    import datasets

    import frugalvision as fv
    from frugalvision.features.extract import Extractor

    work = Path(tempfile.mkdtemp(prefix="fv-train-ray-"))
    data = work / "data"
    for k, cls in enumerate(("a", "b", "c")):
        datasets.photos_1080p(data / cls, args.n // 3, seed=k)
    paths = sorted(str(p) for p in data.rglob("*.jpg"))
    res = {"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
           "load_avg_before": os.getloadavg(), "images": len(paths), "kind": "1920x1080 JPEG q85"}

    # Local, one lane (one core) and every lane.
    for name, workers in (("local_1_core", 1), ("local_all_lanes", os.cpu_count())):
        ex = Extractor(cache_dir=work / f"cache-{name}", workers=workers, progress=False)
        ex.engine  # session built outside the timing, as an actor's is
        t = time.perf_counter()
        emb = ex(paths)
        res[name] = {"img_per_s": emb.n_computed / (time.perf_counter() - t)}

    # Ray: one actor with one CPU, then two actors, each from a cold cache; the job's own timing.
    import ray

    ray.init(num_cpus=2, object_store_memory=200 * 2 ** 20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        for actors in (1, 2):
            t = time.perf_counter()
            m = fv.train(data, engine="ray", cache_dir=work / f"cache-ray{actors}", progress=False,
                         ray_options={"shard_size": 50, "actors": actors})
            job = m.info.training["ray"][0]
            res[f"ray_{actors}_actor"] = {"train_seconds": time.perf_counter() - t, "job_seconds": job["seconds"],
                                          "img_per_s_job": job["images"] / job["seconds"],
                                          "steady_img_per_s_per_actor": steady_rate(job["timeline"], actors),
                                          "first_shard_end_s": min(r[2] for r in job["timeline"])}
    finally:
        ray.shutdown()
    res["head"] = head_memory(args.head_rows)
    res["load_avg_after"] = os.getloadavg()
    out = Path(__file__).parent / "results" / "train_ray.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
