"""Ours vs cleanlab Datalab vs cleanvision on the planted Fashion-MNIST set of ``bench/prepare_planted.py``.

    pip install "cleanlab[datalab]" cleanvision      # not dependencies of frugalvision
    python bench/prepare_compare.py [--root /tmp/fv_prepare_compare] [--n 2000]

Same files, same truth, same judge (``prepare_planted.judge_pair`` and its recall rules), and for Datalab
the same inputs as ours: the efficientnet_lite0 embeddings (``features=``) and our out-of-fold
probabilities (``pred_probs=``, :func:`frugalvision.curate.labels.out_of_fold_proba`) of every readable
file. Datalab runs its default checks (label, outlier, near_duplicate, non_iid, class_imbalance,
underperforming_group, null); cleanvision its default image-property checks (dark, light, blurry,
low_information, odd_aspect_ratio, odd_size, grayscale, exact and near duplicates) on the files it can
open (it stops with ``UnidentifiedImageError`` on a corrupt file, so those are taken out first).

Counting: a planted copy is *found* when it and the image it was made from are reported together (one
duplicate group / near-duplicate set); Datalab and cleanvision know nothing of splits, so a leak counts as
found when the pair is reported. Pair precision: reported pairs judged true / reported pairs. Label
errors: flags whose folder label differs from Fashion-MNIST's / flags. Times: the tool's own run on warm
inputs (ours: the whole ``prepare`` call from a warm embedding cache; Datalab: ``find_issues`` given
embeddings and probabilities, plus the out-of-fold fit it needs; cleanvision: ``find_issues`` reading the
files).
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

# Python puts this script's folder first on sys.path, where bench/datasets.py would hide Hugging Face's
# ``datasets`` (which Datalab imports): take it off before anything imports cleanlab.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("TQDM_DISABLE", "1")  # cleanvision's progress bars


def _load_planted():
    import importlib.util

    path = Path(__file__).resolve().parent / "prepare_planted.py"
    spec = importlib.util.spec_from_file_location("prepare_planted", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["prepare_planted"] = mod
    spec.loader.exec_module(mod)
    return mod


P = _load_planted()

ROWS = ("exact_duplicate", "leak", "near_duplicate", "label_conflict", "unreadable", "label_error", "too_dark",
        "blurry")


def extras_size() -> dict:
    """Installed size of what ``cleanlab[datalab]`` and ``cleanvision`` add to frugalvision's core dependencies."""
    import re
    from importlib import metadata

    def closure(names, extras=()):
        seen, todo = set(), [(n, set(extras)) for n in names]
        while todo:
            name, ex = todo.pop()
            key = re.sub(r"[-_.]+", "-", name).lower()
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue
            if key in seen and not ex:
                continue
            seen.add(key)
            for req in dist.requires or []:
                m = re.match(r"\s*([A-Za-z0-9_.\-]+)", req)
                marker = req.split(";", 1)[1] if ";" in req else ""
                if "extra" in marker and not any(f'"{e}"' in marker or f"'{e}'" in marker for e in ex):
                    continue
                if "extra" not in marker and marker.strip():
                    try:
                        from packaging.markers import Marker

                        if not Marker(marker).evaluate({"extra": ""}):
                            continue
                    except Exception:
                        pass
                todo.append((m.group(1), set()))
        return seen

    core = closure(["frugalvision"])
    extra = closure(["cleanlab"], ["datalab"]) | closure(["cleanvision"])
    added = sorted(extra - core)

    def size(name):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return 0
        total = 0
        for f in dist.files or []:
            try:
                total += dist.locate_file(f).stat().st_size
            except OSError:
                pass
        return total

    sizes = {n: size(n) for n in added}
    return {"packages": {n: round(s / 2**20, 1) for n, s in sorted(sizes.items(), key=lambda kv: -kv[1])},
            "total_mb": round(sum(sizes.values()) / 2**20, 1)}


def _pairs_from_sets(sets_of_index):
    out = set()
    for members in sets_of_index:
        members = sorted(members)
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                out.add((members[i], members[j]))
    return out


