"""Download labelled images from a CSV of URLs into a folder layout, safely and resumably.

Input CSV: ``url,label[,extra columns]``. Output folder: ``<out>/<label>/<hash>.<ext>`` plus
``manifest.csv`` (path,label,extras,url,hash — ready for ``frugalvision train``) and
``collect_log.csv`` (one row per URL: status ok/duplicate/failed and the reason). A re-run skips
every URL already downloaded. Downloads run concurrently (bounded), each with a timeout, up to
``retries`` attempts with exponential back-off (for timeouts, connection errors, 429 and 5xx), a
size cap enforced while streaming, and two checks before anything is written: the Content-Type
must be an image type and the first bytes must be a known image signature.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._io import write_bytes, write_text
from ..exceptions import DataError

__all__ = ["collect", "sniff_image_type", "CollectResult"]

_SIGNATURES = [(b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif")]


def sniff_image_type(head: bytes) -> str | None:
    """File extension from the first bytes (magic numbers), or None if it is not a known image."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for sig, ext in _SIGNATURES:
        if head.startswith(sig):
            return ext
    return None


@dataclass
class CollectResult:
    manifest: pd.DataFrame
    log: pd.DataFrame
    n_downloaded: int
    n_skipped: int


class _Failure(Exception):
    def __init__(self, reason: str, retry: bool = False):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


def _fetch(client, url: str, max_bytes: int) -> bytes:
    import httpx

    try:
        with client.stream("GET", url) as r:
            if r.status_code >= 400:
                raise _Failure(f"HTTP {r.status_code}", retry=r.status_code == 429 or r.status_code >= 500)
            ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
                raise _Failure(f"content-type is '{ctype}', not an image")
            length = r.headers.get("content-length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _Failure(f"too large: {int(length):,} bytes > cap of {max_bytes:,}")
            chunks, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _Failure(f"too large: more than the cap of {max_bytes:,} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.TimeoutException:
        raise _Failure("timeout", retry=True) from None
    except httpx.TooManyRedirects:
        raise _Failure("too many redirects") from None
    except (httpx.TransportError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise _Failure(f"connection failed ({type(exc).__name__})", retry=True) from None


def _download(client, url: str, retries: int, backoff: float, max_bytes: int):
    attempt = 0
    while True:
        attempt += 1
        try:
            data = _fetch(client, url, max_bytes)
            ext = sniff_image_type(data[:16])
            if ext is None:
                raise _Failure("content is not an image (unknown magic bytes)")
            return data, ext, attempt
        except _Failure as f:
            if not f.retry or attempt >= retries:
                f.reason = f"{f.reason} (after {attempt} attempt{'s' if attempt > 1 else ''})"
                raise
            time.sleep(backoff * 2 ** (attempt - 1))


def collect(csv, out, *, workers: int = 8, retries: int = 3, timeout: float = 15.0, backoff: float = 0.5,
            max_bytes: int = 20 * 1024 * 1024, progress: bool = True) -> CollectResult:
    """Download every ``url`` of ``csv`` into ``out``; see the module docstring."""
    import httpx
    from tqdm.auto import tqdm

    src = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "url" not in src.columns or "label" not in src.columns:
        raise DataError(f"'{csv}' needs columns 'url' and 'label' (has {list(src.columns)}).")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extras = [c for c in src.columns if c not in ("url", "label")]
    log_path, manifest_path = out / "collect_log.csv", out / "manifest.csv"
    previous = pd.read_csv(log_path, dtype=str, keep_default_na=False) if log_path.exists() else None
    done = {}
    if previous is not None:
        for r in previous.itertuples():
            if r.status in ("ok", "duplicate") and (out / r.path).exists():
                done[r.url] = r._asdict()
    seen_hashes = {r["hash"]: r["path"] for r in done.values() if r["status"] == "ok"}
    todo = [r for r in src.to_dict("records") if r["url"] not in done]
    rows = list(done.values())
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=5, limits=limits,
                      headers={"user-agent": "frugalvision-collect"}) as client, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [(r, pool.submit(_download, client, r["url"], retries, backoff, max_bytes)) for r in todo]
        for r, fut in tqdm(futures, desc="Downloading", unit="img", disable=not progress):
            base = {"url": r["url"], "label": r["label"], **{c: r[c] for c in extras}}
            try:
                data, ext, attempts = fut.result()
            except _Failure as f:
                rows.append({**base, "status": "failed", "reason": f.reason, "path": "", "hash": ""})
                continue
            h = hashlib.blake2b(data, digest_size=16).hexdigest()
            if h in seen_hashes:
                rows.append({**base, "status": "duplicate", "reason": f"same content as {seen_hashes[h]}",
                             "path": seen_hashes[h], "hash": h})
                continue
            rel = f"{_safe(r['label'])}/{h[:16]}.{ext}"
            write_bytes(out / rel, data)
            seen_hashes[h] = rel
            rows.append({**base, "status": "ok", "reason": "" if attempts == 1 else f"ok after {attempts} attempts",
                         "path": rel, "hash": h})
    log = pd.DataFrame(rows, columns=["url", "label", *extras, "status", "reason", "path", "hash"])
    write_text(log_path, log.to_csv(index=False))
    manifest = log[log["status"] == "ok"][["path", "label", *extras, "url", "hash"]]
    write_text(manifest_path, manifest.to_csv(index=False))
    return CollectResult(manifest, log, n_downloaded=int(sum(1 for r in rows[len(done):] if r["status"] == "ok")),
                         n_skipped=len(done))


def _safe(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_ " else "_" for ch in str(name)).strip()
    return cleaned or "unlabelled"
