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


# -- PostScript uploaded to the web app: refused, Ghostscript never started ----------------------------------------
BOUNDARY = "fvattackboundary1234"


def _multipart(field: str, files) -> bytes:
    out = b""
    for name, data in files:
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture()
def gs_trap(tmp_path, monkeypatch):
    return corpus.install_gs_trap(tmp_path, monkeypatch)


def test_postscript_uploads_are_refused_and_ghostscript_never_runs(trained, gs_trap):
    from fastapi.testclient import TestClient

    from frugalvision.serve import create_app

    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with TestClient(create_app(trained[0], workers=1, queue=4), base_url="http://127.0.0.1:8000") as c:
        for name in ("x.png", "x.eps", "x.ps"):
            for route, field in (("/predict", "files"), ("/explain", "file")):
                r = c.post(route, content=_multipart(field, [(name, corpus.EPS)]), headers=headers)
                assert r.status_code == 415, (route, name, r.text)
                assert "not an image of an accepted format" in r.json()["detail"]
        # Among good images, the PostScript one fails alone, with the same message.
        r = c.post("/predict", content=_multipart("files", [("a.png", corpus.small_png()), ("x.png", corpus.EPS)]),
                   headers=headers)
        good, bad = r.json()["results"]
        assert r.status_code == 200 and good["top"] and bad["status"] == 415 and "accepted format" in bad["error"]
        assert c.get("/health").json()["status"] == "ok"
    assert not gs_trap.exists(), gs_trap.read_text()


