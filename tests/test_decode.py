"""Safe decoding: orientation, every mode to RGB, and every kind of bad file named with its reason."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from frugalvision import ImageDecodeError
from frugalvision.data.decode import crop_box, decode_for_input, load_rgb, to_input

from conftest import needs_torch


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_exif_orientation_is_applied(tmp_path):
    # 60x40 landscape with a red top-left corner; EXIF 6 = rotate 90 degrees clockwise to display.
    a = np.zeros((40, 60, 3), np.uint8)
    a[:10, :10] = (255, 0, 0)
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=95)
    out = load_rgb(p)
    assert out.size == (40, 60)  # portrait after transpose
    arr = np.asarray(out)
    assert arr[:10, -10:, 0].mean() > 200  # red corner moved to the top-right


def test_exif_orientation_on_the_fast_scaled_jpeg_path(tmp_path):
    a = np.zeros((600, 1000, 3), np.uint8)
    a[:100, :100] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "big_rot.jpg"
    Image.fromarray(a).save(p, exif=exif, quality=95)
    out = load_rgb(p, min_side=100)  # large enough to be decoded at reduced scale
    assert out.size[0] < out.size[1] < 600  # upright portrait, and really scaled down
    arr = np.asarray(out)
    w = out.size[0]
    assert arr[: w // 10, -w // 10:, 0].mean() > 200


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "I", "F"])
def test_every_mode_becomes_correct_rgb(mode):
    if mode == "I;16":
        img = Image.fromarray(np.full((8, 8), 65535, np.uint16))
        expected = (255, 255, 255)
    elif mode == "I":
        img = Image.fromarray(np.full((8, 8), 32768, np.int32))
        expected = (128, 128, 128)
    elif mode == "F":
        img = Image.fromarray(np.full((8, 8), 0.5, np.float32))
        expected = (128, 128, 128)
    elif mode == "CMYK":
        img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red ink
        expected = (255, 0, 0)
    elif mode in ("LA", "RGBA"):
        img = Image.new(mode, (8, 8), (0, 0) if mode == "LA" else (0, 0, 0, 0))  # fully transparent black
        expected = (255, 255, 255)  # composited on white, not black
    elif mode == "P":
        img = Image.new("P", (8, 8), 1)
        img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
        img.info["transparency"] = 0
        expected = (0, 0, 255)
    elif mode == "1":
        img = Image.new("1", (8, 8), 1)
        expected = (255, 255, 255)
    else:
        img = Image.new("L", (8, 8), 100)
        expected = (100, 100, 100)
    out = load_rgb(_tiff_bytes(img) if mode in ("CMYK", "I", "F") else _png_bytes(img))
    assert out.mode == "RGB"
    assert tuple(np.asarray(out)[4, 4]) == pytest.approx(expected, abs=1)


def _tiff_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    return buf.getvalue()


def test_transparent_palette_pixels_become_white():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    assert tuple(np.asarray(load_rgb(_png_bytes(img)))[0, 0]) == (255, 255, 255)


def _corrupt_png() -> bytes:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = bytearray(_png_bytes(noisy))
    data[200:400] = bytes(200)  # damage the compressed pixel data, keep the length
    return bytes(data)


def _bad_files(tmp_path):
    good = Image.new("RGB", (64, 64), (10, 200, 30))
    jpg = io.BytesIO()
    good.save(jpg, format="JPEG")
    files = {
        "empty.jpg": (b"", "empty file"),
        "text.jpg": (b"this is not an image\n" * 10, "not an image"),
        "truncated.jpg": (jpg.getvalue()[: len(jpg.getvalue()) // 2], "truncated"),
        "corrupt.png": (_corrupt_png(), "corrupt"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.jpg").mkdir()
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    reasons = {n: r for n, (_, r) in files.items()}
    reasons["folder.jpg"] = "directory"
    reasons["dangling.png"] = "not found"
    return reasons


def test_each_bad_file_kind_has_a_specific_reason(tmp_path):
    for name, expected in _bad_files(tmp_path).items():
        with pytest.raises(ImageDecodeError) as err:
            load_rgb(tmp_path / name)
        assert expected in err.value.reason, (name, err.value.reason)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    p = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(p)
    with pytest.raises(ImageDecodeError, match="too large"):
        load_rgb(p, max_pixels=1_000_000)
    res = decode_for_input(p, 224, 1.0, max_pixels=1_000_000)
    assert res.array is None and "too large" in res.error


def test_crop_box_and_resize_are_consistent():
    assert crop_box(400, 200, 1.0) == (100.0, 0.0, 300.0, 200.0)
    img = Image.new("RGB", (400, 200))
    arr, frac = to_input(img, 224, 1.0)
    assert arr.shape == (224, 224, 3) and frac == (0.25, 0.0, 0.75, 1.0)


@needs_torch
def test_draft_decoding_keeps_the_prediction(tmp_path, coffee_jpeg):
    """Reduced-scale JPEG decoding gives the same label and nearly the same embedding."""
    from frugalvision.backbones.build import imagenet_classifier
    import torch

    big = Image.open(coffee_jpeg).resize((1920, 1280), Image.Resampling.BICUBIC)
    p = tmp_path / "big.jpg"
    big.save(p, quality=88)
    model, names = imagenet_classifier("efficientnet_lite0")
    outs = []
    for min_side in (None, 224):
        img = load_rgb(p, min_side=min_side)
        if min_side:
            assert img.size[0] < 1920  # draft really decoded at reduced scale
        arr, _ = to_input(img, 224, 1.0)
        x = (torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255 - 0.498) / 0.502
        with torch.no_grad():
            outs.append(model(x).softmax(-1)[0])
    assert int(outs[0].argmax()) == int(outs[1].argmax())
    assert names[int(outs[1].argmax())] == "espresso"
    assert float((outs[0] - outs[1]).abs().max()) < 0.05
