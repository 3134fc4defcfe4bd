"""Weights in and out: safetensors round trip, the authors' checkpoints, ONNX/TorchScript export, hub, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import wrn
from conftest import randomize_bn_
from conftest import run_wrn as run_cli
from wrn.errors import CheckpointError, ConfigError
from wrn.models import create_model, load_model, load_official, save_model

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn_(create_model("wrn-16-2-b131", num_classes=100, dropout=0.3, in_channels=1)).eval()
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["config"] == model.config and doc["n_parameters"] == wrn.count_parameters(model)
    again = wrn.load_model(tmp_path / "m")
    assert again.config == model.config and not again.training
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_save_unwraps_compiled_models(tmp_path):
    model = create_model("wrn-10-1")
    save_model(torch.compile(model), tmp_path)
    loaded = load_model(tmp_path).state_dict()
    assert list(loaded) == list(model.state_dict())  # no `_orig_mod.` prefixes
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_mismatched_checkpoint_names_its_keys(tmp_path):
    save_model(create_model("wrn-10-1"), tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    doc["config"].update(name="wrn-16-1", blocks_per_group=2, depth=16)  # (a name must agree with its fields)
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"missing keys layer1\.1\.bn1\.weight"):
        load_model(tmp_path)
    doc["config"].update(name="wrn-10-1", blocks_per_group=1, depth=10, num_classes=100)
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"mismatched shapes .*fc\.weight \(10, 64\) vs \(100, 64\)"):
        load_model(tmp_path)


def test_corrupt_or_missing_files_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_model(tmp_path / "nope")
    save_model(create_model("wrn-10-1"), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path)


# ------------------------------------------------------------- the authors' CIFAR checkpoint (docs/models.md)


def official_params(depth: int, width: int, classes: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A random flat dict in the official port's key format."""
    n = (depth - 4) // 6
    widths = [16, 16 * width, 32 * width, 64 * width]

    def conv(c_out, c_in, k):
        return torch.randn(c_out, c_in, k, k, generator=gen) * (2 / (c_in * k * k)) ** 0.5

    def bn(prefix, c):
        return {
            f"{prefix}.weight": torch.rand(c, generator=gen),
            f"{prefix}.bias": torch.randn(c, generator=gen) * 0.1,
            f"{prefix}.running_mean": torch.randn(c, generator=gen) * 0.1,
            f"{prefix}.running_var": torch.rand(c, generator=gen) + 0.5,
        }

    params = {"conv0": conv(16, 3, 3)}
    for g in range(3):
        for i in range(n):
            c_in, c_out = (widths[g] if i == 0 else widths[g + 1]), widths[g + 1]
            base = f"group{g}.block{i}"
            params[f"{base}.conv0"] = conv(c_out, c_in, 3)
            params[f"{base}.conv1"] = conv(c_out, c_out, 3)
            if c_in != c_out:
                params[f"{base}.convdim"] = conv(c_out, c_in, 1)
            params.update(bn(f"{base}.bn0", c_in))
            params.update(bn(f"{base}.bn1", c_out))
    params.update(bn("bn", widths[3]))
    params["fc.weight"] = torch.randn(classes, widths[3], generator=gen) * 0.1
    params["fc.bias"] = torch.zeros(classes)
    return params


def official_forward(x: torch.Tensor, params: dict[str, torch.Tensor], train: bool, n: int) -> torch.Tensor:
    """The official functional WRN forward, written from the authors' code (docs/models.md) (stride on conv0, convdim on o1)."""

    def bn(h, base):
        return F.batch_norm(
            h,
            params[base + ".running_mean"].clone(),
            params[base + ".running_var"].clone(),
            params[base + ".weight"],
            params[base + ".bias"],
            training=train,
        )

    def block(h, base, stride):
        o1 = F.relu(bn(h, base + ".bn0"))
        y = F.conv2d(o1, params[base + ".conv0"], stride=stride, padding=1)
        o2 = F.relu(bn(y, base + ".bn1"))
        z = F.conv2d(o2, params[base + ".conv1"], stride=1, padding=1)
        if base + ".convdim" in params:
            return z + F.conv2d(o1, params[base + ".convdim"], stride=stride)
        return z + h

    h = F.conv2d(x, params["conv0"], padding=1)
    for g, stride in enumerate((1, 2, 2)):
        for i in range(n):
            h = block(h, f"group{g}.block{i}", stride if i == 0 else 1)
    h = F.relu(bn(h, "bn"))
    h = F.avg_pool2d(h, 8, 1, 0).view(h.size(0), -1)
    return F.linear(h, params["fc.weight"], params["fc.bias"])