def score_tool(root: Path, info: dict, rel: list[str], labels: list[str], split: list[str], pairs: set,
               flags: dict) -> dict:
    """Per planted kind: found/planted, flagged, precision, for a tool that reports index pairs and flag sets."""
    truth, source = info["truth"], info["source"]
    rp = [(rel[i], rel[j]) for i, j in pairs]
    judged = {p: P.judge_pair(root, *p, source) for p in rp}
    partner = {}
    for a, b in rp:
        partner.setdefault(a, set()).add(b)
        partner.setdefault(b, set()).add(a)

    def found_pair(f):
        return any(source.get(x) == source.get(f) for x in partner.get(f, ()))

    out = {}
    pos = {r: k for k, r in enumerate(rel)}
    wrong = {r for r, lab in zip(rel, labels) if r in info["true_label"] and info["true_label"][r] != lab}
    for kind in ROWS:
        files = truth.get(kind, [])
        if not files:
            continue
        if kind in ("exact_duplicate", "leak", "near_duplicate", "label_conflict"):
            if "pairs" not in flags:
                out[kind] = None
                continue
            hit = [f for f in files if f in pos and found_pair(f)]
            out[kind] = {"found": len(hit), "planted": len(files)}
        else:
            if kind not in flags:
                out[kind] = None
                continue
            flag = {rel[i] for i in flags[kind]}
            hit = [f for f in files if f in flag]
            ok = flag & (wrong if kind == "label_error" else set(files))
            out[kind] = {"found": len(hit), "planted": len(files), "flagged": len(flag),
                         "precision": round(len(ok) / len(flag), 3) if flag else None}
    byte = {p for p in rp if (root / p[0]).read_bytes() == (root / p[1]).read_bytes()}
    near = [p for p in rp if p not in byte]
    leak = [p for p in rp if {split[pos[p[0]]], split[pos[p[1]]]} == {"train", "test"}]
    out["near_pairs"] = {"reported": len(near), "precision": round(sum(judged[p] for p in near) / len(near), 3)
                         if near else None}
    out["leak_pairs"] = {"reported": len(leak), "precision": round(sum(judged[p] for p in leak) / len(leak), 3)
                         if leak else None}
    out["unplanted_pairs"] = sorted(p for p in near if not judged[p])[:60]
    return out


def run_ours(root: Path, out: Path, info: dict) -> dict:
    P.evaluate(root, out / "warm", info)  # fills the embedding cache
    r = P.evaluate(root, out / "ours", info)
    res = {k: ({"found": v["found"], "planted": v["planted"], "flagged": v["flagged"], "precision": v["precision"]})
           for k, v in r["per_issue"].items()}
    res["near_pairs"] = {"reported": r["near_pairs"]["reported"], "precision": r["near_pairs"]["precision"]}
    res["leak_pairs"] = {"reported": r["leak_pairs"]["reported"], "precision": r["leak_pairs"]["precision"]}
    res["seconds"] = r["seconds"]
    res["excluded_share"] = r["excluded_share"]
    return res


def run_datalab(root: Path, info: dict) -> tuple[dict, dict]:
    import pandas as pd
    from cleanlab import Datalab

    from frugalvision.curate.labels import out_of_fold_proba
    from frugalvision.data.discover import discover
    from frugalvision.features.extract import Extractor

    df = discover(root, require_labels=True).sort_values("path").reset_index(drop=True)
    emb = Extractor("efficientnet_lite0", progress=False)(df["path"].tolist())
    df = df[emb.ok].reset_index(drop=True)
    X = emb.X
    rel = [Path(p).resolve().relative_to(root.resolve()).as_posix() for p in df["path"]]
    labels = df["label"].astype(str).tolist()
    classes = sorted(set(labels))
    t0 = time.perf_counter()
    pred = out_of_fold_proba(X, np.array(labels), classes, 5, 0)
    t_oof = time.perf_counter() - t0
    t0 = time.perf_counter()
    lab = Datalab(pd.DataFrame({"label": labels}), label_name="label", verbosity=0)
    lab.find_issues(features=X, pred_probs=pred)
    sec = time.perf_counter() - t0
    iss = lab.get_issues()
    nd_info = lab.get_info("near_duplicate")
    sets = nd_info["near_duplicate_sets"]
    nd_rows = np.flatnonzero(iss["is_near_duplicate_issue"].to_numpy())
    pairs = _pairs_from_sets([[i, *sets[i]] for i in nd_rows])
    flags = {"pairs": True, "label_error": set(np.flatnonzero(iss["is_label_issue"].to_numpy()))}
    split = [r.split("/", 1)[0] for r in rel]
    res = score_tool(root, info, rel, labels, split, pairs, flags)
    summary = lab.get_issue_summary()
    res["other"] = {str(r.issue_type): {"flagged": int(r.num_issues), "score": round(float(r.score), 3)}
                    for r in summary.itertuples() if r.issue_type not in ("label", "near_duplicate")}
    res["seconds"] = round(sec, 1)
    res["seconds_oof"] = round(t_oof, 1)
    return res, {"X": X, "pred": pred, "rel": rel, "labels": labels}


