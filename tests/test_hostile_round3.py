"""Hostile input, round 3 (#30): spreadsheet-safe CSV, a hash memo that cannot lie, bodies cut by a minimum rate,
a killed train re-run to the same model."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from attack_corpus import FORMULA_CELLS

TRICKY = list(FORMULA_CELLS)


def test_every_cell_round_trips_and_no_formula_reaches_a_spreadsheet(tmp_path):
    from frugalvision._io import csv_text, escape_cell, read_csv, unescape_cell

    for v in TRICKY:
        assert unescape_cell(escape_cell(v)) == v, v
    df = pd.DataFrame({"label": TRICKY, "p": np.linspace(-1, 1, len(TRICKY))})
    (tmp_path / "t.csv").write_bytes(csv_text(df).encode())
    with open(tmp_path / "t.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    for label, p in rows[1:]:
        # A spreadsheet evaluates a cell starting with = + - @ (or tab/CR) unless it is a plain number.
        if label and label[0] in "=+-@\t\r":
            float(label)
        assert float(p) == pytest.approx(float(p))  # the number column is written as numbers, never quoted
    assert rows[1 + TRICKY.index("-0.25")][0] == "-0.25"  # text that is a plain number stays a number
    assert rows[1 + TRICKY.index("-1+2")][0] == "'-1+2"
    assert rows[1 + TRICKY.index("'=x")][0] == "''=x"  # a raw leading quote is kept distinguishable
    assert any(r[1].startswith("-") for r in rows[1:])  # negative probabilities are not escaped
    back = read_csv(tmp_path / "t.csv")
    assert back["label"].tolist() == TRICKY


def test_raw_output_on_request(tmp_path, monkeypatch):
    from frugalvision._io import csv_rows_text, csv_text

    monkeypatch.setenv("FRUGALVISION_RAW_CSV", "1")
    assert csv_text(pd.DataFrame({"=a": ["=b"]})) == "=a\n=b\n"
    assert csv_rows_text(["=a"], [{"=a": "=b"}]) == "=a\n=b\n"


@pytest.mark.parametrize("damage", ["hash", "truncate", "garbage", "shape"])
def test_a_damaged_hash_memo_is_named_set_aside_and_rebuilt(tmp_path, damage):
    import json
    import warnings

    from frugalvision.features.cache import HashMemo, content_hash

    files = []
    for i in range(3):
        f = tmp_path / f"{i}.bin"
        f.write_bytes(bytes([i]) * 1000)
        files.append(str(f))
    memo = HashMemo(tmp_path / "c")
    truth = [memo.hash(f) for f in files]
    memo.save()
    path = memo.path
    doc = json.loads(path.read_text())
    if damage == "hash":  # one hex digit of one stored hash: valid JSON, a wrong answer without the checksum
        h = doc["entries"][files[1]][-1]
        doc["entries"][files[1]][-1] = ("0" if h[0] != "0" else "1") + h[1:]
        path.write_text(json.dumps(doc))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    else:
        doc["entries"][files[0]] = "x"
        doc["xxh3_128"] = __import__("frugalvision.features.cache", fromlist=["x"])._memo_digest(doc["entries"])
        path.write_text(json.dumps(doc))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = HashMemo(tmp_path / "c")
    said = [str(w.message) for w in caught if "memo" in str(w.message)]
    assert len(said) == 1 and str(path) in said[0] and "damaged" in said[0], said
    assert not path.exists() and list(path.parent.glob(path.name + ".bad-*"))
    assert [again.hash(f) for f in files] == truth == [content_hash(f) for f in files]
    again.save()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt memo is clean
        assert len(HashMemo(tmp_path / "c")) == 3


def test_a_memo_written_before_checksums_is_still_read(tmp_path):
    import json

    from frugalvision.features.cache import HashMemo

    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10)
    memo = HashMemo(tmp_path)
    h = memo.hash(str(f))
    memo.path.write_text(json.dumps(memo._memo))  # the old format: entries only
    assert HashMemo(tmp_path).hash(str(f)) == h and len(HashMemo(tmp_path)) == 1


def test_cache_verify_reports_a_damaged_shard_and_memo(tmp_path, capsys):
    from conftest import make_shapes_dataset

    from frugalvision.cli.main import main
    from frugalvision.features.extract import Extractor

    data = make_shapes_dataset(tmp_path / "d", n_per_class=3, size=48, seed=47)
    Extractor(cache_dir=tmp_path / "c", progress=False)(sorted(str(p) for p in data.rglob("*.png")))
    (shard,) = list((tmp_path / "c" / "embeddings").glob("*/shard-*.npy"))
    shard.write_bytes(shard.read_bytes()[:-100])
    (memo,) = list((tmp_path / "c").glob("hashes-*.json"))
    memo.write_text(memo.read_text()[:-20])
    assert main(["cache", "verify", "--cache-dir", str(tmp_path / "c")]) == 0
    said = capsys.readouterr()
    assert shard.name in said.err and memo.name in said.err  # one line each, naming the file
    assert "Checked 1 shard(s)" in said.out and "1 damaged shard(s) and 1 damaged memo(s)" in said.out


def _train_cmd(data, run, cache):
    import sys

    return [sys.executable, "-m", "frugalvision.cli.main", "train", str(data), "--out", str(run), "--cache-dir",
            str(cache), "-q"]


def _weights(run):
    from safetensors.numpy import load_file

    return load_file(str(run / "model.safetensors"))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    import subprocess

    from conftest import make_shapes_dataset

    base = tmp_path_factory.mktemp("kill9")
    data = make_shapes_dataset(base / "d", n_per_class=12, size=48, seed=48)
    subprocess.run(_train_cmd(data, base / "clean", base / "c0"), check=True, timeout=300)
    return data, base


def test_kill_9_during_train_then_rerun_gives_the_same_model(clean_run, tmp_path):
    """kill -9 while the embeddings are being computed (a cold cache), then the same command again: it finishes and
    the model equals the one of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import time

    data, base = clean_run
    run, cache = tmp_path / "run", tmp_path / "c"
    proc = subprocess.Popen(_train_cmd(data, run, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t_end = time.monotonic() + 120
        while not list(cache.glob("embeddings/*/meta.json")):  # the cache is open: extraction is under way
            assert proc.poll() is None, "train ended before it could be killed"
            assert time.monotonic() < t_end
            time.sleep(0.01)
        time.sleep(0.3)
        killed = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert killed and not (run / "model.safetensors").exists()
    subprocess.run(_train_cmd(data, run, cache), check=True, timeout=300)
    clean, again = _weights(base / "clean"), _weights(run)
    assert clean.keys() == again.keys()
    for k in clean:
        np.testing.assert_array_equal(clean[k], again[k])
    assert not list(run.glob(".*.tmp"))


def test_a_run_killed_while_saving_does_not_block_the_rerun(clean_run, tmp_path):
    """The save writes split.csv, skipped.csv, training.json, then the model (last, so a folder with a model is
    complete). A kill -9 between them leaves the first files without a model: the same command must finish."""
    import shutil
    import subprocess

    data, base = clean_run
    run = tmp_path / "run"
    shutil.copytree(base / "clean", run)
    (run / "model.safetensors").unlink()  # what a kill -9 just before the model's rename leaves
    proc = subprocess.run(_train_cmd(data, run, base / "c0"), check=True, timeout=300, capture_output=True,
                          text=True)
    assert "interrupted run" in proc.stderr, proc.stderr
    clean, again = _weights(base / "clean"), _weights(run)
    for k in clean:
        np.testing.assert_array_equal(clean[k], again[k])


def test_only_the_runs_own_leftovers_are_replaced(tmp_path):
    """A folder without a model: files the run recorded (and still as written) are replaced; a file the user made
    or changed since, and any finished run (a model), still need --overwrite."""
    import warnings

    from frugalvision._io import record_run_files, run_folder
    from frugalvision.exceptions import DataWarning

    files = ("model.safetensors", "split.csv", "training.json")
    record_run_files(tmp_path, {"split.csv": "path,label\n", "training.json": "{}\n"})
    (tmp_path / "split.csv").write_text("path,label\n")  # written, then killed before training.json
    with pytest.warns(DataWarning, match="split.csv of an interrupted run"):
        with run_folder(tmp_path, files, finished="model.safetensors"):
            pass
    (tmp_path / "training.json").write_text('{"mine": 1}\n')  # not what the run recorded: the user's
    with pytest.raises(FileExistsError, match="training.json"):
        with run_folder(tmp_path, files, finished="model.safetensors"):
            pass
    (tmp_path / "training.json").unlink()
    (tmp_path / "split.csv").write_text("path,label\nmine.png,a\n")  # edited since: the user's now
    with pytest.raises(FileExistsError, match="split.csv"):
        with run_folder(tmp_path, files, finished="model.safetensors"):
            pass
    (tmp_path / "split.csv").write_text("path,label\n")
    (tmp_path / "model.safetensors").write_bytes(b"x")  # a finished run is never replaced without asking
    with pytest.raises(FileExistsError, match="model.safetensors"):
        with run_folder(tmp_path, files, finished="model.safetensors"):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with run_folder(tmp_path, files, finished="model.safetensors", overwrite=True):
            pass
    assert (tmp_path / "split.csv").exists() and (tmp_path / "model.safetensors").exists()  # nothing deleted


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="running as root: permission bits do not stop root, so a read-only folder cannot be made")
def test_a_read_only_output_folder_is_one_paragraph(clean_run, tmp_path):
    import subprocess

    data, base = clean_run
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = subprocess.run(_train_cmd(data, ro / "run", base / "c0"), capture_output=True, text=True, timeout=300)
    finally:
        ro.chmod(0o755)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and str(ro) in proc.stderr + proc.stdout
