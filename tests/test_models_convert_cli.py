"""`wrn convert` never loses a user's work and names the real problem with its paths, in one sentence."""

from __future__ import annotations

import hashlib

import pytest
import torch

import wrn.cli
from conftest import calibrate_bn_, one_line_error, rel_diff
from wrn.models import create_model, load_model, save_model


def xternalz_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A trained-looking xternalz state dict: our WRN's weights under the port's names."""
    from wrn.models.xternalz import _their_key

    return {_their_key(k): v for k, v in reference(seed).state_dict().items()}


def reference(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return calibrate_bn_(create_model("wrn-10-1"), torch.Generator().manual_seed(seed))


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": xternalz_state(), "best_prec1": 80.0}, path)
    return path


def test_convert_never_writes_into_a_run_directory(src, tmp_path, capsys):
    run = tmp_path / "run"
    save_model(create_model("wrn-16-2"), run)  # a finished run: its model and what `wrn train` writes beside
    (run / "config.yaml").write_text("model:\n  name: wrn-16-2\n")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = {p.name: digest(p) for p in run.iterdir()}
    for extra in ([], ["--force"]):
        assert "is a run directory of `wrn train`" in one_line_error(
            capsys, "convert", "xternalz", str(src), str(run), *extra
        )
    assert {p.name: digest(p) for p in run.iterdir()} == before
    assert load_model(run).config["name"] == "wrn-16-2"


def test_convert_refuses_an_existing_output_without_force(src, tmp_path, capsys):
    out = tmp_path / "out"
    assert wrn.cli.main(["convert", "xternalz", str(src), str(out)]) == 0
    capsys.readouterr()
    first = digest(out / "model.safetensors")
    other = tmp_path / "other.pt"
    torch.save(xternalz_state(seed=1), other)
    assert "already exists; pass --force" in one_line_error(
        capsys, "convert", "xternalz", str(other), str(out)
    )
    assert digest(out / "model.safetensors") == first
    assert wrn.cli.main(["convert", "xternalz", str(other), str(out), "--force"]) == 0
    assert digest(out / "model.safetensors") != first
    (tmp_path / "empty").mkdir()  # an empty folder is no one's work
    assert wrn.cli.main(["convert", "xternalz", str(other), str(tmp_path / "empty")]) == 0


def test_convert_names_the_real_problem_with_its_paths(src, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    for out, words in ((afile, f"{afile} is a file"), (afile / "sub", f"{afile} is a file")):
        assert words in one_line_error(capsys, "convert", "xternalz", str(src), str(out))
    assert afile.read_text() == "keep me\n"
    assert f"{tmp_path} is a directory; give the checkpoint file itself" in one_line_error(
        capsys, "convert", "xternalz", str(tmp_path), str(tmp_path / "o")
    )
    assert "nope.pt does not exist" in one_line_error(
        capsys, "convert", "xternalz", str(tmp_path / "nope.pt"), str(tmp_path / "o")
    )
    assert not (tmp_path / "o").exists()
    for flag, words in (
        (["--act", "relu"], "--act applies to DeepMind's WRN"),
        (["--weights", "ema"], "--weights applies"),
    ):
        assert words in one_line_error(capsys, "convert", "xternalz", str(src), str(tmp_path / "o"), *flag)
    assert not (tmp_path / "o").exists()


def test_convert_into_a_read_only_directory(src, tmp_path, mounts, capsys):
    from conftest import read_only

    ro = tmp_path / "ro"
    ro.mkdir()
    ro = read_only(tmp_path, mounts, ro)  # (skips only where mount is refused)
    assert f"{ro} is not writable" in one_line_error(capsys, "convert", "xternalz", str(src), str(ro / "m"))


@pytest.mark.parametrize("wrap", ["bare", "wrapped"])
def test_official_on_an_xternalz_file_suggests_xternalz(wrap, tmp_path, capsys):
    state = xternalz_state()
    path = tmp_path / "x.pt"
    obj = (
        state if wrap == "bare" else {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    )
    torch.save(obj, path)
    assert "looks like the xternalz WideResNet port" in (
        err := one_line_error(capsys, "convert", "official", str(path), str(tmp_path / "o"))
    )
    assert "use `wrn convert xternalz`" in err
    assert wrn.cli.main(["convert", "xternalz", str(path), str(tmp_path / "o")]) == 0
    ref = reference(0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_diff(load_model(tmp_path / "o")(x), ref(x)) <= 1e-5