def test_label_page_takes_no_uploads_and_shows_postscript_as_unreadable(tmp_path, gs_trap):
    """The label page has no upload route (JSON only); a PostScript file in its pool gets the 'unreadable' tile."""
    from fastapi.testclient import TestClient

    from frugalvision.label import LabelSession
    from frugalvision.label.app import create_app

    pool = tmp_path / "pool"
    pool.mkdir()
    paths = []
    for i in range(6):
        paths.append(pool / f"{i}.png")
        paths[-1].write_bytes(corpus.small_png())
    paths[0].write_bytes(corpus.EPS)
    X = np.random.default_rng(0).standard_normal((len(paths), 16)).astype(np.float32)
    s = LabelSession([str(p) for p in paths], ["a", "b"], tmp_path / "out" / "manifest.csv", embeddings=X)
    app = create_app(s, start=False)
    s.prepare()
    with TestClient(app, base_url="http://127.0.0.1:8766") as c:
        for route in ("/api/label", "/api/undo"):
            r = c.post(route, content=_multipart("file", [("x.png", corpus.EPS)]),
                       headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
            assert r.status_code == 415 and "application/json" in r.json()["detail"], r.text
        r = c.get("/image/0")
        assert r.status_code == 200 and r.headers.get("X-Frugalvision-Unreadable") == "1"
        assert c.get("/image/1").headers["content-type"] == "image/jpeg"
    assert not gs_trap.exists(), gs_trap.read_text()


def test_every_hostile_file_of_the_corpus_is_skipped_with_its_reason(trained, tmp_path):
    """predict on a folder of every hostile file: no hang (a deadline), no traceback, no Ghostscript, each file
    answered with an error naming why."""
    import subprocess
    import sys
    import textwrap

    marker = tmp_path / "gs-was-run"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "gs").write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    (bindir / "gs").chmod(0o755)
    folder = tmp_path / "in"
    expect = corpus.write_hostile_files(folder, outside=tmp_path)
    code = textwrap.dedent(f"""
        import json, frugalvision as fv
        t = fv.predict(fv.load_model({str(trained[1])!r}), [{str(folder)!r}], progress=False)
        print(json.dumps(dict(zip(t["path"].map(lambda p: p.rsplit("/", 1)[-1]), t["error"]))))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    import json

    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # Links are listed under the file they point to (/dev/zero is "zero", outside.png is "secret.txt").
    listed = {name: got.get(os.path.basename(os.path.realpath(folder / name))) for name in expect}
    for name, words in expect.items():
        if listed[name] is not None:  # listing may leave out what is plainly not a file (a dangling link)
            assert listed[name] and words in listed[name], (name, listed[name])
    assert all(listed[n] for n in ("postscript.png", "bomb.png", "truncated.png", "pipe.png", "zero.png",
                                   "outside.png", "garbage.jpg", "empty.png")), listed
    assert not marker.exists()


# -- look-alike class names (NFC / NFD 'café') in a report ------------------------------------------------------
def test_nfc_and_nfd_class_folders_are_two_named_classes_and_the_report_shows_both(tmp_path):
    import html

    import frugalvision as fv
    from conftest import make_shapes_dataset
    from frugalvision._io import read_csv
    from frugalvision.exceptions import DataWarning
    from frugalvision.reporting import write_report

    data = make_shapes_dataset(tmp_path / "d", n_per_class=10, size=48, seed=50)
    (data / "circle").rename(data / corpus.CAFE_NFC)
    (data / "square").rename(data / corpus.CAFE_NFD)
    with pytest.warns(DataWarning, match="look alike"):
        model = fv.train(data, out=tmp_path / "run", progress=False)
    # Kept distinct, consistently: two classes, each folder's files under its own spelling.
    assert corpus.CAFE_NFC in model.classes and corpus.CAFE_NFD in model.classes and len(model.classes) == 3
    split = read_csv(tmp_path / "run" / "split.csv")
    for spelling in (corpus.CAFE_NFC, corpus.CAFE_NFD):
        rows = split[split["label"] == spelling]
        assert len(rows) == 10 and all(p.split("/")[-2] == spelling for p in rows["path"])
    out = write_report(model, tmp_path / "run" / "report.html", explain=False, faithfulness=False, progress=False)
    text = out.read_text(encoding="utf-8")
    assert html.escape(corpus.CAFE_NFC) in text and html.escape(corpus.CAFE_NFD) in text
    assert "\u0301" in text  # the decomposed spelling is shown as written, not folded into the other


# -- a full disk and a read-only folder during train's and report's writes --------------------------------------
class _FullDisk:
    """A file object whose writes stop with ENOSPC after a few bytes, as on a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        import errno

        self._fh.write(data[:16])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


def _disk_full_for(monkeypatch, target_name: str):
    """Writes to the atomic writer's temporary file for ``target_name`` fail with ENOSPC; everything else works."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file is being written")
    real = os.fdopen

    def fdopen(fd, *a, **k):
        fh = real(fd, *a, **k)
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return fh
        return _FullDisk(fh) if name.startswith(f".{target_name}.") and name.endswith(".tmp") else fh

    monkeypatch.setattr(os, "fdopen", fdopen)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".frugalvision.lock"}


@pytest.mark.parametrize("failing", ["split.csv", "model.safetensors"])
def test_a_full_disk_during_train_keeps_the_previous_run_whole(trained, shapes_dir, tmp_path, monkeypatch, capsys,
                                                               failing):
    import shutil

    from frugalvision.cli.main import main

    run = tmp_path / "run"
    shutil.copytree(trained[1], run, ignore=shutil.ignore_patterns("evaluation", "report*", ".frugalvision.lock"))
    before = _snapshot(run)
    _disk_full_for(monkeypatch, failing)
    assert main(["train", str(shapes_dir), "--out", str(run), "--overwrite", "-q"]) == 1
    err = capsys.readouterr().err
    assert str(run / failing) in err and "disk is full" in err and "Traceback" not in err, err
    assert _snapshot(run) == before  # every previous file back, byte for byte; no temporary left behind
    monkeypatch.undo()
    assert main(["train", str(shapes_dir), "--out", str(run), "--overwrite", "-q"]) == 0  # then the rerun works


def test_a_full_disk_during_report_keeps_the_previous_report(trained, tmp_path, monkeypatch, capsys):
    from frugalvision.cli.main import main

    out = tmp_path / "r.html"
    out.write_text("<p>the previous report</p>")
    _disk_full_for(monkeypatch, "r.html")
    assert main(["report", str(trained[1]), "--out", str(out), "--overwrite", "--no-explain", "-q"]) == 1
    err = capsys.readouterr().err
    assert str(out) in err and "disk is full" in err and "Traceback" not in err, err
    assert out.read_text() == "<p>the previous report</p>" and sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def _can_mount_tmpfs() -> bool:
    import shutil
    import subprocess

    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a small tmpfs here (needs user namespaces via "
                                                   "'unshare -rm', or root); the simulated full disk tests cover it")
def test_a_really_full_tmpfs_during_train(trained, shapes_dir, tmp_path):
    """A real full disk: train --overwrite into a run folder on a 1 MB tmpfs (in a private mount namespace, gone
    with the process) that a filler file has filled."""
    import subprocess
    import sys

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cache = os.environ.get("FRUGALVISION_CACHE") or str(tmp_path / "cache")
    script = (f"set -e; mount -t tmpfs -o size=1m tmpfs {mnt}; cp -r {trained[1]} {mnt}/run; "
              f"rm -f {mnt}/run/.frugalvision.lock; "
              f"(cd {mnt}/run && sha256sum model.safetensors split.csv training.json > {tmp_path}/before); "
              f"dd if=/dev/zero of={mnt}/filler bs=4k 2>/dev/null || true; "
              f"{sys.executable} -m frugalvision.cli.main train {shapes_dir} --out {mnt}/run --overwrite -q "
              f"--cache-dir {cache} > {tmp_path}/out 2>&1 && echo rc=0 >> {tmp_path}/out || echo rc=$? >> {tmp_path}/out; "
              f"(cd {mnt}/run && sha256sum -c {tmp_path}/before > {tmp_path}/check 2>&1) || true; "
              f"ls -a {mnt}/run > {tmp_path}/listing")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    said = (tmp_path / "out").read_text()
    assert "rc=1" in said and "disk is full" in said and "Traceback" not in said, said
    assert (tmp_path / "check").read_text().count(": OK") == 3, (tmp_path / "check").read_text()
    assert not [n for n in (tmp_path / "listing").read_text().split() if n.endswith(".tmp")]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: permission bits do not stop root, so a read-only folder cannot be made")
def test_a_read_only_folder_for_the_report_is_one_paragraph(trained, tmp_path, capsys):
    from frugalvision.cli.main import main

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["report", str(trained[1]), "--out", str(ro / "r.html"), "--no-explain", "-q"]) == 1
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert str(ro) in err and "another --out" in err and "Traceback" not in err and not list(ro.iterdir())
