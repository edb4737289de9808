"""Moved to :mod:`frugalvision.curate` (it sits above the feature layer); kept so old imports work."""

from ..curate.audit import AuditResult, prepare, suggest_labels
from ..curate.quality import quality_metrics

__all__ = ["prepare", "suggest_labels", "AuditResult", "quality_metrics"]
