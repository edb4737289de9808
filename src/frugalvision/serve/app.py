"""FastAPI app: GET / (page), POST /predict, POST /explain, GET /health, GET /model, GET /report.

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

__all__ = ["Limits", "create_app", "analyze"]


@dataclass(frozen=True)
class Limits:
    """Safety limits of the server."""

    max_upload_bytes: int = 20 * 1024 * 1024   # per file
    max_pixels: int = 40_000_000               # per image, judged from the header before decoding
    max_files: int = 16                        # per request
    top_k: int = 3


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
    """Labels (and CAM overlays of the top-2 classes) for one uploaded image, from bytes in memory."""
    from ..explain import display_image
    from ..explain.cam import class_activation_maps
    from ..explain.overlay import normalise_map, overlay, to_image_coordinates

    pre = model.preprocessing
    dec = decode_for_input(data, pre["input_size"], pre["crop_pct"], pre["interpolation"], limits.max_pixels)
    if dec.array is None:
        raise UploadRejected(_status_for(dec.error), dec.error)
    ex = model.extractor(progress=False)
    with lock or threading.Lock():
        fmaps, emb = ex.engine.run(dec.array[None], maps=cams)
    proba = model.predict_proba_embeddings(emb)[0]
    order = np.argsort(-proba)
    classes = model.classes
    out = {"top": [{"label": classes[i], "probability": round(float(proba[i]), 6)}
                   for i in order[: min(limits.top_k, len(classes))]]}
    if cams:
        if not hasattr(model.head, "coef_"):
            raise UploadRejected(400, "This model's head is not linear; exact CAMs are not available.")
        maps = class_activation_maps(fmaps, model.head.coef_)[0]
        # Decoded again at display size: the network input above must stay identical to /predict's.
        try:
            shown = display_image(data, 384, limits.max_pixels)
        except ImageDecodeError as exc:  # pragma: no cover - decoded fine a moment ago
            raise UploadRejected(_status_for(exc.reason), exc.reason) from None
        size = (shown.shape[1], shown.shape[0])
        out["image"] = _png_data_url(shown)
        out["cams"] = []
        for rank, i in enumerate(order[:2], 1):
            heat = normalise_map(to_image_coordinates(maps[i], dec.box, size))
            out["cams"].append({"rank": rank, "label": classes[i], "probability": round(float(proba[i]), 6),
                                "overlay": _png_data_url(overlay(shown, heat))})
    return out


def create_app(model, *, limits: Limits = Limits(), report_path=None):
    """The FastAPI application for ``model`` (a loaded :class:`~frugalvision.model.Model`)."""
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    app = FastAPI(title="frugalvision", version=str(model.meta.get("versions", {}).get("frugalvision")),
                  description="Classify images and see the class activation maps of the top-2 classes.")
    lock = threading.Lock()
    model.extractor(progress=False).engine  # build/load the engine before the first request
    report = report_path or (model.run_dir / "report.html" if model.run_dir else None)

    async def read_upload(f: UploadFile) -> bytes:
        data = await f.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise UploadRejected(413, f"upload larger than the limit of {limits.max_upload_bytes // (1024 * 1024)} MB")
        return data

    @app.exception_handler(UploadRejected)
    async def rejected(_request: Request, exc: UploadRejected):
        return JSONResponse(status_code=exc.status, content={"detail": exc.message})

    @app.middleware("http")
    async def cap_request_size(request: Request, call_next):
        length = request.headers.get("content-length")
        cap = limits.max_upload_bytes * limits.max_files + 1024 * 1024
        if length is not None and length.isdigit() and int(length) > cap:
            return JSONResponse(status_code=413, content={"detail": f"request larger than {cap // (1024 * 1024)} MB"})
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return resources.files("frugalvision.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/health")
    def health():
        """Liveness: the model is loaded and the engine answers."""
        return {"status": "ok", "classes": len(model.classes)}

    @app.get("/model")
    def model_info():
        """Classes, backbone, weights identity, preprocessing, limits."""
        b = model.meta["backbone"]
        return {"classes": model.classes, "backbone": b["name"], "weights_id": b["weights_id"],
                "preprocessing": model.preprocessing, "temperature": model.temperature,
                "head": model.meta.get("head"), "limits": limits.__dict__,
                "report": "/report" if report and report.exists() else None}

    @app.get("/report", include_in_schema=False)
    def get_report():
        if not report or not report.exists():
            raise HTTPException(404, "This model has no report.html; run 'frugalvision report MODEL'.")
        return FileResponse(report, media_type="text/html")

    @app.post("/predict")
    async def predict(files: list[UploadFile] = File(..., description="One or more images")):
        """Top-k labels for each uploaded image; per-file errors are reported, not fatal."""
        if len(files) > limits.max_files:
            raise HTTPException(400, f"{len(files)} files sent; at most {limits.max_files} per request.")
        results = []
        for f in files:
            data = await read_upload(f)
            try:
                results.append({"filename": f.filename, **analyze(model, data, limits=limits, lock=lock)})
            except UploadRejected as exc:
                if len(files) == 1:
                    raise
                results.append({"filename": f.filename, "error": exc.message, "status": exc.status})
        return {"results": results}

    @app.post("/explain")
    async def explain(file: UploadFile = File(..., description="One image")):
        """Top-k labels and CAM overlays (PNG data URLs) of the top-1 and top-2 classes."""
        data = await read_upload(file)
        return {"filename": file.filename, **analyze(model, data, limits=limits, cams=True, lock=lock)}

    return app
