"""Backbone registry, offline pretrained weights, local weights files, and the offline error."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import frugalvision as fv
from frugalvision.data.decode import load_rgb, to_input

from conftest import needs_torch

if needs_torch.args[0]:  # core environment: only the tests that need no torch run here
    torch = build_backbone = imagenet_classifier = load_state_dict_file = None
else:
    import torch

    from frugalvision.backbones.build import build_backbone, imagenet_classifier, load_state_dict_file


def test_import_and_listing_do_not_import_torch():
    code = ("import sys, frugalvision as fv; names = fv.list_backbones('efficientnet*'); "
            "assert names == ['efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2'], names; "
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_does_not_import_torch():
    code = ("import sys; from frugalvision.cli.main import main; "
            "rc = main(['--help']); assert rc == 0; assert 'torch' not in sys.modules, 'torch imported by --help'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_unknown_backbone_suggests_the_close_name():
    with pytest.raises(fv.UnknownBackboneError) as err:
        fv.get_spec("efficientnet_lite")
    msg = str(err.value)
    assert "Unknown backbone 'efficientnet_lite'" in msg and "Did you mean 'efficientnet_lite" in msg
    assert "frugalvision backbones" in msg


def test_spec_names_cam_layer_and_preprocessing():
    s = fv.get_spec("efficientnet_lite0")
    assert s.offline and s.cam_layer == "bn2" and s.input_size == 224 and s.embed_dim == 1280
    assert s.mean == (0.498, 0.498, 0.498) and s.std == (0.502, 0.502, 0.502)
    assert fv.get_spec("efficientnet_lite2").input_size == 260


@needs_torch
def test_lite0_weights_are_really_pretrained_coffee_is_espresso(coffee_jpeg):
    model, names = imagenet_classifier("efficientnet_lite0")
    img = load_rgb(coffee_jpeg)
    arr, _ = to_input(img, 224, 0.875, "bicubic")
    x = (torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255 - 0.498) / 0.502
    with torch.no_grad():
        p = model(x).softmax(-1)[0]
    assert names[int(p.argmax())] == "espresso"
    assert float(p.max()) > 0.8


@needs_torch
def test_frozen_backbone_embedding_is_mean_of_cam_layer():
    bb = build_backbone("efficientnet_lite0")
    x = torch.randint(0, 255, (2, 224, 224, 3), dtype=torch.uint8)
    with torch.no_grad():
        fmap, emb = bb(x)
    assert fmap.shape == (2, 1280, 7, 7) and emb.shape == (2, 1280)
    torch.testing.assert_close(fmap.mean(dim=(2, 3)), emb, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in bb.parameters())


@needs_torch
def test_missing_weights_offline_gives_an_actionable_paragraph(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(fv.WeightsUnavailableError) as err:
        build_backbone("resnet18")
    msg = str(err.value)
    assert "--weights FILE" in msg and "resnet18" in msg and "efficientnet_lite0" in msg
    assert "Traceback" not in msg


@needs_torch
def test_unreachable_hub_fails_at_once_without_retrying(monkeypatch):
    """No HF_HUB_OFFLINE set, but no network: only the local cache is tried, no download attempt."""
    import huggingface_hub.file_download as fd

    from frugalvision.backbones import build

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(build, "_hub_reachable", lambda timeout=3.0: False)

    def no_network(*a, **k):
        raise AssertionError("a network request was attempted although the hub is unreachable")

    monkeypatch.setattr(fd, "get_hf_file_metadata", no_network)
    with pytest.raises(fv.WeightsUnavailableError, match="--weights FILE"):
        build_backbone("resnet18")


@needs_torch
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_is_loaded(tmp_path, suffix):
    import timm

    ref = timm.create_model("resnet18", pretrained=False, num_classes=0)
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}  # DataParallel prefix is stripped
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    bb = build_backbone("resnet18", weights=path)
    assert bb.weights_id.startswith("file:")
    torch.testing.assert_close(bb.model.conv1.weight, ref.conv1.weight)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@needs_torch
def test_pickled_code_in_weights_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"conv1.weight": _Evil()}, fh)
    with pytest.raises(fv.WeightsUnavailableError, match="never unpickles"):
        load_state_dict_file(path)


@needs_torch
def test_weights_of_another_architecture_are_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(fv.WeightsUnavailableError, match="do not fit"):
        build_backbone("resnet18", weights=path)
