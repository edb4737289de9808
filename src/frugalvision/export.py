"""Export a trained model as one ONNX graph that runs with onnxruntime alone.

The graph is the backbone graph that frugalvision itself runs (the same file ONNX Runtime executes for
``predict``; see :mod:`frugalvision.features.engine`) with the head appended by the ``onnx`` package's
``helper``: no torch, and the exported probabilities are the ones ``predict`` gives.

Input ``images``: uint8 RGB ``N×H×W×3``, the decoded image at any size (``--fixed-input`` fixes H and W for
runtimes that need static shapes). Inside the graph, as ``predict`` does (:func:`frugalvision.data.decode.to_input`):
the centre crop, the resize to the network's size with OpenCV's kernels (bicubic, or area averaging when shrinking
more than 2x) in exact integer arithmetic, written as two matrix products (:mod:`frugalvision.data.resize`: the
same pixels as ``predict``'s, not within a grey level); then normalisation, backbone, head, temperature.
Decode as ``predict`` does (upright, transparency on white, JPEGs at reduced DCT scale: ``Image.draft``; see the
metadata's ``decode``) and the probabilities are ``predict``'s; examples/onnx_client.py is such a client.
Outputs: ``decision`` (class index under the operating point, -1 = unknown / "none of these"), ``runner_up``,
``probabilities`` (N×K), ``ood_score`` (when the model has one) and ``cams`` (N×K×h×w, every class's exact CAM;
linear heads on average-pooled features) or ``features`` (N×C×h×w, the last feature map, for other heads).
Class names and preprocessing are stored in the ONNX metadata (``frugalvision`` key, JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._io import atomic_writer, refuse_overwrite
from .data.decode import crop_pixels
from .data.resize import CARRY_BITS, CUBIC_A, INTERPOLATIONS, WEIGHT_BITS, resize_matrix, uses_area

__all__ = ["export_onnx_model", "read_onnx_metadata"]


def _stage_cam_nodes(model, const, helper):
    """Nodes computing :func:`frugalvision.maps.stage_cam.stage_class_maps` for a linear head: ``cams`` (N x K x H x W).

    The maps' sizes are fixed by the network's input size, so area resampling is a constant matrix; a maximum's
    cell is an ArgMax turned one-hot."""
    from .backbones.stages import MULTI_STAGES, stage_map_name
    from .maps.stage_cam import area_matrix

    s = model.info.preprocessing.input_size
    got = model.extractor(progress=False).engine.run_outputs(np.zeros((1, s, s, 3), np.uint8), maps=True)
    parts = [("features", got["features"].shape[1:], False)]
    parts += [(stage_map_name(k), got[stage_map_name(k)].shape[1:], True) for k in MULTI_STAGES]
    H, W = max((p[1][1:] for p in parts), key=lambda hw: hw[0] * hw[1])
    coef = np.asarray(model.head.coef_, np.float32)
    K = coef.shape[0]
    nodes, sums, at = [], [], 0
    for i, (t, (c, h, w), has_max) in enumerate(parts):
        p = f"fv_sc{i}"
        nodes += [helper.make_node("Reshape", [t, const(f"w_sc{i}_shape", [0, c, h * w], np.int64)], [f"{p}_flat"]),
                  helper.make_node("Transpose", [f"{p}_flat"], [f"{p}_t"], perm=[0, 2, 1]),        # (n, hw, c)
                  helper.make_node("MatMul", [f"{p}_t", const(f"w_sc{i}_avg", coef[:, at:at + c].T)], [f"{p}_avg"])]
        at += c
        cell = f"{p}_avg"
        if has_max:
            nodes += [
                helper.make_node("ArgMax", [f"{p}_flat"], [f"{p}_arg"], axis=2, keepdims=0),       # (n, c)
                helper.make_node("ReduceMax", [f"{p}_flat"], [f"{p}_max"], axes=[2], keepdims=1),  # (n, c, 1)
                helper.make_node("OneHot", [f"{p}_arg", const(f"w_sc{i}_depth", h * w, np.int64),
                                            const("onehot_values", [0.0, 1.0])], [f"{p}_hot"], axis=-1),
                helper.make_node("Mul", [f"{p}_hot", f"{p}_max"], [f"{p}_spike"]),                 # (n, c, hw)
                helper.make_node("Transpose", [f"{p}_spike"], [f"{p}_spike_t"], perm=[0, 2, 1]),
                helper.make_node("MatMul", [f"{p}_spike_t", const(f"w_sc{i}_max", coef[:, at:at + c].T * (h * w))],
                                 [f"{p}_maxpart"]),
                helper.make_node("Add", [f"{p}_avg", f"{p}_maxpart"], [f"{p}_sum"])]
            at += c
            cell = f"{p}_sum"
        area = np.kron(area_matrix(H, h), area_matrix(W, w))                                       # (HW, hw)
        nodes.append(helper.make_node("MatMul", [const(f"w_sc{i}_area", area), cell], [f"{p}_fine"]))  # (n, HW, K)
        sums.append(f"{p}_fine")
    nodes += [helper.make_node("Sum", sums, ["fv_sc_all"]),
              helper.make_node("Transpose", ["fv_sc_all"], ["fv_sc_all_t"], perm=[0, 2, 1]),
              helper.make_node("Reshape", ["fv_sc_all_t", const("sc_out_shape", [0, K, H, W], np.int64)], ["cams"])]
    return nodes, [H, W]


def export_onnx_model(model, out, *, fixed_input: tuple[int, int] | None = None, input_size: int | None = None,
                      overwrite: bool = False, cache_dir=None) -> Path:
    """Write ``out`` (.onnx). Returns the path. See the module docstring for the graph's contract.

    ``fixed_input=(width, height)`` gives a graph whose input has that fixed size (crop and resize weights are
    then constants); ``input_size=S`` is the same as ``fixed_input=(S, S)``. By default height and width are free.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .inference import map_support

    out = Path(out)
    refuse_overwrite(out, overwrite, "ONNX file")
    proto = onnx.load(str(model.backbone_graph(cache_dir=cache_dir)))
    multi = model.info.backbone.features == "multi"
    if multi:  # the head reads the last layer's embedding followed by the pooled stages, as in predict
        from .backbones.stages import with_stage_outputs

        proto = with_stage_outputs(proto, maps=True)
        for node in proto.graph.node:
            node.output[:] = ["fv_last_embedding" if x == "embedding" else x for x in node.output]
            node.input[:] = ["fv_last_embedding" if x == "embedding" else x for x in node.input]
        proto.graph.node.append(helper.make_node("Concat", ["fv_last_embedding", "stages"], ["embedding"], axis=1))
    g = proto.graph
    net_size = model.info.preprocessing.input_size
    if input_size is not None:
        if fixed_input is not None:
            raise ValueError("Give fixed_input or input_size, not both.")
        fixed_input = (input_size, input_size)
    fixed = None if fixed_input is None else (int(fixed_input[0]), int(fixed_input[1]))
    if fixed is not None and min(fixed) < 1:
        raise ValueError(f"The fixed input size must be positive numbers of pixels, got {fixed[0]}x{fixed[1]}.")
    cam = map_support(model, "cam").available
    temperature = float(model.temperature)
    inits, nodes = [], []

    made = {}

    def const(name, array, dtype=np.float32):
        value = np.array(array, dtype=dtype)  # 0-d stays 0-d
        if name in made:  # one initializer per name, reused
            if made[name].dtype != value.dtype or not np.array_equal(made[name], value):
                raise AssertionError(f"two different constants named {name}")
            return f"fv_{name}"
        made[name] = value
        inits.append(numpy_helper.from_array(value, name=f"fv_{name}"))
        return f"fv_{name}"

    # Crop and resize in front of the backbone (whose input is uint8 NHWC at the network's size).
    (image_input,) = [i for i in g.input if i.name == "images"]
    for node in g.node:
        node.input[:] = ["fv_net_images" if x == "images" else x for x in node.input]
    pre = model.preprocessing
    nodes += _crop_resize_nodes(const, helper, TensorProto, net_size, float(pre["crop_pct"]),
                                str(pre.get("interpolation", "bicubic")), fixed)
    dims = image_input.type.tensor_type.shape.dim
    for d, v in zip(dims[1:3], (fixed[1], fixed[0]) if fixed else ("height", "width")):
        if isinstance(v, int):
            d.dim_value = v
        else:
            d.dim_param = v
    head_nodes, logits = _head_nodes(model, const, helper)
    nodes_after = head_nodes + [
        helper.make_node("Div", [logits, const("temperature", temperature)], ["fv_scaled"]),
        helper.make_node("Softmax", ["fv_scaled"], ["probabilities"], axis=1),
    ]
    score = _ood_nodes(model, const, helper, nodes_after)
    nodes_after += _decision_nodes(model, const, helper, score)
    map_hw = None
    if cam and multi:  # the logit split over the image at stride 16, as explain draws it (maps/stage_cam.py)
        cam_nodes, map_hw = _stage_cam_nodes(model, const, helper)
        nodes_after += cam_nodes
    elif cam:  # CAM_k = Σ_c W[k,c]·A[c]: a MatMul over the channel axis of the NHWC view
        nodes_after += [
            helper.make_node("Transpose", ["features"], ["fv_fmap_nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("MatMul", ["fv_fmap_nhwc", const("coef_t", model.head.coef_.T)],
                             ["fv_cams_nhwk"]),
            helper.make_node("Transpose", ["fv_cams_nhwk"], ["cams"], perm=[0, 3, 1, 2]),
        ]
    body = list(g.node)
    del g.node[:]
    g.node.extend(nodes + body + nodes_after)  # the resize runs first
    g.initializer.extend(inits)
    feat_out = [o for o in g.output if o.name == "features"][0]
    del g.output[:]
    k = len(model.classes)
    g.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", k]))
    g.output.append(helper.make_tensor_value_info("decision", TensorProto.INT64, ["batch"]))
    g.output.append(helper.make_tensor_value_info("runner_up", TensorProto.INT64, ["batch"]))
    if score is not None:
        g.output.append(helper.make_tensor_value_info("ood_score", TensorProto.FLOAT, ["batch"]))
    if cam:
        dims = [d.dim_value or None for d in feat_out.type.tensor_type.shape.dim][2:] if map_hw is None else map_hw
        g.output.append(helper.make_tensor_value_info("cams", TensorProto.FLOAT, ["batch", k, *dims]))
    else:
        g.output.append(feat_out)
    onnx.checker.check_model(proto)
    pre = model.preprocessing
    meta = {"classes": model.classes, "input_size": net_size, "network_input_size": net_size,
            "input_shape": ["batch", fixed[1], fixed[0], 3] if fixed else ["batch", "height", "width", 3],
            "input": "uint8 RGB N x height x width x 3: the decoded image, upright, transparency composited on white "
                     "(any size" + (")" if not fixed else f"; this graph: {fixed[1]} high, {fixed[0]} wide)")
                     + "; the graph crops the centre square and resizes it to input_size as predict does",
            "jpeg_min_side": _jpeg_min_side(pre),
            "decode": "as predict: a JPEG whose shorter side is at least 2 x jpeg_min_side is decoded at the "
                      "smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides >= jpeg_min_side (Pillow: "
                      "Image.draft('RGB', (jpeg_min_side, jpeg_min_side))); other images at full size",
            "preprocessing": model.preprocessing, "temperature": temperature,
            "backbone": model.info.backbone.name, "weights_id": model.info.backbone.weights_id,
            "operating_point": model.info.operating_point.to_json() if model.info.operating_point else None,
            "reject": _reject_meta(model),
            "outputs": {"probabilities": "N x K softmax(logits / temperature)",
                        "decision": "N class indices into 'classes' under the operating point; -1 = unknown "
                                    "('none of these': ood_score above reject.thresholds_by_class at the most "
                                    "probable class)",
                        "runner_up": "N class indices: the most probable class other than the decided one (for "
                                     "unknown: the most probable class)",
                        "ood_score": "N unusualness scores (higher = more unusual)" if score else None,
                        "cams": ("N x K x h x w exact class activation maps" if not multi else
                                 "N x K x h x w exact class maps at stride 16 (multi-stage features: the last layer "
                                 "and the stages' averages spread over the image, each maximum on its cell; "
                                 "mean + bias = logit)") if cam else None,
                        "features": None if cam else "N x C x h x w last feature map"},
            "versions": model.info.versions}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "frugalvision", json.dumps(meta)
    with atomic_writer(out, "wb") as fh:
        fh.write(proto.SerializeToString())
    return out


def _jpeg_min_side(pre: dict) -> int:
    """The side :func:`frugalvision.data.decode.decode_for_input` asks the JPEG decoder for."""
    return int(round(int(pre["input_size"]) / max(float(pre["crop_pct"]), 1e-3)))


def _crop_resize_nodes(const, helper, TensorProto, size: int, crop_pct: float, interpolation: str, fixed) -> list:
    """``images`` (uint8 N x H x W x 3) -> ``fv_net_images`` (uint8 N x size x size x 3): the centre crop and the
    resize of :func:`frugalvision.data.decode.to_input`, pixel for pixel: two matrix products (rows, then columns)
    with the integer weights of :func:`frugalvision.data.resize.resize_matrix`, each followed by the same rounding.
    All values are integers below 2**24, so the float32 MatMuls are exact whatever their order of additions."""
    if interpolation not in INTERPOLATIONS:
        interpolation = "bicubic"  # resize_matrix's fallback
    F, I64 = TensorProto.FLOAT, TensorProto.INT64
    mk = helper.make_node
    nodes = []
    if fixed:  # constants: the runtime sees a static graph
        w, h = fixed
        l, t, r, b = crop_pixels(w, h, crop_pct)
        area = uses_area(r - l, size)
        nodes.append(mk("Slice", ["images", const("crop_start", [t, l], np.int64), const("crop_end", [b, r], np.int64),
                                  const("crop_axes", [1, 2], np.int64)], ["fv_crop"]))
        wy = const("resize_rows", resize_matrix(b - t, size, interpolation, area))
        wx = const("resize_cols_t", resize_matrix(r - l, size, interpolation, area).T)
    else:
        D = TensorProto.DOUBLE
        nodes += [
            mk("Shape", ["images"], ["fv_in_shape"]),
            mk("Gather", ["fv_in_shape", const("hw_idx", [1, 2], np.int64)], ["fv_hw_i"]),
            mk("Cast", ["fv_hw_i"], ["fv_hw"], to=D),  # [H, W]
            mk("ReduceMin", ["fv_hw"], ["fv_short"], keepdims=1),
            mk("Mul", ["fv_short", const("crop_pct", min(max(crop_pct, 1e-3), 1.0), np.float64)], ["fv_side"]),
            mk("Sub", ["fv_hw", "fv_side"], ["fv_margin"]),
            mk("Div", ["fv_margin", const("two_d", 2.0, np.float64)], ["fv_lo_f"]),  # [top, left]
            mk("Add", ["fv_lo_f", "fv_side"], ["fv_hi_f"]),
            mk("Round", ["fv_lo_f"], ["fv_lo_r"]),  # half to even, as Python's round()
            mk("Round", ["fv_hi_f"], ["fv_hi_r"]),
            mk("Cast", ["fv_lo_r"], ["fv_crop_lo"], to=I64),
            mk("Cast", ["fv_hi_r"], ["fv_hi0"], to=I64),
            mk("Add", ["fv_crop_lo", const("one_i", 1, np.int64)], ["fv_lo1"]),
            mk("Max", ["fv_hi0", "fv_lo1"], ["fv_crop_hi"]),
            mk("Slice", ["images", "fv_crop_lo", "fv_crop_hi", const("crop_axes", [1, 2], np.int64)], ["fv_crop"]),
            mk("Sub", ["fv_crop_hi", "fv_crop_lo"], ["fv_crop_hw"]),  # [h, w] of the crop
            mk("Gather", ["fv_crop_hw", const("w_idx", 1, np.int64)], ["fv_crop_w"]),
            mk("Greater", ["fv_crop_w", const("area_from", 2 * size, np.int64)], ["fv_area"]),
        ]
        for axis, name in ((0, "rows"), (1, "cols")):
            nodes += _weight_nodes(const, helper, TensorProto, f"fv_{name}", axis, size, interpolation)
        nodes.append(mk("Transpose", ["fv_cols"], ["fv_cols_t"], perm=[1, 0]))
        wy, wx = "fv_rows", "fv_cols_t"
    return nodes + [
        mk("Cast", ["fv_crop"], ["fv_crop_f"], to=F),
        mk("Transpose", ["fv_crop_f"], ["fv_crop_nchw"], perm=[0, 3, 1, 2]),
        mk("MatMul", [wy, "fv_crop_nchw"], ["fv_pass1_sum"]),  # size x h  @  N x 3 x h x w
        *_round_nodes(const, mk, "fv_pass1_sum", "fv_rows_done", WEIGHT_BITS - CARRY_BITS),
        mk("MatMul", ["fv_rows_done", wx], ["fv_pass2_sum"]),  # ... @ w x size
        *_round_nodes(const, mk, "fv_pass2_sum", "fv_rounded", WEIGHT_BITS + CARRY_BITS),
        mk("Clip", ["fv_rounded", const("lo", 0.0), const("hi", 255.0)], ["fv_clipped"]),
        mk("Transpose", ["fv_clipped"], ["fv_nhwc"], perm=[0, 2, 3, 1]),
        mk("Cast", ["fv_nhwc"], ["fv_net_images"], to=TensorProto.UINT8),
    ]


def _round_nodes(const, mk, x: str, out: str, shift: int) -> list:
    """``out = floor(x / 2**shift + 1/2)``: exact on these integers, as in :func:`frugalvision.data.resize._pass`."""
    return [mk("Mul", [x, const(f"shift_{shift}", 2.0 ** -shift)], [f"{x}_scaled"]),
            mk("Add", [f"{x}_scaled", const("half", 0.5)], [f"{x}_half"]),
            mk("Floor", [f"{x}_half"], [out])]


def _weight_nodes(const, helper, TensorProto, out: str, axis: int, size: int, interpolation: str) -> list:
    """In-graph :func:`frugalvision.data.resize.resize_matrix` for axis ``axis`` of the crop (0: rows, 1: columns):
    ``out`` is size x n, area weights where ``fv_area`` is true, else the interpolation's. The same float32
    operations in the same order (IEEE-exact), the same rounding to integers, the same row-sum correction."""
    F, I64 = TensorProto.FLOAT, TensorProto.INT64
    mk = helper.make_node
    p = f"{out}_"
    nodes = [
        mk("Gather", ["fv_crop_hw", const(f"{p}axis", axis, np.int64)], [p + "n_i"]),
        mk("Cast", [p + "n_i"], [p + "n"], to=F),
        mk("Range", [const("zero_f", 0.0), p + "n", const("one_f", 1.0)], [p + "j_row"]),
        mk("Unsqueeze", [p + "j_row", const("axis0", [0], np.int64)], [p + "j"]),  # 1 x n
        mk("Div", [p + "n", const("size_f", float(size))], [p + "s"]),
        # area: overlap of [j, j+1] with [i s, (i+1) s], over s
        mk("Mul", [const("i_col", np.arange(size, dtype=np.float32)[:, None]), p + "s"], [p + "alo"]),
        mk("Add", [p + "alo", p + "s"], [p + "ahi"]),
        mk("Add", [p + "j", const("one_f", 1.0)], [p + "j1"]),
        mk("Min", [p + "j1", p + "ahi"], [p + "amin"]),
        mk("Max", [p + "j", p + "alo"], [p + "amax"]),
        mk("Sub", [p + "amin", p + "amax"], [p + "aover"]),
        mk("Relu", [p + "aover"], [p + "aover0"]),
        mk("Div", [p + "aover0", p + "s"], [p + "area_f"]),
        mk("Mul", [p + "area_f", const("one_w", float(1 << WEIGHT_BITS))], [p + "area_s"]),
        mk("Round", [p + "area_s"], [p + "area"]),
    ]
    if interpolation == "nearest":
        nodes += [
            mk("Floor", [p + "alo"], [p + "nfl"]),
            mk("Sub", [p + "n", const("one_f", 1.0)], [p + "last"]),
            mk("Min", [p + "nfl", p + "last"], [p + "nidx"]),
            mk("Equal", [p + "nidx", p + "j"], [p + "nhit"]),
            mk("Cast", [p + "nhit"], [p + "nhitf"], to=F),
            mk("Mul", [p + "nhitf", const("one_w", float(1 << WEIGHT_BITS))], [p + "interp"]),
        ]
    else:
        offsets = [-1.0, 0.0, 1.0, 2.0] if interpolation == "bicubic" else [0.0, 1.0]
        nodes += [
            mk("Mul", [const("i_half", np.arange(size, dtype=np.float32)[:, None] + 0.5), p + "s"], [p + "fx0"]),
            mk("Sub", [p + "fx0", const("half", 0.5)], [p + "fx"]),
            mk("Floor", [p + "fx"], [p + "sx"]),
            mk("Add", [p + "sx", const(f"offsets_{interpolation}", [offsets])], [p + "taps"]),  # size x taps
            mk("Sub", [p + "n", const("one_f", 1.0)], [p + "last"]),
            mk("Clip", [p + "taps", const("zero_f", 0.0), p + "last"], [p + "idx"]),
            mk("Sub", [p + "fx", p + "taps"], [p + "dd"]),
            mk("Abs", [p + "dd"], [p + "d"]),
        ]
        if interpolation == "bicubic":
            a = CUBIC_A  # |d| <= 1: ((a+2)d - (a+3)) d^2 + 1;  1 < |d| < 2: ((a d - 5a) d + 8a) d - 4a
            nodes += [
                mk("Mul", [p + "d", const("ca2", a + 2)], [p + "k1a"]),
                mk("Sub", [p + "k1a", const("ca3", a + 3)], [p + "k1b"]),
                mk("Mul", [p + "k1b", p + "d"], [p + "k1c"]),
                mk("Mul", [p + "k1c", p + "d"], [p + "k1d"]),
                mk("Add", [p + "k1d", const("one_f", 1.0)], [p + "k1"]),
                mk("Mul", [p + "d", const("ca", a)], [p + "k2a"]),
                mk("Sub", [p + "k2a", const("c5a", 5 * a)], [p + "k2b"]),
                mk("Mul", [p + "k2b", p + "d"], [p + "k2c"]),
                mk("Add", [p + "k2c", const("c8a", 8 * a)], [p + "k2d"]),
                mk("Mul", [p + "k2d", p + "d"], [p + "k2e"]),
                mk("Sub", [p + "k2e", const("c4a", 4 * a)], [p + "k2"]),
                mk("LessOrEqual", [p + "d", const("one_f", 1.0)], [p + "near"]),
                mk("Less", [p + "d", const("two_f", 2.0)], [p + "inside"]),
                mk("Where", [p + "inside", p + "k2", const("zero_f", 0.0)], [p + "kfar"]),
                mk("Where", [p + "near", p + "k1", p + "kfar"], [p + "k"]),
            ]
        else:
            nodes += [mk("Sub", [const("one_f", 1.0), p + "d"], [p + "k0"]),
                      mk("Relu", [p + "k0"], [p + "k"])]
        nodes += [
            mk("Unsqueeze", [p + "idx", const("axis2", [2], np.int64)], [p + "idx3"]),  # size x taps x 1
            mk("Unsqueeze", [p + "j", const("axis0", [0], np.int64)], [p + "j3"]),  # 1 x 1 x n
            mk("Equal", [p + "idx3", p + "j3"], [p + "hit"]),
            mk("Cast", [p + "hit"], [p + "hitf"], to=F),
            mk("Mul", [p + "k", const("one_w", float(1 << WEIGHT_BITS))], [p + "k_s"]),
            mk("Round", [p + "k_s"], [p + "k_q"]),  # integers before they are summed: exact in any order
            mk("Unsqueeze", [p + "k_q", const("axis2", [2], np.int64)], [p + "k3"]),
            mk("Mul", [p + "hitf", p + "k3"], [p + "wk"]),
            mk("ReduceSum", [p + "wk", const("axis1", [1], np.int64)], [p + "interp"], keepdims=0),
        ]
    return nodes + [
        mk("Where", ["fv_area", p + "area", p + "interp"], [p + "raw"]),
        # each row sums to exactly 2**WEIGHT_BITS: the remainder goes to its first largest weight
        mk("ReduceSum", [p + "raw", const("axis1", [1], np.int64)], [p + "sum"], keepdims=1),
        mk("Sub", [const("one_w", float(1 << WEIGHT_BITS)), p + "sum"], [p + "rest"]),
        mk("ArgMax", [p + "raw"], [p + "top"], axis=1, keepdims=1, select_last_index=0),
        mk("Range", [const("zero_i", 0, np.int64), p + "n_i", const("one_i", 1, np.int64)], [p + "j_int"]),
        mk("Unsqueeze", [p + "j_int", const("axis0", [0], np.int64)], [p + "j_int1"]),
        mk("Equal", [p + "top", p + "j_int1"], [p + "at_top"]),
        mk("Cast", [p + "at_top"], [p + "at_top_f"], to=F),
        mk("Mul", [p + "at_top_f", p + "rest"], [p + "fix"]),
        mk("Add", [p + "raw", p + "fix"], [out]),
    ]


def _head_nodes(model, const, helper):
    """Nodes from ``embedding`` to the head's logits (the forward passes of ``heads/_base.py``)."""
    head = model.head
    if hasattr(head, "coef_"):
        return [helper.make_node("MatMul", ["embedding", const("w", head.coef_.T)], ["fv_wx"]),
                helper.make_node("Add", ["fv_wx", const("b", head.intercept_)], ["fv_logits"])], "fv_logits"
    from .heads._base import MLP_STATE

    w1, b1, w2, b2, mean, scale = (np.asarray(v, np.float32) for v in (head.get_state()[k] for k in MLP_STATE))
    return [helper.make_node("Sub", ["embedding", const("mean", mean)], ["fv_c"]),
            helper.make_node("Div", ["fv_c", const("scale", scale)], ["fv_z"]),
            helper.make_node("MatMul", ["fv_z", const("w1", w1.T)], ["fv_h0"]),
            helper.make_node("Add", ["fv_h0", const("b1", b1)], ["fv_h1"]),
            helper.make_node("Relu", ["fv_h1"], ["fv_h"]),
            helper.make_node("MatMul", ["fv_h", const("w2", w2.T)], ["fv_o"]),
            helper.make_node("Add", ["fv_o", const("b2", b2)], ["fv_logits"])], "fv_logits"


def _reject_meta(model):
    r = model.info.reject
    if r is None:
        return None
    t = model.reject_thresholds
    return {"method": model.ood_state.method, "threshold": r.threshold, "accept_rate": r.accept_rate,
            # every class's effective threshold (its own, or the pooled one): what the graph compares with
            "thresholds_by_class": None if t is None else dict(zip(model.classes, map(float, t)))}


def _ood_nodes(model, const, helper, nodes: list):
    """Append the "none of these" score (``ood_score``) computed as :func:`frugalvision.ood.ood_score` does;
    returns its name, or None when the model has no score."""
    state = model.ood_state
    if state is None:
        return None
    a, h = state.arrays, state.hyper
    if state.method == "energy" or state.method == "msp":
        nodes.append(helper.make_node("ReduceLogSumExp", ["fv_logits"], ["fv_lse"], axes=[1], keepdims=0))
        if state.method == "energy":
            nodes.append(helper.make_node("Neg", ["fv_lse"], ["ood_score"]))
        else:  # -max softmax = -exp(max z - logsumexp z)
            nodes += [helper.make_node("ReduceMax", ["fv_logits"], ["fv_zmax"], axes=[1], keepdims=0),
                      helper.make_node("Sub", ["fv_zmax", "fv_lse"], ["fv_lmsp"]),
                      helper.make_node("Exp", ["fv_lmsp"], ["fv_msp"]),
                      helper.make_node("Neg", ["fv_msp"], ["ood_score"])]
        return "ood_score"
    if state.method not in ("knn", "knn_vim"):
        from .exceptions import DataError

        raise DataError(f"The exported graph cannot compute the '{state.method}' none-of-these score yet; retrain "
                        f"with the default score, or with --no-reject.")
    x = "embedding"
    if "proj" in a:
        nodes += [helper.make_node("MatMul", [x, const("ood_proj", a["proj"])], ["fv_op"]),
                  helper.make_node("Sub", ["fv_op", const("ood_offset", a["offset"])], ["fv_ox"])]
        x = "fv_ox"
    elif "center" in a:
        nodes.append(helper.make_node("Sub", [x, const("ood_center", a["center"])], ["fv_ox"]))
        x = "fv_ox"
    bank = np.asarray(a["bank"], np.float32)
    k = max(1, min(int(h["k"]), len(bank)))
    knn = "ood_score" if state.method == "knn" else "fv_knn"
    nodes += [  # squared distance to the k-th nearest unit bank row: 2 - 2 cos
        helper.make_node("ReduceL2", [x], ["fv_norm"], axes=[1], keepdims=1),  # opset 17: axes is an attribute
        helper.make_node("Max", ["fv_norm", const("eps", 1e-12)], ["fv_normc"]),
        helper.make_node("Div", [x, "fv_normc"], ["fv_unit"]),
        helper.make_node("MatMul", ["fv_unit", const("ood_bank_t", bank.T)], ["fv_sims"]),
        helper.make_node("TopK", ["fv_sims", const("k", [k], np.int64)], ["fv_top", "fv_topi"], axis=1),
        helper.make_node("Gather", ["fv_top", const("kth_index", k - 1, np.int64)], ["fv_kth"], axis=1),
        helper.make_node("Mul", ["fv_kth", const("two", 2.0)], ["fv_2kth"]),
        helper.make_node("Sub", [const("two_", 2.0), "fv_2kth"], ["fv_d"]),
        helper.make_node("Max", ["fv_d", const("zero", 0.0)], [knn]),
    ]
    if state.method == "knn":
        return "ood_score"
    # knn_vim: max(z(knn), z(vim)); vim = alpha * |residual outside the principal subspace| - logsumexp(logits)
    nodes += [
        helper.make_node("Sub", ["embedding", const("vim_origin", a["origin"])], ["fv_v_c"]),
        helper.make_node("MatMul", ["fv_v_c", const("vim_basis", a["basis"])], ["fv_v_p"]),
        helper.make_node("ReduceSumSquare", ["fv_v_c"], ["fv_v_cc"], axes=[1], keepdims=0),
        helper.make_node("ReduceSumSquare", ["fv_v_p"], ["fv_v_pp"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["fv_v_cc", "fv_v_pp"], ["fv_v_rr"]),
        helper.make_node("Max", ["fv_v_rr", const("zero_r", 0.0)], ["fv_v_rr0"]),
        helper.make_node("Sqrt", ["fv_v_rr0"], ["fv_v_res"]),
        helper.make_node("Mul", ["fv_v_res", const("vim_alpha", h["alpha"])], ["fv_v_ares"]),
        helper.make_node("ReduceLogSumExp", ["fv_logits"], ["fv_v_lse_v"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["fv_v_ares", "fv_v_lse_v"], ["fv_v_vim"]),
        helper.make_node("Sub", ["fv_knn", const("knn_mu", h["knn_mu"])], ["fv_v_kc"]),
        helper.make_node("Div", ["fv_v_kc", const("knn_sd", h["knn_sd"])], ["fv_v_kz"]),
        helper.make_node("Sub", ["fv_v_vim", const("vim_mu", h["vim_mu"])], ["fv_v_vc"]),
        helper.make_node("Div", ["fv_v_vc", const("vim_sd", h["vim_sd"])], ["fv_v_vz"]),
        helper.make_node("Max", ["fv_v_kz", "fv_v_vz"], ["ood_score"]),
    ]
    return "ood_score"


def _decision_nodes(model, const, helper, score) -> list:
    """``decision``: :func:`frugalvision.decision.decide`'s formula on ``probabilities``, then -1 where the
    none-of-these score passes the model's threshold."""
    from .decision import score_vectors

    r, p = score_vectors(model.operating_point, model.classes)
    nodes = [
        helper.make_node("GreaterOrEqual", ["probabilities", const("rthr", r)], ["fv_hit"]),
        helper.make_node("Div", ["probabilities", const("rthr_", r)], ["fv_ratio"]),
        helper.make_node("Add", ["fv_ratio", const("one", 1.0)], ["fv_boost"]),
        helper.make_node("Where", ["fv_hit", "fv_boost", "probabilities"], ["fv_a1"]),
        helper.make_node("Less", ["probabilities", const("pthr", p)], ["fv_gated"]),
        helper.make_node("Where", ["fv_gated", const("minus_one", -1.0), "fv_a1"], ["fv_a"]),
        helper.make_node("ArgMax", ["fv_a"], ["fv_pick"], axis=1, keepdims=0),
        helper.make_node("ArgMax", ["probabilities"], ["fv_argmax"], axis=1, keepdims=0),
        helper.make_node("ReduceMax", ["fv_a"], ["fv_amax"], axes=[1], keepdims=0),
        helper.make_node("Less", ["fv_amax", const("zero_", 0.0)], ["fv_stuck"]),
        helper.make_node("Where", ["fv_stuck", "fv_argmax", "fv_pick"], ["fv_decided"]),
    ]
    threshold = model.reject_thresholds
    if score is None or threshold is None:
        nodes.append(helper.make_node("Identity", ["fv_decided"], ["decision"]))
    else:
        nodes += [  # the threshold of each image's most probable class
            helper.make_node("Gather", [const("ood_thresholds", threshold.astype(np.float32)), "fv_argmax"],
                             ["fv_ood_threshold"], axis=0),
            helper.make_node("Greater", [score, "fv_ood_threshold"], ["fv_reject"]),
            helper.make_node("Where", ["fv_reject", const("unknown", -1, np.int64), "fv_decided"], ["decision"]),
        ]
    # runner_up: the arg-max with the decided class masked out (the most probable class when decided unknown).
    k = len(model.classes)
    return nodes + [
        helper.make_node("Less", ["decision", const("zero_i", 0, np.int64)], ["fv_is_unknown"]),
        helper.make_node("Where", ["fv_is_unknown", "fv_argmax", "decision"], ["fv_masked_idx"]),
        helper.make_node("Unsqueeze", ["fv_masked_idx", const("axis1", np.array([1]), np.int64)], ["fv_idx_col"]),
        helper.make_node("Equal", ["fv_idx_col", const("class_ids", np.arange(k), np.int64)], ["fv_is_decided"]),
        helper.make_node("Where", ["fv_is_decided", const("minus_inf", -np.inf), "probabilities"], ["fv_others"]),
        helper.make_node("ArgMax", ["fv_others"], ["fv_runner"], axis=1, keepdims=0),
        helper.make_node("Where", ["fv_is_unknown", "fv_argmax", "fv_runner"], ["runner_up"]),
    ]


def read_onnx_metadata(path) -> dict:
    """The ``frugalvision`` JSON stored in an exported graph (needs only onnxruntime)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return json.loads(sess.get_modelmeta().custom_metadata_map["frugalvision"])
