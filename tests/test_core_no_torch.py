"""The core install needs no torch: every core command runs in a process where torch cannot be imported.

Each command runs in a subprocess in which ``torch``, ``torchvision``, ``timm``, ``pytorch_grad_cam`` and
``triton`` cannot be imported (a finder first on ``sys.meta_path`` refuses them), as in a core environment,
and the test checks that the command succeeds and that no module of theirs was loaded. In CI's core
environment they are really absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import make_shapes_dataset

BLOCKED = ("torch", "torchvision", "timm", "pytorch_grad_cam", "triton")

_RUNNER = textwrap.dedent("""
    import json, sys
    BLOCKED = {blocked!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (core install)", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    {body}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("LOADED=" + json.dumps(loaded))
""")


def run_core(body: str, timeout: int = 600) -> str:
    code = _RUNNER.format(blocked=BLOCKED, body=textwrap.indent(textwrap.dedent(body), "").strip())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.rsplit("LOADED=", 1)[1])
    assert loaded == [], loaded
    return proc.stdout + proc.stderr


def cli(*argv) -> str:
    return f"from frugalvision.cli.main import main\nassert main({list(map(str, argv))!r}) == 0\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("core_data"), n_per_class=10, size=48)


@pytest.fixture(scope="module")
def core_run(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("core_run") / "run"
    # 10 images per class: the small-data path, asked to hold out test images so that evaluate and report judge
    # the model on images it never saw.
    run_core(cli("train", data, "--out", run, "-q", "--test-size", "0.3"))
    return run


def test_demo_runs_without_torch(tmp_path):
    out = run_core(cli("demo", "--out", tmp_path / "demo", "--quiet"), timeout=900)
    assert (tmp_path / "demo").exists(), out


def test_train_evaluate_report_explain_predict_export_without_torch(core_run, data, tmp_path):
    run = core_run
    run_core(cli("evaluate", run, "-q")
             + cli("report", run, "--out", tmp_path / "report.html")
             + cli("explain", run, data / "circle", "--classes", "top2", "--out", tmp_path / "cams")
             + cli("predict", run, data, "--out", tmp_path / "p.csv", "-q")
             + cli("export", run, "--out", tmp_path / "m.onnx"))
    assert (tmp_path / "report.html").stat().st_size > 10_000 and (tmp_path / "m.onnx").exists()
    assert list((tmp_path / "cams").glob("*__panel.png"))


def test_views_mlp_head_and_tune_without_torch(data, tmp_path):
    run_core(cli("train", data, "--out", tmp_path / "aug", "--views", "2", "-q")
             + cli("train", data, "--out", tmp_path / "mlp", "--head", "mlp", "-q")
             + cli("tune", data, "--cv", "2", "--views", "0", "--backbones", "efficientnet_lite0", "--out", tmp_path / "tuned", "-q"))


def test_prepare_and_collect_without_torch(data, tmp_path):
    (tmp_path / "urls.csv").write_text("url,label\nhttp://127.0.0.1:9/nothing.png,x\n")
    run_core(cli("prepare", data, "--out", tmp_path / "prep", "-q")
             + "from frugalvision.cli.main import main\n"
               f"main(['collect', {str(tmp_path / 'urls.csv')!r}, '--out', {str(tmp_path / 'col')!r}, "
               "'--retries', '0'])\n")
    assert (tmp_path / "prep" / "manifest.csv").exists()


def test_serve_without_torch(core_run, data):
    shape = sorted((data / "circle").glob("*.png"))[0]
    run_core(f"""
from fastapi.testclient import TestClient
from frugalvision import load_model
from frugalvision.serve import create_app
import io
from PIL import Image
buf = io.BytesIO(); Image.new("RGB", (64, 64), (200, 20, 20)).save(buf, format="PNG")
with TestClient(create_app(load_model({str(core_run)!r})), base_url="http://127.0.0.1") as c:
    r = c.post("/explain", files={{"file": ("a.png", open({str(shape)!r}, "rb").read(), "image/png")}})
    assert r.status_code == 200 and r.json()["label"] == "circle" and r.json()["cams"], r.text
    # A plain red square is none of the shapes: labelled unknown, no class bars, no class map, and it says why.
    r = c.post("/explain", files={{"file": ("b.png", buf.getvalue(), "image/png")}}).json()
    assert r["label"] != "unknown" or (r["top"] == [] and not r["cams"] and "none of the classes" in r["cams_note"]), r
""")


def test_torch_features_say_which_extra(core_run, data, tmp_path):
    out = run_core(f"""
from frugalvision.cli.main import main
import frugalvision as fv
from frugalvision.exceptions import MissingExtraError
assert main(["train", {str(data)!r}, "--out", {str(tmp_path / 'ft')!r}, "--finetune", "last-stage"]) == 1
assert main(["train", {str(data)!r}, "--out", {str(tmp_path / 'tm')!r}, "--backbone", "timm:resnet18"]) == 1
try:
    fv.train({str(data)!r}, backbone="resnet18")
except MissingExtraError as exc:
    assert "frugalvision[torch]" in str(exc)
else:
    raise AssertionError("resnet18 trained without torch?")
""")
    assert out.count("pip install 'frugalvision[torch]'") >= 2, out
