"""One portable model file: safetensors tensors + JSON metadata, never a pickle.

The file is a standard ``.safetensors``: tensors ``head.*`` (and ``backbone.*`` for a
fine-tuned backbone), and in its header metadata one ``frugalvision`` entry holding
JSON (classes, head type and parameters, backbone name and weights identity,
preprocessing, versions, training summary). Loading parses JSON and raw tensors only.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING
from importlib import metadata as _md
from pathlib import Path

import numpy as np

from ._io import atomic_writer, refuse_overwrite
from .exceptions import ArtifactError

if TYPE_CHECKING:
    from .decision import OperatingPoint

__all__ = ["save_artifact", "load_artifact", "FORMAT", "FORMAT_VERSION", "versions", "ModelInfo", "BackboneInfo",
           "Preprocessing", "HeadInfo", "RejectInfo", "TrainingSummary", "FinetuneInfo"]

FORMAT = "frugalvision-model"
FORMAT_VERSION = 1


def versions() -> dict:
    out = {}
    for pkg in ("frugalvision", "timm", "torch", "scikit-learn", "onnxruntime", "numpy"):
        try:
            out[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            out[pkg] = None
    return out


def save_artifact(path, tensors: dict[str, np.ndarray], meta: dict, *, overwrite: bool = False) -> Path:
    """Write ``tensors`` and ``meta`` to ``path`` atomically (refuses to overwrite unless asked)."""
    from safetensors.numpy import save

    path = Path(path)
    refuse_overwrite(path, overwrite, "model file")
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    blob = save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                metadata={"frugalvision": json.dumps(body, default=_jsonable)})
    with atomic_writer(path, "wb") as fh:
        fh.write(blob)
    return path


def load_artifact(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read ``(tensors, meta)`` from a model file, with a clear error for anything else."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ArtifactError(f"Model file '{path}' does not exist. Train one with 'frugalvision train DATA --out DIR'.")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get("frugalvision")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(
            f"'{path}' is not a frugalvision model file ({exc}). Model files are .safetensors written by "
            f"'frugalvision train'."
        ) from None
    if raw is None:
        raise ArtifactError(f"'{path}' is a safetensors file but has no frugalvision metadata; it is not a model file.")
    try:
        meta = json.loads(raw)
    except RecursionError:
        raise ArtifactError(f"'{path}' has frugalvision metadata nested too deeply to be a model file; the file was "
                            f"damaged or edited. Train the model again.") from None
    except ValueError as exc:
        raise ArtifactError(f"'{path}' has frugalvision metadata that is not valid JSON ({exc}); the file was "
                            f"damaged or edited. Train the model again.") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"'{path}' has frugalvision metadata that is not a JSON object; it is not a model file.")
    version = meta.get("format_version", 0)
    if meta.get("format") != FORMAT or not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' has format {meta.get('format')!r} version {meta.get('format_version')}; this frugalvision "
            f"reads '{FORMAT}' up to version {FORMAT_VERSION}. Upgrade frugalvision: pip install -U frugalvision"
        )
    return tensors, meta


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


# -- typed metadata -----------------------------------------------------------------------------
# The JSON stored in a model file, as plain dataclasses: read and checked once, in ``ModelInfo.from_json``,
# so nothing downstream meets a missing key or a head whose shape disagrees with its classes.


@dataclass(frozen=True)
class BackboneInfo:
    """Which network made the embeddings, and which weights: embeddings only mean something for these."""

    name: str
    weights_id: str
    embed_dim: int
    timm_name: str = ""
    weights_source: str = ""
    weights_file: str | None = None
    cam_layer: str = ""
    pooled_is_plain_avg: bool = True
    license: str = ""
    base_weights_id: str | None = None  # a fine-tuned backbone: the weights it started from
    precision: str = "fp32"  # 'int8': the shipped quantized graph made the embeddings
    features: str = "last"  # 'multi': embed_dim includes the pooled intermediate stages (backbones/stages.py)


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become the network's input; it belongs to the weights."""

    input_size: int
    mean: tuple
    std: tuple
    interpolation: str = "bicubic"
    crop_pct: float = 1.0

    def to_dict(self) -> dict:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "crop_pct": self.crop_pct}


