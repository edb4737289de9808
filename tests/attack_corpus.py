"""Hostile text that reaches our pages from data: class names, column names, group values, file names.

Every page that shows text from data (report.html, audit.html, the web page) is rendered with these
strings in Chromium, with a dialog listener and a console listener. Add to this list when a new trick
is found; nothing here may ever run script.
"""

#: Names that try to break out of an attribute, a tag, a script block or a URL.
HOSTILE_NAMES = (
    'x"><img src=x onerror=alert(1)>',
    "x'><svg onload=alert(2)>",
    "</script><script>alert(3)</script>",
    "<script>alert(4)</script>",
    "javascript:alert(5)",
    "a&amp;b <b>bold</b> & c",
    "\u202eevil\u202c txt.exe",          # right-to-left override
    "caf\u00e9 \u00fcber \u4e2d\u6587 \U0001f600",
    "  spaced  name  ",
    "{{7*7}} ${7*7}",
)


def safe_dirname(name: str) -> str:
    """A hostile name usable as a folder name (no '/' and no NUL; everything else is kept)."""
    return name.replace("/", "\u2215").replace("\x00", "")
