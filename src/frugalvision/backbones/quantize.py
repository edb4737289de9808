"""Int8 versions of the frozen backbone graphs: ONNX Runtime static quantization (QDQ), calibrated on images.

EfficientNet-Lite was designed for integer inference (ReLU6, no squeeze-and-excitation), and CPUs with
int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, ARM dot-product) run int8 convolutions several
times faster than fp32 ones. :func:`quantize_backbone` turns a shipped fp32 graph (uint8 NHWC images ->
``features`` N x C x h x w, ``embedding`` N x C) into an int8 graph with the same inputs and outputs:

1. :func:`prepare_fp32` makes the exported graph static where it is static anyway: the "same" padding that
   timm's TF-ported convolutions compute at run time from the input shape (Shape/Gather/Ceil/.../Pad) is
   evaluated once and folded into the convolutions' ``pads``; the dead shape arithmetic is removed. The
   result computes the same function (checked) and, unlike the export, can be quantized conv by conv.
2. ``onnxruntime.quantization.quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs
   (per-channel symmetric int8 weights, uint8 activations) with ranges calibrated on the given images.
3. The input normalisation ``(x - 126.99) * 0.0078`` is affine, so the first convolution's input
   quantization is pinned to ``scale=0.0078, zero_point=127``: the quantized input then *is* the uint8
   pixel, and the fp32 Cast/Sub/Mul/QuantizeLinear chain is removed (``uint8_input=True``): the image
   goes straight into the first integer convolution (exactly the same numbers as with the chain).
4. The first blocks stay fp32 by default (``exclude_nodes``); see bench/int8.py for the measurements.
5. The global average pool stays fp32 by default (the mean of 49 uint8 values carries more than 8 bits;
   re-quantizing the embedding itself costs fidelity for no measurable speed).

Everything is deterministic: the same fp32 graph, images and settings give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_SETTINGS", "equalize_streams", "normalization_params", "prepare_fp32", "quantize_backbone"]

#: The settings the shipped int8 graphs are built with (see scripts/build_int8_graphs.py and bench/int8.py).
DEFAULT_SETTINGS = {
    "calibrate_method": "minmax",       # minmax | entropy | percentile (both histogram methods did worse)
    "percentile": 99.999,
    "per_channel": True,
    # 7-bit weights. Without VNNI (plain AVX2: most laptops before 2021, AMD before Zen 4) ONNX Runtime multiplies
    # uint8 x int8 with VPMADDUBSW, whose int16 pair sums saturate with 8-bit weights: on such a CPU the 8-bit
    # graph gave embedding cosine to fp32 of 0.886 (VNNI: 0.995), i.e. other embeddings on other CPUs. With 7 bits
    # no sum can saturate, so every CPU computes the same integers (cosine 0.975 everywhere), at the same speed.
    "reduce_range": True,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "op_types": ("Conv", "Clip", "Add"),  # what is quantized; GlobalAveragePool stays fp32 by default
    # node names (fnmatch patterns; 'dw', 'stem', 'head') kept in fp32. EfficientNet-Lite's first two
    # inverted-residual blocks (112 x 112 -> 56 x 56) are where uint8 activations lose the most: keeping
    # them fp32 lifted the embedding cosine to fp32 (8-bit weights, VNNI) from ~0.98 to ~0.995 for ~25 % of the
    # int8 speed-up.
    "exclude_nodes": ("/blocks/blocks.0/*", "/blocks/blocks.1/blocks.1.0/*"),
    "uint8_input": True,
    "activation_symmetric": False,
    "calib_moving_average": False,
    "batch_size": 8,
    "equalize": 0.0,                      # alpha of equalize_streams (0 = off)
    "equalize_images": 64,                # calibration images used to measure the stream ranges
}


def _onnx():
    import onnx

    return onnx


def _attr(node, name, default=None):
    onnx = _onnx()
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _set_attr(node, name, value):
    onnx = _onnx()
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def _run_with_outputs(model, names, feed):
    """Evaluate intermediate tensors ``names`` of ``model`` (ONNX Runtime, no graph optimisation)."""
    import onnxruntime as ort

    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    for n in names:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, feed)))


def _prune(graph):
    """Drop nodes and initializers that no graph output depends on."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    vi = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(vi)


