"""A small web app: upload images, get labels with probabilities and CAMs of the top-2 classes.

``create_app(model)`` builds a FastAPI app; ``frugalvision serve MODEL`` runs it with uvicorn
on 127.0.0.1. Uploads are read into memory with a size cap, sniffed by content (never by
extension), decoded with the same safe decoder as training, and never written to disk; no
path from the client is ever used. Model calls are serialised by a lock so concurrent requests
cannot interleave inside the engine.
"""

from .app import Limits, create_app

__all__ = ["create_app", "Limits"]
