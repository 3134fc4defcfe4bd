"""Pretrained ImageNet weights through torchvision's weights API, from torch's hub cache, with no network.

torchvision names its files with the first hex digits of their sha256 (``wide_resnet50_2-9ba9bcbe.pth``), and
``torch.hub.load_state_dict_from_url(check_hash=True)`` verifies that prefix when it downloads; a file already
in the cache under that name is read as it is. So the test writes torchvision's own network, with random
weights, under the exact name that torchvision expects, and blocks every way out to the network.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import Wide_ResNet50_2_Weights
from torchvision.models._utils import IntermediateLayerGetter

from conftest import rel_diff
from wrn.errors import CheckpointError, ConfigError
from wrn.models import create_model, save_model


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """TORCH_HOME in tmp_path and every network call recorded (and refused)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls: list[str] = []

    def refuse(*args, **kwargs):
        calls.append(repr(args[:1]))
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return calls


def test_wrn_50_2_pretrained_features_from_the_hub_cache(offline, tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.wide_resnet50_2().eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    weights = Wide_ResNet50_2_Weights.DEFAULT
    assert weights is Wide_ResNet50_2_Weights.IMAGENET1K_V2
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / "wide_resnet50_2-9ba9bcbe.pth"
    cached.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), cached)

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    feats = create_model("wrn-50-2", pretrained=True, features_only=True, out_indices=(2, 3))
    expected = IntermediateLayerGetter(ref, {"layer2": "layer2", "layer3": "layer3"})
    with torch.no_grad():
        ours, theirs = feats(x), expected(x)
    assert [t.shape[1] for t in ours] == [512, 1024]
    assert rel_diff(ours[0], theirs["layer2"]) <= 1e-5 and rel_diff(ours[1], theirs["layer3"]) <= 1e-5
    assert offline == []  # the cached file was read; nothing went to the network

    save_model(feats, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())["metadata"]
    assert meta["pretrained"] == "torchvision Wide_ResNet50_2_Weights.IMAGENET1K_V2"
    assert meta["input"]["size"] == 224 and meta["input"]["resize_size"] == 232
    assert meta["input"]["mean"] == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
    assert len(meta["classes"]) == 1000 and meta["classes"][0] == "tench"


def test_without_network_or_cache_one_sentence_says_where_to_put_the_file(offline, tmp_path, capsys):
    with pytest.raises(CheckpointError) as err:
        create_model("wrn-50-2", pretrained="imagenet1k_v1")
    msg = str(err.value)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "wide_resnet50_2-95faca4d.pth"
    assert "could not get torchvision's IMAGENET1K_V1 weights of wrn-50-2" in msg and str(expected) in msg
    assert "\n" not in msg and len(offline) >= 1


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"name": "wrn-28-10", "pretrained": True}, "no pretrained weights exist for wrn-28-10"),
        ({"name": "wrn-50-2", "pretrained": "IMAGENET1K_V3"}, "one of IMAGENET1K_V1, IMAGENET1K_V2"),
        ({"name": "wrn-50-2", "pretrained": True, "num_classes": 10}, "reset_classifier"),
    ],
)
def test_pretrained_refusals(kwargs, words, offline):
    with pytest.raises(ConfigError, match=words):
        create_model(**kwargs)
    assert offline == []  # refused before anything was fetched


def test_torch_hub_entry_passes_pretrained(offline):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "hubconf", Path(__file__).resolve().parents[1] / "hubconf.py"
    )
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    with pytest.raises(ConfigError, match="no pretrained weights exist for wrn-28-10"):
        hub.wrn_28_10(pretrained=True)
    with pytest.raises(CheckpointError, match="put it at"):
        hub.wrn_101_2(pretrained=True)