def _constant_value(model, name):
    from onnx import numpy_helper

    for i in model.graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(_attr(n, "value"))
    return None


def prepare_fp32(model, size: int | None = None):
    """A copy of a backbone graph with its run-time "same" padding folded into the convolutions.

    Each ``Pad`` (constant mode, value 0) in front of a ``Conv`` gets its pad amounts evaluated on
    batches of 1 and 2 images (they must agree: they depend on the fixed spatial size only) and moved
    into the convolution's ``pads``; the shape arithmetic that computed them is pruned. Checked to give
    the same ``embedding`` as the original.
    """
    onnx = _onnx()
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inp = g.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    size = size or dims[1]
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pads = [n for n in g.node if n.op_type == "Pad"]
    if pads:
        names = [p.input[1] for p in pads]
        vals = [
            _run_with_outputs(m, names, {inp.name: np.zeros((b, size, size, 3), np.uint8)}) for b in (1, 2)
        ]
        drop = set()
        for p in pads:
            a, b = vals[0][p.input[1]], vals[1][p.input[1]]
            mode = _attr(p, "mode", b"constant")
            cval = _constant_value(m, p.input[2]) if len(p.input) > 2 and p.input[2] else np.zeros(())
            users = consumers.get(p.output[0], [])
            if (not np.array_equal(a, b) or mode not in (b"constant", "constant") or cval is None
                    or float(np.asarray(cval).reshape(-1)[0]) != 0.0 or len(users) != 1
                    or users[0].op_type != "Conv" or a.shape != (8,) or a[[0, 1, 4, 5]].any()):
                continue  # not a plain spatial zero pad of one conv: leave it alone
            conv = users[0]
            cp = list(_attr(conv, "pads", [0, 0, 0, 0]))
            _set_attr(conv, "pads", [int(cp[0] + a[2]), int(cp[1] + a[3]), int(cp[2] + a[6]), int(cp[3] + a[7])])
            conv.input[0] = p.input[0]
            drop.add(id(p))
        nodes = [n for n in g.node if id(n) not in drop]
        del g.node[:]
        g.node.extend(nodes)
    _prune(g)
    del g.value_info[:]
    m = onnx.shape_inference.infer_shapes(m)
    # check: same embeddings on a random batch
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    out = g.output[-1].name
    ref = _run_with_outputs(model, [out], {inp.name: x})[out]
    new = _run_with_outputs(m, [out], {inp.name: x})[out]
    if not np.allclose(ref, new, atol=1e-4, rtol=1e-4):
        raise RuntimeError(f"prepare_fp32 changed the graph's output (max diff {np.abs(ref - new).max():.2e})")
    return m


def _linear_streams(model):
    """Groups of linear (no activation) tensors tied by residual Adds, with their producing/consuming convs.

    In an inverted-residual network these are the bottleneck streams: the projection convs' outputs and
    the residual sums. Returns ``[(producers, consumers, tensors)]`` for streams whose every producer is a
    Conv and every consumer (apart from the Adds inside the stream) a group-1 Conv.
    """
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    cons: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    act = {"Clip", "Relu"}
    linear = [n.output[0] for n in g.node if n.op_type == "Conv"
              and not any(c.op_type in act for c in cons.get(n.output[0], []))]
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for t in linear:
        find(t)
    for n in g.node:
        if n.op_type == "Add" and all(i in parent for i in n.input):
            for t in (*n.input, n.output[0]):
                parent[find(t)] = find(n.input[0])
    groups: dict[str, list] = {}
    for t in list(parent):
        groups.setdefault(find(t), []).append(t)
    outputs = {o.name for o in g.output}
    streams = []
    for tensors in groups.values():
        ts = set(tensors)
        producers = [prod[t] for t in tensors if prod[t].op_type == "Conv"]
        consumers = [c for t in tensors for c in cons.get(t, []) if not (c.op_type == "Add" and c.output[0] in ts)]
        if (ts & outputs or not consumers
                or any(c.op_type != "Conv" or (_attr(c, "group", 1) or 1) != 1 for c in consumers)):
            continue
        streams.append((producers, consumers, sorted(ts)))
    return streams


