"""Run a frozen backbone on uint8 image batches: ONNX Runtime (fast on CPU) or eager PyTorch.

The ONNX graph is exported once per (backbone, weights, input size) and cached on
disk, so later runs do not even need to build the PyTorch model.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from ..backbones.registry import BackboneSpec, get_spec
from ..backbones.stages import FEATURES, MULTI_STAGES, stage_map_name, with_stage_outputs

__all__ = ["Engine", "TorchEngine", "OnnxEngine", "make_engine", "extractor_id", "ENGINES", "RUN_ENGINES"]

#: Backbone runtimes in this process.
ENGINES = ("auto", "onnx", "torch")
#: What ``--engine`` accepts for commands that can run as a Ray job (predict, explain, train): a runtime, or 'ray'
#: (actors on a Ray cluster running the ONNX Runtime graph; train fits its head on the driver).
RUN_ENGINES = (*ENGINES, "ray")
#: Bump when anything changes what an embedding means (preprocessing code, pooling).
FEATURE_VERSION = 3  # 2: OpenCV resampling in the decode path; 3: its kernels in exact integers (data/resize.py)


def extractor_id(spec: BackboneSpec, weights_id: str, preprocessing: dict) -> str:
    """Stable id of "these pixels -> this embedding"; keys the cache and the ONNX file."""
    blob = json.dumps({"timm": spec.timm_name, "weights": weights_id, "pre": preprocessing,
                       "v": FEATURE_VERSION}, sort_keys=True)
    return f"{spec.name.replace(':', '_').replace('/', '_')}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


class Engine:
    """Common interface: ``run(images_uint8_nhwc, maps=False) -> (maps or None, embeddings)``."""

    name = "base"
    spec: BackboneSpec
    weights_id: str

    def run(self, images: np.ndarray, maps: bool = False):  # pragma: no cover - interface
        raise NotImplementedError


class TorchEngine(Engine):
    """Eager PyTorch, channels_last, inference_mode. Also the path for fine-tuned backbones."""

    name = "torch"

    def __init__(self, backbone, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.backbone = backbone.to(memory_format=torch.channels_last).eval()
        self.spec = backbone.spec
        self.weights_id = backbone.weights_id

    def run(self, images: np.ndarray, maps: bool = False):
        import torch

        with torch.inference_mode():
            fmap, pooled = self.backbone(torch.from_numpy(np.ascontiguousarray(images)))
        return (fmap.float().contiguous().numpy() if maps else None), pooled.float().numpy()


class OnnxEngine(Engine):
    """ONNX Runtime on the CPU with an explicit thread count (the machine's physical cores)."""

    name = "onnx"

    def __init__(self, onnx_path, spec: BackboneSpec, weights_id: str, threads: int | None = None,
                 spin: bool = False, features: str = "last"):
        import onnxruntime as ort

        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}.")

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or _default_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin:
            # Idle ORT threads would otherwise spin and steal the cores the image decoders need.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = str(onnx_path)
        if features == "multi":  # the same graph with pooled stages as one more output (same pass)
            import onnx

            source = with_stage_outputs(onnx.load(str(onnx_path))).SerializeToString()
        self.session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        # Runs at once on this session: one per core. More only oversubscribe the cores, and each concurrent run
        # grows the session's memory arena (the report's panels beside its faithfulness check: +0.2 GB).
        self._slots = threading.BoundedSemaphore(max(1, _default_threads() // so.intra_op_num_threads))
        self.spec = spec
        self.weights_id = weights_id
        self.path = Path(onnx_path)
        self.features = features

    def run(self, images: np.ndarray, maps: bool = False):
        """``(last feature map or None, embedding)``; with ``features='multi'`` the embedding is the last
        layer's followed by the pooled stages."""
        out = self.run_outputs(images, maps=maps)
        return out.get("features"), out["embedding"]

    def run_outputs(self, images: np.ndarray, maps: bool = False) -> dict:
        """The named outputs: ``embedding`` (multi: with the stages appended), and with ``maps`` the last
        feature map ``features`` and (multi) each pooled stage's map ``stage3_map`` ..."""
        feed = {"images": np.ascontiguousarray(images, dtype=np.uint8)}
        multi = self.features == "multi"
        names = ["embedding"] + (["stages"] if multi else []) + (["features"] if maps else []) \
            + ([stage_map_name(k) for k in MULTI_STAGES] if maps and multi else [])
        with self._slots:
            got = dict(zip(names, self.session.run(names, feed)))
        if multi:
            got["embedding"] = np.concatenate([got["embedding"], got.pop("stages")], axis=1)
        return got


def _default_threads() -> int:
    # Hyper-threads do not help GEMM-bound inference; os.cpu_count() is a fine upper bound here.
    return max(1, min(os.cpu_count() or 1, 8))


def export_onnx(backbone, path) -> Path:
    """Export ``FrozenBackbone`` (uint8 NHWC in; feature map and embedding out) atomically."""
    import torch

    from .._io import atomic_writer

    size = backbone.spec.input_size
    example = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    path = Path(path)
    with atomic_writer(path, "wb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            backbone, (example,), fh, input_names=["images"], output_names=["features", "embedding"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    return path


def make_engine(backbone_name="efficientnet_lite0", *, weights=None, engine: str = "auto",
                onnx_dir=None, backbone=None, threads: int | None = None, pretrained: bool = True,
                precision: str = "fp32", features: str = "last") -> Engine:
    """Build the inference engine for a backbone.

    ``engine='auto'`` uses ONNX Runtime when it is installed and the export works, else
    eager PyTorch. The ONNX file is cached in ``onnx_dir`` (default: the cache folder), keyed
    by backbone, weights identity and input size; an existing file is used without building
    the PyTorch model at all. Pass ``backbone`` (a built ``FrozenBackbone``) to run modified,
    e.g. fine-tuned, weights.
    """
    if engine == "ray":
        raise ValueError("--engine ray runs whole jobs on Ray actors (predict, explain, and train's embedding "
                         "extraction); this step runs the backbone in this process: use auto, onnx or torch.")
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine '{engine}'. Choose one of {', '.join(ENGINES)}.")
    spec = get_spec(backbone.spec if backbone is not None else backbone_name)
    if engine in ("auto", "onnx"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if engine == "onnx":
                raise ImportError("engine='onnx' needs onnxruntime: pip install onnxruntime") from None
            engine = "torch"
    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}.")
    if engine == "torch" and features == "multi":
        from ..exceptions import DataError

        raise DataError("--features multi runs on ONNX Runtime: use --engine auto or onnx (not torch).")
    if features == "multi":
        engine = "onnx" if engine == "auto" else engine
    if engine == "torch":
        from .._optional import require_torch

        require_torch("--engine torch")
        from ..backbones.build import build_backbone

        bb = backbone if backbone is not None else build_backbone(spec, weights, pretrained=pretrained)
        return TorchEngine(bb, threads=threads)
    from ..backbones.shipped import shipped_graph
    from ..backbones.weights import weights_identity
    from ..config import cache_root

    if precision == "int8":  # the shipped quantized graph: its own weights id, so its own cache entries
        from ..backbones.shipped import int8_graph
        from ..exceptions import DataError

        if backbone is not None or weights is not None or engine == "torch":
            raise DataError("int8 runs the shipped quantized graph only: not with --weights, a fine-tuned backbone "
                            "or --engine torch. Use --precision fp32.")
        path, info = int8_graph(spec.name)
        return OnnxEngine(path, spec, info["weights_id"], threads=threads, features=features)
    if precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'int8' here, got {precision!r}.")
    shipped = shipped_graph(spec.name) if backbone is None and weights is None and pretrained else None
    if shipped is not None:  # pretrained graph inside the package: nothing to export, no torch
        return OnnxEngine(shipped[0], spec, shipped[1]["weights_id"], threads=threads, features=features)
    if backbone is not None:
        wid = backbone.weights_id
    else:
        wid = weights_identity(spec, weights) if pretrained else "random"
    key = extractor_id(spec, wid, {"input_size": spec.input_size})
    path = Path(onnx_dir or Path(cache_root()) / "onnx") / f"{key}.onnx"
    if not path.exists():
        from .._io import remove_stale_temporaries
        from .._optional import require_torch

        require_torch(f"Backbone '{spec.name}' (no graph of it ships with frugalvision)")
        from ..backbones.build import build_backbone  # torch is imported only when an export is needed

        remove_stale_temporaries(path.parent)  # what an export killed part-way left behind
        bb = backbone if backbone is not None else build_backbone(spec, weights, pretrained=pretrained)
        try:
            export_onnx(bb, path)
        except Exception as exc:
            if engine == "onnx" or features == "multi":
                raise
            warnings.warn(f"ONNX export failed ({type(exc).__name__}: {exc}); using eager PyTorch instead.")
            return TorchEngine(bb)  # torch's own thread count: set_num_threads would be process-wide
    return OnnxEngine(path, spec, wid, threads=threads, features=features)
