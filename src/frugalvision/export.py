"""Export a trained model as one ONNX graph that runs with onnxruntime alone.

The graph is the backbone graph that frugalvision itself runs (the same file ONNX Runtime executes for
``predict``; see :mod:`frugalvision.features.engine`) with the head appended by the ``onnx`` package's
``helper``: no torch, and the exported probabilities are the ones ``predict`` gives.

Input ``images``: uint8 RGB, ``N×S×S×3`` (S stated in the metadata, ``input_size``; the caller
centre-crops the largest square and resizes it to S, as frugalvision does). Inside the graph:
resize to the network's size (when S differs), normalisation, backbone, head, temperature.
Outputs: ``probabilities`` (N×K) and ``cams`` (N×K×h×w, every class's exact CAM; linear heads on
average-pooled features) or ``features`` (N×C×h×w, the last feature map, for other heads).
Class names and preprocessing are stored in the ONNX metadata (``frugalvision`` key, JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._io import atomic_writer, refuse_overwrite

__all__ = ["export_onnx_model", "read_onnx_metadata"]


def export_onnx_model(model, out, *, input_size: int | None = None, overwrite: bool = False,
                      cache_dir=None) -> Path:
    """Write ``out`` (.onnx). Returns the path. See the module docstring for the graph's contract."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .inference import map_support

    out = Path(out)
    refuse_overwrite(out, overwrite, "ONNX file")
    proto = onnx.load(str(model.backbone_graph(cache_dir=cache_dir)))
    g = proto.graph
    net_size = model.info.preprocessing.input_size
    size = int(input_size or net_size)
    if size < 1:
        raise ValueError(f"input_size must be a positive number of pixels, got {size}.")
    cam = map_support(model, "cam").available
    temperature = float(model.temperature)
    inits, nodes = [], []

    def const(name, array, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.array(array, dtype=dtype), name=f"fv_{name}"))  # 0-d stays 0-d
        return f"fv_{name}"

    # Resize in front of the backbone: its input is uint8 NHWC at the network's size.
    (image_input,) = [i for i in g.input if i.name == "images"]
    if size != net_size:
        for node in g.node:
            node.input[:] = ["fv_net_images" if x == "images" else x for x in node.input]
        nodes += [
            helper.make_node("Cast", ["images"], ["fv_f"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["fv_f"], ["fv_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Shape", ["fv_nchw"], ["fv_shape"]),
            helper.make_node("Slice", ["fv_shape", const("s0", [0], np.int64), const("s2", [2], np.int64)],
                             ["fv_nc"]),
            helper.make_node("Concat", ["fv_nc", const("hw", [net_size, net_size], np.int64)], ["fv_sizes"], axis=0),
            helper.make_node("Resize", ["fv_nchw", "", "", "fv_sizes"], ["fv_resized"], mode="linear"),
            helper.make_node("Clip", ["fv_resized", const("lo", 0.0), const("hi", 255.0)], ["fv_clipped"]),
            helper.make_node("Round", ["fv_clipped"], ["fv_rounded"]),
            helper.make_node("Transpose", ["fv_rounded"], ["fv_nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Cast", ["fv_nhwc"], ["fv_net_images"], to=TensorProto.UINT8),
        ]
        image_input.type.tensor_type.shape.dim[1].dim_value = size
        image_input.type.tensor_type.shape.dim[2].dim_value = size
    head_nodes, logits = _head_nodes(model, const, helper)
    nodes_after = head_nodes + [
        helper.make_node("Div", [logits, const("temperature", temperature)], ["fv_scaled"]),
        helper.make_node("Softmax", ["fv_scaled"], ["probabilities"], axis=1),
    ]
    score = _ood_nodes(model, const, helper, nodes_after)
    nodes_after += _decision_nodes(model, const, helper, score)
    if cam:  # CAM_k = Σ_c W[k,c]·A[c]: a MatMul over the channel axis of the NHWC view
        nodes_after += [
            helper.make_node("Transpose", ["features"], ["fv_fmap_nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("MatMul", ["fv_fmap_nhwc", const("coef_t", model.head.coef_.T)], ["fv_cams_nhwk"]),
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
        dims = [d.dim_value or None for d in feat_out.type.tensor_type.shape.dim]
        g.output.append(helper.make_tensor_value_info("cams", TensorProto.FLOAT, ["batch", k, *dims[2:]]))
    else:
        g.output.append(feat_out)
    onnx.checker.check_model(proto)
    meta = {"classes": model.classes, "input_size": size, "network_input_size": net_size,
            "input": "uint8 RGB N x input_size x input_size x 3: centre square of the image resized to input_size",
            "preprocessing": model.preprocessing, "temperature": temperature,
            "backbone": model.info.backbone.name, "weights_id": model.info.backbone.weights_id,
            "operating_point": model.info.operating_point.to_json() if model.info.operating_point else None,
            "reject": _reject_meta(model),
            "outputs": {"probabilities": "N x K softmax(logits / temperature)",
                        "decision": "N class indices into 'classes' under the operating point; -1 = unknown "
                                    "('none of these': ood_score above reject.threshold)",
                        "runner_up": "N class indices: the most probable class other than the decided one (for "
                                     "unknown: the most probable class)",
                        "ood_score": "N unusualness scores (higher = more unusual)" if score else None,
                        "cams": "N x K x h x w exact class activation maps" if cam else None,
                        "features": None if cam else "N x C x h x w last feature map"},
            "versions": model.info.versions}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "frugalvision", json.dumps(meta)
    with atomic_writer(out, "wb") as fh:
        fh.write(proto.SerializeToString())
    return out


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
    return None if r is None else {"method": model.ood_state.method, "threshold": r.threshold,
                                   "accept_rate": r.accept_rate}


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
    threshold = model.info.reject.threshold if model.info.reject is not None else None
    if score is None or threshold is None:
        nodes.append(helper.make_node("Identity", ["fv_decided"], ["decision"]))
    else:
        nodes += [
            helper.make_node("Greater", [score, const("ood_threshold", threshold)], ["fv_reject"]),
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
