"""The hostile-input corpus: one place that generates every attack the tests try, so a new case is added once.

- Text from data that reaches pages, terminals, CSV files and file names: :data:`HOSTILE_NAMES` (markup and
  script), :data:`TERMINAL_NAMES` (control and bidi characters), :data:`TRAVERSAL_NAMES` ('../' and friends),
  :data:`FORMULA_CELLS` (spreadsheet formulas), :data:`LOOK_ALIKE_LABELS` (NFC/NFD, case, spaces), a very long name.
- Files that are not what they say: :func:`write_hostile_files` writes PostScript named ``.png``, a truncated PNG,
  a decompression bomb, an empty file, garbage, a FIFO, links to devices, a link out of the data folder and a
  dangling link; each with the words the skip reason must contain.
- :func:`install_gs_trap`: a ``gs`` first on PATH and traps in Pillow's EPS plugin and ``subprocess``, so a test
  fails if Ghostscript is ever started.

Every page that shows text from data (report.html, audit.html, the web page) is rendered with these strings in
Chromium, with a dialog listener and a console listener; nothing here may ever run script.
"""

from __future__ import annotations

import os
import stat
import struct
import unicodedata
import zlib
from pathlib import Path

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

#: Names that try to take over a terminal: a screen clear, a bidi override, a bell, a carriage return, a title set.
TERMINAL_NAMES = (
    "\x1b[2Jcircle\u202e",
    "\x07bell\rover",
    "\x1b]0;owned\x07title",
    "\u2066isolate\u2069\u200b",
)

#: Names that try to climb out of the folder they are written into.
TRAVERSAL_NAMES = ("../../../../../../tmp/x", "..", "a/../../b", "/etc/passwd", "..\\..\\windows")

#: Cells a spreadsheet would run as formulas, and values that must round-trip exactly around the escaping.
FORMULA_CELLS = ("=1+1", "+1+1", "-1+2", "@SUM(A1)", "\tx", "\rx", "'=x", "''=x", "'", "''", "", "'abc", "plain", "-",
                 "=", "-0.25", "+3", "1e-5", "-1e5", "-.5", "-2+3+cmd|' /C calc'!A0", "'-0.25", "caf\u00e9",
                 '=HYPERLINK("http:x","y")')

#: Labels that look alike: composed and decomposed 'café', case, surrounding spaces.
CAFE_NFC, CAFE_NFD = unicodedata.normalize("NFC", "caf\u00e9"), unicodedata.normalize("NFD", "caf\u00e9")
LOOK_ALIKE_LABELS = (CAFE_NFC, CAFE_NFD, "Cat ", "cat")

#: A name longer than most file systems allow in one component (255 bytes).
LONG_NAME = "n" * 300

#: PostScript that loops forever in Ghostscript (the 60-byte hang of issue #32).
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{ } loop\n"


def safe_dirname(name: str) -> str:
    """A hostile name usable as a folder name (no '/' and no NUL; everything else is kept)."""
    return name.replace("/", "\u2215").replace("\x00", "")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 100_000) -> bytes:
    """A valid-looking PNG header claiming side x side pixels (10 gigapixels) with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def small_png(size: int = 48) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


#: Regular files that are not usable images: name -> (bytes, words the skip reason contains).
HOSTILE_FILES = {
    "postscript.png": (EPS, "not an image of an accepted format"),
    "postscript.eps": (EPS, "not an image of an accepted format"),
    "truncated.png": (small_png()[:60], ""),
    "bomb.png": (bomb_png(), "too large"),
    "empty.png": (b"", "empty file"),
    "garbage.jpg": (os.urandom(2048), "not an image of an accepted format"),
}


def write_hostile_files(folder, outside=None) -> dict:
    """Write every hostile file into ``folder``: the regular ones of :data:`HOSTILE_FILES`, and where the platform
    has them a FIFO named ``.png``, links to /dev/zero and /dev/urandom, a link to a non-image out of the folder
    (in ``outside``, default the folder's parent) and a dangling link. Returns name -> words its skip reason has."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expect = {}
    for name, (data, words) in HOSTILE_FILES.items():
        (folder / name).write_bytes(data)
        expect[name] = words
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.png")
        expect["pipe.png"] = "not a regular file"
    if os.path.exists("/dev/zero"):
        (folder / "zero.png").symlink_to("/dev/zero")
        (folder / "urandom.png").symlink_to("/dev/urandom")
        expect.update({"zero.png": "not a regular file", "urandom.png": "not a regular file"})
    secret = Path(outside or folder.parent) / "secret.txt"
    secret.write_text("not an image: a file out of the data folder\n")
    (folder / "outside.png").symlink_to(secret)
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    expect.update({"outside.png": "not an image of an accepted format", "dangling.png": ""})
    return expect


def install_gs_trap(tmp_path, monkeypatch) -> Path:
    """Make any start of Ghostscript visible: a ``gs`` first on PATH that leaves a marker file, and (in this
    process) Pillow's EPS plugin and ``subprocess.Popen`` record a call in the same marker. Returns the marker."""
    import subprocess

    from PIL import EpsImagePlugin

    bindir, marker = Path(tmp_path) / "gs-trap-bin", Path(tmp_path) / "gs-was-run"
    bindir.mkdir(exist_ok=True)
    gs = bindir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    gs.chmod(gs.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    def record(what):
        with open(marker, "a") as fh:
            fh.write(what + "\n")

    def eps_open(self, *a, **k):
        record("EpsImagePlugin.EpsImageFile._open")
        raise SyntaxError("the EPS plugin was reached")

    def ghostscript(*a, **k):
        record("EpsImagePlugin.Ghostscript")
        raise OSError("Ghostscript was called")

    real_popen = subprocess.Popen

    class Popen(real_popen):
        def __init__(self, args, *a, **k):
            argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
            if argv and os.path.basename(str(argv[0])).lower().startswith(("gs", "gswin")):
                record(f"subprocess {argv[0]}")
            super().__init__(args, *a, **k)

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", eps_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(subprocess, "Popen", Popen)
    return marker
