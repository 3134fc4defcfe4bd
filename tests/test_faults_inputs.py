"""Inputs that made a command hang, misread them or end in a traceback, each made to happen through the real
command line: a pickle that stands for billions of values, FIFOs given as images, a model.json asking for a
network of 60 million layers or nesting its JSON thousands deep, 16-bit images, a link loop in an image
folder, class names that drive the terminal, sizes and names out of range, 'SAME'-padding models at odd sizes,
torchvision's resize, unfinished runs and files that are no checkpoint. Each test of a hang runs under a
deadline, so that it fails rather than hangs."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import wrn
from conftest import start_wrn, wrn_here
from wrn.data.safe_pickle import UnsafePickleError, safe_load_pickle
from wrn.errors import ConfigError

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Hung(BaseException):
    """Raised by the deadline: a BaseException, so that no ``except Exception`` of the code under test eats it."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() (of a FIFO) or a Python loop."""

    def expired(signum, frame):
        raise Hung(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_error(capsys, *args, seconds: float = 60) -> str:
    """The command, in this process under a deadline: exit 2 and its error as the last line on stderr (after
    warnings, if any), no traceback; returns that line. Nothing reaches stdout."""
    with deadline(seconds):
        proc = wrn_here(capsys, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert lines and "Traceback" not in proc.stderr, proc.stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), proc.stderr
    assert proc.stdout == ""
    return lines[-1]


def edit_model_json(run: Path, edit) -> None:
    doc = json.loads((run / "model.json").read_text())
    edit(doc)
    (run / "model.json").write_text(json.dumps(doc))


def image_folder(root: Path, per_class: int = 4, bits: int = 8) -> Path:
    """train/ and val/ of two classes of 8x8 grayscale digits, saved at 8 or 16 bits per pixel."""
    from wrn.data import load_arrays

    x, y = load_arrays("digits", None, "train")
    for split in ("train", "val"):
        for c in (0, 1):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i, index in enumerate(np.flatnonzero(y.numpy() == c)[:per_class]):
                pixels = x[index, 0].numpy().astype(np.uint16) * (257 if bits == 16 else 1)
                Image.fromarray(pixels if bits == 16 else pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def train_folder(capsys, root: Path, out: Path, *extra: str):
    argv = ["train", "--dataset", "imagefolder", "--data-dir", root, "--model", "wrn-10-1", "--epochs", "1"]
    with deadline(120):
        return wrn_here(
            capsys, *argv, "--augment", "none", "--batch-size", "2", "--out", out, "--no-progress", *extra
        )


# ------------------------------------------------------------------------------------------------ hangs


def laughs(levels: int, each: int) -> list:
    """A list nested ``levels`` deep, each level ``each`` references to the one below: a small pickle."""
    x: list = []
    for _ in range(levels):
        x = [x] * each
    return x


def test_a_pickle_that_stands_for_billions_of_values_is_refused_before_it_is_built(tmp_path, capsys):
    base = tmp_path / "data" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    bomb = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": laughs(17, 12)}, protocol=2)
    assert len(bomb) < 10_000  # 12**17 values in a few kilobytes
    for name in CIFAR10_FILES:
        (base / name).write_bytes(bomb)
    out = tmp_path / "run"
    args = ["--dataset", "cifar10", "--data-dir", tmp_path / "data", "--no-verify", "--model", "wrn-10-1"]
    start = time.perf_counter()
    err = one_error(capsys, "train", *args, "--epochs", "1", "--out", out, "--no-progress", seconds=60)
    assert "data_batch_1 nests its values deeper than 16 levels" in err and "delete it" in err
    assert time.perf_counter() - start < 30 and not out.exists()
    # as wide as the pickle may be and 6 deep: the count of values stops it
    (base / "test_batch").write_bytes(pickle.dumps({b"data": 1, b"labels": laughs(6, 12)}, protocol=2))
    with deadline(30), pytest.raises(UnsafePickleError, match="stands for more than 1,000,000 values"):
        safe_load_pickle(base / "test_batch")


def test_a_tuple_nested_too_deep_to_hash_is_refused_not_a_crash(tmp_path):
    path = tmp_path / "batch"  # a dict keyed by a tuple 200,000 deep: hashing it overflowed the C stack
    path.write_bytes(
        pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 200_000 + pickle.NONE
        + pickle.SETITEM + pickle.STOP
    )  # fmt: skip
    code = (
        "import sys\nfrom wrn.data.safe_pickle import safe_load_pickle\n"
        "try:\n    safe_load_pickle(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc  # not -11, a segmentation fault
    assert "nests its values deeper than 16 levels" in proc.stdout


def test_predict_and_an_image_folder_refuse_a_fifo_at_once(run, tmp_path, capsys):
    fifo = tmp_path / "a-fifo.png"
    os.mkfifo(fifo)
    err = one_error(capsys, "predict", run, fifo, seconds=30)
    assert (
        err
        == f"wrn predict: error: the image {fifo} is a FIFO, not a regular file; pass image files (PNG, JPEG, ...)"
    )
    root = image_folder(tmp_path / "folder")
    os.mkfifo(root / "train" / "c0" / "zz.png")
    out = tmp_path / "run"
    args = ["--model", "wrn-10-1", "--dataset", "imagefolder", "--data-dir", root, "--out", out]
    err = one_error(capsys, "train", *args, seconds=60)
    assert f"{root / 'train' / 'c0' / 'zz.png'} is a FIFO, not an image file: remove it" in err
    assert not out.exists()


def test_a_model_json_asking_for_a_huge_network_is_refused_before_anything_is_built(
    copy, capsys, image, tmp_path
):
    edit_model_json(copy, lambda d: d["config"].update(depth=60_000_004))
    err = one_error(capsys, "predict", copy, image, seconds=30)
    assert "config.name 'wrn-10-1' has depth 10, but config.depth is 60000004" in err
    edit_model_json(copy, lambda d: d["config"].update(name="wrn-60000004-1", blocks_per_group=10_000_000))
    for command in (["predict", copy, image], ["eval", copy], ["export", copy, tmp_path / "m.pt2"]):
        err = one_error(capsys, *command, seconds=30)
        assert (
            "not a valid wrn model description: the config asks for 60,000,004 layers, more than the 2,000"
            in err
        )
    edit_model_json(
        copy, lambda d: d["config"].update(name="wrn-1000-60", depth=1000, width=60, blocks_per_group=166)
    )
    assert "about 58 billion parameters, more than the 4 billion" in one_error(
        capsys, "eval", copy, seconds=30
    )
    err = one_error(capsys, "export", "wrn-60000004-1", tmp_path / "m.onnx", seconds=30)
    assert err.endswith(
        "the model wrn-60000004-1 asks for 60,000,004 layers, more than the 2,000 a model may have."
    )
    assert not (tmp_path / "m.pt2").exists() and not (tmp_path / "m.onnx").exists()


def test_the_bound_on_parameters_counts_what_every_named_model_holds():
    from wrn.models.registry import _size, list_models

    for name in list_models():
        with torch.device("meta"):
            model = wrn.create_model(name)
        layers = (torch.nn.Conv2d, torch.nn.Linear)
        held = sum(p.numel() for m in model.modules() if isinstance(m, layers) for p in m.parameters())
        counted = _size(model.config)[1]
        assert counted == 0 if name.startswith("preact") else abs(counted - held) <= 1e-3 * held, name


def test_sigterm_stops_predict_at_once_on_a_slow_input(run, tmp_path):
    big = tmp_path / "big.png"  # 20,000 decodes of a 512x512 image: far longer than the 5 s it is given
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)).save(big)
    proc = start_wrn("predict", run, *[big] * 20_000)
    time.sleep(3)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGTERM


# ------------------------------------------------------------------------------------- silently misread


def test_a_16_bit_image_is_read_as_its_8_bit_self_by_predict_and_an_image_folder(run, tmp_path, capsys):
    from wrn.data import load_arrays

    x, _ = load_arrays("digits", None, "test")
    paths = {8: [], 16: []}
    for i in range(8):
        for bits, scale in ((8, 1), (16, 257)):
            paths[bits].append(tmp_path / f"d{i}-{bits}.png")
            pixels = x[i, 0].numpy().astype(np.uint16) * scale
            Image.fromarray(pixels if bits == 16 else pixels.astype(np.uint8)).save(paths[bits][-1])
    assert Image.open(paths[16][0]).mode == "I;16"
    top = {}
    for bits in (8, 16):
        proc = wrn_here(capsys, "predict", run, *paths[bits], "--json", "--top-k", "10")
        assert proc.returncode == 0, proc.stderr
        top[bits] = [r["top"] for r in json.loads(proc.stdout)]
    assert top[16] == top[8]  # clipped, 4 of the 8 digits had another top-1
    losses = {}
    for bits in (8, 16):
        root = image_folder(tmp_path / f"folder{bits}", bits=bits)
        proc = train_folder(capsys, root, tmp_path / f"run{bits}")
        assert proc.returncode == 0, proc.stderr
        losses[bits] = json.loads((tmp_path / f"run{bits}" / "metrics.jsonl").read_text())["train_loss"]
    assert losses[16] == losses[8]


def test_a_link_loop_in_a_class_folder_is_followed_once_and_said(tmp_path, capsys):
    root = image_folder(tmp_path / "folder", per_class=6)
    for split in ("train", "val"):
        (root / split / "c0" / "loop").symlink_to(".")  # c0 read 41 times over: 246 images to c1's 6
        (root / split / "c1" / "up").symlink_to("..")  # into c0's folder, and a loop
    with pytest.warns(UserWarning) as said:  # (the command line prints them as "warning: ...")
        proc = train_folder(capsys, root, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    assert "1 epoch of 6 steps, batch 2" in proc.stdout  # 12 images; 249 before
    skipped = sorted({str(w.message) for w in said if "skipped" in str(w.message)})  # printed once each
    assert skipped[0].startswith(f"{root / 'train'}: skipped 2 link(s) that loop, lead into another class's")
    assert len(skipped) == 2 and skipped[1].startswith(f"{root / 'val'}: skipped 2"), skipped


# ------------------------------------------------------------------------------------------ printed raw


def test_model_json_fields_are_checked_before_they_are_printed(copy, capsys, image):
    edit_model_json(copy, lambda d: d["metadata"]["classes"].__setitem__(0, "\x1b]0;owned\x07\x1b[31mzero"))
    err = one_error(capsys, "predict", copy, image)
    assert "metadata.classes holds a control character in class 0 ('\\x1b]0;owned\\x07" in err
    assert "\x1b" not in err and "\x07" not in err
    edit_model_json(copy, lambda d: d["metadata"].update(classes=[str(i) for i in range(10)]))
    edit_model_json(copy, lambda d: d["config"].update(name="../../../../etc/passwd"))
    for command in (["predict", copy, image], ["eval", copy], ["export", copy, copy / "m.ts"]):
        assert "config.name '../../../../etc/passwd' is not a model name" in one_error(capsys, *command)
    edit_model_json(copy, lambda d: d["config"].update(name="resnet-50"))
    assert "config.name 'resnet-50' names a ImageNetResNet, not the WideResNet" in one_error(
        capsys, "eval", copy
    )


# ------------------------------------------------------------------------------------------- tracebacks


def test_a_model_json_nested_thousands_deep_is_one_sentence(copy, capsys, image, tmp_path):
    (copy / "model.json").write_text('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for command in (["predict", copy, image], ["eval", copy], ["export", copy, tmp_path / "m.ts"]):
        assert "its JSON nests thousands of levels deep" in one_error(capsys, *command)


def test_image_sizes_out_of_range_are_one_sentence(run, capsys, image, tmp_path):
    for size in ("100000", "-3"):
        err = one_error(capsys, "export", run, tmp_path / "m.pt2", "--image-size", size)
        assert (
            err
            == f"wrn export: error: --image-size {size} is out of range: give a side from 5 to 4096 pixels"
        )
    err = one_error(capsys, "predict", run, image, "--image-size", "100000")
    assert err == "wrn predict: error: --image-size 100000 is out of range: give a side from 1 to 4096 pixels"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.png"]


def test_a_name_too_long_for_the_file_system_is_one_sentence_for_every_command(run, capsys, image, tmp_path):
    from wrn.reproduce import grid as G

    long = tmp_path / ("x" * 256)
    grid = tmp_path / "grid"
    over = G.Overrides(("--dataset", "digits"), {"dataset.name": "digits"}, {"dataset": "digits"})
    G.write_experiment(G.make_plan("table4", grid, 1, over), None)
    commands = [
        ["train", "--preset", "demo", "--epochs", "1", "--out", long],
        ["export", run, long / "m.pt2"],
        ["export", run, f"{long}.pt2"],
        ["convert", "xternalz", run / "checkpoint.pt", long],
        ["convert", "xternalz", f"{long}.pt", tmp_path / "converted"],
        ["predict", run, f"{long}.png"],
        ["eval", long],
        ["plot", run, "--out", f"{long}.png"],
        ["reproduce", "table4", "--dataset", "digits", "--dry-run", "--out", long],
        ["report", grid, "--out", long],
    ]
    for command in commands:
        err = one_error(capsys, *command)
        assert (
            "has a name of 2" in err and "bytes ('xxxxxxxxxxxxxxxxxxxxxxxx...'), longer than the 255" in err
        ), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.png", "grid"]


# ------------------------------------------------------------------------------------- from a new user


def same_padding_model(root: Path) -> Path:
    """DeepMind's WRN as `wrn convert dm` makes it: 'SAME' padding, swish, pixels / 255 normalised inside."""
    model = wrn.create_model(
        "wrn-16-1", same_padding=True, act="silu", input_mean=[0.5] * 3, input_std=[0.25] * 3
    )
    record = {"channels": 3, "size": 32, "normalization": "svhn", "mean": [0.0] * 3, "std": [255.0] * 3}
    return wrn.save_model(model.eval(), root, metadata={"input": record})


def test_same_padding_models_export_in_sizes_of_four_and_refuse_odd_sizes(tmp_path, capsys):
    root = same_padding_model(tmp_path / "dm")
    model = wrn.load_model(root)
    for out in ("m.pt2", "m.ts"):  # the .pt2 died with "Constraints violated (height, width)!"
        proc = wrn_here(capsys, "export", root, tmp_path / out)
        assert proc.returncode == 0, proc.stderr
    program = torch.export.load(tmp_path / "m.pt2").module()
    with torch.no_grad():
        for side in (8, 36, 64):
            x = torch.rand(2, 3, side, side)
            torch.testing.assert_close(program(x), model(x), atol=1e-5, rtol=0)
        with pytest.raises(Exception, match=r"% 4 == 0"):
            program(torch.rand(1, 3, 33, 33))
        with pytest.raises(ConfigError, match="multiples of 4, not 33x33"):
            model(torch.rand(1, 3, 33, 33))  # was: "The size of tensor a (16) must match ... (17)"
    err = one_error(capsys, "export", root, tmp_path / "o.pt2", "--image-size", "30")
    assert (
        "does not fit the model, which takes sides that are multiples of 4 (its 'SAME' padding); give e.g. 28"
        in err
    )
    image = tmp_path / "cat.png"
    Image.new("RGB", (40, 40), (200, 100, 50)).save(image)
    err = one_error(capsys, "predict", root, image, "--image-size", "33")
    assert "takes images whose height and width are multiples of 4, not 33x33" in err
    assert wrn_here(capsys, "predict", root, image, "--image-size", "36").returncode == 0


def test_predict_resizes_as_torchvision_where_the_weights_record_its_resize(tmp_path, capsys):
    from torchvision.transforms._presets import ImageClassification

    model = wrn.create_model("wrn-10-1")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    record = {"channels": 3, "size": 16, "normalization": "imagenet", "mean": [m * 255 for m in mean],
              "std": [s * 255 for s in std], "resize": "imagenet", "resize_size": 19, "interpolation": "bilinear"}  # fmt: skip
    root = wrn.save_model(model.eval(), tmp_path / "v2", metadata={"input": record})
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(image)
    proc = wrn_here(capsys, "predict", root, image, "--json", "--top-k", "10")
    assert proc.returncode == 0, proc.stderr
    ours = {t["class"]: t["probability"] for t in json.loads(proc.stdout)[0]["top"]}
    theirs = ImageClassification(crop_size=16, resize_size=19, mean=mean, std=std)(Image.open(image))
    with torch.no_grad():
        probs = torch.softmax(model(theirs[None]), dim=1)[0]
    np.testing.assert_allclose([ours[c] for c in range(10)], probs.numpy(), atol=1e-5)  # 256/224 before


def test_unfinished_runs_say_how_to_finish_and_eval_names_the_checkpoint_it_read(
    copy, capsys, image, tmp_path
):
    (copy / "model.json").unlink()
    (copy / "model.safetensors").unlink()
    for command in (["predict", copy, image], ["export", copy, tmp_path / "m.pt2"]):
        err = one_error(capsys, *command)
        assert (
            f"{copy} is an unfinished run of `wrn train` (it holds checkpoint.pt but no final model yet)"
            in err
        )
        assert (
            f"finish it with `wrn train --resume {copy}`, or evaluate its checkpoint with `wrn eval {copy}`"
            in err
        )
    proc = wrn_here(capsys, "eval", copy)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(
        "wrn-10-1 [checkpoint (epoch 1, step 0) of an unfinished run] on digits test"
    )


def test_a_file_that_is_no_pytorch_checkpoint_is_named_as_what_it_is(run, capsys, tmp_path):
    for out in ("m.onnx", "m.ts"):
        assert wrn_here(capsys, "export", run, tmp_path / out).returncode == 0
    err = one_error(capsys, "convert", "xternalz", tmp_path / "m.onnx", tmp_path / "a")
    assert "m.onnx is an ONNX model (a graph for inference, exported from a PyTorch model), not a" in err
    assert "pickled" not in err
    err = one_error(capsys, "convert", "official", tmp_path / "m.ts", tmp_path / "b")
    assert (
        "m.ts is a TorchScript archive (a compiled model), not a checkpoint file" in err
        and "pickled" not in err
    )
    err = one_error(capsys, "convert", "xternalz", run / "model.safetensors", tmp_path / "c")
    assert "model.safetensors is a safetensors file (wrn.load_model reads it with its model.json)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.ts"]
