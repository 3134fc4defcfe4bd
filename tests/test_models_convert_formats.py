"""The registry of checkpoint formats (wrn.models.checkpoints): every format's file converted with every other
format's reader is refused, naming its format; what converted models record; the faults of `wrn convert`.

The files are made by the makers of the formats' own test modules, saved as each project's code saves them."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import WRN_ENV, calibrate_bn_, rel_diff, wrn_here
from test_models_convert_cli import reference, xternalz_state
from test_models_import_robust import DMWRN, XWRN, Normalization
from test_models_import_ssl import averaged, fixmatch_checkpoint, logits, trained
from test_models_io import official_forward, official_params
from wrn.models import checkpoints, load_model

X = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _usb_file(seed: int) -> tuple[dict, nn.Module]:
    ref = trained(10, 2, 10, seed=seed, usb=True)
    ema = averaged(ref, seed=seed)
    return {"model": {f"module.{k}": v for k, v in ref.state_dict().items()}, "ema_model": ema.state_dict(),
            "it": 1024, "epoch": 2, "best_it": 512, "best_eval_acc": 0.93}, ema  # fmt: skip


def _folded_tiny() -> dict:
    """The BN-folded WRN-50-2 export's keys, with one channel everywhere: its detector tells it by its keys,
    so the other readers' refusals need no 68M-parameter file (tests/test_models_io.py converts a full one)."""
    params = {"conv0.weight": torch.ones(1, 3, 1, 1), "conv0.bias": torch.zeros(1)}
    for g, n in enumerate((3, 4, 6, 3)):
        for i in range(n):
            for conv in ("conv0", "conv1", "conv2", *(("conv_dim",) if i == 0 else ())):
                params[f"group{g}.block{i}.{conv}.weight"] = torch.ones(1, 1, 1, 1)
                params[f"group{g}.block{i}.{conv}.bias"] = torch.zeros(1)
    return {**params, "fc.weight": torch.ones(1000, 1), "fc.bias": torch.zeros(1000)}


def _robustness_file(seed: int) -> tuple[dict, nn.Module]:
    torch.manual_seed(seed)
    net = DataParallelLike(nn.Sequential(Normalization(*AT_C10), calibrate_bn_(XWRN(10, 2, 10), _gen(seed))))
    averaged_ = copy.deepcopy(net)
    with torch.no_grad():
        for p in averaged_.parameters():
            p.mul_(0.98)
    return {
        "model_state_dict": averaged_.state_dict(),
        "unaveraged_model_state_dict": net.state_dict(),
    }, averaged_


AT_C10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


class DataParallelLike(nn.Module):
    """DataParallel's ``module.`` prefix, without DataParallel's device checks."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class OfficialForward(nn.Module):
    """The authors' functional WRN-10-k (tests/test_models_io.py) on its flat dict, in eval mode."""

    def __init__(self, params: dict) -> None:
        super().__init__()
        self.params = params

    def forward(self, x):
        return official_forward(x, self.params, False, 1)


