"""The one exception the serving layer raises for a request it refuses (answered as JSON ``{"detail": ...}``)."""

from __future__ import annotations

__all__ = ["RequestRejected", "size_text"]


class RequestRejected(Exception):
    """Refuse the whole request with ``status`` and ``message`` (plus optional response headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def size_text(n: int) -> str:
    """``20 MB``, ``1.5 MB`` or ``512 KB``: a byte limit as people read it in an error message."""
    mb = 1024 * 1024
    if n >= mb:
        return f"{n // mb} MB" if n % mb == 0 else f"{n / mb:.1f} MB"
    return f"{max(1, n // 1024)} KB"
