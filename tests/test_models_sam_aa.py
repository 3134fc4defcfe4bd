"""The WRNs of SAM's and AutoAugment's code (``wrn-D-K-sam``, ``wrn-D-K-aa``) and the ``init`` option.

The references below are written from their code, in its own layout (NHWC maps, HWIO kernels, the variable
names of their modules) and with variables made on first use as TensorFlow's ``get_variable`` and Flax's
``init_by_shape`` make them:

* SAM: google-research/sam, sam_jax/models/wide_resnet.py (``WideResnet``, ``WideResnetGroup``,
  ``WideResnetBlock``, ``_output_add``) and utils.py (``activation``: BN momentum 0.9, epsilon 1e-5), built by
  models/load_model.py (``WideResnet28x10``: 4 blocks per group, multiplier 10);
* AutoAugment: tensorflow/models, research/autoaugment/wrn.py (``build_wrn_model``, ``residual_block``,
  ``_res_add``) and custom_ops.py (``conv2d``, ``zero_pad``, ``avg_pool``, ``fc``), with the BN arguments of
  train_cifar.py (``setup_arg_scopes``: decay 0.9, epsilon 1e-5, scale).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

import wrn
from conftest import rel_diff, wrn_here
from wrn.errors import ConfigError
from wrn.models import count_parameters, create_model, model_info
from wrn.models.table import shipped_rows

# ------------------------------------------------------------------------------------ their ops, in NHWC


def conv_same(x: torch.Tensor, kernel: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """TensorFlow's / XLA's convolution with padding 'SAME': NHWC input, HWIO kernel, no bias."""
    pads = []
    for size, k in ((x.shape[1], kernel.shape[0]), (x.shape[2], kernel.shape[1])):
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    y = F.conv2d(
        F.pad(x.permute(0, 3, 1, 2), (left, right, top, bottom)), kernel.permute(3, 2, 0, 1), None, stride
    )
    return y.permute(0, 2, 3, 1)


def avg_pool_valid(x: torch.Tensor, k: int) -> torch.Tensor:
    """Average pool with window and stride k, padding 'VALID', NHWC."""
    return F.avg_pool2d(x.permute(0, 3, 1, 2), k, k).permute(0, 2, 3, 1)


class Store:
    """Variables made on first use (their shapes from the input, as their code makes them), and the BN
    statistics, updated by the forward in training mode."""

    def __init__(self, device: str = "cpu", seed: int = 0) -> None:
        self.device, self.gen = device, torch.Generator().manual_seed(seed)
        self.params: dict[str, torch.Tensor] = {}
        self.state: dict[str, torch.Tensor] = {}

    def _rand(self, shape, low, high) -> torch.Tensor:
        if self.device == "meta":
            return torch.empty(shape, device="meta")
        return torch.empty(shape).uniform_(low, high, generator=self.gen)

    def kernel(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in self.params:
            bound = math.sqrt(6 / math.prod(shape[:-1]))  # a scale that keeps the activations of order 1
            self.params[name] = self._rand(shape, -bound, bound)
        return self.params[name]

    def bn_params(self, name: str, c: int, names: tuple[str, str, str, str]) -> list[torch.Tensor]:
        scale, bias, mean, var = (f"{name}/{n}" for n in names)
        if scale not in self.params:  # as after training: BN parameters and statistics away from 1 and 0
            self.params[scale], self.params[bias] = self._rand((c,), 0.5, 1.5), self._rand((c,), -0.2, 0.2)
            self.state[mean], self.state[var] = self._rand((c,), -0.2, 0.2), self._rand((c,), 0.5, 2.0)
        return [self.params[scale], self.params[bias], self.state[mean], self.state[var]]

    def batch_norm(self, x, name, train, names, bessel_update: bool) -> torch.Tensor:
        """BN over N, H, W with decay 0.9 and epsilon 1e-5. The update of the moving variance uses the batch
        variance with Bessel's correction in TensorFlow's fused BN, without it in Flax's."""
        scale, bias, mean, var = self.bn_params(name, x.shape[-1], names)
        if train:
            b_mean = x.mean((0, 1, 2))
            b_var = (x * x).mean((0, 1, 2)) - b_mean * b_mean
            n = x.numel() // x.shape[-1]
            update = b_var * n / (n - 1) if bessel_update else b_var
            self.state[f"{name}/{names[2]}"] = 0.9 * mean + 0.1 * b_mean
            self.state[f"{name}/{names[3]}"] = 0.9 * var + 0.1 * update
            mean, var = b_mean, b_var
        return (x - mean) / torch.sqrt(var + 1e-5) * scale + bias