def _files() -> dict[str, tuple[str, object, nn.Module | None]]:
    """name -> (its format, the object saved, the network whose logits its conversion must give, or None)."""
    fm = trained(10, 2, 10, seed=11)
    fm_ema = averaged(fm, seed=12)
    usb, usb_ema = _usb_file(13)
    xr = reference(14)
    robust, robust_ref = _robustness_file(15)
    dm = calibrate_bn_(DMWRN(10, 2, 10), _gen(16))
    mu, sigma = (
        torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
        torch.tensor([0.25, 0.2, 0.3]).view(1, 3, 1, 1),
    )
    xm = calibrate_bn_(XWRN(10, 1, 10), _gen(17))
    official = official_params(10, 1, 10, _gen(10))
    return {
        "official-cifar": ("official", {"params": official, "epoch": 9}, OfficialForward(official)),
        "official-imagenet-folded": ("official", _folded_tiny(), None),
        "xternalz": (
            "xternalz",
            {"state_dict": {f"module.{k}": v for k, v in xternalz_state(14).items()}, "best_prec1": 80.0},
            xr,
        ),  # fmt: skip
        "xternalz-bare": ("xternalz", xternalz_state(14), xr),
        "fixmatch": ("fixmatch", fixmatch_checkpoint(fm, fm_ema), fm_ema),
        "fixmatch-bare": ("fixmatch", fm.state_dict(), fm),
        "usb": ("usb", usb, usb_ema),
        "usb-bare": ("usb", usb_ema.state_dict(), usb_ema),
        "dm": ("dm", dm.state_dict(), dm),
        "robustness": ("robustness", robust, robust_ref),
        "robustness-mu-sigma": (
            "robustness",
            {"mu": mu, "sigma": sigma, **xm.state_dict()},
            nn.Sequential(Normalization(mu.flatten().tolist(), sigma.flatten().tolist()), xm),
        ),  # fmt: skip
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    made = {}
    for name, (fmt, obj, ref) in _files().items():
        torch.save(obj, root / f"{name}.pt")
        made[name] = (fmt, root / f"{name}.pt", ref)
    return made


FILE_NAMES = list(_files())


@pytest.mark.parametrize("name", FILE_NAMES)
def test_every_other_format_refuses_a_file_naming_its_format(name, files, tmp_path, capsys):
    """Each of the 11 files (7 kinds: official CIFAR and folded ImageNet, xternalz, fixmatch, usb, dm,
    robustness, with the bare state dicts of four) x the 6 formats of `wrn convert`, through the real CLI: the
    5 others exit 2 with one sentence naming the file's format, write nothing; its own converts it exactly."""
    fmt, src, ref = files[name]
    assert set(checkpoints.FORMATS) == {"official", "xternalz", "fixmatch", "usb", "dm", "robustness"}
    assert next(iter(checkpoints.claims(torch.load(src, weights_only=True)))) == fmt
    for other in checkpoints.FORMATS:
        if other == fmt:
            continue
        out = tmp_path / other
        proc = wrn_here(capsys, "convert", other, src, out)
        err = proc.stderr.strip()
        assert proc.returncode == 2, (other, proc.stdout, err)
        assert "\n" not in err and "Traceback" not in err, err
        assert f"is not a {other} checkpoint: it looks like " in err and err.endswith(
            f"use `wrn convert {fmt}`"
        )
        assert not out.exists()
    if ref is None:
        return  # the folded export converts exactly in tests/test_models_io.py, at its full size
    proc = wrn_here(capsys, "convert", fmt, src, tmp_path / "own")
    assert proc.returncode == 0, proc.stderr
    assert rel_diff(logits(load_model(tmp_path / "own"), X), logits(ref, X)) <= 1e-5


def test_an_untrained_xternalz_named_network_is_refused_as_ambiguous_and_read_as_fixmatch(tmp_path, capsys):
    from test_models_import_ssl import SsWRN

    src = tmp_path / "fresh.pt"
    torch.save(SsWRN(10, 2, 10).state_dict(), src)
    proc = wrn_here(capsys, "convert", "xternalz", src, tmp_path / "x")
    assert (
        proc.returncode == 2
        and "cannot be told apart between xternalz's network and FixMatch's" in proc.stderr
    )
    assert wrn_here(capsys, "convert", "fixmatch", src, tmp_path / "f").returncode == 0


def test_convert_help_and_refusals_come_from_the_registry(capsys):
    from wrn.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["convert"].format_help()
    for f in checkpoints.FORMATS.values():
        assert f.name in text
    for option in checkpoints.OPTIONS.values():
        assert f"--{option.name}" in text
        assert ", ".join(checkpoints.formats_taking(option.name)) + ":" in " ".join(text.split())
    with pytest.raises(Exception, match=r"--act applies to DeepMind's WRN, whose files do not hold it \(dm, "
                                        r"robustness\), not usb"):  # fmt: skip
        checkpoints.check_options("usb", {"act": "relu"})


def test_docs_import_section_is_the_registry():
    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    assert checkpoints.markdown_table() in text
    assert checkpoints.options_table() in text


# ------------------------------------------------------------------------------------ what model.json records


def _image(tmp_path) -> Path:
    pixels = (X[0] * 255).round().to(torch.uint8)
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(tmp_path / "img.png")
    return tmp_path / "img.png"


@pytest.mark.parametrize(
    "name, normalization, dataset",
    [
        ("official-cifar", "cifar10", "cifar10"),
        ("xternalz", "cifar10", "cifar10"),
        ("fixmatch", "cifar10", "cifar10"),
        ("usb", "imagenet", "cifar10"),
        ("dm", "pixels", "cifar10"),
        ("robustness", "pixels", "cifar10"),
    ],
)
def test_converted_models_record_their_input_and_predict_reads_it(
    name, normalization, dataset, files, tmp_path, capsys
):
    from wrn.data.registry import normalization_for
    from wrn.predict import predict

    fmt, src, _ = files[name]
    assert wrn_here(capsys, "convert", fmt, src, tmp_path / "m").returncode == 0
    meta = json.loads((tmp_path / "m" / "model.json").read_text())["metadata"]
    assert meta["input"]["normalization"] == meta["normalization"] == normalization
    assert meta["input"]["size"] == 32 and meta["dataset"] == dataset and len(meta["classes"]) == 10
    assert meta["format"] == fmt and meta["code"] == checkpoints.FORMATS[fmt].code
    mean, std = normalization_for(normalization, 3)
    assert meta["input"]["mean"] == pytest.approx(list(mean)) and meta["input"]["std"] == pytest.approx(
        list(std)
    )
    proc = wrn_here(capsys, "predict", tmp_path / "m", _image(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # what predict feeds: the recorded normalisation of the image's pixels
    model = load_model(tmp_path / "m")
    pixels = torch.from_numpy(np.array(Image.open(tmp_path / "img.png"))).permute(2, 0, 1)
    x = (pixels.float()[None] - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    expected = torch.softmax(logits(model, x), 1)[0]
    (pred,) = predict(tmp_path / "m", [tmp_path / "img.png"], top_k=1)
    assert pred.top[0][0] == int(expected.argmax()) and pred.top[0][2] == pytest.approx(
        float(expected.max()), rel=1e-5
    )


def test_folded_wrn50_2_records_imagenet_at_224():
    from test_models_io import folded_wrn50_2_params

    model = checkpoints.load("official", folded_wrn50_2_params(_gen(3)))
    meta = model.wrn_metadata
    assert (
        meta["input"]["size"] == 224
        and meta["input"]["resize"] == "imagenet"
        and meta["dataset"] == "imagenet"
    )
    assert meta["normalization"] == "imagenet" and len(meta["classes"]) == 1000


def test_predict_takes_the_normalization_a_model_json_lacks(tmp_path, capsys):
    from wrn.models import create_model, save_model

    save_model(create_model("wrn-10-1"), tmp_path / "m")  # no metadata.input
    img = _image(tmp_path)
    proc = wrn_here(capsys, "predict", tmp_path / "m", img)
    assert (
        proc.returncode == 2
        and "pass --normalization NAME" in proc.stderr
        and "\n" not in proc.stderr.strip()
    )
    proc = wrn_here(capsys, "predict", tmp_path / "m", img, "--normalization", "pixels")
    assert proc.returncode == 0, proc.stderr
    proc = wrn_here(capsys, "predict", tmp_path / "m", img, "--normalization", "nope")
    assert proc.returncode == 2 and "--normalization 'nope' is unknown" in proc.stderr


def test_a_fixmatch_wrn_28_2_is_named_as_its_network(tmp_path, capsys):
    ref = trained(28, 2, 10, seed=21)
    torch.save(ref.state_dict(), tmp_path / "fm.pt")
    assert wrn_here(capsys, "convert", "fixmatch", tmp_path / "fm.pt", tmp_path / "m").returncode == 0
    model = load_model(tmp_path / "m")
    assert model.config["name"] == "wrn-28-2-fixmatch"
    assert rel_diff(logits(model, X), logits(ref, X)) <= 1e-5


def test_dm_codes_bn_momentum_is_recorded(files, tmp_path, capsys):
    """RobustBench's DMWideResNet keeps PyTorch's BN momentum 0.1, DM-Improves-AT's uses 0.01."""
    _, src, _ = files["dm"]
    assert wrn_here(capsys, "convert", "dm", src, tmp_path / "dm").returncode == 0
    assert load_model(tmp_path / "dm").config["bn_momentum"] == 0.1
    net = nn.Sequential(calibrate_bn_(DMWRN(10, 2, 10, buffers=False), _gen(5)))
    torch.save({"model_state_dict": DataParallelLike(net).state_dict()}, tmp_path / "at.pt")
    assert wrn_here(capsys, "convert", "robustness", tmp_path / "at.pt", tmp_path / "r", "--dataset",
                    "cifar10").returncode == 0  # fmt: skip
    model = load_model(tmp_path / "r")
    assert model.config["bn_momentum"] == 0.01
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
    assert json.loads((tmp_path / "r" / "model.json").read_text())["metadata"]["code"].startswith(
        "wzekai99/DM-Improves-AT"
    )


def test_an_svhn_dm_improves_at_model_asks_for_its_data_set(tmp_path, capsys):
    """DM-Improves-AT's SVHN models normalise with mean = std = 0.5 inside the forward; a 10-class file does
    not say whether it is SVHN's or CIFAR-10's, so the data set is asked for, never guessed."""
    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    svhn = calibrate_bn_(DMWRN(10, 2, 10, norm=half, buffers=False), _gen(6))
    torch.save({"model_state_dict": DataParallelLike(nn.Sequential(svhn)).state_dict()}, tmp_path / "svhn.pt")
    proc = wrn_here(capsys, "convert", "robustness", tmp_path / "svhn.pt", tmp_path / "m")
    assert proc.returncode == 2 and "pass --dataset cifar10 or --dataset svhn" in proc.stderr
    assert not (tmp_path / "m").exists()
    args = ("convert", "robustness", tmp_path / "svhn.pt", tmp_path / "m", "--dataset", "svhn")
    assert wrn_here(capsys, *args).returncode == 0
    assert rel_diff(logits(load_model(tmp_path / "m"), X), logits(svhn, X)) <= 1e-5
    meta = json.loads((tmp_path / "m" / "model.json").read_text())["metadata"]
    assert meta["dataset"] == "svhn" and meta["input"]["inside_forward"]["mean"] == [0.5] * 3
    wrong = checkpoints.load("robustness", str(tmp_path / "svhn.pt"), dataset="cifar10")
    assert rel_diff(logits(wrong, X), logits(svhn, X)) > 1e-2  # what guessing CIFAR-10 computed


# ------------------------------------------------------------------------------------------ faults of convert


def _broken(kind: str, fmt: str) -> object:
    state = official_params(10, 1, 10, _gen(1)) if fmt == "official" else xternalz_state(1)
    first = next(iter(state))
    if kind == "int-key":
        return {**state, 0: torch.zeros(3)}
    if kind == "scalar":
        return {**state, first: torch.tensor(1.5)}
    if kind == "python-number":
        return {**state, first: 1.5}
    if kind == "sparse":
        return {**state, first: state[first].flatten().to_sparse()}
    if kind in ("nan", "inf"):
        t = state[first].clone()
        t.view(-1)[0] = float(kind)
        return {**state, first: t}
    if kind == "int64":
        return {**state, first: state[first].long()}
    return {**state, first: state[first].to(torch.complex64)}  # complex


@pytest.mark.parametrize("fmt", ["official", "xternalz"])
@pytest.mark.parametrize(
    "kind, words",
    [
        ("int-key", "has a int key"),
        ("scalar", "is a single number"),
        ("python-number", "is a float, not a tensor"),
        ("sparse", "is a sparse tensor"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("int64", "holds torch.int64 values"),
        ("complex", "holds torch.complex64 values"),
    ],
)
def test_convert_refuses_broken_entries_in_one_sentence(fmt, kind, words, tmp_path, capsys):
    torch.save({"params": _broken(kind, fmt)} if fmt == "official" else _broken(kind, fmt), tmp_path / "b.pt")
    proc = wrn_here(capsys, "convert", fmt, tmp_path / "b.pt", tmp_path / "m")
    err = proc.stderr.strip()
    assert proc.returncode == 2 and words in err, err
    assert "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("what", ["classes", "channels"])
def test_convert_refuses_models_that_load_model_refuses(what, tmp_path, capsys):
    state = xternalz_state(2)
    if what == "classes":  # 2,000,000 classes, stored as one row repeated (a small file)
        state["fc.weight"] = state["fc.weight"][:1].expand(2_000_000, -1)
        state["fc.bias"] = state["fc.bias"][:1].expand(2_000_000)
        words = "config.num_classes"
    else:
        state["conv1.weight"] = state["conv1.weight"][:, :1].expand(-1, 100_000, -1, -1)
        words = "config.in_channels"
    torch.save(state, tmp_path / "big.pt")
    proc = wrn_here(capsys, "convert", "xternalz", tmp_path / "big.pt", tmp_path / "m")
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "makes a model that wrn.load_model refuses" in err and words in err, err
    assert not (tmp_path / "m").exists()


_KILLER = """
import os, signal, sys
out, n = os.path.realpath(sys.argv[1]), int(sys.argv[2])
real, count = os.replace, [0]
def replace(a, b, **kw):
    if os.path.dirname(os.path.realpath(b)) == out:
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(a, b, **kw)
os.replace = replace
import wrn.cli
sys.exit(wrn.cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("n", [1, 2])
def test_force_killed_at_either_rename_keeps_a_whole_pair_and_the_next_convert_cleans_up(n, tmp_path, capsys):
    """--force replaces model.safetensors, then model.json: killed at the first rename (nothing renamed yet)
    or at the second (new weights beside the old model.json), the directory still loads as the old model,
    and the next convert removes what the killed one left."""
    old_src, new_src, out = tmp_path / "old.pt", tmp_path / "new.pt", tmp_path / "out"
    torch.save(xternalz_state(3), old_src)
    torch.save(xternalz_state(4), new_src)
    assert wrn_here(capsys, "convert", "xternalz", old_src, out).returncode == 0
    old = logits(load_model(out), X)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILLER,
            str(out),
            str(n),
            "convert",
            "xternalz",
            str(new_src),
            str(out),
            "--force",
        ],
        env={**os.environ, **WRN_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr
    assert len(os.listdir(out)) > 2  # the killed convert left files behind
    assert torch.equal(logits(load_model(out), X), old)
    assert wrn_here(capsys, "convert", "xternalz", new_src, out, "--force").returncode == 0
    assert sorted(os.listdir(out)) == ["model.json", "model.safetensors"]
    assert rel_diff(logits(load_model(out), X), logits(reference(4), X)) <= 1e-5
