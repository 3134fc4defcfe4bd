"""Model names -> constructors, and one ``create_model``.

Names (the paper's networks, docs/models.md):

* ``wrn-D-K``: CIFAR/SVHN WRN of depth D = 6n+4 and width K, B(3,3) blocks;
* ``wrn-D-K-bDIGITS``: block type B(M), M the kernel list (``b131`` = B(1,3,1)); N = (D-4)/6;
* ``wrn-D-K-lL``: Table 3's all-3x3 block with L convs and N = (D-4)/(3L);
* ``wrn-D-K-fixmatch`` (``wrn-28-2-fixmatch``, ``wrn-28-8-fixmatch``): the WRNs of FixMatch and its
  successors (leaky ReLU, BN momentum 0.001, raw input to the first blocks of groups 2 and 3);
* ``wrn-D-K-sam`` (``wrn-28-10-sam``): the WRN of SAM's code (average pool and zero-pad shortcuts, 'SAME'
  padding, AutoAugment's initialisation);
* ``wrn-D-K-aa`` (``wrn-28-10-aa``): the WRN of AutoAugment's code (the same with the zeros centred, plus a
  skip around each group and one from the stem to the last group);
* ``wrn-D-K-dm`` (``wrn-28-10-dm``): DeepMind's WRN as DM-Improves-AT trains it (``wideresnetwithswish.py``:
  swish, BN momentum 0.01, 'SAME' padding on the stride-2 convs, xternalz's initialisation and CIFAR-10's
  mean/std inside its forward, which takes pixels in [0, 1]);
* ``preact-resnet-110`` (basic), ``preact-resnet-164``, ``preact-resnet-1001`` (bottleneck);
* ImageNet, torchvision-compatible: ``resnet-18/34/50/101/152``, ``wrn-50-2``, ``wrn-101-2``,
  ``imagenet-wrn-18-{1.0,1.5,2.0,3.0}``, ``imagenet-wrn-34-{1.0,1.5,2.0,3.0}``.

Any depth and width that the patterns admit can be built (``wrn-70-16`` of the robustness literature too);
:func:`list_models` lists the named ones. ``create_model(name, features_only=True, out_indices=...)`` gives the
feature maps of the stem and of each group instead of the classifier (timm's convention, see
:mod:`wrn.models.features`).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from wrn.errors import ConfigError
from wrn.models.cifar import PreActResNet, WideResNet
from wrn.models.features import FeatureNet
from wrn.models.imagenet import ImageNetResNet

ARCHS: dict[str, type[nn.Module]] = {
    "WideResNet": WideResNet,
    "PreActResNet": PreActResNet,
    "ImageNetResNet": ImageNetResNet,
}


@dataclass(frozen=True)
class _Entry:
    """What a model name stands for."""

    cls: type[nn.Module]
    fixed: dict[str, Any]  # the constructor arguments the name fixes
    input_size: int  # native input side
    num_classes: int  # default classes
    paper: str  # the paper's figure and where it appears
    # the constructor arguments the name sets but a caller may override (the init of SAM's WRN)
    defaults: dict[str, Any] = field(default_factory=dict)


_NAMED: dict[str, _Entry] = {}

_CIFAR_PAPER = {
    "wrn-40-1": "0.6M (T4)",
    "wrn-40-2": "2.2M (T3, T4)",
    "wrn-40-4": "8.9M (T4, T5)",
    "wrn-40-8": "35.7M (T4)",
    "wrn-28-10": "36.5M (T4-T6)",
    "wrn-28-12": "52.5M (T4)",
    "wrn-22-8": "17.2M (T4)",
    "wrn-22-10": "26.8M (T4)",
    "wrn-16-8": "11.0M (T4, T5)",
    "wrn-16-10": "17.1M (T4)",
    "wrn-16-4": "- (T6)",
    "wrn-52-1": "- (T6)",
    "wrn-40-10": "56M (T9)",
    "wrn-28-2": "1.5M (T2)",
    "wrn-34-10": "-",
    "wrn-40-2-b131": "1.4M (T2)",
    "wrn-40-2-b31": "1.2M (T2)",
    "wrn-40-2-b13": "1.3M (T2)",
    "wrn-40-2-b311": "1.3M (T2)",
    "wrn-22-2-b313": "1.1M (T2)",
    "wrn-40-2-l1": "2.2M (T3)",
    "wrn-40-2-l2": "2.2M (T3)",
    "wrn-40-2-l3": "2.2M (T3)",
    "wrn-40-2-l4": "2.2M (T3)",
}

# FixMatch's WRN (Sohn et al. 2020, and the ports that train it): leaky ReLU 0.1, BN momentum 0.001 (TensorFlow's
# decay 0.999), and only group 1's first block feeds its pre-activated input to conv1 and the shortcut.
FIXMATCH_OPTIONS: dict[str, Any] = {"act": "leaky_relu", "bn_momentum": 0.001, "preact_first": (1,)}
# SAM's WRN (google-research/sam, sam_jax/models/wide_resnet.py as models/load_model.py builds it; the
# additional skips of its flag use_additional_skip_connections are off by default) and AutoAugment's
# (tensorflow/models, research/autoaugment/wrn.py and custom_ops.py, built by train_cifar.py): parameter-free
# shortcuts and TensorFlow's 'SAME' padding; AutoAugment's adds the skips around the groups.
SAM_OPTIONS: dict[str, Any] = {"shortcut": "pool_pad", "same_padding": True}
AUTOAUGMENT_OPTIONS: dict[str, Any] = {
    "shortcut": "pool_pad_centred",
    "same_padding": True,
    "group_skips": True,
}
# wrn-D-K-<suffix>, any depth and width: the options the suffix fixes, and those it sets by default (a caller
# may override them: create_model("wrn-28-10-sam", init="paper"))
# DeepMind's WRN (Gowal et al. 2020), as DM-Improves-AT's core/models/wideresnetwithswish.py builds it for
# training (wzekai99/DM-Improves-AT, and imrahulr/adversarial_robustness_pytorch before it): swish (nn.SiLU), BN
# momentum 0.01 (Haiku's decay 0.99), 'SAME' padding (0, 1, 0, 1) before the stride-2 convs; its
# initialisation is xternalz's (conv N(0, sqrt(2 / (k k C_out))), BN 1 / 0, the Linear's bias 0), and its
# forward normalises pixels in [0, 1] with the mean/std of the data set it is built for (DM_NORM; CIFAR-10's by
# default, as its constructor).
DM_OPTIONS: dict[str, Any] = {"act": "silu", "bn_momentum": 0.01, "same_padding": True}
# The mean/std (pixels in [0, 1]) that DeepMind's WRN applies inside its forward, by data set: RobustBench's and
# DM-Improves-AT's constants for CIFAR, DM-Improves-AT's for SVHN (the only DeepMind WRN code that trains it).
DM_NORM: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
_DM_DEFAULTS: dict[str, Any] = {
    "init": "xternalz",
    "input_mean": DM_NORM["cifar10"][0],
    "input_std": DM_NORM["cifar10"][1],
}
_FAMILIES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "fixmatch": (FIXMATCH_OPTIONS, {}),
    "sam": (SAM_OPTIONS, {"init": "autoaugment"}),
    "aa": (AUTOAUGMENT_OPTIONS, {"init": "autoaugment"}),
    "dm": (DM_OPTIONS, _DM_DEFAULTS),
}
_FAMILY_PAPER = {
    "wrn-28-2-fixmatch": "1.5M (FixMatch)",
    "wrn-28-8-fixmatch": "23.4M (FixMatch)",
    "wrn-28-10-sam": "- (SAM)",
    "wrn-28-10-aa": "- (AutoAugment)",
    "wrn-28-10-dm": "- (DM-Improves-AT)",
}

_CIFAR_RE = re.compile(r"^wrn-(\d+)-(\d+)(?:-b(\d+)|-l(\d+)|-(" + "|".join(_FAMILIES) + r"))?$")

# The largest sizes a model may ask for, far above every network of the paper and of today's literature
# (preact-resnet-1001, wrn-70-16 with 267M parameters, ImageNet-21k's 21,843 classes, 224-pixel inputs):
# checked by check_config before anything is built, for a name, a model.json and a checkpoint's config alike,
# so that a file asking for a network of 60 million layers is one sentence, not a hang.
MAX_DEPTH = 2_000  # layers (a bottleneck block counts 3, a basic block 2)
MAX_WIDTH = 64  # widening factor k of a WRN, width multiplier of an ImageNet ResNet
MAX_KERNEL = 7  # the side of a block's convs: B(M) uses 1 and 3
MAX_PARAMETERS = 4_000_000_000  # 16 GB of float32 weights
MAX_CLASSES = 1_000_000
MAX_CHANNELS = 64  # image channels
MAX_IMAGE_SIZE = 4_096  # the side of an input image (predict, export, model.json's input record)


def _parse_cifar(name: str) -> _Entry | None:
    """What a ``wrn-D-K[-bM|-lL|-FAMILY]`` name stands for, None if it is not of that form."""
    m = _CIFAR_RE.match(name)
    if m is None:
        return None
    fixed, defaults = _FAMILIES.get(m.group(5), ({}, {}))
    args = _cifar_args(name, m)
    return _Entry(WideResNet, {**args, **fixed}, 32, 10, "-", dict(defaults))


def _cifar_args(name: str, m: re.Match) -> dict[str, Any]:
    """Depth, width, kernels (and blocks per group) of a ``wrn-D-K[-bM|-lL]`` match, checked."""
    depth, width = int(m.group(1)), int(m.group(2))
    if width <= 0:
        raise ConfigError(f"{name}: the widening factor k must be a positive integer.")
    if m.group(4) is not None:  # -lL: L all-3x3 convs per block, N = (depth-4)/(3L)
        n_convs = int(m.group(4))
        if n_convs < 1 or depth <= 4 or (depth - 4) % (3 * n_convs):
            step = 3 * max(n_convs, 1)
            raise ConfigError(
                f"{name}: with -l{n_convs} ({n_convs} convs per block), depth-4 must be a positive multiple of "
                f"3*{n_convs} = {step}, e.g. depth {4 + step} or {4 + 2 * step}; got {depth}."
            )
        return {
            "depth": depth,
            "width": width,
            "kernels": (3,) * n_convs,
            "blocks_per_group": (depth - 4) // (3 * n_convs),
        }
    if depth < 10 or (depth - 4) % 6:
        hint = " (the ImageNet bottleneck WRNs are wrn-50-2 and wrn-101-2)" if depth in (50, 101) else ""
        raise ConfigError(
            f"{name}: CIFAR depth must be 6n+4 (10, 16, 22, 28, 34, 40, ...), got {depth}{hint}."
        )
    kernels = (3, 3)
    if m.group(3) is not None:
        kernels = tuple(int(c) for c in m.group(3))
        if any(k % 2 == 0 for k in kernels):
            raise ConfigError(f"{name}: block kernels must be odd (1, 3, 5, ...), got {kernels}.")
    return {"depth": depth, "width": width, "kernels": kernels}


def _register_all() -> None:
    for name, paper in {**_CIFAR_PAPER, **_FAMILY_PAPER}.items():
        _NAMED[name] = replace(_parse_cifar(name), paper=paper)
    _NAMED["preact-resnet-110"] = _Entry(PreActResNet, {"depth": 110, "block": "basic"}, 32, 10, "1.7M")
    _NAMED["preact-resnet-164"] = _Entry(
        PreActResNet, {"depth": 164, "block": "bottleneck"}, 32, 10, "1.7M (T5)"
    )
    _NAMED["preact-resnet-1001"] = _Entry(
        PreActResNet, {"depth": 1001, "block": "bottleneck"}, 32, 10, "10.2M (T5)"
    )
    imagenet = {
        "resnet-18": ("basic", (2, 2, 2, 2), 1.0, "11.7M (T7)"),
        "resnet-34": ("basic", (3, 4, 6, 3), 1.0, "21.8M (T7)"),
        "resnet-50": ("bottleneck", (3, 4, 6, 3), 1.0, "25.6M (T8)"),
        "resnet-101": ("bottleneck", (3, 4, 23, 3), 1.0, "44.5M (T8)"),
        "resnet-152": ("bottleneck", (3, 8, 36, 3), 1.0, "60.2M (T8)"),
        "wrn-50-2": ("bottleneck", (3, 4, 6, 3), 2.0, "68.9M (T8)"),
        "wrn-101-2": ("bottleneck", (3, 4, 23, 3), 2.0, "-"),
    }
    paper_basic = {
        (18, "1.0"): "11.7M (T7)",
        (18, "1.5"): "25.9M (T7)",
        (18, "2.0"): "45.6M (T7)",
        (18, "3.0"): "101.8M (T7)",
        (34, "1.0"): "21.8M (T7)",
        (34, "1.5"): "48.6M (T7)",
        (34, "2.0"): "86.0M (T7)",
        (34, "3.0"): "-",
    }
    for (depth, w), paper in paper_basic.items():
        layers = (2, 2, 2, 2) if depth == 18 else (3, 4, 6, 3)
        imagenet[f"imagenet-wrn-{depth}-{w}"] = ("basic", layers, float(w), paper)
    for name, (block, layers, width, paper) in imagenet.items():
        _NAMED[name] = _Entry(
            ImageNetResNet, {"block": block, "layers": layers, "width": width}, 224, 1000, paper
        )


_register_all()


def list_models(pattern: str | None = None) -> list[str]:
    """The registered model names, optionally filtered by a shell pattern such as ``"wrn-40-*"`` (case does
    not matter, as for :func:`create_model`)."""
    names = list(_NAMED)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern.strip().lower())] if pattern else names


def _resolve(name: str) -> _Entry:
    if not isinstance(name, str):
        raise ConfigError(f"a model name must be a string such as 'wrn-28-10', got {name!r}.")
    key = name.strip().lower()
    if key.endswith("-b33") and _CIFAR_RE.match(
        key
    ):  # B(3,3) is the default block; its suffix may be omitted
        key = key[: -len("-b33")]
    if key in _NAMED:
        return _NAMED[key]
    entry = _parse_cifar(key)
    if entry is not None:
        return entry
    close = difflib.get_close_matches(key, list_models(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"unknown model {name!r}{hint} (`wrn models` lists every name; any wrn-D-K with D = 6n+4 works)."
    )


def model_info(name: str) -> dict[str, Any]:
    """Family facts of a name: its class, native input size, default number of classes, paper figure, the
    arguments it fixes (``args``) and those it sets by default (``defaults``, which a caller may override)."""
    entry = _resolve(name)
    return {
        "arch": entry.cls.__name__,
        "input_size": entry.input_size,
        "num_classes": entry.num_classes,
        "paper": entry.paper,
        "args": dict(entry.fixed),
        "defaults": dict(entry.defaults),
    }


def create_model(
    name: str,
    num_classes: int | None = None,
    features_only: bool = False,
    out_indices: int | tuple[int, ...] | None = None,
    pretrained: bool | str = False,
    **overrides: Any,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: a registered name or any ``wrn-D-K[-bM|-lL]`` (see :func:`list_models`).
        num_classes: classifier outputs; default 10 for the CIFAR/SVHN families, 1000 for the ImageNet ones;
            0 for no classifier (the model returns its pooled features).
        features_only: return a :class:`~wrn.models.features.FeatureNet` whose forward gives the feature
            maps of the stem and of each group as a list (timm's convention), with ``feature_info``.
        out_indices: with ``features_only``, which maps: None (all), an int n (the last n) or indices,
            e.g. ``(1, 2, 3)`` for the three groups of a CIFAR WRN.
        pretrained: torchvision's ImageNet weights for the ImageNet ResNets and ``wrn-50-2``/``wrn-101-2``
            (True: torchvision's default, or ``"IMAGENET1K_V1"``/``"IMAGENET1K_V2"``), through torchvision's
            weights API; see :mod:`wrn.models.pretrained`. No pretrained weights exist for the CIFAR networks.
        **overrides: constructor arguments that the name does not fix, e.g. ``dropout=0.3``,
            ``in_channels=1``, ``init="pytorch"``, ``act="silu"``, ``bn_momentum=0.001``; they win over the
            name's defaults (``init="autoaugment"`` of ``wrn-D-K-sam`` and ``wrn-D-K-aa``).

    The model carries ``model.config``, a plain dict from which :func:`build_model` rebuilds it.
    """
    entry = _resolve(name)
    cls, fixed, default_classes = entry.cls, entry.fixed, entry.num_classes
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "num_classes", *fixed)]
    for key in overrides:
        if key in fixed:
            raise ConfigError(
                f"{key!r} is set by the model name {name!r}; choose another name instead of overriding it."
            )
        if key not in allowed:
            options = ", ".join(["num_classes", *allowed])
            raise ConfigError(f"{cls.__name__} has no option {key!r}; the options are: {options}.")
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices only applies with features_only=True.")
    if pretrained is not False:
        from wrn.models import pretrained as tv

        tv.weights_for(name, pretrained)  # the name and the choice first, before anything is fetched
        if num_classes not in (None, default_classes) or overrides:
            raise ConfigError(
                f"pretrained weights fit {name} as published ({default_classes} classes, no options); build it "
                "with pretrained=..., then reset_classifier(n) for another number of classes."
            )
        weights, state = tv.fetch(name, pretrained)
    classes = default_classes if num_classes is None else num_classes
    arguments = {**entry.defaults, **overrides}
    check_config({"arch": cls.__name__, **fixed, "num_classes": classes, **arguments}, name.strip().lower())
    model = cls(**fixed, num_classes=classes, **arguments)
    model.config = {"name": name.strip().lower(), **model.config}
    if pretrained is not False:
        tv.load_into(model, weights, state)
    if not features_only:
        return model
    net = FeatureNet(model, out_indices)
    if hasattr(model, "wrn_metadata"):
        net.wrn_metadata = model.wrn_metadata
    return net


