"""fp32 vs int8 backbone graph: model-only speed, embedding fidelity, linear-probe accuracy.

    python bench/int8.py                                  # shipped efficientnet_lite0(.int8).onnx
    python bench/int8.py --int8 /tmp/other.int8.onnx --rounds 5 --seconds 3

1. Speed, model only (random uint8 batches of 8, no decoding), with the session settings of
   ``features.engine.OnnxEngine`` (intra_op_num_threads=1 per session, no spinning, ORT_ENABLE_ALL):
   "1x1" = one session, one thread; "2x1" = two such sessions in two Python threads at once (how
   frugalvision extracts features on 2 cores). fp32 and int8 are measured alternately (fp32, int8, fp32,
   ...) for ``--rounds`` rounds of ``--seconds`` each, because the machine is shared: the report gives
   median, min and max img/s and the median of the per-round int8/fp32 ratios.
2. Fidelity: cosine similarity of int8 vs fp32 embeddings on fashion4 test images (Fashion-MNIST t10k,
   never used for calibration) and on crops of the held-out scikit-image photos (rocket, coffee, camera).
3. Linear probe on fashion4: StandardScaler + LogisticRegression(C=0.01) trained on the train embeddings
   of each graph, scored on its test embeddings; paired accuracy difference with a bootstrap 95 % CI
   (test images resampled, 2000 draws).
"""

from __future__ import annotations

import argparse
import glob
import statistics
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "src" / "frugalvision" / "backbones" / "graphs"
FASHION4 = Path("/work/shared/data/fashion4")


def session(path, threads: int = 1, profile: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def embed(path, images: np.ndarray, batch: int = 16, threads: int = 2) -> np.ndarray:
    s = session(path, threads)
    return np.concatenate([s.run(["embedding"], {"images": images[i:i + batch]})[0]
                           for i in range(0, len(images), batch)])


def _throughput(sessions, x, seconds: float) -> tuple[float, float]:
    """(wall img/s, img per CPU-second) of len(sessions) sessions run concurrently, one thread each.

    With intra_op_num_threads=1 ORT computes in the calling thread, so ``time.thread_time`` is the CPU
    time the model used: img per CPU-second hardly depends on what else the machine runs, wall img/s does.
    """
    counts = [0] * len(sessions)
    cpu = [0.0] * len(sessions)
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(len(sessions))

    def work(k):
        s = sessions[k]
        s.run(["embedding"], {"images": x})  # warm-up
        barrier.wait()
        c0 = time.thread_time()
        while time.perf_counter() < stop:
            s.run(["embedding"], {"images": x})
            counts[k] += len(x)
        cpu[k] = time.thread_time() - c0

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0), sum(counts) / max(sum(cpu), 1e-9)


