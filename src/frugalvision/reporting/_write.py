"""One self-contained HTML report (and its JSON twin) from a model and its evaluation: the code behind
``frugalvision.reporting`` (its docstring says more).
"""

from __future__ import annotations

from pathlib import Path

from .._io import refuse_overwrite, write_text
from .render import render_html, sections_to_json
from .sections import build_sections

__all__ = ["write_report", "build_sections", "render_html", "sections_to_json"]


def write_report(model, out, *, evaluation=None, data=None, group_by=None, explain: bool = True,
                 faithfulness: bool = True, n_mistakes: int = 8, n_typical: int = 3, json_out=None,
                 overwrite: bool = False, progress: bool = True, engine: str = "auto", cache_dir=None,
                 unknown=None, goals=None, faithfulness_per_class: int | None = None) -> Path:
    """Evaluate (unless ``evaluation`` is given) and write ``out`` (HTML) and optionally ``json_out``.

    The HTML embeds every image, needs no network, and opens in any browser. ``goals`` (e.g.
    ``["accuracy>=0.9", "defective:recall>=0.9"]``) make the summary open with a verdict against them;
    without ``goals``, the goals stored at train time (``meta["training"]["goals"]``, when any) are used.
    """
    from ..evaluation import evaluate
    from .sections import FAITHFULNESS_PER_CLASS
    from .verdict import parse_goal

    if goals is None:
        goals = ((model.meta.get("training") or {}).get("goals") or None)
    if isinstance(goals, str):
        goals = [goals]
    for g in goals or []:  # a typo in a goal fails before the (slow) evaluation
        parse_goal(g, model.classes)
    out = Path(out)
    refuse_overwrite(out, overwrite, "report")
    if json_out is not None:
        refuse_overwrite(json_out, overwrite, "report JSON")
    ev = evaluation or evaluate(model, data, group_by=group_by, progress=progress, engine=engine, cache_dir=cache_dir,
                                      unknown=unknown)
    sections = build_sections(model, ev, explain=explain, faithfulness=faithfulness, n_mistakes=n_mistakes,
                              n_typical=n_typical, engine=engine, cache_dir=cache_dir, goals=goals,
                              faithfulness_per_class=faithfulness_per_class or FAITHFULNESS_PER_CLASS)
    write_text(out, render_html(sections))
    if json_out is not None:
        write_text(json_out, sections_to_json(sections))
    return out