def equalize_streams(model, images, alpha: float = 0.5, batch: int = 8):
    """Function-preserving per-channel rescaling of the linear bottleneck streams (data-driven, in place).

    Per-tensor uint8 activations lose the channels whose range is far below the tensor's widest channel.
    For each stream (see :func:`_linear_streams`), channel c is divided by ``s_c`` in every producing conv
    (weights and bias) and multiplied back in every consuming conv's input weights, with
    ``s_c = a_c ** alpha / w_c ** (1 - alpha)`` (SmoothQuant's rule; ``a_c`` the channel's largest |value|
    on ``images``, ``w_c`` the consumers' largest |weight| for that input channel), so activation and
    weight ranges meet half way. The network computes the same function (up to float rounding).
    """
    from onnx import numpy_helper

    g = model.graph
    streams = _linear_streams(model)
    if not streams:
        return model, 0
    inits = {i.name: i for i in g.initializer}
    names = [t for _, _, ts in streams for t in ts]
    amax = {}
    for i in range(0, len(images), batch):
        out = _run_with_outputs(model, names, {g.input[0].name: np.ascontiguousarray(images[i:i + batch])})
        for t, v in out.items():
            m = np.abs(v).max(axis=(0, 2, 3))
            amax[t] = m if t not in amax else np.maximum(amax[t], m)
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for producers, consumers, tensors in streams:
        a = np.max([amax[t] for t in tensors], axis=0).astype(np.float64)
        w = np.max([np.abs(numpy_helper.to_array(inits[c.input[1]])).max(axis=(0, 2, 3)) for c in consumers], axis=0)
        sc = np.where((a > 0) & (w > 0), a ** alpha / np.maximum(w, 1e-12) ** (1 - alpha), 1.0)
        sc = sc / np.exp(np.log(sc).mean())  # keep the overall scale; only the ratios matter
        for n in producers:
            for k, shape in ((1, (-1, 1, 1, 1)), (2, (-1,))):
                if len(n.input) <= k:
                    continue
                if uses[n.input[k]] != 1:
                    raise RuntimeError(f"equalize_streams: {n.input[k]} is shared")
                arr = numpy_helper.to_array(inits[n.input[k]])
                inits[n.input[k]].CopyFrom(numpy_helper.from_array((arr / sc.reshape(shape)).astype(arr.dtype), n.input[k]))
        for n in consumers:
            if uses[n.input[1]] != 1:
                raise RuntimeError(f"equalize_streams: {n.input[1]} is shared")
            arr = numpy_helper.to_array(inits[n.input[1]])
            inits[n.input[1]].CopyFrom(numpy_helper.from_array((arr * sc.reshape(1, -1, 1, 1)).astype(arr.dtype), n.input[1]))
    return model, len(streams)


def normalization_params(model):
    """``(transpose, cast, sub, mul, offset, scale)`` of the input normalisation ``(x - offset) * scale``.

    Returns None when the graph does not start ``images -> [Transpose] -> Cast -> Sub(c) -> Mul(c)`` with a
    single offset and scale for all channels.
    """
    g = model.graph
    name = g.input[0].name
    by_input: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            by_input.setdefault(i, []).append(n)

    def only(t, op):
        us = by_input.get(t, [])
        return us[0] if len(us) == 1 and us[0].op_type == op else None

    tr = only(name, "Transpose")
    cast = only(tr.output[0] if tr else name, "Cast")
    sub = cast and only(cast.output[0], "Sub")
    mul = sub and only(sub.output[0], "Mul")
    if not mul:
        return None
    off = _constant_value(model, sub.input[1])
    sc = _constant_value(model, mul.input[1])
    if off is None or sc is None or np.ptp(off) != 0 or np.ptp(sc) != 0:
        return None
    return tr, cast, sub, mul, float(off.reshape(-1)[0]), float(sc.reshape(-1)[0])


