"""Errors that say what was wrong, what was expected, and what to do.

Each exception subclasses the builtin it refines so that generic ``except``
clauses keep working; the CLI turns them into a message and exit code 1.
"""

__all__ = [
    "FrugalVisionError",
    "UnknownBackboneError",
    "WeightsUnavailableError",
    "DataError",
    "ImageDecodeError",
    "NotFittedError",
    "ArtifactError",
    "DataWarning",
    "MissingExtraError",
]


class FrugalVisionError(Exception):
    """Base class for every error frugalvision raises on purpose."""


class UnknownBackboneError(FrugalVisionError, KeyError):
    """A backbone name is not in the registry nor a known timm model."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(FrugalVisionError, RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


class DataError(FrugalVisionError, ValueError):
    """The dataset (folder, manifest, labels) cannot be used as given."""


class ImageDecodeError(FrugalVisionError, ValueError):
    """One image could not be decoded; ``reason`` says why in a few words."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class NotFittedError(FrugalVisionError, ValueError, AttributeError):
    """An estimator or model was used before ``fit``."""


class ArtifactError(FrugalVisionError, ValueError):
    """A model file is missing, corrupt, or does not match this installation."""


class MissingExtraError(FrugalVisionError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the extra."""


class DataWarning(UserWarning):
    """Something in the data was skipped or changed and the run goes on (the CLI prints it as one line)."""
