"""Issue #29: the founding case at scale. 10,000 images (10 Fashion-MNIST classes, 1,000 each) through prepare,
train, evaluate, report, review and the label page; then 50,000 (5,000 each) through prepare and train.

    python bench/founding_scale.py [--sizes 10000,50000] [--work DIR]

Every step runs as the user runs it: the CLI in a fresh process under ``/usr/bin/time -v`` (wall time and peak
RSS), default options. prepare and train each start from an empty embedding cache (cold: the backbone pass is in
both); evaluate and report use train's. review and label are servers: the time is from start until the page's data
answers (``/api/items``; for label, until ``/api/batch`` holds the first batch: the page embeds the unlabelled
images and chooses it, on a cold cache), the memory their peak RSS by then. Bars (issue #29): 10k prepare <= 3 min, train <= 2 min,
report <= 1 min, peak RSS <= 2 GB each; 50k prepare and train <= 5x their 10k time. Prints a table, writes
``bench/results/founding_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import datasets  # noqa: E402
from prepare_scale import balanced_pngs  # noqa: E402

BARS = {10000: {"prepare": 180, "train": 120, "report": 60}}
MAX_RSS_MB = 2048


def timed(cmd: list[str], env: dict) -> dict:
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", p.stderr).group(1)) for k in ("User", "System"))
    # CPU seconds too: a ratio of them does not move when another job shares the cores.
    return {"seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "peak_rss_mb": round(rss),
            "tail": p.stdout.strip().splitlines()[-3:]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(cmd: list[str], env: dict, path: str, timeout: float = 900, ready=lambda body: True) -> dict:
    """Start a server, time until GET ``path`` answers 200 with a body ``ready`` accepts, read its peak RSS
    (VmHWM), stop it."""
    port = _free_port()
    t = time.perf_counter()
    p = subprocess.Popen([*cmd, "--port", str(port), "--no-browser"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        while True:
            if p.poll() is not None:
                raise SystemExit(f"{' '.join(cmd)} stopped:\n{p.stdout.read()[-3000:]}")
            if time.perf_counter() - t > timeout:
                raise SystemExit(f"{' '.join(cmd)}: no answer after {timeout} s")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
                    body = r.read()
                if r.status == 200 and ready(body):
                    break
                time.sleep(0.2)
            except OSError:
                time.sleep(0.2)
        wall = time.perf_counter() - t
        hwm = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{p.pid}/status").read_text()).group(1)) / 1024
        return {"seconds": round(wall, 1), "peak_rss_mb": round(hwm), "bytes": len(body)}
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def _label(n: int, work: Path, exe: str, data: Path) -> dict:
    lab = work / f"label-{n}"
    shutil.rmtree(lab, ignore_errors=True)
    shutil.rmtree(work / f"cache-label-{n}", ignore_errors=True)
    print(f"[{n}] label page, cold cache (until /api/batch holds the first batch) ...", flush=True)
    return served([exe, "label", str(data), "--classes", ",".join(datasets.FASHION_NAMES), "--out", str(lab)],
                  {**os.environ, "FRUGALVISION_CACHE": str(work / f"cache-label-{n}")}, "/api/batch",
                  ready=lambda body: bool(json.loads(body).get("batch")))


def run_size(n: int, work: Path, exe: str, full: bool, only=None) -> dict:
    data = balanced_pngs(work / f"f{n}", n)
    if only == "label":  # the label page alone (after a full run)
        return {"label": _label(n, work, exe, data)}
    if only == "prepare":  # prepare alone, cold, at every size (after a full run)
        shutil.rmtree(work / f"cache-prepare-{n}", ignore_errors=True)
        shutil.rmtree(work / f"prepared-{n}", ignore_errors=True)
        print(f"[{n}] prepare (cold cache) ...", flush=True)
        r = timed([exe, "prepare", str(data), "--out", str(work / f"prepared-{n}"), "-q"],
                  {**os.environ, "FRUGALVISION_CACHE": str(work / f"cache-prepare-{n}")})
        print(f"[{n}] prepare   {r['seconds']:7.1f} s  peak RSS {r['peak_rss_mb']:5d} MB", flush=True)
        return {"prepare": r}
    base = {**os.environ, "FRUGALVISION_CACHE": str(work / f"cache-prepare-{n}")}
    out = {}
    for c in ("cache-prepare", "cache-train"):
        shutil.rmtree(work / f"{c}-{n}", ignore_errors=True)
    shutil.rmtree(work / f"prepared-{n}", ignore_errors=True)
    shutil.rmtree(work / f"run-{n}", ignore_errors=True)
    print(f"[{n}] prepare (cold cache) ...", flush=True)
    out["prepare"] = timed([exe, "prepare", str(data), "--out", str(work / f"prepared-{n}"), "-q"], base)
    env = {**os.environ, "FRUGALVISION_CACHE": str(work / f"cache-train-{n}")}
    print(f"[{n}] train (cold cache) ...", flush=True)
    out["train"] = timed([exe, "train", str(data), "--out", str(work / f"run-{n}"), "-q"], env)
    if full:
        run = str(work / f"run-{n}")
        print(f"[{n}] evaluate ...", flush=True)
        out["evaluate"] = timed([exe, "evaluate", run, "-q"], env)
        print(f"[{n}] report ...", flush=True)
        out["report"] = timed([exe, "report", run, "-q"], env)
        print(f"[{n}] review (until /api/items answers) ...", flush=True)
        out["review"] = served([exe, "review", str(work / f"prepared-{n}")], base, "/api/items")
        out["label"] = _label(n, work, exe, data)
    for step, r in out.items():
        print(f"[{n}] {step:9s} {r['seconds']:7.1f} s  peak RSS {r['peak_rss_mb']:5d} MB", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--work", default="/tmp/fv-founding")
    ap.add_argument("--exe", default=str(Path(sys.executable).parent / "frugalvision"))
    ap.add_argument("--only", choices=["label", "prepare"],
                    help="label: time the label page again (smallest size); prepare: time prepare again at every size; "
                         "into the last results")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in a.sizes.split(",")]
    dest = HERE / "results" / "founding_scale.json"
    if a.only:
        res = json.loads(dest.read_text())
        res["results"] = {int(k): v for k, v in res["results"].items()}
        for n in (sizes if a.only == "prepare" else [min(sizes)]):
            res["results"][n].update(run_size(n, work, a.exe, full=True, only=a.only))
    else:
        res = {"machine": datasets.cpu_info(), "results": {}}
        for n in sizes:
            res["results"][n] = run_size(n, work, a.exe, full=n == min(sizes))
    small = res["results"][min(sizes)]
    verdicts = []
    for n, r in res["results"].items():
        for step, bar in BARS.get(n, {}).items():
            if step in r:
                verdicts.append((f"{n} {step} <= {bar} s", r[step]["seconds"] <= bar))
        for step, v in r.items() if n in BARS else ():  # the memory bar is the 10k run's
            verdicts.append((f"{n} {step} peak RSS <= {MAX_RSS_MB} MB", v["peak_rss_mb"] <= MAX_RSS_MB))
        if n != min(sizes):
            for step in ("prepare", "train"):
                ratio = r[step]["seconds"] / small[step]["seconds"]
                verdicts.append((f"{n} {step} <= 5x its {min(sizes)} time ({ratio:.2f}x)", ratio <= 5))
    res["verdicts"] = {k: bool(v) for k, v in verdicts}
    for k, v in verdicts:
        print(("PASS " if v else "FAIL ") + k)
    dest.write_text(json.dumps(res, indent=1))
    print(f"wrote {dest}")
    sys.exit(0 if all(v for _, v in verdicts) else 1)


if __name__ == "__main__":
    main()