def build_model(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its ``model.config`` (the inverse of reading ``model.config``), once
    :func:`check_config` has found nothing wrong with it."""
    check_config(config)
    cls = ARCHS[config["arch"]]
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in config.items() if k not in ("arch", "name", "features_only", "out_indices")}
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ConfigError(f"the model config has keys {unknown} that {cls.__name__} does not take.")
    for key in ("kernels", "layers"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    model = cls(**kwargs)
    if "name" in config:
        model.config = {"name": config["name"], **model.config}
    if config.get("features_only"):
        return FeatureNet(model, config.get("out_indices"))
    return model


# ------------------------------------------------------------------------------------------- the one check


def check_config(config: dict[str, Any], name: str | None = None) -> None:
    """A model's config (``model.config``, the ``config`` of a model.json) checked before anything is built:
    a known ``arch``; a ``name``, if any, that is a model name and agrees with the fields it fixes; and sizes
    within the bounds above (layers, width, kernels, classes, channels, parameters). A
    :class:`ConfigError` naming the field otherwise (``config.depth``; ``depth`` of the model ``name`` when
    :func:`create_model` builds one by its name)."""
    field = "{}" if name else "config.{}"
    subject = f"the model {name}" if name else "the config"
    if not isinstance(config, dict) or config.get("arch") not in ARCHS:
        got = config.get("arch") if isinstance(config, dict) else config
        raise ConfigError(f"a model config needs an 'arch' among {', '.join(ARCHS)}; got {_shown(got)}.")
    if "name" in config:
        _check_name(config)
    for key, low, high in (("num_classes", 0, MAX_CLASSES), ("in_channels", 1, MAX_CHANNELS)):
        value = config.get(key, low)
        if _is_number(value) and not low <= value <= high:
            raise ConfigError(f"{field.format(key)} is {value}; it must be between {low} and {high:,}.")
    width = config.get("width", 1)
    if _is_number(width) and width > MAX_WIDTH:
        raise ConfigError(f"{field.format('width')} is {width}, wider than the {MAX_WIDTH} a model may be.")
    kernels = config.get("kernels") or ()
    if isinstance(kernels, (list, tuple)) and any(_is_number(k) and k > MAX_KERNEL for k in kernels):
        raise ConfigError(
            f"{field.format('kernels')} {_shown(kernels)} has a kernel larger than {MAX_KERNEL}."
        )
    layers, weights = _size(config)
    if layers > MAX_DEPTH:
        raise ConfigError(
            f"{subject} asks for {layers:,} layers, more than the {MAX_DEPTH:,} a model may have."
        )
    if weights > MAX_PARAMETERS:
        raise ConfigError(
            f"{subject} asks for about {weights / 1e9:.0f} billion parameters, more than the "
            f"{MAX_PARAMETERS / 1e9:.0f} billion a model may have."
        )


def check_image_size(image_size: Any, least: int = 1, multiple: int = 1) -> int:
    """``--image-size`` as an int if it is a whole number of pixels from ``least`` to
    :data:`~wrn.models.registry.MAX_IMAGE_SIZE` (and a multiple of ``multiple``); else one sentence."""
    if isinstance(image_size, bool) or int(image_size) != image_size:
        raise ConfigError(f"--image-size must be a whole number of pixels, not {image_size}")
    if not least <= image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"--image-size {image_size} is out of range: give a side from {least} to {MAX_IMAGE_SIZE} pixels"
        )
    if image_size % multiple:
        raise ConfigError(
            f"--image-size {image_size} does not fit the model, which takes sides that are multiples of "
            f"{multiple} (its 'SAME' padding); give e.g. {image_size - image_size % multiple or multiple}"
        )
    return int(image_size)


def _check_name(config: dict[str, Any]) -> None:
    """``config["name"]`` is a model name of ``config["arch"]`` whose fixed fields the config has."""
    name = config["name"]
    try:
        entry = _resolve(name)
    except ConfigError:
        raise ConfigError(
            f"config.name {_shown(name)} is not a model name (`wrn models` lists them; any wrn-D-K works)."
        ) from None
    if entry.cls.__name__ != config["arch"]:
        raise ConfigError(
            f"config.name {_shown(name)} names a {entry.cls.__name__}, not the {config['arch']} of config.arch."
        )
    for key, value in entry.fixed.items():
        have = config.get(key)
        if _plain(have) != _plain(value):
            raise ConfigError(
                f"config.name {_shown(name)} has {key} {_plain(value)}, but config.{key} is {_shown(have)}."
            )


def _size(config: dict[str, Any]) -> tuple[int, int]:
    """The layers (a bottleneck block counts 3, a basic block 2) and about how many weights (conv and
    Linear; BN's few left out) ``config`` stands for, from its fields alone; 0 for fields of the wrong type,
    which the constructor then names."""
    get = {k: v for k, v in config.items() if _is_number(v) or isinstance(v, (list, tuple))}
    classes, c_in = get.get("num_classes", 10), get.get("in_channels", 3)
    if config["arch"] == "ImageNetResNet":
        layers, width = get.get("layers", (3, 4, 6, 3)), get.get("width", 1.0)
        if not all(_is_number(n) for n in layers):
            return 0, 0
        bottleneck = config.get("block", "bottleneck") == "bottleneck"
        weights, c = c_in * 64 * 49, 64
        for planes, n in zip((64, 128, 256, 512), layers, strict=False):  # the constructor wants 4
            inner = planes * width
            out = 4 * planes if bottleneck else inner
            weights += _resnet_block(c, inner, out, bottleneck) + c * out
            weights += (n - 1) * _resnet_block(out, inner, out, bottleneck)
            c = out
        return (3 if bottleneck else 2) * int(sum(layers)) + 2, int(weights + c * classes)
    depth = get.get("depth", 28)
    if config["arch"] == "PreActResNet":  # 16 to 256 wide: its weights grow with its depth only
        return int(depth), 0
    kernels, width = get.get("kernels", (3, 3)), get.get("width", 10)
    n = get.get("blocks_per_group", (depth - 4) // 6)
    if not all(_is_number(k) for k in kernels):
        return int(depth), 0
    projection = 1 if config.get("shortcut", "conv") == "conv" else 0  # the pooled shortcuts hold none
    weights, c = c_in * 16 * 9, 16
    for planes in (16 * width, 32 * width, 64 * width):
        convs = [k * k * planes * planes for k in kernels]
        weights += c * planes * (projection + kernels[0] ** 2) + sum(convs[1:]) + (n - 1) * sum(convs)
        c = planes
    return max(int(depth), 3 * int(n) * len(kernels) + 4), int(weights + c * classes)


def _resnet_block(c_in: float, inner: float, out: float, bottleneck: bool) -> float:
    """The weights of an ImageNet ResNet block without its shortcut."""
    if bottleneck:
        return c_in * inner + 9 * inner * inner + inner * out
    return 9 * c_in * inner + 9 * inner * inner


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _shown(value: Any) -> str:
    """``value`` as a short repr: control characters escaped, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
