"""Export a trained model as one ONNX graph that runs with onnxruntime alone.

Input ``images``: uint8 RGB, ``N×S×S×3`` (S stated in the metadata, ``input_size``; the caller
centre-crops the largest square and resizes it to S, as frugalvision does). Inside the graph:
resize to the network's size (when S differs), normalisation, backbone, head, temperature.
Outputs: ``probabilities`` (N×K) and ``cams`` (N×K×h×w, every class's exact CAM; linear heads).
Class names and preprocessing are stored in the ONNX metadata (``frugalvision`` key, JSON).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ._io import atomic_writer, refuse_overwrite

__all__ = ["export_onnx_model", "read_onnx_metadata"]


def export_onnx_model(model, out, *, input_size: int | None = None, overwrite: bool = False, opset: int = 17) -> Path:
    """Write ``out`` (.onnx). Returns the path. See the module docstring for the graph's contract."""
    import onnx
    import torch

    out = Path(out)
    refuse_overwrite(out, overwrite, "ONNX file")
    bb = model.backbone()
    size = int(input_size or model.spec.input_size)
    net_size = model.spec.input_size
    head = model.head.torch_module()
    linear = hasattr(model.head, "coef_")
    coef = torch.as_tensor(model.head.coef_, dtype=torch.float32) if linear else None
    temperature = float(model.temperature)

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bb, self.head = bb, head

        def forward(self, images):
            x = images.permute(0, 3, 1, 2).to(torch.float32)
            if size != net_size:
                x = torch.nn.functional.interpolate(x, size=(net_size, net_size), mode="bilinear",
                                                    align_corners=False, antialias=False).clamp(0, 255)
            x = ((x - self.bb.mean) * self.bb.inv_std)
            fmap = self.bb.model.forward_features(x)
            logits = self.head(self.bb.model.forward_head(fmap, pre_logits=True))
            probs = torch.softmax(logits / temperature, dim=1)
            if coef is None:
                return probs, fmap
            return probs, torch.einsum("kc,nchw->nkhw", coef, fmap)

    meta = {"classes": model.classes, "input_size": size, "network_input_size": net_size,
            "input": "uint8 RGB N x input_size x input_size x 3: centre square of the image resized to input_size",
            "preprocessing": model.preprocessing, "temperature": temperature,
            "backbone": model.meta["backbone"]["name"], "weights_id": model.meta["backbone"]["weights_id"],
            "outputs": {"probabilities": "N x K softmax(logits / temperature)",
                        "cams": "N x K x h x w exact class activation maps" if linear else None,
                        "features": None if linear else "N x C x h x w last feature map"},
            "versions": model.meta.get("versions")}
    example = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    names = ["probabilities", "cams" if linear else "features"]
    tmp = out.with_name(out.name + ".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Exported().eval(), (example,), str(tmp), input_names=["images"], output_names=names,
                          dynamic_axes={"images": {0: "batch"}, names[0]: {0: "batch"}, names[1]: {0: "batch"}},
                          opset_version=opset, dynamo=False)
    proto = onnx.load(str(tmp))
    tmp.unlink()
    entry = proto.metadata_props.add()
    entry.key, entry.value = "frugalvision", json.dumps(meta)
    with atomic_writer(out, "wb") as fh:
        fh.write(proto.SerializeToString())
    return out


def read_onnx_metadata(path) -> dict:
    """The ``frugalvision`` JSON stored in an exported graph (needs only onnxruntime)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return json.loads(sess.get_modelmeta().custom_metadata_map["frugalvision"])
