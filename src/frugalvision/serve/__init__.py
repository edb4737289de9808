"""A small web app: upload images, get labels with probabilities and CAMs of the top-2 classes.

``create_app(model)`` builds a FastAPI app; ``frugalvision serve MODEL`` runs it with uvicorn on
127.0.0.1. Uploads are parsed from the request stream in memory (per-file and per-request limits for
chunked and Content-Length bodies alike; never written to disk), sniffed by content (never by
extension) and decoded with the same safe decoder as training; no path from the client is ever used.
Image work runs on a bounded pool of worker threads (503 + Retry-After when its queue is full), so the
event loop keeps answering. Only allowed Host names are answered (DNS rebinding), browser POSTs from
other origins are refused, and every response carries a Content-Security-Policy. Model calls are
serialised by a lock so concurrent requests cannot interleave inside the engine.
"""

from .app import Limits, create_app
from .guard import allowed_hosts

__all__ = ["Limits", "allowed_hosts", "create_app"]
