"""Moved to :mod:`frugalvision.curate.html`; kept so old imports work."""

from ..curate.html import CSP, audit_html

__all__ = ["audit_html", "CSP"]
