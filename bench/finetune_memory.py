"""Memory of fine-tuning: peak RSS, and the largest anonymous and file-backed resident memory sampled every 0.5 s
(``/proc/self/status``: Linux), while ``train --finetune`` runs on DATA with a fresh embedding cache.

    python bench/finetune_memory.py DATA [--stages 2-stages] [--epochs 3] [--out results.json]

The activations of the frozen part (one set per augmented view) are most of fine-tuning's memory; file-backed pages
are the embedding cache's memory-mapped shards.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _status() -> dict:
    with open("/proc/self/status") as fh:
        d = {line.split(":")[0]: int(line.split()[1]) / 1e6 for line in fh
             if line.startswith(("RssAnon", "RssFile", "RssShmem"))}
    return {"anon": d.get("RssAnon", 0.0), "file": d.get("RssFile", 0.0) + d.get("RssShmem", 0.0)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--stages", default="2-stages")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import frugalvision as fv

    peak = {"anon": 0.0, "file": 0.0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            s = _status()
            for k in peak:
                peak[k] = max(peak[k], s[k])
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        model = fv.train(args.data, finetune=args.stages, epochs=args.epochs, progress=False, cache_dir=cache)
    done.set()
    ft = model.info.finetune
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=Path(fv.__file__).parent).stdout.strip()
    out = {"data": args.data, "stages": args.stages, "epochs": args.epochs, "n_train": ft.extra.get("n_train"),
           "views": ft.extra.get("views"), "commit": commit, "seconds": round(time.perf_counter() - t0, 1),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
           "max_anon_gb": round(peak["anon"], 2), "max_file_backed_gb": round(peak["file"], 2),
           "best_epoch": ft.best_epoch, "history": ft.history}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
