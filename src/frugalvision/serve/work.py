"""CPU work off the event loop: a fixed pool of worker threads behind a bounded queue.

Decoding, the network and the CAM overlays run on ``workers`` threads, never inside an ``async`` route,
so the event loop keeps answering /health, the page and small requests while big ones run.

* At most ``workers + queue`` requests are admitted to the pool at a time (:meth:`WorkPool.admit`); the
  next one is refused at once with 503 and a ``Retry-After`` estimated from recent job durations,
  instead of piling up behind the others.
* An admitted request submits one image at a time (:meth:`WorkPool.run`) and queues again for the next,
  so requests take turns image by image: a one-image request waits for about one image per busy
  request, not for whole 16-image requests ahead of it.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from .errors import RequestRejected

__all__ = ["WorkPool", "default_workers"]


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class WorkPool:
    def __init__(self, workers: int | None = None, queue: int | None = None):
        self.workers = max(1, int(workers or default_workers()))
        self.queue = max(0, int(self.workers * 4 if queue is None else queue))
        self.capacity = self.workers + self.queue
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="frugalvision-serve")
        self._lock = threading.Lock()
        self._admitted = 0
        self._seconds_per_request = 1.0  # running mean, for Retry-After

    @property
    def admitted(self) -> int:
        """Requests queued or running now."""
        return self._admitted

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue drained at the recent pace, 1-60 s."""
        return int(min(60, max(1, math.ceil(self._seconds_per_request * self.capacity / self.workers))))

    @contextmanager
    def admit(self):
        """A place in the queue for one request, or 503 with Retry-After when all ``capacity`` are taken."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise RequestRejected(503, f"The server is busy ({self._admitted} requests queued or running); "
                                           "retry shortly.", {"Retry-After": str(self.retry_after())})
            self._admitted += 1
        start = time.perf_counter()
        try:
            yield self
        finally:
            took = time.perf_counter() - start
            with self._lock:
                self._admitted -= 1
                self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * took

    async def run(self, fn, *args):
        """``fn(*args)`` on a worker thread (call inside :meth:`admit`: that bounds the executor's queue)."""
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