@dataclass(frozen=True)
class HeadInfo:
    type: str
    params: dict = field(default_factory=dict)


class _Record:
    """A typed summary read like the JSON it is stored as: declared fields are attributes (type-checked on load);
    ``record["name"]`` and ``record.get("name")`` read them too, and keys a newer version wrote are kept in ``extra``."""

    def __getitem__(self, key):
        if key in self._names():
            return getattr(self, key)
        return self.extra[key]

    def __setitem__(self, key, value) -> None:
        if key in self._names():
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __contains__(self, key) -> bool:
        return key in self._names() or key in self.extra

    def get(self, key, default=None):
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value

    def update(self, **kw) -> None:
        for k, v in kw.items():
            self[k] = v

    def keys(self):
        return [*self._names(), *self.extra]

    @classmethod
    def _names(cls):
        return [f.name for f in fields(cls) if f.name != "extra"]

    def to_json(self) -> dict:
        return {**{n: getattr(self, n) for n in self._names()}, **self.extra}

    @classmethod
    def from_json(cls, d, what: str, problems: list):
        if not isinstance(d, dict):
            problems.append(f"'{what}' must be a JSON object")
            return None
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        kw = {}
        for n, v in d.items():
            if n in known:
                if v is not None and not _record_type_ok(str(known[n].type), v):
                    problems.append(f"'{what}.{n}' has the wrong type ({type(v).__name__})")
                    return None
                kw[n] = v
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})


def _record_type_ok(annotation: str, value) -> bool:
    base = annotation.split(" | ")[0]
    allowed = {"str": (str,), "int": (int,), "float": (int, float), "dict": (dict,), "list": (list,)}.get(base)
    return allowed is None or (isinstance(value, allowed) and not (isinstance(value, bool) and base != "bool"))


@dataclass
class TrainingSummary(_Record):
    """What ``train`` did, for people and reports (never needed to predict): data counts, validation numbers,
    the recipe, the head's C, the precision check, the small-data path, notes, goals, timing."""

    source: str = ""
    n_images: int = 0
    n_skipped: int = 0
    counts: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    C: float | None = None
    C_search: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    goals: list = field(default_factory=list)
    recipe: dict = field(default_factory=dict)
    precision_check: dict | None = None
    augmentation: dict = field(default_factory=dict)
    small_data: dict | None = None
    started: str = ""
    finished: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class FinetuneInfo(_Record):
    """What fine-tuning did: its settings, the epochs run and chosen, the validation history, the trained modules."""

    stages: int = 1
    epochs: int = 0
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_loss: float | None = None
    best_val_accuracy: float | None = None
    start_val_loss: float | None = None
    start_val_accuracy: float | None = None
    history: list = field(default_factory=list)
    resumed_from_epoch: int | None = None
    stopped_by_budget: bool = False  # the time budget (tune --budget) ended it before early stopping did
    trainable: list = field(default_factory=list)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RejectInfo:
    """The "none of these" score: its fitted parameters (tensors ``ood.*``), the threshold past which an image is
    ``unknown`` (None: scored but never rejected, ``note`` says why), the share of normal validation images it keeps,
    and how many validation images chose it.

    ``class_thresholds`` holds a threshold of its own for each class with enough validation images whose most
    probable class it is (Mondrian, by the predicted class): an image is judged against the threshold of its most
    probable class, ``threshold`` (placed on all the images) for the other classes. One threshold for all classes
    fell hardest on a spread-out class such as the defects of an inspection set."""

    params: dict
    threshold: float | None = None
    accept_rate: float = 0.95
    n_validation: int = 0
    note: str = ""
    class_thresholds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def thresholds(self, classes) -> np.ndarray | None:
        """One threshold per class of ``classes`` (the model's order), or None when nothing is rejected."""
        if self.threshold is None:
            return None
        return np.array([self.class_thresholds.get(str(c), self.threshold) for c in classes], dtype=np.float64)

    @classmethod
    def from_json(cls, d: dict, problems: list) -> "RejectInfo | None":
        if not isinstance(d.get("params"), dict):
            problems.append("'reject.params' is missing or not a JSON object")
            return None
        t = d.get("threshold")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t)):
            problems.append(f"'reject.threshold' must be a finite number or null, got {t!r:.60}")
            return None
        a = d.get("accept_rate", 0.95)
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= 1:
            problems.append(f"'reject.accept_rate' must be a number in (0, 1], got {a!r:.60}")
            return None
        n = d.get("n_validation", 0)
        ct = d.get("class_thresholds", {})  # absent in models saved before class-wise thresholds: one for all
        if not isinstance(ct, dict) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                           or not np.isfinite(v) for v in ct.values()):
            problems.append(f"'reject.class_thresholds' must map class names to finite numbers, got {ct!r:.60}")
            return None
        if ct and t is None:
            problems.append("'reject.class_thresholds' is set without 'reject.threshold'")
            return None
        return cls(params=d["params"], threshold=None if t is None else float(t), accept_rate=float(a),
                   n_validation=int(n) if isinstance(n, int) else 0, note=str(d.get("note", "")),
                   class_thresholds={str(k): float(v) for k, v in ct.items()})


