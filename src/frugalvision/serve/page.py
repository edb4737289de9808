"""The local pages' shell (``review``, ``label``): a FastAPI app behind the security guard that serves the page, its
static files and its icon from a package's ``static/`` folder; each page adds its own API.

No ``from __future__ import annotations`` here: FastAPI reads the route signatures at runtime.
"""

from importlib import resources


def page_app(title: str, package: str, media: dict, allowed_hosts=None):
    """The app for ``package``'s page: ``/`` (its ``static/index.html``), ``/static/{name}`` (only the files named
    in ``media``, ``{name: media type}``) and ``/favicon.ico`` (``favicon.svg``). ``app.state.static`` holds
    ``{name: (bytes, media type)}`` for the page's own routes."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    from .guard import DEFAULT_HOSTS, SecurityGuard

    folder = resources.files(package).joinpath("static")
    static = {name: (folder.joinpath(name).read_bytes(), kind) for name, kind in media.items()}
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
