"""Which backbone for *this* problem on *this* machine? Accuracy vs ms/image vs size."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .backbones.registry import get_spec, list_backbones
from .exceptions import MissingExtraError, WeightsUnavailableError

__all__ = ["compare_backbones", "comparison_png"]


def compare_backbones(data, *, backbones=None, n_timing: int = 64, engine: str = "auto", cache_dir=None,
                      seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Train the default head on each backbone's (cached) embeddings and time the backbone here.

    Backbones whose weights are not available (offline, not cached) are listed with the reason
    instead of failing the comparison.

    Returns
    -------
    DataFrame
        backbone, test_accuracy (+ 95 % CI), val_accuracy, ms_per_image (decode + backbone, measured on
        ``n_timing`` images outside the cache), model_ms_per_image, params_m, gflops, embed_dim, error.
    """
    from .features.extract import Extractor
    from .evaluation import evaluate
    from .training import train

    rows = []
    for name in backbones or list_backbones():
        spec = get_spec(name)
        row = {"backbone": name, "params_m": spec.params_m, "gflops": spec.gflops, "embed_dim": spec.embed_dim,
               "input_size": spec.input_size, "error": ""}
        try:
            ex = Extractor(name, engine=engine, cache_dir=cache_dir, progress=progress)
            model = train(data, extractor=ex, progress=progress, seed=seed)
            ev = evaluate(model, progress=False, engine=engine, cache_dir=cache_dir)
            row.update(test_accuracy=ev.headline["accuracy"], ci_low=ev.accuracy_ci[0], ci_high=ev.accuracy_ci[1],
                       val_accuracy=model.training_["validation"].get("accuracy"))
            row.update(_timing(ex, model.data_.table["path"].tolist()[:n_timing]))
        except (WeightsUnavailableError, MissingExtraError) as exc:
            row["error"] = str(exc).split(". ")[0] + "."
        rows.append(row)
    return pd.DataFrame(rows)


def _timing(ex, paths) -> dict:
    decode = ex.decoder()
    t = time.perf_counter()
    arrays = np.stack([a.array for a in map(decode, paths) if a.array is not None])
    t_dec = time.perf_counter() - t
    ex.run_arrays(arrays[:4])  # warm-up
    t = time.perf_counter()
    ex.run_arrays(arrays)
    t_model = time.perf_counter() - t
    n = len(arrays)
    return {"ms_per_image": 1000 * (t_dec + t_model) / n, "model_ms_per_image": 1000 * t_model / n}


def comparison_png(table: pd.DataFrame) -> bytes:
    """Accuracy (with CI) against ms/image; marker area grows with the parameter count."""
    from .evaluation.plots import _plt, _png

    plt = _plt()
    ok = table[table["error"] == ""]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.errorbar(ok["ms_per_image"], ok["test_accuracy"],
                yerr=[ok["test_accuracy"] - ok["ci_low"], ok["ci_high"] - ok["test_accuracy"]], fmt="none",
                ecolor="gray", capsize=3)
    ax.scatter(ok["ms_per_image"], ok["test_accuracy"], s=30 + 12 * ok["params_m"], color="#4C78A8", alpha=0.8)
    for r in ok.itertuples():
        ax.annotate(f"{r.backbone}\n{r.params_m:.1f}M params, {r.gflops:.2f} GFLOPs", (r.ms_per_image, r.test_accuracy),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("ms per image on this machine (decode + backbone)")
    ax.set_ylabel("test accuracy (95 % CI)")
    ax.set_title("Complexity vs performance on your data")
    return _png(fig)