@dataclass
class ModelInfo:
    """Everything a model file says besides its tensors.

    ``training`` and ``finetune`` are summaries written for people and reports (free-form, never
    needed to predict); every field needed to predict is typed and checked on load.
    """

    classes: list
    backbone: BackboneInfo
    preprocessing: Preprocessing
    head: HeadInfo
    temperature: float | None = None
    training: TrainingSummary = field(default_factory=TrainingSummary)
    finetune: FinetuneInfo | None = None
    versions: dict = field(default_factory=dict)
    operating_point: "OperatingPoint | None" = None  # per-class thresholds chosen on validation
    reject: RejectInfo | None = None                  # the "none of these" score and its threshold

    def to_json(self) -> dict:
        out = {"classes": [str(c) for c in self.classes], "backbone": asdict(self.backbone),
               "preprocessing": self.preprocessing.to_dict(), "head": asdict(self.head),
               "temperature": self.temperature, "training": self.training.to_json(), "versions": self.versions}
        if self.finetune is not None:
            out["finetune"] = self.finetune.to_json()
        if self.operating_point is not None:
            out["operating_point"] = self.operating_point.to_json()
        if self.reject is not None:
            out["reject"] = self.reject.to_json()
        return out

    @classmethod
    def from_json(cls, meta, *, source: str = "model file", tensors: dict | None = None) -> "ModelInfo":
        """Check ``meta`` (and, when given, that the head tensors fit the classes); ArtifactError says what is wrong."""
        problems: list[str] = []
        if not isinstance(meta, dict):
            raise _bad(source, [f"its metadata is a {type(meta).__name__}, not a JSON object"])
        classes = meta.get("classes")
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            problems.append("'classes' must be a list of at least 2 class names")
        elif len(set(classes)) != len(classes):
            problems.append("'classes' has repeated names")
        backbone = _typed(BackboneInfo, meta.get("backbone"), "backbone", problems)
        pre = _typed(Preprocessing, meta.get("preprocessing"), "preprocessing", problems)
        head = _typed(HeadInfo, meta.get("head"), "head", problems)
        if backbone is not None and backbone.precision not in ("fp32", "int8"):
            problems.append(f"'backbone.precision' must be fp32 or int8, got {backbone.precision!r}")
        if head is not None and head.type not in _head_kinds():
            problems.append(f"head type {head.type!r} is unknown to this frugalvision version "
                            f"(known: {', '.join(_head_kinds())})")
        temperature = meta.get("temperature")
        if temperature is not None and not (isinstance(temperature, (int, float)) and temperature > 0):
            problems.append(f"'temperature' must be a positive number or null, got {temperature!r}")
        for name in ("training", "finetune", "versions", "operating_point", "reject"):
            if meta.get(name) is not None and not isinstance(meta.get(name), dict):
                problems.append(f"'{name}' must be a JSON object")
        op = reject = None
        if not problems and isinstance(meta.get("operating_point"), dict):
            from .decision import OperatingPoint

            try:
                op = OperatingPoint.from_json(meta["operating_point"], classes)
            except (ValueError, TypeError, AttributeError) as exc:
                problems.append(f"'operating_point' cannot be used ({exc})")
            else:
                bad = [v for v in [*op.recall_thresholds.values(), *op.precision_thresholds.values()]
                       if not np.isfinite(v)]
                if bad:
                    problems.append("'operating_point' has thresholds that are not finite numbers")
        if not problems and isinstance(meta.get("reject"), dict):
            reject = RejectInfo.from_json(meta["reject"], problems)
            stray = sorted(set(reject.class_thresholds) - {str(c) for c in classes}) if reject else []
            if stray:
                problems.append(f"'reject.class_thresholds' names classes the model does not have: {stray!r:.80}")
        training = TrainingSummary.from_json(meta.get("training") or {}, "training", problems) if not problems else None
        finetune = (FinetuneInfo.from_json(meta["finetune"], "finetune", problems)
                    if not problems and meta.get("finetune") is not None else None)
        if not problems and tensors is not None:
            problems += _shape_problems(head, backbone, len(classes), tensors)
        if problems:
            raise _bad(source, problems)
        return cls(classes=list(classes), backbone=backbone, preprocessing=pre, head=head,
                   temperature=float(temperature) if temperature is not None else None,
                   training=training, finetune=finetune,
                   versions=meta.get("versions") or {}, operating_point=op, reject=reject)


