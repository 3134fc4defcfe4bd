"""Faults outside the training loop, each made to happen: wrong paths, a full disk (a 1 MB tmpfs), a read-only
file system (a read-only bind mount), a flipped byte, files that look right but are not, a killed write, NaN
weights. Each gives one sentence and exit 2, and leaves the user's files as they were."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

import wrn
from conftest import read_only, small_tmpfs
from wrn.atomic import atomic_write, atomic_write_bytes, remove_stale_temporaries
from wrn.cli import main
from wrn.errors import CheckpointError, WriteError
from wrn.models.io import sha256_file
from wrn.train import checkpoint as ckpt
from wrn.train.logging import RunLogger
from wrn.train.rundir import CHECKPOINT


def one_error(capsys, argv: list[str]) -> str:
    """Run the command in-process; it must fail with exit 2 and one line on stderr, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def tensor_data_offset(path: Path) -> int:
    """The offset of a byte in the middle of the largest tensor record of a torch.save zip file."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


# ------------------------------------------------------------------------------------ paths of every command


def test_each_command_names_a_wrong_path_in_one_sentence(run, tmp_path, capsys, image):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    err = one_error(capsys, ["export", str(run), str(afile / "x.pt2")])
    assert f"its parent {afile} is a file" in err
    err = one_error(capsys, ["plot", str(run), "--out", str(afile / "x.png")])
    assert f"its parent {afile} is a file" in err
    (tmp_path / "d.ts").mkdir()
    assert "d.ts is a directory" in one_error(capsys, ["export", str(run), str(tmp_path / "d.ts")])
    assert "already exists; pass --force" in one_error(capsys, ["export", str(run), str(afile)])
    assert "RUN_DIR" in one_error(capsys, ["export", str(afile), str(tmp_path / "m.ts")])
    assert f"{afile} is a file, not a directory" in one_error(capsys, ["eval", str(afile)])
    assert f"{afile} is a file, not a directory" in one_error(capsys, ["predict", str(afile), str(image)])
    assert f"{tmp_path} is a directory, not a file" in one_error(capsys, ["predict", str(run), str(tmp_path)])
    assert "does not exist" in one_error(capsys, ["predict", str(run), str(tmp_path / "none.png")])
    assert f"{afile} is a file, not a directory" in one_error(capsys, ["plot", str(afile)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "d.ts", "digit.png"]
    assert afile.read_text() == "not a folder"


def test_data_verify_and_download_name_a_file_root_and_verify_never_says_download_flag(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for action in ("verify", "download"):
        err = one_error(capsys, ["data", action, "cifar10", "--root", str(afile)])
        assert f"--root {afile} is a file, not a directory" in err
    (tmp_path / "root").mkdir()
    err = one_error(capsys, ["data", "verify", "svhn", "--root", str(tmp_path / "root"), "--split", "test"])
    assert "test_32x32.mat is missing" in err and "wrn data download svhn" in err and "--download" not in err
    err = one_error(capsys, ["data", "verify", "cifar10", "--root", str(tmp_path / "nope")])
    assert "does not exist" in err and "--download" not in err


def test_export_to_onnx_without_the_extra_names_the_extra(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now fails
    err = one_error(capsys, ["export", str(run), str(tmp_path / "m.onnx")])
    assert "onnxscript" in err and "pip install 'wrn[onnx]'" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_predict_on_cuda_without_a_gpu(run, capsys, image):
    err = one_error(capsys, ["predict", str(run), str(image), "--device", "cuda"])
    assert "no CUDA GPU is visible; use --device cpu" in err


def test_messages_name_the_real_cause(run, capsys, image):
    err = one_error(capsys, ["predict", str(run), str(image), "--image-size", "0"])
    assert "--image-size 0 is out of range: give a side from 1 to 4096 pixels" in err
    err = one_error(capsys, ["eval", str(run), "--dataset", "cifar10"])  # no data root for CIFAR-10 here
    assert "image_size" not in err and "cifar10" in err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--preset", "demo", "--epoch", "1"])
    assert exit_.value.code == 2
    first, usage = capsys.readouterr().err.splitlines()
    assert first.startswith("wrn train: error: ") and first.endswith("did you mean --epochs?")
    assert usage == "usage: wrn train ... (see wrn train --help)"


# ------------------------------------------------------------------------------ full and read-only disks


def test_a_full_disk_is_one_sentence_and_the_old_file_survives(tmp_path, mounts, capsys):
    disk = small_tmpfs(tmp_path, mounts)
    old = disk / "m.ts"
    old.write_bytes(b"the previous export")
    err = one_error(capsys, ["export", "wrn-16-4", str(old), "--force"])  # 2.7 M parameters: 11 MB
    assert (
        f"cannot write {old}: no space left on {disk} (needed about 11 MB); free space and try again" in err
    )
    assert old.read_bytes() == b"the previous export" and os.listdir(disk) == ["m.ts"]

    state = {"model": {"w": torch.ones(400_000)}}  # 1.6 MB of tensors
    atomic_write_bytes(disk / CHECKPOINT, b"the previous checkpoint")
    with pytest.raises(WriteError) as caught:
        ckpt.atomic_save(state, disk / CHECKPOINT)
    assert str(caught.value) == (
        f"cannot write {disk / CHECKPOINT}: no space left on {disk} (needed about 1.6 MB); "
        "free space and try again"
    )
    with pytest.raises(WriteError, match=f"no space left on {disk}; free space"):  # torch.save's own failure
        atomic_write(disk / CHECKPOINT, lambda tmp: torch.save(state, tmp))
    caught.value.fix = f"free space and resume with wrn train --resume {disk}"  # the hook the loop uses
    assert str(caught.value).endswith(f"resume with wrn train --resume {disk}")
    assert (disk / CHECKPOINT).read_bytes() == b"the previous checkpoint"
    assert sorted(os.listdir(disk)) == [CHECKPOINT, "m.ts"]

    (disk / "run").mkdir()
    logger = RunLogger(disk / "run")
    with pytest.raises(WriteError, match="no space left on"):
        logger.log_epoch({"epoch": 1, "note": "x" * 2_000_000})
    logger.close()


def test_a_read_only_file_system_is_one_sentence_and_changes_nothing(tmp_path, mounts, capsys):
    source = tmp_path / "src"
    source.mkdir()
    (source / "old.ts").write_bytes(b"kept")
    ro = read_only(tmp_path, mounts, source)
    err = one_error(capsys, ["export", "wrn-10-1", str(ro / "new.ts")])
    assert f"the directory {ro} is on a read-only file system" in err
    err = one_error(capsys, ["export", "wrn-10-1", str(ro / "old.ts"), "--force"])
    assert "read-only file system" in err
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes(ro / "old.ts", b"new")
    assert str(caught.value) == (
        f"cannot write {ro / 'old.ts'}: {ro} is a read-only file system; choose a writable location and try again"
    )
    assert sorted(os.listdir(source)) == ["old.ts"] and (source / "old.ts").read_bytes() == b"kept"


# ------------------------------------------------------------------------------------ corruption detected


def test_a_flipped_byte_in_the_checkpoint_tensors_is_named(copy, capsys):
    for name in ("model.safetensors", "model.json"):
        (copy / name).unlink()  # eval falls back to the checkpoint
    path = copy / CHECKPOINT
    state = ckpt.load(copy)
    assert state["digest"]["sha256"] == ckpt.digest(state)
    flip_byte(path, tensor_data_offset(path))
    with pytest.raises(CheckpointError, match="is corrupt: its content does not match the checksum"):
        ckpt.load(copy)
    err = one_error(capsys, ["eval", str(copy)])
    assert (
        f"{path} is corrupt" in err and "use a previous copy of the checkpoint or start the run again" in err
    )


def test_a_flipped_byte_in_model_safetensors_is_named(copy, capsys, image):
    weights = copy / "model.safetensors"
    doc = json.loads((copy / "model.json").read_text())
    assert doc["weights_sha256"] == sha256_file(weights)
    header = int.from_bytes(weights.read_bytes()[:8], "little")
    flip_byte(weights, 8 + header + (weights.stat().st_size - 8 - header) // 2)
    err = one_error(capsys, ["predict", str(copy), str(image)])
    assert f"{weights} is corrupt: its sha256 does not match" in err
    assert "is corrupt" in one_error(capsys, ["export", str(copy), str(copy / "m.ts")])


# ------------------------------------------------------------------------- files that look right but are not


def test_check_state_names_missing_entries_and_wrong_types(run):
    good = ckpt.load(run)
    assert ckpt.check_state(good) is good
    for change, named in (
        (lambda s: s.pop("model"), "'model' is missing"),
        (lambda s: s.pop("optimizer"), "'optimizer' is missing"),
        (lambda s: s.update(epoch="1"), "'epoch' is '1', not a whole number"),
        (lambda s: s.update(ranks=[]), "'ranks' is missing or does not hold one entry per process"),
    ):
        bad = dict(good)
        change(bad)
        with pytest.raises(CheckpointError, match=named):
            ckpt.check_state(bad)


def test_a_checkpoint_with_the_marker_but_wrong_content_is_one_sentence(copy, capsys):
    for name in ("model.safetensors", "model.json"):
        (copy / name).unlink()
    state = ckpt.load(copy)
    ckpt.atomic_save({**state, "epoch": "2"}, copy / CHECKPOINT)
    assert "'epoch' is '2', not a whole number" in one_error(capsys, ["eval", str(copy)])
    conv = next(k for k, v in state["model"].items() if v.dim() == 4)
    wrong = {**state["model"], conv: torch.zeros(3, 3, 3, 3)}
    ckpt.atomic_save({**state, "model": wrong}, copy / CHECKPOINT)
    err = one_error(capsys, ["eval", str(copy)])
    assert "does not fit" in err and conv in err and "(3, 3, 3, 3)" in err


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda d: d["metadata"]["input"].pop("mean"), "metadata.input has no mean"),
        (lambda d: d["metadata"]["input"].update(size=-5), "metadata.input.size"),
        (lambda d: d["metadata"].update(classes=5), "metadata.classes"),
        (lambda d: d["config"].update(num_classes=10**12), "config.num_classes"),
    ],
)
def test_model_json_fields_out_of_the_schema_are_named(copy, capsys, image, edit, named):
    doc = json.loads((copy / "model.json").read_text())
    edit(doc)
    (copy / "model.json").write_text(json.dumps(doc))
    err = one_error(capsys, ["predict", str(copy), str(image)])
    assert f"{copy / 'model.json'} is not a valid wrn model description: {named}" in err
    assert named in one_error(capsys, ["eval", str(copy)])


# -------------------------------------------------------------------------------- leftovers and NaN weights

KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from wrn.atomic import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        print("writing", flush=True)
        time.sleep(60)

    atomic_write(os.path.join(sys.argv[1], sys.argv[2]), write)
    """
)


