"""Curate a labelled image set: audit (duplicates, leaks, quality, label errors), static page, review.

Lives above the feature layer (it embeds images with :mod:`frugalvision.features`).
"""

from .audit import AuditResult, prepare, suggest_labels
from .quality import quality_metrics

__all__ = ["prepare", "suggest_labels", "AuditResult", "quality_metrics"]
