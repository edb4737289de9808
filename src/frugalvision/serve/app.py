"""FastAPI app: GET / (page), POST /predict, POST /explain, GET /health, GET /model, GET /report.

Hardened against hostile clients (see the module docstrings of :mod:`.upload`, :mod:`.work`, :mod:`.guard`):
uploads are parsed from the request stream in memory with per-file and per-request limits for every
transfer encoding (nothing is written to disk); CPU work runs on a bounded worker pool (503 +
Retry-After when full); a Host allow-list and an Origin check stop DNS rebinding and cross-site
posts; every response carries a Content-Security-Policy and the usual security headers; /docs is off
unless asked for, and then it is a self-contained page.

No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
"""


import base64
import io
import threading
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..data.decode import decode_for_input
from ..exceptions import ImageDecodeError
from .errors import RequestRejected, size_text

__all__ = ["Limits", "analyze", "create_app"]

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Safety limits of the server."""

    max_upload_bytes: int = 20 * MB            # per file
    max_pixels: int = 40_000_000               # per image, judged from the header before decoding
    max_files: int = 16                        # per request
    top_k: int = 3
    max_request_bytes: int | None = None    # whole body; None: max_files * max_upload_bytes + 1 MB
    max_buffered_bytes: int | None = None   # uploads of all requests held in memory; None: max(512 MB, request)
    upload_idle_timeout: float = 30.0          # seconds without a byte of the body -> 408

    def __post_init__(self):
        if self.max_request_bytes is None:
            object.__setattr__(self, "max_request_bytes", self.max_files * self.max_upload_bytes + MB)
        if self.max_buffered_bytes is None:
            object.__setattr__(self, "max_buffered_bytes", max(512 * MB, self.max_request_bytes))


class UploadRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _status_for(reason: str) -> int:
    if "empty file" in reason:
        return 400
    if "too large" in reason:
        return 413
    if "not an image" in reason:
        return 415
    return 422  # truncated, corrupt, unreadable pixel data


def _png_data_url(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def analyze(model, data: bytes, *, limits: Limits = Limits(), cams: bool = False, lock=None) -> dict:
    """Labels (and the readable maps of the top-2 classes) for one uploaded image, from bytes in memory.

    Predicts through the model's one inference path (:class:`~frugalvision.inference.Predictor`). The maps are
    the report's rendering (:func:`frugalvision.explanation.panels.readable_maps`): one colour scale shared by the
    maps of the image, no map for a class below p = 0.05 (``hidden``, with a ``note``), and ``difference``, the
    top-1 map minus the top-2 map. When this model gives no maps, ``cams`` is empty and ``cams_note`` says why;
    the labels are still answered.
    """
    from ..explanation import Explanation, display_image
    from ..explanation.panels import CAM_HELP, readable_maps
    from ..inference import predictor

    pre = model.preprocessing
    dec = decode_for_input(data, pre["input_size"], pre["crop_pct"], pre["interpolation"], limits.max_pixels)
    if dec.array is None:
        raise UploadRejected(_status_for(dec.error), dec.error)
    with lock or threading.Lock():
        res = predictor(model).run(dec.array[None], classes="top2" if cams else None, strict=False)
    proba = res.probabilities[0]
    classes = model.classes
    d = res.decisions[0]
    order = np.argsort(-proba)
    out = {"label": d.label, "rule": d.rule,
           "probability": None if d.probability is None else round(d.probability, 6),
           "unknown": d.unknown,  # the "none of these" score rejected the image
           "most_probable": {"label": d.most_probable, "probability": round(d.most_probable_probability, 6)},
           "runner_up": None if d.runner_up is None else {"label": d.runner_up,
                                                           "probability": round(d.runner_up_probability, 6)},
           "ood_score": None if d.ood_score is None else round(d.ood_score, 6),
           # An unknown image gets no class bars: its probabilities only rank classes it does not belong to.
           "top": [] if d.unknown else [{"label": classes[i], "probability": round(float(proba[i]), 6)}
                                        for i in order[: min(limits.top_k, len(classes))]]}
    if cams:
        out["cams"], out["cams_note"], out["difference"] = [], res.maps_note, None
        if res.maps is None:
            return out
        # Decoded again at display size: the network input above must stay identical to /predict's.
        try:
            shown = display_image(data, 320, limits.max_pixels)
        except ImageDecodeError as exc:  # pragma: no cover - decoded fine a moment ago
            raise UploadRejected(_status_for(exc.reason), exc.reason) from None
        picked = res.map_classes[0]
        if not picked:  # decided unknown: no class map unless a class is asked by name
            out["cams_note"] = "no map: the image looks like none of the classes"
            return out
        e = Explanation(path="upload", class_names=[classes[i] for i in picked], maps=res.maps[0, :len(picked)],
                        probabilities={c: float(p) for c, p in zip(classes, proba)}, box=dec.box, size=dec.size,
                        method=res.method, decision=d)
        rm = readable_maps(e, image=shown)
        out["image"] = _png_data_url(shown)
        out["cams_help"] = CAM_HELP
        out["scale"] = round(rm.scale, 6)
        for t in rm.tiles:
            url = None if t.overlay is None else _png_data_url(t.overlay)
            if t.kind == "class":
                out["cams"].append({"rank": t.rank, "label": t.label, "probability": round(t.probability, 6),
                                    "overlay": url, "hidden": t.hidden, "note": t.note, "caption": t.caption})
            else:
                out["difference"] = {"label": t.label, "overlay": url, "caption": t.caption, "for": t.pair[0],
                                     "against": t.pair[1]}
    return out


def _form_body(field: str, many: bool, description: str) -> dict:
    """OpenAPI requestBody of a multipart route whose body is parsed by :func:`.upload.read_uploads`."""
    item = {"type": "string", "format": "binary"}
    prop = {"type": "array", "items": item} if many else dict(item)
    prop["description"] = description
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": [field], "properties": {field: prop}}}}}}


_TOP = {"type": "array", "items": {"type": "object", "properties": {
    "label": {"type": "string"}, "probability": {"type": "number"}}}}


def _error_responses(limits: Limits, request_bytes: int) -> dict:
    return {
        400: {"description": "Empty file, malformed multipart body, no file part, or too many files"},
        403: {"description": "Cross-origin request from a browser (Origin not allowed or Sec-Fetch-Site: cross-site)"},
        408: {"description": f"The upload stalled for {limits.upload_idle_timeout:g} s"},
        413: {"description": f"A file over {size_text(limits.max_upload_bytes)}, an image over "
                             f"{limits.max_pixels:,} pixels, or a request over {size_text(request_bytes)}"},
        415: {"description": "Not an image (content is sniffed, the extension is ignored), or not multipart/form-data"},
        422: {"description": "Truncated or corrupt image"},
        503: {"description": "Busy: the work queue or the upload memory is full; retry after the Retry-After header",
              "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
    }


def create_app(model, *, limits: Limits = Limits(), report_path=None, allowed_hosts=None,
               workers: int | None = None, queue: int | None = None, api_docs: bool = False):
    """The FastAPI application for ``model`` (a loaded :class:`~frugalvision.model.Model`).

    ``allowed_hosts``: names the server answers under (default 127.0.0.1, localhost, [::1]; ``"*"`` for any);
    ``workers`` threads (default: one per core) run the CPU work behind a queue of ``queue`` jobs (default
    4 per worker); ``api_docs`` serves a self-contained API page at /docs (off by default; /openapi.json is
    always there).
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    from .docs import render_docs
    from .guard import DEFAULT_HOSTS, REPORT_CSP, SecurityGuard
    from .upload import MemoryBudget, read_uploads
    from .work import WorkPool

    pool = WorkPool(workers, queue)
    budget = MemoryBudget(limits.max_buffered_bytes)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown()

    app = FastAPI(title="frugalvision", version=str(model.meta.get("versions", {}).get("frugalvision")),
                  description="Classify images and see the class activation maps of the top-2 classes.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(SecurityGuard, hosts=list(allowed_hosts or DEFAULT_HOSTS))
    app.state.pool, app.state.budget = pool, budget
    lock = threading.Lock()
    model.extractor(progress=False).engine  # build/load the engine before the first request
    report = report_path or (model.run_dir / "report.html" if model.run_dir else None)
    static_dir = resources.files("frugalvision.serve").joinpath("static")
    static = {name: (static_dir.joinpath(name).read_bytes(), media) for name, media in
              (("app.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8"),
               ("favicon.svg", "image/svg+xml"))}
    index_html = static_dir.joinpath("index.html").read_text(encoding="utf-8")
    too_large = f"upload larger than the limit of {size_text(limits.max_upload_bytes)}"
    explain_bytes = min(limits.max_request_bytes, limits.max_upload_bytes + MB)  # one file and its headers

    @app.exception_handler(UploadRejected)
    async def rejected(_request: Request, exc: UploadRejected):
        return JSONResponse(status_code=exc.status, content={"detail": exc.message})

    @app.exception_handler(RequestRejected)
    async def refused(_request: Request, exc: RequestRejected):
        return JSONResponse(status_code=exc.status, content={"detail": exc.message}, headers=exc.headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return index_html

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        if name not in static:
            raise HTTPException(404, "Not found")
        body, media = static[name]
        return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        body, media = static["favicon.svg"]
        return Response(body, media_type=media, headers={"Cache-Control": "max-age=86400"})

    @app.get("/health")
    async def health():
        """Liveness: the model is loaded and the event loop answers (never queued behind uploads)."""
        return {"status": "ok", "classes": len(model.classes)}

    @app.get("/model")
    def model_info():
        """Classes, backbone, weights identity, preprocessing, limits."""
        b = model.meta["backbone"]
        return {"classes": model.classes, "backbone": b["name"], "weights_id": b["weights_id"],
                "preprocessing": model.preprocessing, "temperature": model.temperature,
                "head": model.meta.get("head"), "limits": limits.__dict__,
                "workers": pool.workers, "queue": pool.queue,
                "report": "/report" if report and report.exists() else None}

    @app.get("/report", include_in_schema=False)
    def get_report():
        if not report or not report.exists():
            raise HTTPException(404, "This model has no report.html; run 'frugalvision report MODEL'.")
        return FileResponse(report, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})

    if api_docs:
        @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
        def docs():
            return render_docs(app.openapi())

    def one(up) -> dict:
        """Worker thread: the answer for one file (raises UploadRejected for a bad one)."""
        if up.too_large:
            raise UploadRejected(413, too_large)
        try:
            return {"filename": up.filename, **analyze(model, up.data, limits=limits, lock=lock)}
        finally:
            up.data = None  # answered: let the bytes go before the next image is decoded

    async def predict_all(uploads) -> list:
        """Each file is its own job: admitted requests take turns image by image on the workers."""
        results = []
        with pool.admit():
            for up in uploads:
                try:
                    results.append(await pool.run(one, up))
                except UploadRejected as exc:
                    if len(uploads) == 1:
                        raise
                    results.append({"filename": up.filename, "error": exc.message, "status": exc.status})
        return results

    @app.post("/predict", openapi_extra=_form_body("files", True, f"1 to {limits.max_files} images, "
                                                  f"each up to {size_text(limits.max_upload_bytes)}"),
              responses={200: {"description": "One result per file, in upload order", "content": {
                  "application/json": {"schema": {"type": "object", "properties": {"results": {
                      "type": "array", "items": {"type": "object", "properties": {
                          "filename": {"type": "string"}, "top": _TOP,
                          "error": {"type": "string", "description": "only when this file was rejected"},
                          "status": {"type": "integer", "description": "HTTP status of this file's error"}}}}}}}}},
                  **_error_responses(limits, limits.max_request_bytes)})
    async def predict(request: Request):
        """Top-k labels for each uploaded image (multipart field `files`, repeated).

        In a request with several files, a rejected file (too large, not an image, corrupt) gets `error` and
        `status` in its entry and the others are answered; a single rejected file answers with that status.
        """
        uploads, release = await read_uploads(
            request, "files", max_files=limits.max_files, max_file_bytes=limits.max_upload_bytes,
            max_request_bytes=limits.max_request_bytes, budget=budget, idle_timeout=limits.upload_idle_timeout)
        try:
            if len(uploads) == 1 and uploads[0].too_large:
                raise UploadRejected(413, too_large)
            return {"results": await predict_all(uploads)}
        finally:
            release()

    @app.post("/explain", openapi_extra=_form_body("file", False, f"One image up to "
                                                  f"{size_text(limits.max_upload_bytes)}"),
              responses={200: {"description": "Labels and map overlays", "content": {"application/json": {"schema": {
                  "type": "object", "properties": {
                      "filename": {"type": "string"}, "top": _TOP,
                      "image": {"type": "string", "description": "the image as a PNG data URL (when maps exist)"},
                      "cams": {"type": "array", "items": {"type": "object", "properties": {
                          "rank": {"type": "integer"}, "label": {"type": "string"},
                          "probability": {"type": "number"},
                          "overlay": {"type": ["string", "null"], "description": "PNG data URL; null when hidden"},
                          "hidden": {"type": "boolean", "description": "no map: the class is below p = 0.05"},
                          "note": {"type": "string"}, "caption": {"type": "string"}}}},
                      "difference": {"type": ["object", "null"], "description": "top-1 map minus top-2 map "
                                     "(red: for top-1, blue: for top-2); null when the top-2 map is hidden",
                                     "properties": {"label": {"type": "string"}, "caption": {"type": "string"},
                                                    "for": {"type": "string", "description": "the top-1 class (red)"},
                                                    "against": {"type": "string", "description": "the top-2 class (blue)"},
                                                    "overlay": {"type": "string", "description": "PNG data URL"}}},
                      "scale": {"type": "number", "description": "the colour scale's maximum, shared by the maps"},
                      "cams_help": {"type": "string", "description": "what a class activation map is, in one line"},
                      "cams_note": {"type": "string", "description": "how the maps were made, or why there are none"},
                  }}}}}, **_error_responses(limits, explain_bytes)})
    async def explain(request: Request):
        """Top-k labels and class activation map overlays (PNG data URLs) of the top-1 and top-2 classes.

        The maps of the image share one colour scale; a class below p = 0.05 gets no map (`hidden`, with a
        `note`); `difference` is the top-1 map minus the top-2 map. When this model gives no maps, `cams` is
        empty and `cams_note` says why; the labels are still answered.
        """
        uploads, release = await read_uploads(
            request, "file", max_files=1, max_file_bytes=limits.max_upload_bytes,
            max_request_bytes=explain_bytes, budget=budget,
            idle_timeout=limits.upload_idle_timeout, request_too_large=too_large)
        try:
            up = uploads[0]
            if up.too_large:
                raise UploadRejected(413, too_large)
            with pool.admit():
                return await pool.run(lambda: {"filename": up.filename,
                                               **analyze(model, up.data, limits=limits, cams=True, lock=lock)})
        finally:
            release()

    return app
