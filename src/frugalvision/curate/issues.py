"""The kinds of issue an audit reports: one vocabulary for the audit, its static page and the review page."""

from __future__ import annotations

__all__ = ["ISSUE_KINDS", "FINDING_OF"]

#: Issue kinds, most severe first (the order of the pages' grids).
ISSUE_KINDS = ("unreadable", "scan_failed", "label_conflict", "leak", "exact_duplicate", "near_duplicate",
               "label_error", "too_dark", "too_bright", "blurry", "low_information", "tiny", "odd_aspect", "atypical")
#: audit.json ``findings`` key (number of files) per issue kind.
FINDING_OF = {"unreadable": "unreadable", "scan_failed": "quality_scan_failed", "label_conflict": "label_conflicts",
              "leak": "leaks", "exact_duplicate": "exact_duplicates", "near_duplicate": "near_duplicates",
              "label_error": "label_issues", "too_dark": "too_dark", "too_bright": "too_bright", "blurry": "blurry",
              "low_information": "near_constant", "tiny": "tiny", "odd_aspect": "extreme_aspect",
              "atypical": "class_outliers"}
