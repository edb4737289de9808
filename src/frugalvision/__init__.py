"""frugalvision: trustworthy image classifiers on a laptop CPU.

Frozen pretrained backbone -> embeddings cached on disk -> small head -> honest
metrics, class activation maps and a report.

    >>> import frugalvision as fv
    >>> model = fv.train("data/", out="runs/first")           # doctest: +SKIP
    >>> fv.predict(model, ["photo.jpg"])                       # doctest: +SKIP
    >>> fv.evaluate(model).summary()                           # doctest: +SKIP
    >>> fv.explain(model, "photo.jpg", cls="top2")             # doctest: +SKIP

Importing this package does not import torch; the heavy parts load on first use.
"""

from importlib import import_module as _import_module
from importlib import metadata as _metadata

from .backbones import DEFAULT_BACKBONE, BackboneSpec, get_spec, list_backbones, register_backbone
from .exceptions import (
    ArtifactError,
    DataError,
    FrugalVisionError,
    ImageDecodeError,
    NotFittedError,
    UnknownBackboneError,
    WeightsUnavailableError,
)

try:
    __version__ = _metadata.version("frugalvision")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

# name -> "module:attribute", imported on first use (so `import frugalvision` stays light).
_LAZY = {
    "train": "frugalvision.training:train",
    "Recipe": "frugalvision.recipe:Recipe",
    "Model": "frugalvision.model:Model",
    "load_model": "frugalvision.model:load_model",
    "predict": "frugalvision.inference:predict",
    "decide": "frugalvision.decision:decide",
    "evaluate": "frugalvision.evaluation:evaluate",
    "explain": "frugalvision.explanation:explain_image",
    "report": "frugalvision.reporting:write_report",
    "discover": "frugalvision.data.discover:discover",
    "Extractor": "frugalvision.features.extract:Extractor",
    "extract": "frugalvision.features.extract:extract",
    "LinearHead": "frugalvision.heads.linear:LinearHead",
}

__all__ = [
    "BackboneSpec", "DEFAULT_BACKBONE", "get_spec", "list_backbones", "register_backbone",
    "ArtifactError", "DataError", "FrugalVisionError", "ImageDecodeError", "NotFittedError",
    "UnknownBackboneError", "WeightsUnavailableError", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name].split(":")
        value = getattr(_import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'frugalvision' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