def _head_kinds() -> tuple:
    from .heads import HEAD_KINDS

    return HEAD_KINDS


def _typed(kind, value, name: str, problems: list):
    """``kind(**value)`` with every field's type checked, or None after adding what is wrong to ``problems``."""
    if not isinstance(value, dict):
        problems.append(f"'{name}' is missing or not a JSON object")
        return None
    known = {f.name: f for f in fields(kind)}
    required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in value]
    if missing:
        problems.append(f"'{name}' lacks {', '.join(repr(m) for m in missing)}")
        return None
    kw = {}
    for n, f in known.items():
        if n not in value:
            continue
        v = value[n]
        ok = _check_type(f.type, v)
        if not ok:
            problems.append(f"'{name}.{n}' has the wrong type ({type(v).__name__}: {v!r:.60})")
            return None
        kw[n] = tuple(v) if isinstance(v, list) and f.type == "tuple" else v
    return kind(**kw)


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "tuple": (list, tuple),
          "dict": (dict,), "str | None": (str, type(None)), "float | None": (int, float, type(None))}


def _check_type(annotation: str, value) -> bool:
    allowed = _TYPES.get(str(annotation))
    if allowed is None:
        return True
    if isinstance(value, bool) and bool not in allowed:
        return False
    if annotation == "tuple":
        return len(value) == 3 and all(isinstance(x, (int, float)) for x in value)
    if not isinstance(value, allowed):
        return False
    return value > 0 if annotation == "int" else True


def _shape_problems(head: HeadInfo, backbone: BackboneInfo, n_classes: int, tensors: dict) -> list[str]:
    from .heads._base import MLP_STATE

    needed = ("coef", "intercept") if head.type == "LinearHead" else MLP_STATE
    missing = [k for k in needed if f"head.{k}" not in tensors]
    if missing:
        return [f"the {head.type} tensors {', '.join(missing)} are missing"]
    out = f"head.{'coef' if head.type == 'LinearHead' else 'w2'}"
    first = f"head.{'coef' if head.type == 'LinearHead' else 'w1'}"
    rows, width = tensors[out].shape[0], tensors[first].shape[-1]
    problems = []
    not_finite = [k for k, v in tensors.items() if k.startswith(("head.", "ood."))
                  and np.issubdtype(np.asarray(v).dtype, np.floating) and not np.isfinite(v).all()]
    if not_finite:
        problems.append(f"the tensors {', '.join(not_finite[:5])} hold NaN or infinite values")
    if rows != n_classes:
        problems.append(f"the head scores {rows} classes but 'classes' names {n_classes}")
    if width != backbone.embed_dim:
        problems.append(f"the head reads {width}-wide embeddings but backbone {backbone.name!r} gives "
                        f"{backbone.embed_dim}")
    return problems


def _bad(source, problems: list[str]) -> ArtifactError:
    return ArtifactError(
        f"'{source}' is not a usable frugalvision model: " + "; ".join(problems) + ". It was probably edited "
        "or written by another program; train it again with 'frugalvision train DATA --out DIR'.")
