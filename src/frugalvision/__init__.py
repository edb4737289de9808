"""frugalvision: trustworthy image classifiers on a laptop CPU.

Frozen pretrained backbone -> embeddings cached on disk -> small head -> honest
metrics, class activation maps and a report.

    >>> import frugalvision as fv
    >>> model = fv.train("data/", out="runs/first")           # doctest: +SKIP
    >>> model.predict(["photo.jpg"])                           # doctest: +SKIP
    >>> model.evaluate().summary()                             # doctest: +SKIP
    >>> model.explain("photo.jpg", cls="top2")                 # doctest: +SKIP

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

_LAZY = {
    "train": "frugalvision.training",
    "Model": "frugalvision.model",
    "load_model": "frugalvision.model",
    "discover": "frugalvision.data.discover",
    "Extractor": "frugalvision.features.extract",
    "extract": "frugalvision.features.extract",
    "LinearHead": "frugalvision.heads.linear",
}

__all__ = [
    "BackboneSpec", "DEFAULT_BACKBONE", "get_spec", "list_backbones", "register_backbone",
    "ArtifactError", "DataError", "FrugalVisionError", "ImageDecodeError", "NotFittedError",
    "UnknownBackboneError", "WeightsUnavailableError", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'frugalvision' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
