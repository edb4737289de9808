"""Pooled intermediate stages from the same backbone pass (``--features multi``).

The shipped graphs (fp32 and int8) and the graphs exported from timm keep timm's module names, so the
output of stage ``k`` is the last node under ``/blocks/blocks.k/``. Adding a global average and a global
max pool on a few of those tensors costs nothing measurable (they are already computed) and gives a
linear head the mid-level texture and edge features that the last layer has pooled away: what pays on
data unlike ImageNet (defects, digits, textures).
"""

from __future__ import annotations

import re

__all__ = ["FEATURES", "MULTI_STAGES", "stage_tensors", "with_stage_outputs", "stage_map_name"]

#: ``--features``: ``last`` (the pooled last layer: the embedding) or ``multi`` (plus pooled stages).
FEATURES = ("last", "multi")
#: Stages pooled by ``multi`` (timm block indices; EfficientNet-Lite: 3 = stride 16 / 80 ch, 4 = 16 / 112,
#: 5 = 32 / 192, 6 = 32 / 320). Measured in bench/multi_stage.py.
MULTI_STAGES = (3, 4, 5, 6)
_BLOCK = re.compile(r"/blocks/blocks\.(\d+)/")


def stage_tensors(model) -> dict[int, tuple[str, str]]:
    """``{stage: (tensor name, node name)}``: the output of the last node of each stage, in a topologically
    sorted ONNX graph (as every exporter writes them)."""
    last: dict[int, tuple[str, str]] = {}
    for node in model.graph.node:
        m = _BLOCK.search(node.name)
        if m and node.output:
            last[int(m.group(1))] = (node.output[0], node.name)
    return last


def stage_map_name(k: int) -> str:
    return f"stage{k}_map"


def with_stage_outputs(model, stages=MULTI_STAGES, *, maps: bool = True):
    """A copy of ``model`` with more outputs: ``stages`` (N x D: per stage, the global average then the global
    max of every channel, stages in order) and, with ``maps``, each stage's N x C x h x w feature map
    (``stage3_map`` ...: what maps at stride 16 are made of; unused outputs cost nothing at run time)."""
    import onnx
    from onnx import TensorProto, helper

    found = stage_tensors(model)
    missing = [k for k in stages if k not in found]
    if missing:
        raise ValueError(f"The graph has no stage(s) {missing} (found {sorted(found)}): multi-stage features need "
                         f"a timm EfficientNet-like graph with '/blocks/blocks.N/' node names.")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    pooled = []
    for k in stages:
        t = found[k][0]
        for op in ("GlobalAveragePool", "GlobalMaxPool"):
            p = f"fv_stage{k}_{op}"
            g.node.append(helper.make_node(op, [t], [p], name=p))
            f = f"{p}_flat"
            g.node.append(helper.make_node("Flatten", [p], [f], name=f, axis=1))
            pooled.append(f)
    g.node.append(helper.make_node("Concat", pooled, ["stages"], name="fv_stages_concat", axis=1))
    g.output.append(helper.make_tensor_value_info("stages", TensorProto.FLOAT, ["batch", None]))
    if maps:
        for k in stages:
            name = stage_map_name(k)
            g.node.append(helper.make_node("Identity", [found[k][0]], [name], name=f"fv_{name}"))
            g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", None, None, None]))
    return out
