"""Run a `frugalvision export` graph with onnxruntime, numpy and Pillow only (no frugalvision import).

    python examples/onnx_client.py model.onnx photo.jpg [more images...]

For each image: the decided label (a class, or "unknown" for "none of these"), its probability, the runner-up and
the class activation map of the decided class, all read from the graph's outputs. The graph crops and resizes
itself; this file only decodes the image the way `frugalvision predict` does, so the probabilities are predict's.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def decode(path: str, jpeg_min_side: int) -> np.ndarray:
    """uint8 H x W x 3 RGB, as predict decodes: JPEGs at reduced DCT scale, upright, transparency on white."""
    img = Image.open(path)
    if img.format == "JPEG" and min(img.size) >= 2 * jpeg_min_side:
        img.draft("RGB", (jpeg_min_side, jpeg_min_side))  # libjpeg's 1/2, 1/4 or 1/8 scaled decoding
    img.load()
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode.startswith("I") or mode == "F":  # 16-bit, 32-bit integer and float images: rescale to 0..255
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) > 255) else 255.0
        if mode == "F":
            top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


class Client:
    def __init__(self, model_path: str):
        self.session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map["frugalvision"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def classify(self, path: str) -> dict:
        image = decode(path, self.meta["jpeg_min_side"])
        out = dict(zip(self.outputs, self.session.run(None, {"images": image[None]})))
        classes = self.meta["classes"]
        probs = out["probabilities"][0]
        decided, runner = int(out["decision"][0]), int(out["runner_up"][0])
        result = {"label": classes[decided] if decided >= 0 else "unknown",
                  "probability": float(probs[decided]) if decided >= 0 else None,
                  "most_probable": classes[int(probs.argmax())], "most_probable_probability": float(probs.max()),
                  "runner_up": classes[runner], "runner_up_probability": float(probs[runner]),
                  "probabilities": probs, "ood_score": float(out["ood_score"][0]) if "ood_score" in out else None}
        # The decided class's map (linear heads; other heads export the feature map instead). None when unknown.
        result["map"] = out["cams"][0, decided] if "cams" in out and decided >= 0 else None
        return result


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    client = Client(argv[0])
    for path in argv[1:]:
        r = client.classify(path)
        if r["probability"] is None:
            print(f"{path}: unknown (none of these; most probable {r['most_probable']} "
                  f"{r['most_probable_probability']:.4f}), runner-up {r['runner_up']} {r['runner_up_probability']:.4f}")
        else:
            print(f"{path}: {r['label']} {r['probability']:.4f}, runner-up {r['runner_up']} "
                  f"{r['runner_up_probability']:.4f}")
        if r["map"] is not None:  # h x w over the centre square; upsample it onto the crop to overlay
            m = r["map"]
            print(f"  map of {r['label']} ({m.shape[0]}x{m.shape[1]}, scaled to 0..9):")
            scaled = np.round(9 * (m - m.min()) / max(float(np.ptp(m)), 1e-12)).astype(int)
            for row in scaled:
                print("  " + "".join(str(v) for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