class _ImageReader:
    """CalibrationDataReader over a uint8 N x S x S x 3 array, in fixed-size batches.

    ``len`` and ``set_range`` count batches: quantize_static's ``CalibStridedMinMax`` calls ``collect_data``
    on successive windows of batches, which keeps ORT's calibrators from holding every intermediate
    tensor of every calibration image at once (the histogram calibrators otherwise need ~50 MB per
    224-pixel image: tens of GB for a few hundred images).
    """

    def __init__(self, name, images, batch_size):
        self.name, self.images, self.bs = name, images, batch_size
        self.start, self.end = 0, len(self)
        self.i = self.start

    def __len__(self):
        return int(-(-len(self.images) // self.bs))

    def set_range(self, start_index, end_index):
        self.start, self.end = start_index, min(end_index, len(self))
        self.i = self.start

    def get_next(self):
        if self.i >= self.end:
            return None
        batch = np.ascontiguousarray(self.images[self.i * self.bs:(self.i + 1) * self.bs])
        self.i += 1
        return {self.name: batch}

    def rewind(self):
        self.i = self.start


def _match(name, patterns):
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, p) for p in patterns)


def quantize_backbone(fp32_path, out_path, calibration_images: np.ndarray, **settings) -> dict:
    """Write an int8 (QDQ) version of the backbone graph ``fp32_path`` to ``out_path``.

    ``calibration_images``: uint8 N x S x S x 3 RGB (the graph's input size), a few hundred varied images
    of the kind the graph will see. ``settings`` override :data:`DEFAULT_SETTINGS`:

    - ``calibrate_method``: ``minmax``, ``entropy`` or ``percentile`` (with ``percentile``, e.g. 99.999);
    - ``per_channel``, ``reduce_range`` (7-bit weights, for CPUs without VNNI), ``activation_type`` and
      ``weight_type`` (``QUInt8``/``QInt8``), ``activation_symmetric``, ``calib_moving_average``;
    - ``op_types``: op types quantized (add ``GlobalAveragePool`` to quantize the pooling too);
    - ``exclude_nodes``: node names kept in fp32 (shell-style patterns: ``'*conv_pwl*'``), ``'dw'`` means every
      depthwise convolution, ``'stem'`` the first convolution, ``'head'`` the last one;
    - ``uint8_input``: feed the uint8 image straight into the first integer convolution (needs an affine
      input normalisation with an offset within 0.05 of an integer).

    Returns the settings used (JSON-able), plus ``calibration_images`` (count) and ``sha256`` of the file.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    s = {**DEFAULT_SETTINGS, **settings}
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise TypeError(f"unknown quantization settings: {', '.join(sorted(unknown))}")
    images = np.asarray(calibration_images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"calibration_images must be uint8 N x S x S x 3, got {images.dtype} {images.shape}")

    model = prepare_fp32(fp32_path, size=images.shape[1])
    g = model.graph
    if s["equalize"]:
        step = max(1, len(images) // int(s["equalize_images"]))
        model, _ = equalize_streams(model, images[::step][: int(s["equalize_images"])], float(s["equalize"]))
    convs = [n for n in g.node if n.op_type == "Conv"]
    exclude = []
    for e in s["exclude_nodes"]:
        if e == "dw":
            exclude += [n.name for n in convs if (_attr(n, "group", 1) or 1) > 1]
        elif e == "stem":
            exclude.append(convs[0].name)
        elif e == "head":
            exclude.append(convs[-1].name)
        else:
            exclude += [n.name for n in g.node if _match(n.name, [e])]
    # an excluded conv takes its activation along: a Clip quantized on its own would get the conv's
    # unclipped output range (a much coarser step over the [0, 6] that matters)
    cons: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    excluded = set(exclude)
    for n in convs:
        if n.name in excluded:
            exclude += [c.name for c in cons.get(n.output[0], []) if c.op_type in ("Clip", "Relu")]
    norm = normalization_params(model)
    overrides = {}
    if norm is not None:
        tr, cast, sub, mul, off, sc = norm
        exclude += [n.name for n in (tr, cast, sub, mul) if n is not None]
        if s["uint8_input"]:
            if abs(off - round(off)) > 0.05 or s["activation_type"] != "QUInt8" or convs[0].name in exclude:
                raise ValueError("uint8_input needs uint8 activations, a quantized first conv and an "
                                 f"integer-ish input offset (got {off})")
            overrides[mul.output[0]] = [{"scale": np.array(sc, np.float32), "zero_point": np.array(round(off), np.uint8)}]
    elif s["uint8_input"]:
        raise ValueError("uint8_input: the graph does not start with an affine Cast/Sub/Mul normalisation")

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[s["calibrate_method"]]
    extra = {
        "ActivationSymmetric": bool(s["activation_symmetric"]),
        "WeightSymmetric": True,
        "CalibMovingAverage": bool(s["calib_moving_average"]),
    }
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    if s["calibrate_method"] == "percentile":
        extra["CalibPercentile"] = float(s["percentile"])
    if s["calibrate_method"] in ("percentile", "entropy"):
        extra["CalibTensorRangeSymmetric"] = False

    class Reader(_ImageReader, CalibrationDataReader):
        pass

    # the histogram calibrators need equal batches: the largest batch size <= batch_size dividing N
    bs = next(b for b in range(int(s["batch_size"]), 0, -1) if len(images) % b == 0)
    n_batches = len(images) // bs
    extra["CalibStridedMinMax"] = next(k for k in range(max(1, 24 // bs), 0, -1) if n_batches % k == 0)

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        prep = Path(tmp) / "prep.onnx"
        onnx.save(model, str(prep))
        cwd = os.getcwd()
        os.chdir(tmp)  # calibration writes its augmented model into the working directory
        try:
            quantize_static(
                str(prep), str(Path(tmp) / "q.onnx"), Reader(g.input[0].name, images, bs),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(s["op_types"]),
                per_channel=bool(s["per_channel"]), reduce_range=bool(s["reduce_range"]),
                activation_type=getattr(QuantType, s["activation_type"]),
                weight_type=getattr(QuantType, s["weight_type"]),
                nodes_to_exclude=sorted(set(exclude)), calibrate_method=method, extra_options=extra,
            )
        finally:
            os.chdir(cwd)
        q = onnx.load(str(Path(tmp) / "q.onnx"))
    if overrides:
        _feed_uint8_input(q, norm)
    q.producer_name, q.producer_version = "frugalvision.backbones.quantize", ""
    q.graph.name = (g.name or "backbone") + "_int8"
    onnx.checker.check_model(q)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = q.SerializeToString(deterministic=True) if _supports_deterministic() else q.SerializeToString()
    tmp_out = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp_out.write_bytes(data)
    os.replace(tmp_out, out_path)
    rec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()}
    rec["exclude_nodes_resolved"] = sorted(set(exclude))
    rec["calibration_images"] = len(images)
    rec["sha256"] = hashlib.sha256(data).hexdigest()
    return rec


def _supports_deterministic():
    import inspect

    from google.protobuf.message import Message

    try:
        return "deterministic" in inspect.signature(Message.SerializeToString).parameters
    except (TypeError, ValueError):
        return False


def _feed_uint8_input(q, norm):
    """Replace ``images -> [Transpose] -> Cast -> Sub -> Mul -> QuantizeLinear`` by the uint8 image itself.

    The QuantizeLinear there has scale == the normalisation scale and zero point == round(offset), so for
    a uint8 pixel p it outputs round(p - offset) + zp == p: removing it and the fp32 chain is exact.
    """
    from onnx import numpy_helper

    tr, _cast, _sub, mul, off, sc = norm
    g = q.graph
    qs = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == mul.output[0]]
    if len(qs) != 1:
        raise RuntimeError("uint8_input: no single QuantizeLinear on the normalised input")
    qn = qs[0]
    scale = float(numpy_helper.to_array(next(i for i in g.initializer if i.name == qn.input[1])))
    zp = next(i for i in g.initializer if i.name == qn.input[2])
    zpv = int(numpy_helper.to_array(zp))
    if not (np.isclose(scale, sc, rtol=1e-6) and zpv == round(off)) or zp.data_type != 2:
        raise RuntimeError(f"uint8_input: input quantization is scale={scale}, zp={zpv}, not the normalisation")
    src = tr.output[0] if tr is not None else g.input[0].name
    for n in g.node:
        for k, name in enumerate(n.input):
            if name == qn.output[0]:
                n.input[k] = src
    _prune(g)
