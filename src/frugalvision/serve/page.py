"""The local pages' shell (``review``, ``label``): a FastAPI app behind the security guard that serves the page, its
static files and its icon from a package's ``static/`` folder, with what every page shares (``serve/static/pages``:
the script kit, the base stylesheet, the icon, the unreadable-image placeholder); each page adds its own API, reading
request bodies with :func:`json_object` and answering image requests with :func:`thumbnail`.

No ``from __future__ import annotations`` here: FastAPI reads the route signatures at runtime.
"""

import json
from importlib import resources

#: Served to every page from ``serve/static/pages`` (a page's own file of the same name wins).
SHARED = {"kit.js": "text/javascript; charset=utf-8", "kit.css": "text/css; charset=utf-8",
          "unreadable.svg": "image/svg+xml", "favicon.svg": "image/svg+xml"}


def page_app(title: str, package: str, media: dict, allowed_hosts=None):
    """The app for ``package``'s page: ``/`` (its ``static/index.html``), ``/static/{name}`` (only the files named
    in ``media``, ``{name: media type}``, and the shared ones) and ``/favicon.ico`` (``favicon.svg``).
    ``app.state.static`` holds ``{name: (bytes, media type)}`` for the page's own routes."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    from .guard import DEFAULT_HOSTS, SecurityGuard

    shared, folder = resources.files(__package__).joinpath("static", "pages"), resources.files(package).joinpath("static")
    static = {name: (shared.joinpath(name).read_bytes(), kind) for name, kind in SHARED.items()}
    static.update({name: (folder.joinpath(name).read_bytes(), kind) for name, kind in media.items()})
    index_html = folder.joinpath("index.html").read_text(encoding="utf-8")
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityGuard, hosts=list(allowed_hosts or DEFAULT_HOSTS))
    app.state.static = static

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(index_html, headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static_file(name: str):
        if name not in static:
            raise HTTPException(404, "Not found")
        body, kind = static[name]
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico")
    async def favicon():
        body, kind = static["favicon.svg"]
        return Response(body, media_type=kind, headers={"Cache-Control": "max-age=86400"})

    return app


def thumbnail(data: bytes | None, static: dict):
    """An image route's answer: the JPEG thumbnail, or the placeholder (header ``X-Frugalvision-Unreadable``)."""
    from fastapi.responses import Response

    if data is None:
        body, media = static["unreadable.svg"]
        return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=300",
                                                          "X-Frugalvision-Unreadable": "1"})
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


async def json_object(request, keys: set, *, max_bytes: int, expected: str) -> dict:
    """The request's JSON body, an object with exactly ``keys``; 415, 413, 400 or 422 (saying ``expected``)
    otherwise. The body is read in chunks and refused as soon as it passes ``max_bytes``."""
    from fastapi import HTTPException

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, "Send the request as application/json.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, "Request too large.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "The body is not JSON.") from None
    if not isinstance(data, dict) or set(data) != keys:
        raise HTTPException(422, f"Expected {expected}.")
    return data