@pytest.mark.parametrize("depth, width, classes", [(10, 1, 10), (16, 2, 100), (22, 1, 10), (16, 4, 10)])
def test_load_official_cifar_gives_the_same_outputs(depth, width, classes):
    gen = torch.Generator().manual_seed(depth * 10 + width)
    params = official_params(depth, width, classes, gen)
    model = load_official(params)
    assert model.config["name"] == f"wrn-{depth}-{width}" and model.config["num_classes"] == classes
    x = torch.randn(6, 3, 32, 32, generator=gen)
    n = (depth - 4) // 6
    with torch.no_grad():
        for train in (False, True):
            model.train(train)
            assert torch.allclose(model(x), official_forward(x, params, train, n), atol=1e-5, rtol=1e-4)


def test_load_official_reads_the_pt7_file_and_the_cli_converts_it(tmp_path):
    gen = torch.Generator().manual_seed(0)
    params = official_params(16, 2, 10, gen)
    src = tmp_path / "model.pt7"
    torch.save(
        {"params": params, "epoch": 200, "optimizer": {"state": {}, "param_groups": [{"lr": 0.0008}]}}, src
    )
    x = torch.randn(2, 3, 32, 32, generator=gen)
    expected = official_forward(x, params, False, 2)
    with torch.no_grad():
        assert torch.allclose(load_official(src)(x), expected, atol=1e-5)
    proc = run_cli("convert", "official", str(src), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "wrn-16-2" in proc.stdout
    with torch.no_grad():
        assert torch.allclose(load_model(tmp_path / "out")(x), expected, atol=1e-5)


def test_load_official_refuses_code_and_wrong_formats(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt7"
    torch.save({"params": {"conv0": torch.zeros(1)}, "x": Evil()}, bad)
    with pytest.raises(CheckpointError, match="pickled Python objects .* never unpickles"):
        load_official(bad)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not in a known official format"):
        load_official({"weight": torch.zeros(1)})
    params = official_params(10, 1, 10, torch.Generator().manual_seed(0))
    del params["group1.block0.convdim"]
    with pytest.raises(CheckpointError, match="missing keys layer2.0.shortcut.weight"):
        load_official(params)
    proc = run_cli("convert", "official", str(tmp_path / "missing.pt7"), str(tmp_path / "o"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------- the authors' BN-folded ImageNet WRN-50-2 export


def folded_wrn50_2_params(gen: torch.Generator) -> dict[str, torch.Tensor]:
    params = {}

    def conv(name, c_out, c_in, k):
        params[name + ".weight"] = torch.randn(c_out, c_in, k, k, generator=gen) * (1 / (c_in * k * k)) ** 0.5
        params[name + ".bias"] = torch.randn(c_out, generator=gen) * 0.1

    conv("conv0", 64, 3, 7)
    c_in = 64
    for g, n in enumerate((3, 4, 6, 3)):
        inner, out = 128 * 2**g, 256 * 2**g
        for i in range(n):
            base = f"group{g}.block{i}"
            conv(base + ".conv0", inner, c_in, 1)
            conv(base + ".conv1", inner, inner, 3)
            conv(base + ".conv2", out, inner, 1)
            if i == 0:
                conv(base + ".conv_dim", out, c_in, 1)
            c_in = out
    params["fc.weight"] = torch.randn(1000, 2048, generator=gen) * 0.02
    params["fc.bias"] = torch.zeros(1000)
    return params


def folded_forward(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The authors' functional WRN-50-2 (docs/models.md), pooling globally so a small test input works."""

    def conv(h, base, stride=1, pad=0):
        return F.conv2d(h, params[base + ".weight"], params[base + ".bias"], stride, pad)

    h = F.max_pool2d(F.relu(conv(x, "conv0", 2, 3)), 3, 2, 1)
    for g, (n, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 2), strict=True)):
        for i in range(n):
            base = f"group{g}.block{i}"
            o = F.relu(conv(h, base + ".conv0"))
            o = F.relu(conv(o, base + ".conv1", stride if i == 0 else 1, 1))
            o = conv(o, base + ".conv2")
            h = F.relu(o + (conv(h, base + ".conv_dim", stride) if i == 0 else h))
    return F.linear(h.mean(dim=(2, 3)), params["fc.weight"], params["fc.bias"])


def test_load_official_folded_wrn50_2_gives_the_same_outputs():
    gen = torch.Generator().manual_seed(3)
    params = folded_wrn50_2_params(gen)
    model = load_official(params)
    assert model.config["name"] == "wrn-50-2"
    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        assert torch.allclose(model(x), folded_forward(x, params), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------- export, hub


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip(
        "onnxruntime", reason="the onnx extra is not installed (pip install -e .[onnx])"
    )
    save_model(randomize_bn_(create_model("wrn-10-2", num_classes=5)), tmp_path / "m")
    proc = run_cli("export", str(tmp_path / "m"), str(tmp_path / "m.onnx"))
    assert proc.returncode == 0, proc.stderr
    model = load_model(tmp_path / "m")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    for batch in (1, 7):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 32, 32)
        (y,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            assert torch.allclose(torch.from_numpy(y), model(x), atol=1e-4)


def test_torchscript_export_by_name(tmp_path):
    proc = run_cli("export", "wrn-10-1", str(tmp_path / "m.ts"), "--num-classes", "3")
    assert proc.returncode == 0, proc.stderr
    scripted = torch.jit.load(str(tmp_path / "m.ts"))
    assert scripted(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_torch_hub_loads_from_a_clone():
    model = torch.hub.load(str(REPO), "wrn_16_4", source="local", num_classes=100, pretrained=False)
    with pytest.raises(ConfigError, match="no pretrained weights exist for wrn-28-10"):
        torch.hub.load(str(REPO), "wrn_28_10", source="local", pretrained=True)
    with pytest.raises(ConfigError, match="the options are: num_classes, "):
        torch.hub.load(str(REPO), "wrn_28_10", source="local", num_class=100)
    assert model.config["name"] == "wrn-16-4" and model.fc.out_features == 100
    again = torch.hub.load(str(REPO), "create_model", "wrn-40-2-b131", source="local")
    assert wrn.count_parameters(again) == 1_429_082


# ---------------------------------------------------------------------------------------------- wrn models


def test_wrn_models_prints_the_shipped_table_which_is_what_the_models_count():
    from wrn.models.complexity import model_table
    from wrn.models.table import shipped_rows

    # regenerate with `python -m wrn.models.table`; every network with WRN_SLOW=1, else every third and the
    # largest of each family
    names = wrn.list_models()
    if os.environ.get("WRN_SLOW") != "1":
        names = sorted(
            set(names[::3]) | {"wrn-28-10", "wrn-50-2", "preact-resnet-1001", "imagenet-wrn-34-2.0"}
        )
    shipped = shipped_rows()
    assert [shipped[n] for n in names] == model_table(names)
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert set(wrn.list_models()) == set(lines)
    assert "36,479,194" in lines["wrn-28-10"] and " 5.243 " in lines["wrn-28-10"]
    assert "68,883,240" in lines["wrn-50-2"] and "68.9M" in lines["wrn-50-2"]


def test_wrn_models_filter_any_case_and_name_together():
    proc = run_cli("models", "--filter", "WRN-40-2-L*", "--name", "wrn-34-10", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == [
        "wrn-40-2-l1",
        "wrn-40-2-l2",
        "wrn-40-2-l3",
        "wrn-40-2-l4",
        "wrn-34-10",
    ]
    assert rows[-1]["params"] == 46_160_474
    assert wrn.list_models("WRN-40-2-L*") == [r["name"] for r in rows[:4]]


LIGHT_COMMANDS = [["--help"], ["models"], ["data", "list"], ["presets"], ["models", "--name", "wrn-28-10"]]
LIGHT_COMMANDS += [
    [command, "--help"] for command in ("models", "convert", "export", "predict", "data", "train")
]
LIGHT_COMMANDS += [[command, "--help"] for command in ("eval", "presets", "plot")]


def test_help_and_the_listing_commands_never_import_torch():
    """`wrn --help`, every `--help`, `wrn models`, `wrn data list` and `wrn presets` stay fast: they do not load
    torch (about 2 s). The timings are in benchmarks/cli_speed.py."""
    script = (
        "import sys, contextlib, io\n"
        "from wrn.cli import main\n"
        f"for argv in {LIGHT_COMMANDS!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    assert 'torch' not in sys.modules, argv\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_wrn_models_json_for_any_valid_name():
    proc = run_cli("models", "--name", "wrn-34-2", "--num-classes", "100", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["params"] == wrn.count_parameters(create_model("wrn-34-2", num_classes=100))
    assert row["macs"] > 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["models", "--name", "wrn-27-10"], "6n+4"),
        (["models", "--name", "wrn-40-2-l5"], "depth-4 must be a positive multiple of 3*5"),
        (["models", "--name", "wrm-28-10"], "did you mean 'wrn-28-10'"),
        (["export", "wrn-16-0", "x.onnx"], "positive integer"),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(args, words, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_weights_and_description_get_the_usual_file_permissions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # a file made the usual way, under this process's umask
    save_model(create_model("wrn-10-1"), tmp_path / "m")
    for name in ("model.safetensors", "model.json"):
        assert (tmp_path / "m" / name).stat().st_mode == plain.stat().st_mode, name


def test_convert_of_a_file_that_is_no_checkpoint_is_one_sentence(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    for source in ("official", "xternalz"):
        proc = run_cli("convert", source, str(text), str(tmp_path / "o"))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "torch.load cannot read it" in proc.stderr and proc.stderr.count("\n") == 1
        assert not (tmp_path / "o").exists()