# ----------------------------------------------------------------------------------------------- SAM's WRN

FLAX_BN = ("scale", "bias", "mean", "var")


def sam_reference(
    store: Store, images: torch.Tensor, n: int, k: int, classes: int, train: bool
) -> torch.Tensor:
    """SAM's WideResnet(blocks_per_group=n, channel_multiplier=k, num_outputs=classes) on NCHW images."""

    def activation(h, name):
        return F.relu(store.batch_norm(h, name, train, FLAX_BN, bessel_update=False))

    def output_add(block_x, orig_x):
        stride = orig_x.shape[-2] // block_x.shape[-2]
        if block_x.shape[-1] != orig_x.shape[-1]:
            orig_x = avg_pool_valid(orig_x, stride)
            orig_x = F.pad(orig_x, (0, block_x.shape[-1] - orig_x.shape[-1]))  # zeros after the channels
        return block_x + orig_x

    x = images.permute(0, 2, 3, 1)
    x = conv_same(x, store.kernel("init_conv/kernel", (3, 3, x.shape[-1], 16)))
    for g, (channels, stride) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 2))):
        for i in range(n):
            pre = f"WideResnetGroup_{g}/WideResnetBlock_{i}/"
            if g == 0 and i == 0:  # activate_before_residual: the first group's first block
                x = activation(x, pre + "init_bn")
                orig_x = block_x = x
            else:
                orig_x, block_x = x, activation(x, pre + "init_bn")
            block_x = conv_same(
                block_x,
                store.kernel(pre + "conv1/kernel", (3, 3, block_x.shape[-1], channels)),
                stride if i == 0 else 1,
            )
            block_x = activation(block_x, pre + "bn_2")
            block_x = conv_same(block_x, store.kernel(pre + "conv2/kernel", (3, 3, channels, channels)))
            x = output_add(block_x, orig_x)
    x = activation(x, "pre-pool-bn").mean((1, 2))
    weight = store.kernel("Dense_0/kernel", (x.shape[-1], classes))
    bias = store.params.setdefault("Dense_0/bias", store._rand((classes,), -0.1, 0.1))
    return x @ weight + bias


def sam_to_ours(store: Store) -> dict[str, torch.Tensor]:
    rules = [
        (r"^init_conv/kernel$", "conv1.weight"),
        (r"^WideResnetGroup_(\d)/WideResnetBlock_(\d+)/", lambda m: f"layer{int(m[1]) + 1}.{m[2]}."),
        (r"init_bn/", "bn1/"),
        (r"bn_2/", "bn2/"),
        (r"^pre-pool-bn/", "bn/"),
        (r"^Dense_0/", "fc/"),
    ]
    leaves = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}
    return _rename({**store.params, **store.state}, rules, leaves)


# ----------------------------------------------------------------------------------------- AutoAugment's WRN

TF_BN = ("gamma", "beta", "moving_mean", "moving_variance")