def speed(graphs: dict, rounds: int = 3, seconds: float = 3.0, batch: int = 8, lanes=(1, 2)) -> dict:
    """Interleaved: {lanes: {name: [(wall img/s, img per CPU-s) per round]}}; graphs = {name: path}."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    sess = {name: [session(p, 1) for _ in range(max(lanes))] for name, p in graphs.items()}
    res = {n: {name: [] for name in graphs} for n in lanes}
    for r in range(rounds):
        for n in lanes:
            names = list(graphs) if r % 2 == 0 else list(graphs)[::-1]  # alternate who goes first
            for name in names:
                res[n][name].append(_throughput(sess[name][:n], x, seconds))
    return res


def print_speed(res) -> None:
    for j, what in ((0, "wall img/s"), (1, "img per CPU-second")):
        for n, r in res.items():
            base = [v[j] for v in next(iter(r.values()))]
            cells = []
            for k, v in r.items():
                v = [x[j] for x in v]
                ratio = statistics.median(a / b for a, b in zip(v, base))
                cells.append(f"{k} {statistics.median(v):6.1f} [{min(v):.0f}-{max(v):.0f}] ({ratio:.2f}x)")
            print(f"  {what:18s} {n} session(s) x 1 thread: " + "  ".join(cells))


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def load_fashion4(size: int = 224):
    from frugalvision.data.decode import decode_for_input

    out = {}
    for split in ("train", "test"):
        paths = sorted(glob.glob(str(FASHION4 / split / "*" / "*.png")))
        out[split] = (np.stack([decode_for_input(p, size, 1.0).array for p in paths]),
                      np.array([Path(p).parent.name for p in paths]))
    return out


def heldout_photos(size: int = 224, crops: int = 20) -> np.ndarray:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from build_int8_graphs import EVAL_PHOTOS, photo_crops

    return photo_crops(EVAL_PHOTOS, size, crops, np.random.default_rng(7))


def probe(train_emb, ytr, test_emb, yte):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=5000))
    clf.fit(train_emb, ytr)
    return clf.predict(test_emb) == yte


def paired(correct_a, correct_b, draws: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    d = correct_b.astype(float) - correct_a.astype(float)
    idx = rng.integers(0, len(d), (draws, len(d)))
    boots = d[idx].mean(1)
    return d.mean(), np.percentile(boots, 2.5), np.percentile(boots, 97.5)


def fidelity(fp32, int8, data=None, photos=None) -> dict:
    data = data if data is not None else load_fashion4()
    photos = photos if photos is not None else heldout_photos()
    e = {k: {split: embed(p, data[split][0]) for split in data} for k, p in (("fp32", fp32), ("int8", int8))}
    cos_test = cosine(e["fp32"]["test"], e["int8"]["test"])
    cos_photo = cosine(embed(fp32, photos), embed(int8, photos))
    ca = probe(e["fp32"]["train"], data["train"][1], e["fp32"]["test"], data["test"][1])
    cb = probe(e["int8"]["train"], data["train"][1], e["int8"]["test"], data["test"][1])
    diff, lo, hi = paired(ca, cb)
    return {"cos_test_mean": float(cos_test.mean()), "cos_test_min": float(cos_test.min()),
            "cos_test_p1": float(np.percentile(cos_test, 1)),
            "cos_photo_mean": float(cos_photo.mean()), "cos_photo_min": float(cos_photo.min()),
            "acc_fp32": float(ca.mean()), "acc_int8": float(cb.mean()),
            "acc_diff": float(diff), "acc_diff_ci": (float(lo), float(hi))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", type=Path, default=GRAPHS / "efficientnet_lite0.onnx")
    ap.add_argument("--int8", type=Path, default=GRAPHS / "efficientnet_lite0.int8.onnx")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-fidelity", action="store_true")
    ap.add_argument("--fmnist-test", action="store_true",
                    help="also score the probe on all 4000 Fashion-MNIST t10k images of the fashion4 classes "
                         "(a superset of fashion4 test: 10x the test images, a 3x narrower CI)")
    args = ap.parse_args()
    if not args.no_speed:
        res = speed({"fp32": args.fp32, "int8": args.int8}, args.rounds, args.seconds)
        print(f"model-only speed, batch 8, {args.rounds} interleaved rounds of {args.seconds:g} s: median "
              "[min-max] (median of the per-round ratios to fp32)")
        print_speed(res)
    if not args.no_fidelity:
        f = fidelity(args.fp32, args.int8)
        print(f"cosine int8 vs fp32 embeddings: fashion4 test (n=400) mean {f['cos_test_mean']:.4f} "
              f"min {f['cos_test_min']:.4f} p1 {f['cos_test_p1']:.4f}; held-out photo crops (n=63) "
              f"mean {f['cos_photo_mean']:.4f} min {f['cos_photo_min']:.4f}")
        lo, hi = f["acc_diff_ci"]
        print(f"fashion4 linear probe (LogReg C=0.01, standardised): fp32 {100 * f['acc_fp32']:.2f} %  "
              f"int8 {100 * f['acc_int8']:.2f} %  paired diff {100 * f['acc_diff']:+.2f} pt "
              f"[95 % CI {100 * lo:+.2f}, {100 * hi:+.2f}]")
        if args.fmnist_test:
            import sys

            sys.path.insert(0, str(ROOT / "scripts"))
            from build_int8_graphs import fashion_mnist

            names = {0: "t-shirt", 5: "sandal", 6: "shirt", 8: "bag"}
            imgs, lab = fashion_mnist("test")
            keep = np.isin(lab, list(names))
            imgs, yte = imgs[keep], np.array([names[v] for v in lab[keep]])
            data = load_fashion4()
            res = {}
            for k, p in (("fp32", args.fp32), ("int8", args.int8)):
                res[k] = probe(embed(p, data["train"][0]), data["train"][1], embed(p, imgs), yte)
            diff, lo, hi = paired(res["fp32"], res["int8"])
            print(f"probe on Fashion-MNIST t10k, 4 classes (n={len(yte)}): fp32 {100 * res['fp32'].mean():.2f} %  "
                  f"int8 {100 * res['int8'].mean():.2f} %  paired diff {100 * diff:+.2f} pt "
                  f"[95 % CI {100 * lo:+.2f}, {100 * hi:+.2f}]")


if __name__ == "__main__":
    main()
