"""A self-contained API page rendered from the OpenAPI schema (``--api-docs``).

FastAPI's /docs (Swagger UI) and /redoc load their scripts and styles from a CDN: blank offline, and
they contact an outside host. This page is plain HTML built on the server from ``app.openapi()``,
every value escaped, styled by /static/app.css, with no script: it works offline under the page's CSP.
"""

from __future__ import annotations

from html import escape

__all__ = ["render_docs"]


def _schema_text(schema: dict) -> str:
    if not isinstance(schema, dict):
        return ""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type", "object")
    if kind == "array":
        return f"array of {_schema_text(schema.get('items', {}))}"
    if schema.get("format") == "binary":
        return "file"
    return str(kind)


def _body(op: dict) -> str:
    content = op.get("requestBody", {}).get("content", {})
    out = []
    for ctype, media in content.items():
        props = media.get("schema", {}).get("properties", {})
        required = set(media.get("schema", {}).get("required", []))
        rows = "".join(
            f"<tr><td><code>{escape(name)}</code>{' (required)' if name in required else ''}</td>"
            f"<td>{escape(_schema_text(p))}</td><td>{escape(p.get('description', ''))}</td></tr>"
            for name, p in props.items())
        out.append(f"<p>Request body: <code>{escape(ctype)}</code></p>"
                   + (f"<table class='api'><tr><th>field</th><th>type</th><th>meaning</th></tr>{rows}</table>"
                      if rows else ""))
    return "".join(out)


def _responses(op: dict) -> str:
    rows = "".join(f"<tr><td>{escape(str(code))}</td><td>{escape(r.get('description', ''))}</td></tr>"
                   for code, r in op.get("responses", {}).items())
    return f"<table class='api'><tr><th>status</th><th>meaning</th></tr>{rows}</table>" if rows else ""


def render_docs(spec: dict) -> str:
    """HTML listing every path and method of ``spec`` with its description, body fields and responses."""
    info = spec.get("info", {})
    sections = []
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            desc = op.get("description") or op.get("summary") or ""
            sections.append(
                f"<section class='card'><h2><code>{escape(method.upper())} {escape(path)}</code></h2>"
                + "".join(f"<p>{escape(line)}</p>" for line in desc.split("\n\n") if line.strip())
                + _body(op) + _responses(op) + "</section>")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(info.get("title", "API"))} API</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/app.css">
</head>
<body>
<h1>{escape(info.get("title", "API"))} API <span class="muted">{escape(str(info.get("version", "")))}</span></h1>
<p>{escape(info.get("description", ""))}</p>
<p class="muted">The machine-readable schema is at <a href="/openapi.json">/openapi.json</a>. Example:
<code>curl -F files=@photo.jpg http://127.0.0.1:8000/predict</code></p>
{"".join(sections)}
</body>
</html>
"""
