"""The labelling page's server: GET / (page), GET /api/state, GET /api/batch, GET /api/labelled?page=k,
POST /api/label, POST /api/undo, GET /image/{id}, GET /health.

Same security as the review page (:mod:`frugalvision.review.app`):

* the page is static (``static/``); every text from the data (file names, class names) comes as JSON and is put
  into the document as text by ``label.js``; the Content-Security-Policy of :mod:`frugalvision.serve.guard`
  allows scripts and styles from this server only;
* images are named by their number in the session (``/image/12``), as downscaled JPEGs; no path from the client
  is ever opened;
* POSTs pass the Host allow-list and the Origin check of :class:`~frugalvision.serve.guard.SecurityGuard`, and
  every decision is saved at once (atomic write of the manifest); the images are never written.

The embeddings are computed in a background thread when the app starts (``/api/state`` reports the progress);
after every batch the estimate is refitted in the background too, so the next batch never waits for it.

No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
"""

import threading
from pathlib import Path

from ..review.app import _Thumbs
from .session import RESERVED, LabelSession

__all__ = ["BATCH", "PAGE", "create_app"]

#: Images per batch on the page, and per page of the "labelled so far" list.
BATCH = 12
PAGE = 48
MAX_BODY = 4096
_STATIC = {"label.js": "text/javascript; charset=utf-8", "label.css": "text/css; charset=utf-8"}


class _Loop:
    """The session plus what runs beside it: the first embedding pass and the estimate, each in a thread."""

    def __init__(self, session: LabelSession, batch: int):
        self.session, self.batch = session, batch
        self.error: str | None = None
        self.estimate: dict | None = None
        self.estimating = False
        self.estimated_at = -1          # number of labels the last estimate saw
        self._lock = threading.Lock()

    def start(self):
        def run():
            try:
                self.session.prepare()
                self.refresh()
            except Exception as exc:  # shown on the page; the server stays up
                self.error = f"Could not prepare the images: {exc}"
        threading.Thread(target=run, daemon=True, name="label-prepare").start()

    def refresh(self):
        """Start an estimate in the background unless one runs or the labels have not changed."""
        n = self.session.counts()["decided"]
        with self._lock:
            if self.estimating or n == self.estimated_at or not self.session.ready:
                return
            self.estimating = True

        def run():
            try:
                est = self.session.estimate()
                self.session.refit()  # the estimate may have chosen another head, or a "none of these" score
                self.estimate = est
            except Exception as exc:
                self.estimate = {"advice": f"no estimate ({exc})", "accuracy": None, "ci": None}
            finally:
                with self._lock:
                    self.estimating, self.estimated_at = False, n
                if self.session.counts()["decided"] != n:
                    self.refresh()
        threading.Thread(target=run, daemon=True, name="label-estimate").start()


def create_app(session: LabelSession, *, allowed_hosts=None, batch: int = BATCH, start: bool = True):
    """The FastAPI application labelling with ``session`` (a :class:`LabelSession` with a manifest path).

    ``start``: begin the embedding pass at once (in a thread). Decisions already in the manifest are loaded by
    the session, so the page resumes where it was left.
    """
    from fastapi import HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    from ..serve.page import json_object, page_app, thumbnail

    loop = _Loop(session, batch)
    thumbs = _Thumbs(session.paths)

    app = page_app("frugalvision label", "frugalvision.label", _STATIC, allowed_hosts)
    static = app.state.static
    app.state.session, app.state.loop = session, loop
    if start:
        loop.start()

    def item(entry: dict) -> dict:
        p = entry["path"]
        return {"id": session.index[p], "name": Path(p).name, "folder": str(Path(p).parent),
                "guess": entry.get("guess"), "p": entry.get("p"), "why": entry.get("why"),
                "decided": entry.get("decided")}

    def state() -> dict:
        est = loop.estimate
        return {"ready": session.ready, "error": loop.error, "progress": session.progress,
                "classes": session.classes, "counts": session.counts(), "estimate": est,
                "estimating": loop.estimating, "manifest": str(session.manifest_path or ""),
                "can_undo": bool(session.history), "goal": session.goal}

    def batch_answer() -> dict:
        items = [item(e) for e in session.current_batch(loop.batch)] if session.ready else []
        return {**state(), "batch": items}

    @app.get("/health")
    async def health():
        return {"status": "ok", "images": len(session.paths), "ready": session.ready}

    @app.get("/api/state")
    def api_state():
        return JSONResponse(state(), headers={"Cache-Control": "no-store"})

    @app.get("/api/batch")
    def api_batch():
        return JSONResponse(batch_answer(), headers={"Cache-Control": "no-store"})

    @app.get("/api/labelled")
    def api_labelled(page: str = "0"):
        if not (page.isascii() and page.isdigit() and len(page) < 9):
            raise HTTPException(422, "page must be a number (0 = the newest decisions).")
        with session._lock:
            rows = [r for r in reversed(list(session.records.values())) if r["path"] in session.index]
        start = int(page) * PAGE
        part = rows[start:start + PAGE]
        return JSONResponse({"page": int(page), "pages": max(1, -(-len(rows) // PAGE)), "total": len(rows),
                             "items": [{"id": session.index[r["path"]], "name": Path(r["path"]).name,
                                        "decided": r["label"] if r["decision"] == "label" else r["decision"],
                                        "guess": r["model_guess"]} for r in part]},
                            headers={"Cache-Control": "no-store"})

    @app.get("/image/{ident}")
    def image(ident: str):
        # Only a plain number: never a path, never anything the client could point elsewhere with.
        if not (ident.isascii() and ident.isdigit() and len(ident) < 12 and int(ident) < len(session.paths)):
            raise HTTPException(404, "No such image")
        return thumbnail(thumbs.get(int(ident)), static)

    @app.post("/api/label")
    async def label(request: Request):
        """Body ``{"id": 12, "label": "<class>" | "none" | "skip"}``; answers with the new batch and state."""
        data = await json_object(request, {"id", "label"}, max_bytes=MAX_BODY,
                                 expected='{"id": <integer>, "label": "<class>" | "none" | "skip"}')
        ident, choice = data["id"], data["label"]
        if isinstance(ident, bool) or not isinstance(ident, int) or not 0 <= ident < len(session.paths):
            raise HTTPException(422, "id must be the number of an image of this session.")
        if not isinstance(choice, str) or (choice not in session.classes and choice not in RESERVED):
            raise HTTPException(422, "label must be one of the classes, 'none' or 'skip'.")
        if not session.ready:
            raise HTTPException(409, "The images are still being prepared; wait for the first batch.")

        def do():
            path = session.paths[ident]
            session.record(path, choice)
            finished = session.batch_finished()
            if finished:  # the batch is done: refit (under a second), then the next batch is chosen with it
                session.refit()
            return batch_answer(), finished

        try:
            answer, finished = await run_in_threadpool(do)
            if finished:  # the estimate follows in the background; the page polls while it runs
                loop.refresh()
                answer["estimating"] = loop.estimating
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except OSError as exc:
            raise HTTPException(500, f"Could not save the decision ({exc.strerror or exc}).") from None
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    @app.post("/api/undo")
    async def undo(request: Request):
        """Body ``{}``: take back the last decision of this visit; its image comes back first in the batch."""
        await json_object(request, set(), max_bytes=MAX_BODY, expected="an empty object {}")
        try:
            path = await run_in_threadpool(session.undo)
        except OSError as exc:
            raise HTTPException(500, f"Could not save ({exc.strerror or exc}).") from None
        answer = await run_in_threadpool(batch_answer)
        answer["undone"] = None if path is None else session.index[path]
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    return app
