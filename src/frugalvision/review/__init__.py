"""Review the audit of ``frugalvision prepare`` in the browser, or in a notebook.

``frugalvision review PREPARED_DIR`` serves a page (127.0.0.1 by default) with one image grid per issue
kind, most severe first, copies of one image side by side; per image: accept the suggested label, keep, or
exclude (keyboard: j/k move, a accept, o keep, x exclude, u undo, ? help). Decisions are saved at once to
``PREPARED_DIR/manifest.reviewed.csv`` (train on it) and ``review_decisions.json`` (reopening resumes);
``manifest.csv``, the audit files and the images are never modified.

From Python::

    from frugalvision.review import apply_decisions, read_manifest, save_decisions
    m = read_manifest("prepared/manifest.csv")
    reviewed = apply_decisions(m, {12: "accept", 40: "exclude"})   # pure: a new DataFrame
    save_decisions("prepared", {12: "accept", 40: "exclude"})       # the files the page writes
"""

from .app import create_app
from .decisions import (
    DECISIONS,
    DECISIONS_NAME,
    REVIEWED_NAME,
    ReviewSession,
    apply_decisions,
    load_decisions,
    read_manifest,
    save_decisions,
)
from .queue import review_sections

__all__ = ["DECISIONS", "DECISIONS_NAME", "REVIEWED_NAME", "ReviewSession", "apply_decisions", "create_app",
           "load_decisions", "read_manifest", "review_sections", "save_decisions"]
