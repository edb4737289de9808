"""A trained classifier: backbone identity + preprocessing + head + decision settings, and how to store it.

``Model`` is plain data at the bottom of the pipeline: training makes one, and prediction
(:mod:`frugalvision.inference`), evaluation, explanation and reporting take one; it imports none of them.
It builds its backbone engine only when an image has to be embedded (cached embeddings need no network),
and it is saved as one ``.safetensors`` file (see :mod:`frugalvision.artifact`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .artifact import HeadInfo, ModelInfo, load_artifact, save_artifact, versions
from .backbones.registry import get_spec
from .config import cache_root
from .exceptions import ArtifactError
from .heads import head_class, head_type

__all__ = ["Model", "load_model"]


class Model:
    """A frugalvision classifier.

    Attributes
    ----------
    head : estimator
        Fitted head (``LinearHead``) on embeddings.
    classes : list of str
    spec : BackboneSpec
    info : ModelInfo
        Everything stored with the model, typed: backbone and weights identity, preprocessing,
        head, temperature, versions, training summary.
    path : Path or None
        Where the model was loaded from / saved to; its folder holds ``split.csv``.
    ood_state : OODState or None
        The fitted "none of these" score (:mod:`frugalvision.ood`), saved as ``ood.*`` tensors.
    training_data : TrainingData or None
        The embedded, split data of a model trained in this process (``split.csv`` holds it on disk).
    """

    def __init__(self, head, info: ModelInfo | dict, backbone_tensors: dict | None = None, path=None, *,
                 ood_state=None, training_data=None):
        self.head = head
        if isinstance(info, dict):  # a freshly trained model: its head fills in what the dict leaves out
            info = ModelInfo.from_json({**info, "classes": [str(c) for c in head.classes_],
                                        "head": {"type": head_type(head), "params": {}}}, source="new model")
        self.info = info
        self.backbone_tensors = backbone_tensors or {}
        self.ood_state = ood_state
        self.training_data = training_data
        self.path = Path(path) if path else None
        self._extractor = None
        self._torch_backbone = None  # built once, for gradient maps that need PyTorch

    @property
    def training_(self) -> dict:
        """The training summary stored with the model (``info.training``)."""
        return self.info.training

    @property
    def finetune_(self) -> dict | None:
        """The fine-tuning summary (``info.finetune``), None for a frozen backbone."""
        return self.info.finetune

    @property
    def data_(self):
        return self.training_data

    # -- identity -----------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.head.classes_]

    @property
    def spec(self):
        return get_spec(self.info.backbone.name)

    @property
    def meta(self) -> dict:
        """The stored metadata as its JSON form (a copy: change ``info`` instead)."""
        return self.info.to_json()

    @property
    def preprocessing(self) -> dict:
        return self.info.preprocessing.to_dict()

    @property
    def temperature(self) -> float:
        return float(self.info.temperature or 1.0)

    @property
    def run_dir(self) -> Path | None:
        return self.path.parent if self.path else None

    def __repr__(self) -> str:
        return (f"Model(backbone={self.info.backbone.name!r}, classes={self.classes}, "
                f"head={head_type(self.head)})")

    # -- persistence --------------------------------------------------------------------------
    def save(self, path, *, overwrite: bool = False) -> Path:
        tensors = {f"head.{k}": v for k, v in self.head.get_state().items()}
        tensors.update({f"backbone.{k}": v for k, v in self.backbone_tensors.items()})
        if self.ood_state is not None:
            tensors.update({f"ood.{k}": v for k, v in self.ood_state.to_tensors().items()})
        info = replace(self.info, classes=self.classes, versions=versions(),
                       head=HeadInfo(type=head_type(self.head), params=self.head.get_params()))
        self.path = save_artifact(path, tensors, info.to_json(), overwrite=overwrite)
        self.info = info
        return self.path

    @classmethod
    def load(cls, path, *, inference_only: bool = False) -> "Model":
        """Read a model file; ``inference_only`` gives a numpy head that never imports scikit-learn."""
        p = Path(path)
        p = p / "model.safetensors" if p.is_dir() else p
        tensors, meta = load_artifact(p)
        info = ModelInfo.from_json(meta, source=str(p), tensors=tensors)
        kind, params = info.head.type, info.head.params
        head_tensors = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        try:
            if inference_only:
                from .heads.numpy_head import InferenceHead

                head = InferenceHead(kind, params, head_tensors, info.classes)
            else:
                head = head_class(kind).from_state(params, head_tensors, info.classes)
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"'{p}' is not a usable frugalvision model: its {kind} parameters {params} "
                                f"cannot be applied ({exc}). Train the model again.") from None
        bb = {k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}
        ood_state = None
        if info.reject is not None:
            from .ood import OODState

            try:
                ood_state = OODState.from_state(info.reject.params,
                                                {k[4:]: v for k, v in tensors.items() if k.startswith("ood.")})
            except (KeyError, TypeError, ValueError) as exc:
                raise ArtifactError(f"'{p}' is not a usable frugalvision model: its 'none of these' score cannot "
                                    f"be read ({exc}). Train the model again.") from None
        return cls(head, info, bb, p, ood_state=ood_state)

    # -- embedding ----------------------------------------------------------------------------
    def extractor(self, *, cache_dir=None, engine="auto", progress: bool = True):
        """The cached-embedding extractor matching this model's backbone and preprocessing."""
        from .features.extract import Extractor

        key = (str(cache_dir), engine)
        if self._extractor is None or self._extractor[0] != key:
            b = self.info.backbone
            eng = engine
            if self.backbone_tensors:  # fine-tuned weights are not the registry's: run them directly
                from .features.engine import make_engine

                auto = "torch" if b.features == "last" else "onnx"  # pooled stages are an ONNX graph's outputs
                eng = make_engine(backbone=self.backbone(), engine=auto if engine == "auto" else engine,
                                  onnx_dir=Path(cache_root(cache_dir)) / "onnx", features=b.features)
            ex = Extractor(b.name, weights=b.weights_file, engine=eng, cache_dir=cache_dir,
                           crop_pct=self.info.preprocessing.crop_pct, progress=progress, precision=b.precision,
                           features=b.features)
            if ex.weights_id != b.weights_id:
                raise ArtifactError(
                    f"This model was trained on backbone weights {b.weights_id!r} but the weights available here "
                    f"are {ex.weights_id!r}. Install the same weights (or pass the same --weights file) so that "
                    f"embeddings mean the same thing."
                )
            self._extractor = (key, ex)
        ex = self._extractor[1]
        ex.progress = progress
        return ex

    def backbone_graph(self, *, cache_dir=None) -> Path:
        """The ONNX file of this model's backbone (uint8 NHWC ``images`` -> ``features``, ``embedding``):
        the graph ONNX Runtime runs for this model, exported once and cached."""
        from .features.engine import make_engine

        onnx_dir = Path(cache_root(cache_dir)) / "onnx"
        b = self.info.backbone
        if self.backbone_tensors:
            return make_engine(backbone=self.backbone(), engine="onnx", onnx_dir=onnx_dir, threads=1).path
        return make_engine(b.name, weights=b.weights_file, engine="onnx", onnx_dir=onnx_dir, threads=1,
                           precision=b.precision).path

    def backbone(self):
        """The PyTorch backbone (with fine-tuned weights when the model has them)."""
        from ._optional import require_torch

        require_torch("The PyTorch backbone (Grad-CAM maps, fine-tuned weights)")
        import torch

        from .backbones.build import build_backbone

        b = self.info.backbone
        bb = build_backbone(b.name, b.weights_file, pretrained=not self.backbone_tensors)
        if self.backbone_tensors:
            bb.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.backbone_tensors.items()})
            bb.weights_id = b.weights_id
        return bb.eval()

    def embed(self, paths, **kw):
        """Embeddings (cached) for image files, with this model's backbone."""
        return self.extractor(**kw)(list(paths))

    # -- decisions ----------------------------------------------------------------------------
    @property
    def reject_thresholds(self):
        """The "none of these" threshold of each class, in the order of :attr:`classes` (an image meets that of its
        most probable class), or None when nothing is rejected."""
        return None if self.info.reject is None else self.info.reject.thresholds(self.classes)

    @property
    def operating_point(self):
        """The :class:`~frugalvision.decision.OperatingPoint` chosen at train time, or None (arg-max)."""
        op = self.info.operating_point
        return op if op is not None and (op.recall_thresholds or op.precision_thresholds) else None


def load_model(path, *, inference_only: bool = False) -> Model:
    """Load a model file (or a run folder containing ``model.safetensors``).

    ``inference_only=True`` is for processes that only predict and explain (a Ray actor): the head
    is applied with numpy and scikit-learn is not imported (~1 s saved per process).
    """
    return Model.load(path, inference_only=inference_only)

