"""The robustness WRNs: DeepMind's (RobustBench's ``dm_wide_resnet.py``) and the wrappers of the robustness
training code (wzekai99/DM-Improves-AT, imrahulr/adversarial_robustness_pytorch).

The references are written from those files: DeepMind's block pads its first conv's input by hand, (1, 1, 1, 1)
at stride 1 and (0, 1, 0, 1) at stride 2, then convolves without padding; its forward subtracts a mean and
divides by a std first. The training code wraps ``Sequential(Normalization, WRN)`` in DataParallel and saves
``{'model_state_dict': averaged, 'unaveraged_model_state_dict': trained}``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import wrn.cli
from conftest import calibrate_bn_, rel_diff
from wrn.errors import CheckpointError
from wrn.models import count_parameters, load_model
from wrn.models.imports import load_dm, load_robustness

C10 = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
C100 = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
AT_C10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
# the one-line notes are checked through the CLI; the library calls here leave them as warnings
pytestmark = pytest.mark.filterwarnings("ignore::wrn.models.xternalz.ConversionWarning")

X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # pixels in [0, 1]


class DMBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, act) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(c_in)
        self.conv_0 = nn.Conv2d(c_in, c_out, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(c_out)
        self.conv_1 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False) if c_in != c_out else None
        self.stride, self.act = stride, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.batchnorm_0(x))
        h = self.conv_0(F.pad(a, (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1)))
        h = self.conv_1(self.act(self.batchnorm_1(h)))
        return (x if self.shortcut is None else self.shortcut(a)) + h


class DMGroup(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int, act) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *[DMBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, act) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWRN(nn.Module):
    """DeepMind's WRN-depth-k; ``buffers``: mean/std registered as buffers (RobustBench's newer file) or kept
    as plain attributes (older files, DM-Improves-AT), which the state dict then lacks."""

    def __init__(self, depth: int, k: int, classes: int, norm=C10, act=F.silu, buffers: bool = True) -> None:
        super().__init__()
        n = (depth - 4) // 6
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in norm)
        if buffers:
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
        else:
            self.mean, self.std = mean, std
        self.init_conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.layer = nn.Sequential(
            DMGroup(n, 16, 16 * k, 1, act),
            DMGroup(n, 16 * k, 32 * k, 2, act),
            DMGroup(n, 32 * k, 64 * k, 2, act),
        )
        self.batchnorm = nn.BatchNorm2d(64 * k)
        self.logits = nn.Linear(64 * k, classes)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer(self.init_conv((x - self.mean) / self.std))
        return self.logits(F.avg_pool2d(self.act(self.batchnorm(h)), 8).flatten(1))


class XBlock(nn.Module):
    """The xternalz block: BN-ReLU shared by conv1 and the projection; identity blocks add the raw input."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.convShortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        h = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return (x if self.convShortcut is None else self.convShortcut(a)) + h


