"""The label page at 10,000 images: what a labeller waits for, and keystrokes per label (issue #27).

10,000 Fashion-MNIST training PNGs (10 classes) in one unlabelled folder; the label app (the real FastAPI app,
in-process through its HTTP interface) with a simulated labeller that answers every image of the batch with its
true label: one key per label (Enter when the page's guess is right, a digit otherwise). Per batch it times what the
page waits for after the batch's last key (the POST that records it, refits the head and chooses the next batch) and
the next batch's 12 thumbnails; the cross-validated estimate runs in the background as in use. Until --labels labels.

    python bench/label_page_latency.py --labels 2000 --out bench/results/label_page_latency.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import datasets  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--labels", type=int, default=2000)
    ap.add_argument("--work", default="/tmp/fv-bench-data")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from fastapi.testclient import TestClient

    from frugalvision.label import LabelSession
    from frugalvision.label.app import create_app

    items = datasets.fashion_pngs(Path(args.work) / "f10k", args.n)
    truth = {Path(p).name: lab for p, lab in items}
    classes = sorted(set(truth.values()))
    with tempfile.TemporaryDirectory() as tmp:
        session = LabelSession([p for p, _ in items], classes, manifest=Path(tmp) / "manifest.csv")
        t = time.perf_counter()
        session.prepare()
        prepare_s = time.perf_counter() - t
        app = create_app(session, start=False)
        client = TestClient(app, base_url="http://127.0.0.1:8766")
        waits, thumbs, keys, enter = [], [], 0, 0
        batch = client.get("/api/batch").json()["batch"]
        labelled = 0
        while labelled < args.labels and batch:
            for j, it in enumerate(batch):
                label = truth[it["name"]]
                keys += 1
                enter += int(it.get("guess") == label)
                t = time.perf_counter()
                r = client.post("/api/label", json={"id": it["id"], "label": label})
                r.raise_for_status()
                dt = time.perf_counter() - t
                labelled += 1
                if j == len(batch) - 1:
                    waits.append(dt)
            batch = r.json()["batch"]
            t = time.perf_counter()
            for it in batch:
                client.get(f"/image/{it['id']}").raise_for_status()
            thumbs.append(time.perf_counter() - t)
            if len(waits) % 20 == 0:
                print(f"{labelled} labelled: last batch wait {waits[-1]:.3f} s, thumbnails {thumbs[-1]:.3f} s",
                      flush=True)
        w, th = np.array(waits), np.array(thumbs)
        res = {"images": args.n, "labelled": labelled, "batches": len(waits), "prepare_seconds": round(prepare_s, 1),
               "wait_after_batch_median_s": float(np.median(w)), "wait_after_batch_p90_s": float(np.percentile(w, 90)),
               "wait_after_batch_max_s": float(w.max()),
               "wait_last_20_batches_median_s": float(np.median(w[-20:])),
               "thumbnails_per_batch_median_s": float(np.median(th)), "keystrokes_per_label": keys / labelled,
               "share_confirmed_with_enter": enter / labelled}
        print(json.dumps(res, indent=1))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