def test_temporaries_of_killed_writes_are_removed_and_nothing_else(copy):
    for name in ("model.safetensors", "metrics.jsonl"):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(copy), name], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline() == "writing\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    left = sorted(p.name for p in copy.glob(".*.tmp"))
    assert [n.split(".")[1] for n in left] == ["metrics", "model"]
    (copy / ".checkpoint.pt.abcd_123.tmp").write_bytes(b"torn")
    for kept in (".notes.tmp", "mine.tmp", ".model.safetensors.short.tmp"):
        (copy / kept).write_bytes(b"the user's")
    before = {p.name for p in copy.iterdir()} - set(left) - {".checkpoint.pt.abcd_123.tmp"}
    remove_stale_temporaries(copy)
    assert {p.name for p in copy.iterdir()} == before
    assert wrn.load_model(copy) is not None  # the finished files are as they were


def test_predict_on_nan_weights_says_the_outputs_are_not_finite(copy, capsys, image):
    model = wrn.load_model(copy)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    wrn.save_model(model, copy, metadata=json.loads((copy / "model.json").read_text())["metadata"])
    err = one_error(capsys, ["predict", str(copy), str(image)])
    assert "the model's outputs are not finite (NaN or infinite)" in err


def test_atomic_write_of_a_missing_folder_names_it(tmp_path):
    with pytest.raises(WriteError, match=f"the directory {tmp_path / 'no'} does not exist"):
        atomic_write(tmp_path / "no" / "x", lambda tmp: None)


def test_a_download_to_a_full_disk_names_the_disk_not_the_network(tmp_path, mounts, capsys, http_server):
    from wrn.data import md5sum, registry
    from wrn.data.registry import RemoteFile

    served, base_url, _ = http_server
    (served / "test_32x32.mat").write_bytes(os.urandom(2_000_000))
    remote = RemoteFile(f"{base_url}/test_32x32.mat", "test_32x32.mat", md5sum(served / "test_32x32.mat"))
    disk = small_tmpfs(tmp_path, mounts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.SVHN_FILES, "test", remote)
        assert main(["data", "download", "svhn", "--root", str(disk), "--split", "test"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # (after the progress bar)
    assert f"cannot write {disk / 'test_32x32.mat'}: no space left on {disk}" in err and "network" not in err
    assert os.listdir(disk) == []
