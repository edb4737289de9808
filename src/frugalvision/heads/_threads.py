"""Fits side by side: one single-threaded fit per thread that BLAS may use here.

A head fit's steps are small GEMMs between single-threaded numpy passes, so whole fits side by side keep the cores
busier than BLAS threads inside one fit; a fit's result does not depend on the thread it ran on.
"""

from __future__ import annotations

__all__ = ["blas_threads", "one_blas_thread", "run_each"]

_controller = None


def blas_threads(default: int) -> int:
    """The threads BLAS may use here: what the environment granted (``OMP_NUM_THREADS``, a joblib worker's or a
    caller's ``threadpool_limits``), ``default`` when no BLAS is loaded."""
    from threadpoolctl import threadpool_info

    blas = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return min(blas) if blas else default


def one_blas_thread():
    """``threadpool_limits(1, user_api="blas")`` for numpy's (and scipy's) BLAS, with the loaded libraries looked up
    once per process: a lookup costs ~5 ms and few-label training makes a few hundred small fits."""
    global _controller
    from threadpoolctl import ThreadpoolController

    if _controller is None:
        import scipy.linalg  # noqa: F401  (scipy's own BLAS, so that it is found too)

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def run_each(fn, items: list):
    """Yield ``fn(item)`` for every item, in order, each as soon as it and those before it are done; the calls run
    on as many threads as BLAS may use, each with single-threaded BLAS. An error or an interruption cancels the
    calls still queued instead of waiting for them."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    n_threads = min(blas_threads(1), len(items))
    if n_threads < 2:
        yield from (fn(it) for it in items)
        return
    pool = ThreadPoolExecutor(n_threads)
    try:
        with threadpool_limits(1, user_api="blas"):
            futures = [pool.submit(fn, it) for it in items]
            for f in futures:
                yield f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
