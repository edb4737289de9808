"""Hostile files and names: no Ghostscript on user data, no hang on special files, no write outside the run folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import attack_corpus as corpus
import frugalvision as fv
from conftest import make_shapes_dataset

_EPS = corpus.EPS


@pytest.fixture()
def gs_trap(tmp_path, monkeypatch):
    """Any start of Ghostscript (a `gs` first on PATH, Pillow's EPS plugin, subprocess) leaves the marker."""
    return corpus.install_gs_trap(tmp_path, monkeypatch)


def test_postscript_named_png_is_never_handed_to_ghostscript(tmp_path, gs_trap):
    data = make_shapes_dataset(tmp_path / "d", n_per_class=4, size=48, seed=40)
    (data / "circle" / "x.png").write_bytes(_EPS)
    run = tmp_path / "run"
    # In a subprocess with a deadline: the old behaviour was a hang at 100 % CPU.
    code = textwrap.dedent(f"""
        import frugalvision as fv
        m = fv.train({str(data)!r}, out={str(run)!r}, progress=False)
        t = fv.predict(m, [{str(data / 'circle' / 'x.png')!r}], progress=False)
        print("ERROR=" + t["error"].iloc[0])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not an image of an accepted format" in proc.stdout
    skipped = pd.read_csv(run / "skipped.csv")
    assert skipped["path"].str.endswith("x.png").any()
    assert not gs_trap.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_and_device_links_are_skipped_not_read(tmp_path):
    data = make_shapes_dataset(tmp_path / "d", n_per_class=4, size=48, seed=41)
    os.mkfifo(data / "circle" / "pipe.png")
    (data / "square" / "zero.png").symlink_to("/dev/zero")
    (data / "square" / "random.png").symlink_to("/dev/urandom")
    code = textwrap.dedent(f"""
        import frugalvision as fv
        m = fv.train({str(data)!r}, progress=False)
        t = fv.predict(m, [{str(data)!r}], progress=False)
        for p, e in zip(t["path"], t["error"]):
            if e: print("SKIP", p.rsplit("/", 1)[-1], e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "pipe.png not a regular file (a FIFO" in out
    # The links are followed to /dev/zero and /dev/urandom, which are refused from stat alone, before any read.
    assert "zero not a regular file (a device" in out and "urandom not a regular file (a device" in out


def test_a_group_column_named_like_a_path_writes_inside_the_evaluation_folder(tmp_path):
    data = make_shapes_dataset(tmp_path / "d", n_per_class=12, size=48, seed=42)
    col = "../../../../../../tmp/x" + os.urandom(3).hex()
    rows = [{"path": str(p), "label": p.parent.name, col: "a" if i % 2 else "b"}
            for i, p in enumerate(sorted(data.rglob("*.png")))]
    manifest = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    model = fv.train(manifest, out=tmp_path / "run", progress=False)
    written = fv.evaluate(model, group_by=col, progress=False, n_boot=20).save(tmp_path / "run" / "evaluation")
    outside = "/tmp/" + col.rsplit("/", 1)[-1] + ".csv"
    assert not os.path.exists(outside)
    assert all((tmp_path / "run" / "evaluation") in p.resolve().parents for p in written)


def test_the_hash_memo_sees_a_file_replaced_with_the_same_size_and_time(tmp_path):
    from frugalvision.features.cache import HashMemo, content_hash

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"1" * 100)
    b.write_bytes(b"2" * 100)
    memo = HashMemo(tmp_path)
    first = memo.hash(str(a))
    st = a.stat()
    os.replace(b, a)  # same size; then the same modification time as before
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert memo.hash(str(a)) == content_hash(a) != first


def test_a_label_that_is_a_spreadsheet_formula_is_written_as_text_and_read_back_raw(tmp_path, monkeypatch):
    import csv

    from frugalvision.cli.main import main

    data = make_shapes_dataset(tmp_path / "d", n_per_class=12, size=48, seed=43)
    evil = '=HYPERLINK("http:x","y")'
    (data / "circle").rename(data / evil)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "-q"]) == 0
    assert main(["predict", str(run), str(data / evil), "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    assert main(["evaluate", str(run), "-q"]) == 0  # reads split.csv back: the label must round-trip
    for f in (tmp_path / "p.csv", run / "split.csv", run / "evaluation" / "predictions.csv"):
        cells = [c for row in csv.reader(open(f, encoding="utf-8")) for c in row]
        assert not any(c.startswith(("=", "+", "@")) for c in cells), f  # a spreadsheet shows text, runs nothing
        assert any(c == "'" + evil for c in cells), f
    assert evil in fv.load_model(run).classes
    monkeypatch.setenv("FRUGALVISION_RAW_CSV", "1")  # the documented way to get raw cells
    assert main(["predict", str(run), str(data / evil), "--out", str(tmp_path / "raw.csv"), "-q"]) == 0
    assert any(c == evil for row in csv.reader(open(tmp_path / "raw.csv")) for c in row)


def test_names_from_data_are_escaped_on_the_terminal(tmp_path, capsys):
    from frugalvision.cli.main import main

    data = make_shapes_dataset(tmp_path / "d", n_per_class=12, size=48, seed=44)
    (data / "circle").rename(data / corpus.TERMINAL_NAMES[0])  # ESC[2J clears the screen, U+202E reorders
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "-q"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[2Jcircle\\u202e" in out


def test_os_errors_are_one_paragraph_naming_the_path_and_what_to_do():
    import errno

    from frugalvision.cli.main import os_error_paragraph

    full = os_error_paragraph(OSError(errno.ENOSPC, "No space left on device", "/data/run/model.safetensors"))
    assert "'/data/run/model.safetensors'" in full and "disk is full" in full and "run the same command" in full
    ro = os_error_paragraph(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"))
    assert "'/mnt/ro/run'" in ro and "another --out" in ro


@pytest.mark.parametrize("damage", ["overwrite", "truncate", "flip"])
def test_a_damaged_cache_shard_is_named_set_aside_and_recomputed(tmp_path, damage):
    import warnings

    import numpy as np

    from frugalvision.features.extract import Extractor

    data = make_shapes_dataset(tmp_path / "d", n_per_class=6, size=48, seed=45)
    files = sorted(str(p) for p in data.rglob("*.png"))
    clean = Extractor(cache_dir=tmp_path / "clean", progress=False)(files).X
    cache = tmp_path / "c"
    Extractor(cache_dir=cache, progress=False)(files)
    (shard,) = list((cache / "embeddings").glob("*/shard-*.npy"))
    raw = bytearray(shard.read_bytes())
    if damage == "overwrite":  # 4 KB in the middle, same size (a bad disk block)
        mid = len(raw) // 2
        raw[mid:mid + 4096] = os.urandom(min(4096, len(raw) - mid))
    elif damage == "truncate":
        raw = raw[:len(raw) // 3]
    else:  # one mantissa bit of one float: still finite, silently wrong without a checksum
        raw[-7] ^= 0x01
    shard.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = Extractor(cache_dir=cache, progress=False)(files).X
    said = [str(w.message) for w in caught if "damaged" in str(w.message)]
    assert len(said) == 1 and shard.name in said[0], said
    assert not shard.exists() and list(shard.parent.glob(shard.name + ".bad-*"))
    np.testing.assert_array_equal(again, clean)  # recomputed: the same embeddings as from a clean cache


def test_cache_command_reports_and_clears(tmp_path, capsys):
    from frugalvision.cli.main import main
    from frugalvision.features.extract import Extractor

    data = make_shapes_dataset(tmp_path / "d", n_per_class=3, size=48, seed=46)
    Extractor(cache_dir=tmp_path / "c", progress=False)(sorted(str(p) for p in data.rglob("*.png")))
    assert main(["cache", "verify", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0" in out and "9 embeddings" in out
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "c"), "--yes"]) == 0
    assert not (tmp_path / "c").exists()


def test_second_writer_to_one_file_fails_instead_of_overwriting(tmp_path):
    from frugalvision._io import atomic_writer

    target = tmp_path / "p.csv"
    with pytest.raises(FileExistsError, match="another run meanwhile"):
        with atomic_writer(target, "w", exclusive=True) as fh:
            fh.write("mine")
            target.write_text("theirs")  # another run finished first, while this one was writing
    assert target.read_text() == "theirs" and not list(tmp_path.glob(".*.tmp"))


def test_look_alike_labels_and_nul_bytes_in_a_manifest_are_named(tmp_path):
    import warnings

    data = make_shapes_dataset(tmp_path / "d", n_per_class=4, size=48, seed=47)
    files = sorted(data.rglob("*.png"))
    rows = [{"path": str(p), "label": corpus.LOOK_ALIKE_LABELS[i % 4]} for i, p in enumerate(files)]
    manifest = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fv.discover(manifest)
    said = " ".join(str(w.message) for w in caught)
    assert "look alike" in said and "caf" in said and "'cat'" in said
    bad = tmp_path / "nul.csv"
    bad.write_text("path,label\n" + f"{files[0]},a\n" + f"{files[1]}\x00x,b\n")
    with pytest.raises(fv.DataError, match="line 3 has a NUL byte"):
        fv.discover(bad)
    twice = tmp_path / "twice.csv"
    twice.write_text("path,label\n" + f"{files[0]},a\n" + f"{files[0].parent}/../{files[0].parent.name}/{files[0].name},a\n"
                     + f"{files[5]},b\n")
    assert len(fv.discover(twice)) == 2  # one file reached by two spellings is one row


def test_a_failed_save_leaves_nothing_that_blocks_the_rerun(tmp_path, monkeypatch):
    import errno

    from frugalvision.model import Model

    data = make_shapes_dataset(tmp_path / "d", n_per_class=12, size=48, seed=48)
    real = Model.save

    def full_disk(self, path, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Model, "save", full_disk)
    with pytest.raises(OSError):
        fv.train(data, out=tmp_path / "run", progress=False)
    assert not [p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")]
    monkeypatch.setattr(Model, "save", real)
    assert fv.train(data, out=tmp_path / "run", progress=False).path.exists()  # the rerun is not refused


@pytest.mark.parametrize("edit", ["deep", "string_threshold", "nan_weights"])
def test_edited_model_metadata_is_refused_with_what_is_wrong(trained, tmp_path, edit):
    import json

    import numpy as np
    from safetensors.numpy import load_file, save_file

    _, run = trained
    src = run / "model.safetensors"
    tensors = load_file(src)
    from safetensors import safe_open

    with safe_open(str(src), framework="numpy") as f:
        meta = json.loads(f.metadata()["frugalvision"])
    raw = None
    if edit == "deep":
        raw = json.dumps({**meta, "training": {}})[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    elif edit == "string_threshold":
        meta["reject"] = {**(meta.get("reject") or {"params": {}}), "threshold": "0.5"}
    else:
        tensors["head.coef"] = np.full_like(tensors["head.coef"], np.nan)
    out = tmp_path / "model.safetensors"
    save_file(tensors, str(out), metadata={"frugalvision": raw or json.dumps(meta)})
    with pytest.raises(fv.ArtifactError, match="nested too deeply|threshold|NaN"):
        fv.load_model(out)
