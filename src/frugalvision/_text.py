"""Text from data (file and class names, decoder messages) made safe to show: in a terminal, a reason, a drawn
panel."""

from __future__ import annotations

__all__ = ["printable", "visible"]


def printable(text, limit: int | None = 160, *, quote: bool = True) -> str:
    """``text`` quoted, control/invisible characters escaped, cut to ``limit``: safe in a terminal or a reason, and
    drawable (a newline or a lone surrogate in a file name made the panels' text layout fail)."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    text = str(text)
    cut = limit is not None and len(text) > limit
    shown = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                    for ch in (text[:limit] if cut else text))
    return (f"'{shown}'" if quote else shown) + ("..." if cut else "")


def visible(text) -> str:
    """``text`` with control and format characters from data shown as escapes (ESC sequences, U+202E that reverses
    what follows, zero-width characters); newlines and tabs stay. For a terminal line or an HTML page."""
    import unicodedata

    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
                   else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}") for ch in text)
