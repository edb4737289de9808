"""Headless Chromium for tests (Debian's /usr/bin/chromium driven by Playwright)."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("FRUGALVISION_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch(p):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("FRUGALVISION_REQUIRE_BROWSER"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; CI must install Debian's chromium package.")
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
