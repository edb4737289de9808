"""Work in worker processes, for pure-Python work on many small items.

Threads help where the work is in C that releases the GIL (ONNX Runtime, BLAS: see ``heads._threads``). Scanning
small images and verifying near-duplicate pairs is mostly Python between short OpenCV calls, so threads share one
core. joblib's loky processes (a scikit-learn dependency) start like ``spawn`` (no copy of ONNX Runtime's threads,
as ``fork`` would make) without re-running the caller's script, so a user's script needs no
``if __name__ == "__main__"`` guard; loky keeps its workers for the next call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

__all__ = ["cores", "process_map"]


def cores() -> int:
    return os.cpu_count() or 1


def process_map(fn: Callable, jobs: Iterable[tuple], workers: int | None = None) -> Iterator:
    """``fn(*args)`` for each ``args`` of ``jobs``, in order, in worker processes (one per core by default).

    ``fn`` must be importable (a module-level function); ``jobs`` is consumed a few ahead of the results, so a
    generator of jobs never holds all their arguments at once.
    """
    from joblib import Parallel, delayed

    return Parallel(n_jobs=workers or cores(), backend="loky", return_as="generator")(delayed(fn)(*a) for a in jobs)