def run_cleanvision(root: Path, info: dict) -> dict:
    from cleanvision import Imagelab

    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    readable, skipped = [], []
    for f in files:  # cleanvision stops on a file PIL cannot open; take those out first
        try:
            with Image.open(f) as im:
                im.copy()
            readable.append(f)
        except Exception:
            skipped.append(f)
    t0 = time.perf_counter()
    lab = Imagelab(filepaths=readable, verbose=False)
    lab.find_issues(verbose=False)
    sec = time.perf_counter() - t0
    iss = lab.issues.reindex(readable)
    rel = [Path(p).resolve().relative_to(root.resolve()).as_posix() for p in readable]
    pos = {p: k for k, p in enumerate(readable)}
    sets = [[pos[p] for p in s] for key in ("exact_duplicates", "near_duplicates") for s in lab.info[key]["sets"]]
    pairs = _pairs_from_sets(sets)
    labels = [r.split("/")[1] for r in rel]
    split = [r.split("/", 1)[0] for r in rel]
    flags = {"pairs": True, "too_dark": set(np.flatnonzero(iss["is_dark_issue"].to_numpy(bool))),
             "blurry": set(np.flatnonzero(iss["is_blurry_issue"].to_numpy(bool)))}
    res = score_tool(root, info, rel, labels, split, pairs, flags)
    res["unreadable"] = {"found": 0, "planted": len(info["truth"]["unreadable"]),
                         "note": f"{len(skipped)} files make find_issues raise UnidentifiedImageError; removed first"}
    res["other"] = {r.issue_type: int(r.num_images) for r in lab.issue_summary.itertuples()
                    if r.issue_type not in ("dark", "blurry", "exact_duplicates", "near_duplicates")}
    res["seconds"] = round(sec, 1)
    return res


def cell(v) -> str:
    if v is None:
        return "n/a"
    s = f"{v['found']}/{v['planted']}"
    if "flagged" in v:
        s += f", {v['flagged']} flagged, prec {v['precision']}"
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/tmp/fv_prepare_compare"))
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    root = a.root / "planted" / "data"
    info = P.plant(root, a.n, offset=0, planted=True)
    results = {"ours": run_ours(root, a.root / "planted", info)}
    print("ours", json.dumps(results["ours"], default=str), flush=True)
    results["datalab"], _ = run_datalab(root, info)
    print("datalab", json.dumps(results["datalab"], default=str), flush=True)
    results["cleanvision"] = run_cleanvision(root, info)
    print("cleanvision", json.dumps(results["cleanvision"], default=str), flush=True)
    results["extras_installed"] = extras_size()
    (a.root / "compare.json").write_text(json.dumps(results, indent=1, default=str))
    o, d, c = results["ours"], results["datalab"], results["cleanvision"]
    print("\n| issue | ours | Datalab | cleanvision |\n|---|---|---|---|")
    for k in ROWS:
        if k in o:
            print(f"| {k} | {cell(o.get(k))} | {cell(d.get(k))} | {cell(c.get(k))} |")
    for k in ("near_pairs", "leak_pairs"):
        print(f"| {k.replace('_', ' ')}: reported, precision | {o[k]['reported']}, {o[k]['precision']} | "
              f"{d[k]['reported']}, {d[k]['precision']} | {c[k]['reported']}, {c[k]['precision']} |")
    print(f"| run time (s) | {o['seconds']} (whole audit, warm cache) | {d['seconds']} "
          f"(+{d['seconds_oof']} out-of-fold fit) | {c['seconds']} |")
    print("\nDatalab other checks:", d["other"])
    print("cleanvision other checks:", c["other"])
    e = results["extras_installed"]
    print(f"\nInstalled on top of frugalvision's core: {e['total_mb']} MB: {e['packages']}")


if __name__ == "__main__":
    main()
