"""One self-contained HTML report (and its JSON twin) from a model and its evaluation."""

from ._write import build_sections, render_html, sections_to_json, write_report

__all__ = ["write_report", "build_sections", "render_html", "sections_to_json"]
