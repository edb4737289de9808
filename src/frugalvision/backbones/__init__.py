"""Pretrained backbones: the registry (torch-free) and how to build them."""

from .registry import DEFAULT_BACKBONE, BackboneSpec, get_spec, list_backbones, register_backbone

__all__ = ["BackboneSpec", "DEFAULT_BACKBONE", "get_spec", "list_backbones", "register_backbone"]
