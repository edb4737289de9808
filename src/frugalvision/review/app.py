"""The review page's server: GET / (page), GET /api/items, POST /api/decision, GET /image/{row}, GET /health.

* The page is static (``static/``); every text from the data comes as JSON and is put into the document as
  text by ``review.js`` (never as HTML). The Content-Security-Policy of :mod:`frugalvision.serve.guard`
  allows scripts and styles from this server only, no inline script.
* Images are named by their row in ``manifest.csv``: ``/image/12`` is the 13th file of the manifest, as a
  downscaled JPEG (an unreadable file gets a placeholder). No path from the client is ever opened.
* Decisions (POST, JSON) pass the Host allow-list and the Origin check of :class:`~frugalvision.serve.guard.
  SecurityGuard`, and are saved at once to ``manifest.reviewed.csv`` and ``review_decisions.json`` (atomic
  writes); ``manifest.csv``, the audit files and the images are never written.

No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
"""

import io
import os
import threading
from collections import OrderedDict

from .decisions import DECISIONS, MANIFEST_NAME, REVIEWED_NAME, ReviewSession
from .queue import review_sections

__all__ = ["create_app", "thumbnail_jpeg", "THUMB_SIDE"]

#: Longest side of a thumbnail, in pixels (cards show them at up to ~200 CSS pixels).
THUMB_SIDE = 256
#: Largest decision request body (one row and one word).
MAX_BODY = 2048
_STATIC = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}


def thumbnail_jpeg(path, side: int = THUMB_SIDE) -> bytes | None:
    """A JPEG thumbnail (longest side ``side``) of the image at ``path``, or None when it cannot be read."""
    from ..data.decode import load_rgb

    try:
        img = load_rgb(path, min_side=side)
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()
    except Exception:  # unreadable, vanished, too large...: the page shows a placeholder
        return None


class _Thumbs:
    """Thumbnails by row: a bounded LRU, and at most one decode per core at a time (big photos are heavy)."""

    def __init__(self, files, max_bytes: int = 64 * 1024 * 1024):
        self.files, self.max_bytes, self.size = files, max_bytes, 0
        self.cache: OrderedDict[int, bytes | None] = OrderedDict()
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))

    def get(self, row: int) -> bytes | None:
        with self.lock:
            if row in self.cache:
                self.cache.move_to_end(row)
                return self.cache[row]
        with self.slots:
            data = thumbnail_jpeg(self.files[row])
        with self.lock:
            if row not in self.cache:
                self.cache[row] = data
                self.size += len(data or b"")
                while self.size > self.max_bytes and len(self.cache) > 1:
                    _, old = self.cache.popitem(last=False)
                    self.size -= len(old or b"")
        return data


def create_app(prepared_dir, *, allowed_hosts=None):
    """The FastAPI application reviewing ``prepared_dir`` (the folder ``frugalvision prepare`` wrote).

    ``allowed_hosts``: names the server answers under (default 127.0.0.1, localhost, [::1]). Saved decisions
    (``review_decisions.json``) are loaded, so the page resumes where it was left.
    """
    from fastapi import HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    from ..serve.page import json_object, page_app, thumbnail

    session = ReviewSession(prepared_dir)
    queue = review_sections(session.manifest)
    shown = set(queue["rows"])
    thumbs = _Thumbs(session.files)
    if session.decisions and not session.reviewed_path.exists():
        session.save()  # decisions kept, reviewed manifest lost: write it again

    app = page_app("frugalvision review", "frugalvision.review", _STATIC, allowed_hosts)
    static = app.state.static
    app.state.session = session

    def progress(decisions) -> dict:
        return {"reviewed": sum(1 for r in decisions if r in shown), "total": len(shown),
                "decided": len(decisions)}

    @app.get("/health")
    async def health():
        return {"status": "ok", "rows": len(session)}

    @app.get("/api/items")
    def items():
        decisions = dict(session.decisions)
        return JSONResponse({
            "folder": str(session.dir), "manifest": MANIFEST_NAME, "reviewed_path": str(session.reviewed_path),
            "rows": len(session), "sections": queue["sections"],
            "cards": list(queue["cards"].values()), "decisions": {str(r): d for r, d in decisions.items()},
            **progress(decisions)}, headers={"Cache-Control": "no-store"})

    @app.get("/image/{row}")
    def image(row: str):
        # Only a plain row number: never a path, never anything the client could point elsewhere with.
        if not (row.isascii() and row.isdigit() and len(row) < 12 and int(row) < len(session)):
            raise HTTPException(404, "No such row in the manifest")
        row = int(row)
        return thumbnail(thumbs.get(row), static)

    @app.post("/api/decision")
    async def decision(request: Request):
        """Body ``{"row": 12, "decision": "accept" | "keep" | "exclude" | null}`` (null: undo)."""
        data = await json_object(request, {"row", "decision"}, max_bytes=MAX_BODY,
                                 expected='{"row": <integer>, "decision": "accept" | "keep" | "exclude" | null}')
        row, choice = data["row"], data["decision"]
        if isinstance(row, bool) or not isinstance(row, int):
            raise HTTPException(422, "row must be an integer.")
        if choice is not None and choice not in DECISIONS:
            raise HTTPException(422, f"decision must be one of {', '.join(DECISIONS)} or null.")
        try:
            decisions = await run_in_threadpool(session.decide, row, choice)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except OSError as exc:
            raise HTTPException(500, f"Could not save the decision ({exc.strerror or exc}).") from None
        return {"row": row, "decision": choice, "saved": REVIEWED_NAME, **progress(decisions)}

    return app
