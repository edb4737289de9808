"""Hostile input, the cases left from #30 and #32: a damaged fine-tuning checkpoint, PostScript uploaded to the web
app, NFC/NFD look-alike class names in the report, a full disk and a read-only folder during writes.

The hostile names and files come from tests/attack_corpus.py (one place: a new case is added there once)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import attack_corpus as corpus


# -- the fine-tuning checkpoint verifies itself (numpy only: runs without torch) -----------------------------------
def _checkpoint(tmp_path):
    from frugalvision.finetune.checkpoint import write_checkpoint

    rng = np.random.default_rng(0)
    tensors = {"backbone.w": rng.standard_normal((64, 32)).astype(np.float32),
               "best.backbone.w": rng.standard_normal((64, 32)).astype(np.float32),
               "opt.0.step": np.asarray([3.0], dtype=np.float32)}
    meta = {"state": {"epoch": 3, "bad_epochs": 0, "history": []}, "config": {"seed": 0}}
    return write_checkpoint(tmp_path / "finetune_checkpoint.safetensors", tensors, meta), tensors, meta


def test_a_clean_checkpoint_reads_back_exactly(tmp_path):
    from frugalvision.finetune.checkpoint import read_checkpoint

    path, tensors, meta = _checkpoint(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got_meta, got = read_checkpoint(path)
    assert got_meta == meta and got.keys() == tensors.keys()
    for k in tensors:
        np.testing.assert_array_equal(got[k], tensors[k])


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "flip", "garbage", "state", "no_checksum", "empty"])
def test_a_damaged_checkpoint_is_named_set_aside_and_not_used(tmp_path, damage):
    import json

    from safetensors.numpy import save

    from frugalvision.finetune.checkpoint import META_KEY, read_checkpoint

    path, tensors, meta = _checkpoint(tmp_path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":  # a killed copy
        raw = raw[:len(raw) // 2]
    elif damage == "overwrite":  # 4 KB in the middle, same size (a bad disk block)
        mid = len(raw) // 2
        raw[mid:mid + 4096] = os.urandom(min(4096, len(raw) - mid))
    elif damage == "flip":  # one mantissa bit of the last float: still finite, silently wrong without a checksum
        raw[-2] ^= 0x01
    elif damage == "garbage":
        raw = bytearray(b"\x00" * 64)
    elif damage == "state":  # the loop state edited (epoch 3 -> 9): the tensors alone would still check out
        head_len = int.from_bytes(raw[:8], "little")
        head = raw[8:8 + head_len].decode().replace('\\"epoch\\": 3', '\\"epoch\\": 9')
        raw = bytearray(len(head).to_bytes(8, "little") + head.encode() + raw[8 + head_len:])
        assert b'epoch\\": 9' in raw
    elif damage == "no_checksum":  # a checkpoint of the previous format
        raw = bytearray(save(tensors, metadata={META_KEY: json.dumps(meta)}))
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_checkpoint(path) is None
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and str(path) in said[0] and "damaged" in said[0] and "starts again" in said[0], said
    assert not path.exists()
    (aside,) = list(tmp_path.glob(path.name + ".bad-*"))  # kept for inspection, never deleted
    assert aside.read_bytes() == bytes(raw)