def aa_reference(
    store: Store, images: torch.Tensor, n: int, k: int, classes: int, train: bool
) -> torch.Tensor:
    """AutoAugment's build_wrn_model(images, classes, wrn_size=16k), with n blocks per group (their 4)."""

    def batch_norm(h, scope):
        return store.batch_norm(h, scope, train, TF_BN, bessel_update=True)

    def zero_pad(h, in_filter, out_filter):
        return F.pad(h, ((out_filter - in_filter) // 2, (out_filter - in_filter) // 2))

    def residual_block(x, in_filter, out_filter, stride, activate_before_residual, scope):
        if activate_before_residual:
            x = F.relu(batch_norm(x, scope + "shared_activation/init_bn"))
            orig_x = x
        else:
            orig_x = x
        block_x = x
        if not activate_before_residual:
            block_x = F.relu(batch_norm(block_x, scope + "residual_only_activation/init_bn"))
        block_x = conv_same(
            block_x, store.kernel(scope + "sub1/conv1/weights", (3, 3, in_filter, out_filter)), stride
        )
        block_x = F.relu(batch_norm(block_x, scope + "sub2/bn2"))
        block_x = conv_same(
            block_x, store.kernel(scope + "sub2/conv2/weights", (3, 3, out_filter, out_filter))
        )
        if in_filter != out_filter:
            orig_x = zero_pad(avg_pool_valid(orig_x, stride), in_filter, out_filter)
        return orig_x + block_x

    def res_add(in_filter, out_filter, stride, x, orig_x):
        if in_filter != out_filter:
            orig_x = zero_pad(avg_pool_valid(orig_x, stride), in_filter, out_filter)
        x = x + orig_x
        return x, x

    wrn_size = 16 * k
    filters = [min(wrn_size, 16), wrn_size, wrn_size * 2, wrn_size * 4]
    strides = [1, 2, 2]
    x = images.permute(0, 2, 3, 1)
    x = conv_same(x, store.kernel("init/init_conv/weights", (3, 3, x.shape[-1], filters[0])))
    first_x = orig_x = x
    for block_num in range(1, 4):
        x = residual_block(
            x,
            filters[block_num - 1],
            filters[block_num],
            strides[block_num - 1],
            block_num == 1,
            f"unit_{block_num}_0/",
        )
        for i in range(1, n):
            x = residual_block(x, filters[block_num], filters[block_num], 1, False, f"unit_{block_num}_{i}/")
        x, orig_x = res_add(filters[block_num - 1], filters[block_num], strides[block_num - 1], x, orig_x)
    x, _ = res_add(filters[0], filters[3], math.prod(strides), x, first_x)
    x = F.relu(batch_norm(x, "unit_last/final_bn")).mean((1, 2))
    weights = store.kernel("unit_last/FC/weights", (x.shape[-1], classes))
    biases = store.params.setdefault("unit_last/FC/biases", store._rand((classes,), -0.1, 0.1))
    return x @ weights + biases


def aa_to_ours(store: Store) -> dict[str, torch.Tensor]:
    rules = [
        (r"^init/init_conv/weights$", "conv1.weight"),
        (r"^unit_(\d)_(\d+)/", lambda m: f"layer{m[1]}.{m[2]}."),
        (r"(shared_activation|residual_only_activation)/init_bn/", "bn1/"),
        (r"sub1/conv1/weights", "conv1.weight"),
        (r"sub2/bn2/", "bn2/"),
        (r"sub2/conv2/weights", "conv2.weight"),
        (r"^unit_last/final_bn/", "bn/"),
        (r"^unit_last/FC/", "fc/"),
    ]
    names = {
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    }
    return _rename({**store.params, **store.state}, rules, {**names, "weights": "weight", "biases": "bias"})


def _rename(tensors: dict[str, torch.Tensor], rules, leaves: dict[str, str]) -> dict[str, torch.Tensor]:
    """Their names -> our state-dict keys; HWIO kernels -> OIHW, (in, out) dense kernels -> (out, in)."""
    out = {}
    for name, t in tensors.items():
        key = name
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        if "/" in key:
            module, leaf = key.rsplit("/", 1)
            key = f"{module}.{leaves.get(leaf, leaf)}"
        key = key.replace("/", ".")
        if t.dim() == 4:
            t = t.permute(3, 2, 0, 1)
        elif t.dim() == 2:
            t = t.t()
        out[key] = t.contiguous()
    return out


REFERENCES = {"sam": (sam_reference, sam_to_ours), "aa": (aa_reference, aa_to_ours)}


def reference_count(family: str, depth: int, k: int, classes: int) -> int:
    """The trainable variables their code makes (on the meta device: shapes only)."""
    store = Store("meta")
    REFERENCES[family][0](
        store, torch.empty(1, 3, 32, 32, device="meta"), (depth - 4) // 6, k, classes, False
    )
    return sum(t.numel() for t in store.params.values())


# ---------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("family", ["sam", "aa"])
def test_wrn_28_10_counts_are_their_code_s_in_the_model_table(family, capsys):
    name = f"wrn-28-10-{family}"
    for classes in (10, 100):
        with torch.device("meta"):
            ours = count_parameters(create_model(name, num_classes=classes))
        assert ours == reference_count(family, 28, 10, classes)
    # the 1x1 projections of the paper's WRN-28-10 are all that is missing: 16*160 + 160*320 + 320*640
    assert shipped_rows()[name]["params"] == 36_479_194 - 258_560 == reference_count(family, 28, 10, 10)
    proc = wrn_here(capsys, "models", "--name", name)
    assert proc.returncode == 0 and "36,220,634" in proc.stdout


@pytest.mark.parametrize("family, depth, k", [("sam", 16, 1), ("sam", 16, 2), ("aa", 28, 1), ("aa", 16, 2)])
def test_outputs_equal_their_code_s_for_the_same_weights(family, depth, k):
    """k = 1: the first block keeps 16 channels (an identity shortcut, of the activated input in their code)."""
    forward, to_ours = REFERENCES[family]
    classes, n = 7, (depth - 4) // 6
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    store = Store(seed=depth + k)
    forward(store, images, n, k, classes, False)  # makes the variables
    ours = create_model(f"wrn-{depth}-{k}-{family}", num_classes=classes)
    missing, unexpected = ours.load_state_dict(to_ours(store), strict=False)
    assert unexpected == [] and all(key.endswith("num_batches_tracked") for key in missing)
    for train in (False, True):
        ours.train(train)
        with torch.no_grad():
            expected, got = forward(store, images, n, k, classes, train), ours(images)
        assert rel_diff(got, expected) <= 1e-5, train
    # the BN statistics moved as theirs (Flax updates the variance without Bessel's correction)
    updated = to_ours(store)
    for key, value in ours.state_dict().items():
        if key.endswith("running_mean") or (family == "aa" and key.endswith("running_var")):
            assert torch.allclose(value, updated[key], atol=1e-5, rtol=1e-4), key


def test_blocks_have_no_projection_and_first_blocks_take_the_raw_input():
    sam = create_model("wrn-16-2-sam")
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in sam.modules())
    assert [b.shortcut_preact for g in (sam.layer1, sam.layer2, sam.layer3) for b in g] == [True] + [
        False
    ] * 5
    assert all(b.conv_preact for g in (sam.layer1, sam.layer2, sam.layer3) for b in g)
    aa = create_model("wrn-16-2-aa")
    assert [type(g).__name__ for g in (aa.layer1, aa.layer2, aa.layer3)] == ["SkipGroup"] * 3
    assert aa.global_skip == 4 and sam.global_skip == 0
    with pytest.raises(ConfigError, match="set by the model name"):
        create_model("wrn-16-2-sam", shortcut="conv")
    with pytest.raises(ConfigError, match="shortcut must be one of conv, pool_pad, pool_pad_centred"):
        create_model("wrn-16-2", shortcut="zeros")


@pytest.mark.parametrize("name", ["wrn-16-4-sam", "wrn-16-4-aa"])
def test_their_networks_start_from_their_code_s_initialisation(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=100)
    assert model.config["init"] == "autoaugment" and model_info(name)["defaults"] == {"init": "autoaugment"}
    conv = model.layer3[1].conv2  # N(0, sqrt(2 / (k*k*C_out))): fan-out, not the paper's fan-in
    expected = math.sqrt(2 / (9 * conv.out_channels))
    assert abs(conv.weight.std().item() / expected - 1) < 0.02 and abs(conv.weight.mean().item()) < 1e-3
    stem = model.conv1.weight  # 3 -> 16: fan-out 144, fan-in 27
    assert abs(stem.std().item() / math.sqrt(2 / 144) - 1) < 0.15
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    bound = 1 / math.sqrt(100)  # U(+-1/sqrt(classes)), where the paper's uses 1/sqrt(256) = 0.0625
    assert model.fc.weight.abs().max() <= bound and model.fc.weight.abs().max() > 0.99 * bound
    assert torch.all(model.fc.bias == 0)
    model.reset_classifier(4)
    assert (
        model.fc.weight.abs().max() <= 0.5
        and model.fc.weight.abs().max() > 0.4
        and torch.all(model.fc.bias == 0)
    )
    paper = create_model(name, init="paper")  # the option overrides the name's default
    gammas = torch.cat([m.weight for m in paper.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert paper.config["init"] == "paper" and 0.45 < gammas.mean().item() < 0.55


def old_init_paper_(model: torch.nn.Module) -> None:
    """The authors' initialisation as the package applied it before the init option had other values."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.0, 1.0)
            torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            torch.nn.init.uniform_(m.weight, -bound, bound)
            torch.nn.init.zeros_(m.bias)


@pytest.mark.parametrize("name", ["wrn-28-10", "preact-resnet-164"])
def test_the_paper_s_networks_keep_their_weights_bit_for_bit(name):
    torch.manual_seed(0)
    now = create_model(name).state_dict()
    torch.manual_seed(0)
    before = create_model(name, init="pytorch")
    old_init_paper_(before)
    assert list(now) == list(before.state_dict())
    assert all(torch.equal(now[key], value) for key, value in before.state_dict().items())
    assert "shortcut" not in wrn.create_model("wrn-16-2").config  # model.json of the paper's nets unchanged


def test_model_json_keeps_the_network_and_its_init(tmp_path):
    model = create_model("wrn-16-1-aa", num_classes=5, init="pytorch").eval()
    wrn.save_model(model, tmp_path)
    again = wrn.load_model(tmp_path).eval()
    assert again.config == model.config
    assert again.config["init"] == "pytorch" and again.config["group_skips"] is True
    assert again.config["shortcut"] == "pool_pad_centred" and again.config["same_padding"] is True
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_any_input_size_and_the_global_skip_refuses_feature_chains():
    for name in ("wrn-10-1-sam", "wrn-10-1-aa"):
        model = create_model(name, in_channels=1).eval()
        for side in (8, 9, 33):
            assert model(torch.randn(2, 1, side, side)).shape == (2, 10)
    sam = create_model("wrn-10-1-sam").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = wrn.create_model("wrn-10-1-sam", features_only=True).eval()
        maps.load_state_dict(sam.state_dict(), strict=False)
        assert torch.equal(maps(x)[-1], sam.forward_features(x))
    with pytest.raises(ConfigError, match="AutoAugment's global skip"):
        create_model("wrn-10-1-aa", features_only=True)


def test_pt2_export_keeps_height_and_width_dynamic(tmp_path):
    """'SAME' padding halves a side rounding down: the export's smallest side is 8, where the last map is 2x2."""
    from wrn.models.export import export_model

    model = create_model("wrn-10-1-aa").eval()
    program = torch.export.load(export_model(model, tmp_path / "aa.pt2")).module()
    with torch.no_grad():
        for side in (8, 33):
            x = torch.randn(2, 3, side, side)
            assert rel_diff(program(x), model(x)) <= 1e-5
