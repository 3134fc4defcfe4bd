"""A trained run, used for inference: the preprocessing record in model.json, `wrn export` to ONNX / .pt2 / .ts
with dynamic sizes, and `wrn predict` on image files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import wrn_here

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def wrn_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wrn", *args], env=ENV, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The digits demo, shortened: a 1-channel 8x8 model."""
    out = tmp_path_factory.mktemp("export") / "digits"
    args = ["train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "3", "--no-progress"]
    proc = wrn_cli(*args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_model_json_records_what_inference_needs(run):
    meta = json.loads((run / "model.json").read_text())["metadata"]
    assert meta["input"] == {
        "channels": 1,
        "size": 8,
        "normalization": "digits",
        "resize": "short-side",
        "mean": [77.85],
        "std": [95.85],
    }
    assert meta["classes"] == [str(d) for d in range(10)]


def _digits_test_images(tmp: Path, n: int = 24) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    from wrn.data import load_arrays

    x, y = load_arrays("digits", None, "test")
    paths = []
    for i in range(n):
        path = tmp / f"digit{i}.png"
        Image.fromarray(x[i, 0].numpy(), "L").save(path)
        paths.append(path)
    return paths, x[:n], y[:n]


def test_predict_reads_images_as_the_test_set_and_names_the_classes(run, tmp_path, capsys):
    import wrn

    paths, x, y = _digits_test_images(tmp_path)
    proc = wrn_here(capsys, "predict", str(run), *map(str, paths), "--top-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    model = wrn.load_model(run)
    with torch.no_grad():
        expected = torch.softmax(model((x.float() - 77.85) / 95.85), 1)
    for r, probs in zip(results, expected, strict=True):
        top = probs.topk(3)
        assert [t["class"] for t in r["top"]] == top.indices.tolist()
        assert [t["name"] for t in r["top"]] == [str(i) for i in top.indices.tolist()]
        np.testing.assert_allclose([t["probability"] for t in r["top"]], top.values.tolist(), atol=1e-5)
    right = sum(r["top"][0]["class"] == int(label) for r, label in zip(results, y, strict=True))
    assert right >= 0.8 * len(results)  # it really classifies digits
    text = wrn_here(capsys, "predict", str(run), str(paths[0]))
    assert text.returncode == 0 and text.stdout.startswith(f"{paths[0]}: ") and "%" in text.stdout
    rgb = tmp_path / "big.png"  # any size and mode: converted to the model's channels and size
    Image.fromarray(np.repeat(np.kron(x[0, 0].numpy(), np.ones((4, 4), np.uint8))[..., None], 3, 2)).save(rgb)
    proc = wrn_here(capsys, "predict", str(run), str(rgb), "--top-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    # the reference: PIL's grey conversion and bilinear resize to the training size, the run's constants
    small = np.asarray(Image.open(rgb).convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float32)
    with torch.no_grad():
        probs = torch.softmax(model((torch.from_numpy(small)[None, None] - 77.85) / 95.85), 1)[0]
    (result,) = json.loads(proc.stdout)
    assert [t["class"] for t in result["top"]] == probs.topk(3).indices.tolist()
    np.testing.assert_allclose(
        [t["probability"] for t in result["top"]], probs.topk(3).values.tolist(), atol=1e-5
    )


def test_onnx_export_of_a_run_takes_its_channels_and_any_size(run, tmp_path):
    import onnxruntime

    import wrn

    out = tmp_path / "m.onnx"
    proc = wrn_cli("export", str(run), str(out))
    assert proc.returncode == 0, proc.stderr
    session = onnxruntime.InferenceSession(str(out))
    shape = [d for d in session.get_inputs()[0].shape]
    assert shape[1] == 1 and all(isinstance(d, str) for d in (shape[0], shape[2], shape[3]))
    model = wrn.load_model(run)
    for size in (8, 16):  # the training resolution and another one
        x = torch.randn(3, 1, size, size)
        got = session.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert np.abs(got - want).max() < 1e-4, size
    meta = json.loads(session.get_modelmeta().custom_metadata_map["wrn"])
    assert meta["input"]["mean"] == [77.85] and meta["classes"][3] == "3"


def test_torch_export_and_torchscript_files_run_at_other_sizes(run, tmp_path):
    import wrn

    model = wrn.load_model(run)
    x = torch.randn(2, 1, 12, 10)
    assert wrn_cli("export", str(run), str(tmp_path / "m.pt2")).returncode == 0
    program = torch.export.load(str(tmp_path / "m.pt2"))
    torch.testing.assert_close(program.module()(x), model(x), atol=1e-5, rtol=0)
    assert wrn_cli("export", str(run), str(tmp_path / "m.ts")).returncode == 0
    extra = {"wrn.json": ""}
    scripted = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    torch.testing.assert_close(scripted(x), model(x), atol=1e-5, rtol=0)
    assert json.loads(extra["wrn.json"])["input"]["channels"] == 1


def test_export_refuses_what_it_cannot_do(run, tmp_path, capsys):
    def wrn_cli(*args):  # in this process: six start-ups of torch saved
        return wrn_here(capsys, *args)

    cases = [
        ([str(run), str(tmp_path / "m.pt")], "cannot tell the export format"),
        ([str(run), str(tmp_path / "m.onnx"), "--num-classes", "5"], "--num-classes applies to a model name"),
        ([str(tmp_path / "nowhere"), str(tmp_path / "m.onnx")], "is not a run or model directory"),
        (["wrn-99-1x", str(tmp_path / "m.onnx")], "unknown model"),
    ]
    for args, words in cases:
        proc = wrn_cli("export", *args)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    existing = tmp_path / "taken.ts"
    existing.write_text("keep")
    proc = wrn_cli("export", "wrn-10-1", str(existing))
    assert proc.returncode == 2 and "--force" in proc.stderr and existing.read_text() == "keep"
    assert wrn_cli("export", "wrn-10-1", str(existing), "--force").returncode == 0
    assert existing.stat().st_size > 1000