class XWRN(nn.Module):
    def __init__(self, depth: int, k: int, classes: int) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        for g, (c_in, c_out, s) in enumerate(((16, 16 * k, 1), (16 * k, 32 * k, 2), (32 * k, 64 * k, 2)), 1):
            group = nn.Module()
            group.layer = nn.Sequential(
                *[XBlock(c_in if i == 0 else c_out, c_out, s if i == 0 else 1) for i in range(n)]
            )
            setattr(self, f"block{g}", group)
        self.bn1 = nn.BatchNorm2d(64 * k)
        self.fc = nn.Linear(64 * k, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3.layer(self.block2.layer(self.block1.layer(self.conv1(x))))
        return self.fc(F.avg_pool2d(F.relu(self.bn1(h)), 8).flatten(1))


class Normalization(nn.Module):
    """The training code's input layer: its constants are plain attributes, not in the state dict."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.mean, self.sigma = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.sigma


def calibrated(net: nn.Module, seed: int) -> nn.Module:
    return calibrate_bn_(net, torch.Generator().manual_seed(seed))


def out(model: nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("depth, k, classes, buffers", [(16, 2, 10, True), (10, 4, 100, False)])
def test_dm_wide_resnet_imports_exactly(depth, k, classes, buffers, tmp_path, capsys):
    torch.manual_seed(depth)
    norm = C10 if classes == 10 else C100
    ref = calibrated(DMWRN(depth, k, classes, norm, buffers=buffers), seed=depth)
    src = tmp_path / "Gowal2020Uncovering.pt"
    torch.save(ref.state_dict(), src)  # RobustBench's files: the bare state dict
    assert wrn.cli.main(["convert", "dm", str(src), str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert ("used the code's CIFAR-100 constants" in err) == (not buffers)
    model = load_model(tmp_path / "m")
    assert rel_diff(out(model), out(ref)) <= 1e-5
    assert count_parameters(model) == sum(p.numel() for p in ref.parameters())
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["config"]["same_padding"] is True and doc["config"]["act"] == "silu"
    assert doc["config"]["input_mean"] == pytest.approx(list(norm[0])) and doc["config"][
        "input_std"
    ] == pytest.approx(list(norm[1]))
    assert doc["metadata"]["input"]["std"] == [255.0] * 3  # eval, predict and export feed pixels / 255

    # without the padding modelled, the same weights give other logits
    plain = wrn.create_model(
        f"wrn-{depth}-{k}", num_classes=classes, act="silu", input_mean=norm[0], input_std=norm[1]
    ).eval()
    plain.load_state_dict(model.state_dict())
    assert rel_diff(out(plain), out(ref)) > 1e-3


def test_dm_relu_and_a_refused_other_format(tmp_path):
    ref = calibrated(DMWRN(10, 2, 10, act=F.relu), seed=1)
    assert rel_diff(out(load_dm(ref.state_dict(), act="relu")), out(ref)) <= 1e-5
    assert rel_diff(out(load_dm(ref.state_dict())), out(ref)) > 1e-3  # the activation is not in the file
    with pytest.raises(
        CheckpointError, match=r"looks like the xternalz WideResNet port .*`wrn convert xternalz`"
    ):
        load_dm(calibrated(XWRN(10, 1, 10), seed=0).state_dict())
    with pytest.raises(CheckpointError, match=r"looks like DeepMind's WRN .*use `wrn convert dm`"):
        wrn.load_xternalz(ref.state_dict())


def test_predict_applies_the_normalisation_recorded_for_a_converted_dm_model(tmp_path):
    from wrn.predict import predict

    ref = calibrated(DMWRN(10, 2, 10), seed=2)
    torch.save(ref.state_dict(), tmp_path / "dm.pt")
    assert wrn.cli.main(["convert", "dm", str(tmp_path / "dm.pt"), str(tmp_path / "m")]) == 0
    pixels = (X[0] * 255).round().to(torch.uint8)
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(tmp_path / "img.png")
    (pred,) = predict(tmp_path / "m", [tmp_path / "img.png"], top_k=3)
    expected = torch.softmax(out(ref, pixels.float()[None] / 255), dim=1)[0]
    top = expected.topk(3)
    assert [c for c, _, _ in pred.top] == top.indices.tolist()
    assert [p for _, _, p in pred.top] == pytest.approx(top.values.tolist(), rel=1e-5)


@pytest.mark.parametrize("backbone", ["xternalz", "dm"])
def test_robustness_training_files_import_the_averaged_weights_with_their_normalisation(
    backbone, tmp_path, capsys
):
    torch.manual_seed(3)
    net = XWRN(10, 2, 10) if backbone == "xternalz" else DMWRN(10, 2, 10, buffers=False)
    trained = nn.DataParallel(nn.Sequential(Normalization(*AT_C10), calibrated(net, seed=3))).eval()
    averaged = copy.deepcopy(trained)
    with torch.no_grad():
        for p in averaged.parameters():
            p.mul_(0.98)
    src = tmp_path / "weights-best.pt"
    torch.save(
        {"model_state_dict": averaged.state_dict(), "unaveraged_model_state_dict": trained.state_dict()}, src
    )
    assert all(k.startswith("module.1.") for k in averaged.state_dict())

    # DM-Improves-AT's DeepMind WRN normalises inside its forward with constants the file does not hold, and
    # at 10 classes they are CIFAR-10's or SVHN's: the data set is asked for, never guessed
    dataset = ["--dataset", "cifar10"] if backbone == "dm" else []
    if backbone == "dm":
        assert wrn.cli.main(["convert", "robustness", str(src), str(tmp_path / "m")]) == 2
        assert "pass --dataset cifar10 or --dataset svhn" in capsys.readouterr().err
    assert wrn.cli.main(["convert", "robustness", str(src), str(tmp_path / "m"), *dataset]) == 0
    err = capsys.readouterr().err
    assert "read the averaged (EMA) weights 'model_state_dict'" in err and "normalisation layer" in err
    assert rel_diff(out(load_model(tmp_path / "m")), out(averaged.module)) <= 1e-5
    kw = {"dataset": "cifar10"} if backbone == "dm" else {}
    assert rel_diff(out(load_robustness(src, weights="model", **kw)), out(trained.module)) <= 1e-5
    assert rel_diff(out(load_robustness(src, **kw)), out(trained.module)) > 1e-3

    assert wrn.cli.main(["convert", "xternalz", str(src), str(tmp_path / "x")]) == 2
    assert "`wrn convert robustness`" in capsys.readouterr().err
    assert wrn.cli.main(["convert", "official", str(src), str(tmp_path / "o")]) == 2
    assert "`wrn convert robustness`" in capsys.readouterr().err


def test_mu_sigma_buffers_are_read_as_the_normalisation():
    torch.manual_seed(4)
    net = calibrated(XWRN(10, 2, 10), seed=4)
    mu, sigma = (
        torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
        torch.tensor([0.25, 0.2, 0.3]).view(1, 3, 1, 1),
    )
    state = {"mu": mu, "sigma": sigma, **net.state_dict()}
    model = load_robustness(state)
    assert rel_diff(out(model), out(net, (X - mu) / sigma)) <= 1e-5
    assert model.config["input_mean"] == pytest.approx([0.5, 0.4, 0.3])


def write_cifar10(root, test_images: torch.Tensor, test_labels: list[int]) -> dict[str, str]:
    """CIFAR-10's python layout: pickled batches of uint8 rows (1024 R, 1024 G, 1024 B values); returns the
    md5 of each member, as the data set's table holds them."""
    import hashlib
    import pickle

    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rows = test_images.reshape(len(test_images), -1).numpy()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data, labels = (rows, test_labels) if name == "test_batch" else (rows[:2], [0, 1])
        with open(base / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f, protocol=2)
    return {f"cifar-10-batches-py/{p.name}": hashlib.md5(p.read_bytes()).hexdigest() for p in base.iterdir()}


def test_eval_applies_the_normalisation_recorded_for_a_converted_dm_model(tmp_path, capsys, monkeypatch):
    from wrn.data import registry

    ref = calibrated(DMWRN(10, 2, 10), seed=6)
    torch.save(ref.state_dict(), tmp_path / "dm.pt")
    assert wrn.cli.main(["convert", "dm", str(tmp_path / "dm.pt"), str(tmp_path / "m")]) == 0
    images = (
        (torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 255).round().to(torch.uint8)
    )
    predicted = out(ref, images.float() / 255).argmax(1).tolist()
    labels = predicted[:13] + [(c + 1) % 10 for c in predicted[13:]]  # 13 of 20 right for the reference
    monkeypatch.setitem(registry.MEMBER_MD5, "cifar10", write_cifar10(tmp_path / "data", images, labels))
    capsys.readouterr()
    assert wrn.cli.main(["eval", str(tmp_path / "m"), "--data-dir", str(tmp_path / "data"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 20 and result["acc"] == pytest.approx(65.0)
