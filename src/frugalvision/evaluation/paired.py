"""Is model B really more accurate than model A? A paired bootstrap on the same test rows.

Both models are scored on the same images, so the question is about the *difference*: resampling
rows and recomputing both accuracies on each resample keeps the pairing, and the interval is much
narrower than comparing two separate accuracy intervals (images both models get right or wrong
cancel out).
"""

from __future__ import annotations

from dataclasses import dataclass


from ..exceptions import DataError
from .bootstrap import bootstrap_indices, percentile_ci

__all__ = ["PairedDifference", "paired_difference"]


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of B minus accuracy of A on ``n`` shared images, with a percentile bootstrap CI."""

    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci: tuple[float, float]
    only_a_right: int
    only_b_right: int

    def __str__(self) -> str:
        ci = (f"95 % paired bootstrap CI {100 * self.ci[0]:+.2f} to {100 * self.ci[1]:+.2f}"
              if all(v == v for v in self.ci) else "too few images for an interval")  # NaN below 30 images
        return (f"{100 * self.difference:+.2f} points ({ci}) "
                f"on {self.n} images: {100 * self.accuracy_b:.2f} % vs {100 * self.accuracy_a:.2f} %; only B right on "
                f"{self.only_b_right}, only A right on {self.only_a_right}")


def paired_difference(a, b, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> PairedDifference:
    """Compare two :class:`EvaluationResult` objects (or their ``predictions`` tables) of the same images.

    Rows are matched by ``path``; every image must be in both, with the same true label.
    """
    pa, pb = (getattr(r, "predictions", r) for r in (a, b))
    for name, p in (("A", pa), ("B", pb)):
        if p["path"].duplicated().any():
            raise DataError(f"Result {name} lists some images twice; compare evaluations of distinct images.")
    if set(pa["path"]) != set(pb["path"]):
        missing = len(set(pa["path"]) ^ set(pb["path"]))
        raise DataError(f"The two results are not on the same images ({missing} appear in only one); a paired "
                        f"comparison needs both models evaluated on the same data.")
    pb = pb.set_index("path").loc[pa["path"]]
    if (pb["true"].to_numpy() != pa["true"].to_numpy()).any():
        raise DataError("The two results give different true labels to the same image.")
    ca, cb = pa["correct"].to_numpy(dtype=bool), pb["correct"].to_numpy(dtype=bool)
    d = cb.astype(float) - ca
    idx = bootstrap_indices(len(d), n_boot, seed)
    return PairedDifference(n=len(d), accuracy_a=float(ca.mean()), accuracy_b=float(cb.mean()),
                            difference=float(d.mean()), ci=percentile_ci(d[idx].mean(axis=1), level, n=len(d)),
                            only_a_right=int((ca & ~cb).sum()), only_b_right=int((cb & ~ca).sum()))
