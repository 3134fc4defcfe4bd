"""Import the WRN checkpoints of today's research, each exactly as its project computes it.

* FixMatch (kekmodel/FixMatch-pytorch, ``models/wideresnet.py``): xternalz's key names, but leaky ReLU 0.1, BN
  momentum 0.001, and only the first block of group 1 feeds its pre-activated input to ``conv1`` and the
  shortcut (``activate_before_residual``); the first blocks of groups 2 and 3 feed their raw input. Its
  ``train.py`` saves ``{'state_dict', 'ema_state_dict', 'acc', 'best_acc', 'optimizer', 'scheduler', ...}``.
* USB (microsoft/Semi-supervised-learning, ``semilearn/nets/wrn/wrn.py``): the same network with a bias on
  the stem conv, head BN eps 1e-3 and a ``classifier`` head, saved as ``{'model', 'ema_model', ...}``.
* DeepMind's WRN as RobustBench defines it (``robustbench/model_zoo/architectures/dm_wide_resnet.py``): keys
  ``init_conv``, ``layer.G.block.I.{batchnorm_0,conv_0,batchnorm_1,conv_1,shortcut}``, ``batchnorm``,
  ``logits``; swish; 'SAME' padding (0, 1, 0, 1) on the stride-2 convs; BN momentum 0.1 (PyTorch's default);
  a mean/std inside the forward (``mean``/``std`` buffers in older files; else the code's constants of the
  data set: CIFAR-100's at 100 classes, ``--dataset`` where 10 classes leave CIFAR-10 and SVHN open).
* The robustness training code (wzekai99/DM-Improves-AT, imrahulr/adversarial_robustness_pytorch):
  ``{'model_state_dict': averaged, 'unaveraged_model_state_dict': ...}`` of DataParallel around a Sequential
  of an optional normalisation layer and the xternalz or DeepMind WRN (``module.0.`` / ``module.1.``). Its
  DeepMind WRN (``core/models/wideresnetwithswish.py``) has BN momentum 0.01 and normalises inside its forward
  with the data set's constants, which its files do not hold (SVHN: mean = std = 0.5).

Where a file holds both the trained weights and their average (EMA), the average is read by default, as
those projects report it; ``weights="model"`` reads the other. A normalisation inside the forward becomes
the model's ``input_mean``/``input_std`` (pixels in [0, 1]) and is recorded for eval, predict and export.
Each format is one entry of :mod:`wrn.models.checkpoints`, which reads the file once and refuses what another
format claims; the ``read_*`` functions here are the entries' readers, the ``load_*`` functions their public
names.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from wrn.errors import CheckpointError
from wrn.models import checkpoints
from wrn.models.checkpoints import note
from wrn.models.registry import DM_NORM, FIXMATCH_OPTIONS
from wrn.models.xternalz import _few, build_from_xternalz_keys

USB = {**FIXMATCH_OPTIONS, "stem_bias": True, "head_bn_eps": 1e-3}
AT_NORM = {  # the normalisation layer's: DM-Improves-AT's and adversarial_robustness_pytorch's data descriptions
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # the same as CIFAR-10's there
}
# BN momentum of each code's DeepMind WRN: RobustBench's uses PyTorch's default, DM-Improves-AT's 0.01
DM_BN_MOMENTUM = {"dm": 0.1, "robustness": 0.01}
# The input each semi-supervised project's data code feeds, by data set (names of wrn.data's normalisations)
FIXMATCH_INPUT = {"cifar10": "cifar10", "cifar100": "cifar100"}  # its constants, to 4 digits
USB_INPUT = {"cifar10": "imagenet", "cifar100": "cifar100", "svhn": "svhn-stats"}
WEIGHTS = ("ema", "model")
_BY_CLASSES = {10: "cifar10", 100: "cifar100"}
_DM_BLOCK = re.compile(
    r"^layer\.([012])\.block\.(\d+)\.(batchnorm_0|conv_0|batchnorm_1|conv_1|shortcut)\.(\w+)$"
)
_DM_NAMES = {
    "batchnorm_0": "bn1",
    "conv_0": "conv1",
    "batchnorm_1": "bn2",
    "conv_1": "conv2",
    "shortcut": "shortcut",
}


def _choose(obj: dict[str, Any], source: str, keys: dict[str, str], weights: str | None) -> Any:
    """The entry of ``obj`` that ``weights`` names (``keys``: weights choice -> key), the EMA by default when
    the file holds both, with one note saying so."""
    present = {w: k for w, k in keys.items() if isinstance(obj.get(k), (dict, list))}
    if weights is None:
        weights = "ema" if "ema" in present else "model"
        if len(present) == 2:
            note(
                f"read the averaged (EMA) weights '{present['ema']}' of {source}, which its project reports; "
                "--weights model reads the trained weights instead"
            )
    if weights not in present:
        raise CheckpointError(
            f"{source} holds no {keys[weights]!r} weights (it has {_few([str(k) for k in obj])}); "
            f"choose --weights {'model' if weights == 'ema' else 'ema'}"
        )
    return obj[present[weights]]


def _semi_supervised_input(model: nn.Module, source: str, names: dict[str, str], dataset: str | None) -> None:
    """Record the input a semi-supervised project's data code feeds (``names``: data set -> normalisation)."""
    from wrn.data.registry import normalization_constants

    dataset = dataset or _BY_CLASSES.get(model.config["num_classes"])
    if model.config["in_channels"] != 3 or dataset not in names:
        return
    if dataset == "cifar10" and "svhn" in names and model.config["num_classes"] == 10:
        note(
            f"recorded CIFAR-10's input for {source}, whose 10 classes could also be SVHN's (normalised "
            "otherwise): --dataset svhn records SVHN's"
        )
    model.wrn_metadata = checkpoints.input_record(
        model, names[dataset], *normalization_constants(names[dataset]), dataset=dataset
    )


def read_fixmatch(obj: Any, source: str, weights: str | None = None, dropout: float = 0.0) -> nn.Module:
    """The reader of the ``fixmatch`` format."""
    if isinstance(obj, dict) and "ema_state_dict" in obj and "state_dict" in obj:
        obj = _choose(obj, source, {"ema": "ema_state_dict", "model": "state_dict"}, weights)
    params = checkpoints.state_dict(obj, source, "fixmatch")
    model = build_from_xternalz_keys(params, source, dropout=dropout, **FIXMATCH_OPTIONS)
    _semi_supervised_input(model, source, FIXMATCH_INPUT, None)
    return model


def read_usb(
    obj: Any, source: str, weights: str | None = None, dataset: str | None = None, dropout: float = 0.0
) -> nn.Module:
    """The reader of the ``usb`` format."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "ema_model" in obj:
        obj = _choose(obj, source, {"ema": "ema_model", "model": "model"}, weights)
    params = checkpoints.state_dict(obj, source, "usb")
    params = {
        ("fc." + k[len("classifier.") :] if k.startswith("classifier.") else k): v for k, v in params.items()
    }
    model = build_from_xternalz_keys(params, source, dropout=dropout, **USB)
    _semi_supervised_input(model, source, USB_INPUT, dataset)
    return model


def _dm_our_key(theirs: str) -> str | None:
    m = _DM_BLOCK.match(theirs)
    if m:
        g, i, module, field = m.groups()
        return f"layer{int(g) + 1}.{i}.{_DM_NAMES[module]}.{field}"
    for a, b in (("init_conv.", "conv1."), ("batchnorm.", "bn."), ("logits.", "fc.")):
        if theirs.startswith(a):
            return b + theirs[len(a) :]
    return None


def _norm_from(
    params: dict[str, torch.Tensor], names: tuple[str, str]
) -> tuple[list[float], list[float]] | None:
    if names[0] in params and names[1] in params:
        return params[names[0]].flatten().tolist(), params[names[1]].flatten().tolist()
    return None


def _compose(outer, inner):
    """One mean/std for ``inner`` applied after ``outer``: ((x - m1)/s1 - m2)/s2 = (x - (m1 + m2 s1))/(s1 s2)."""
    if outer is None:
        return inner
    (m1, s1), (m2, s2) = outer, inner
    return [a + b * c for a, b, c in zip(m1, m2, s1, strict=True)], [
        a * b for a, b in zip(s1, s2, strict=True)
    ]


def _dataset_for(source: str, classes: int, dataset: str | None, fmt: str, what: str) -> str:
    """The data set whose constants ``what`` takes: ``dataset`` if given, CIFAR-100 at 100 classes; else a
    refusal to guess."""
    if dataset is not None:
        return dataset
    if classes == 100:
        return "cifar100"
    raise CheckpointError(
        f"{source} does not hold {what}, and its {classes} classes do not tell the data set (CIFAR-10's and "
        f"SVHN's constants differ): pass --dataset cifar10 or --dataset svhn to `wrn convert {fmt}`"
    )


def _build_dm(
    params: dict[str, torch.Tensor], source: str, fmt: str, act: str | None, dataset: str | None, outer=None
) -> nn.Module:
    """Our WRN with 'SAME' padding, the BN momentum of ``fmt``'s code and the input normalisation from
    DeepMind-named ``params``."""
    if act is None:
        act = "silu"
        note(
            f"{source} does not hold its activation: built with swish (SiLU), as the top RobustBench entries; "
            "--act relu builds DeepMind's ReLU WRN"
        )
    from wrn.models.checked import load_state_dict_checked

    state, extra = {}, []
    for key, value in params.items():
        ours = _dm_our_key(key)
        if ours is not None:
            state[ours] = value
        elif key not in ("mean", "std"):
            extra.append(key)
    if (
        extra
        or "conv1.weight" not in state
        or "layer1.0.conv1.weight" not in state
        or "fc.weight" not in state
    ):
        raise CheckpointError(
            f"{source} is not DeepMind's WRN: unexpected keys {_few(extra or list(params))}"
        )
    classes = state["fc.weight"].shape[0]
    norm = _norm_from(params, ("mean", "std"))
    if norm is None:
        chosen = _dataset_for(source, classes, dataset, fmt, "the mean/std its forward applies")
        norm = DM_NORM[chosen]
        if dataset is None:
            note(f"{source} does not hold its mean/std: used the code's CIFAR-100 constants {norm}")
    mean, std = _compose(outer, norm)
    blocks = {int(m.group(2)) for k in params if (m := _DM_BLOCK.match(k)) and m.group(1) == "0"}
    width, rem = divmod(state["layer1.0.conv1.weight"].shape[0], 16)
    if rem or not blocks:
        raise CheckpointError(f"{source}: group 1 is {state['layer1.0.conv1.weight'].shape[0]} wide, not 16k")
    model = checkpoints.create_checked(
        f"wrn-{6 * len(blocks) + 4}-{width}",
        source,
        num_classes=classes,
        in_channels=state["conv1.weight"].shape[1],
        act=act,
        bn_momentum=DM_BN_MOMENTUM[fmt],
        same_padding=True,
        input_mean=mean,
        input_std=std,
    )
    for key in model.state_dict():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    load_state_dict_checked(model, state, source)
    return model


def read_dm(obj: Any, source: str, act: str | None = None, dataset: str | None = None) -> nn.Module:
    """The reader of the ``dm`` format: DeepMind's WRN as RobustBench's code builds it (BN momentum 0.1)."""
    params = checkpoints.state_dict(obj, source, "dm")
    model = _build_dm(params, source, "dm", act, dataset)
    return _pixels_input(model, dataset, DM_NORM)


def read_robustness(
    obj: Any, source: str, weights: str | None = None, act: str | None = None, dataset: str | None = None
) -> nn.Module:
    """The reader of the ``robustness`` format: ``model_state_dict`` (the averaged weights they evaluate) by
    default, ``weights="model"`` for ``unaveraged_model_state_dict``; the normalisation layer ``module.0``
    (constants from the code's data description, by data set) or ``mu``/``sigma`` buffers are kept inside
    the forward; its DeepMind WRN has DM-Improves-AT's BN momentum 0.01."""
    if isinstance(obj, dict) and any(k in obj for k in ("model_state_dict", "unaveraged_model_state_dict")):
        obj = _choose(
            obj, source, {"ema": "model_state_dict", "model": "unaveraged_model_state_dict"}, weights
        )
    if isinstance(obj, list):
        raise CheckpointError(f"{source} holds an ensemble of {len(obj)} networks; wrn imports one network")
    params = checkpoints.state_dict(obj, source, "robustness", wrappers=())
    layer = any(
        k.startswith("1.") for k in params
    )  # Sequential(Normalization, WRN): the layer has no tensors
    if layer:
        params = {k[2:]: v for k, v in params.items() if k.startswith("1.")}
    elif all(k.startswith("0.") for k in params):
        params = {k[2:]: v for k, v in params.items()}
    buffers = _norm_from(params, ("mu", "sigma"))
    params = {k: v for k, v in params.items() if k not in ("mu", "sigma")}
    dm = "init_conv.weight" in params
    head = "logits.weight" if dm else "fc.weight"
    if head not in params:
        raise CheckpointError(
            f"{source} holds no {head!r}: the WRN inside it is neither xternalz's nor DeepMind's"
        )
    classes = params[head].shape[0]
    outer = buffers
    if layer and outer is None:
        chosen = dataset or {10: "cifar10", 100: "cifar100"}.get(classes)
        if chosen is None:
            chosen = _dataset_for(source, classes, None, "robustness", "its normalisation layer's constants")
        outer = AT_NORM[chosen]
        note(
            f"{source} has a normalisation layer whose constants the file does not hold: used the code's "
            f"{chosen} mean {outer[0]}, std {outer[1]}"
        )
    if dm:
        model = _build_dm(params, source, "robustness", act, dataset, outer)
    else:
        norm = {} if outer is None else {"input_mean": outer[0], "input_std": outer[1]}
        model = build_from_xternalz_keys(params, source, **norm)
    return _pixels_input(model, dataset, AT_NORM if not dm else DM_NORM)


def _pixels_input(model: nn.Module, dataset: str | None, table) -> nn.Module:
    """Record, for eval, predict and export, that the model takes pixels in [0, 1] (normalisation
    ``pixels``: pixels / 255), with the mean/std it applies inside its forward, if any."""
    from wrn.data.registry import normalization_constants

    classes = model.config["num_classes"]
    dataset = dataset or {100: "cifar100"}.get(classes)
    if dataset is None and classes == 10 and model.config.get("input_mean") is not None:
        inside = (model.config["input_mean"], model.config["input_std"])
        if all(
            torch.allclose(
                torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), atol=1e-4
            )
            for a, b in zip(inside, table["cifar10"], strict=True)
        ):
            dataset = "cifar10"  # the constants are CIFAR-10's
    model.wrn_metadata = checkpoints.input_record(
        model, "pixels", *normalization_constants("pixels"), dataset=dataset
    )
    if model.config.get("input_mean") is not None:
        model.wrn_metadata["input"]["inside_forward"] = {
            "mean": model.config["input_mean"],
            "std": model.config["input_std"],
        }
    return model


def load_fixmatch(
    path_or_dict: str | os.PathLike | dict[str, Any], weights: str | None = None, dropout: float = 0.0
) -> nn.Module:
    """FixMatch's WRN (kekmodel/FixMatch-pytorch and its copies) in eval mode: its ``train.py`` checkpoint
    (the EMA weights by default) or a bare state dict."""
    return checkpoints.load("fixmatch", path_or_dict, weights=weights, dropout=dropout)


def load_usb(
    path_or_dict: str | os.PathLike | dict[str, Any],
    weights: str | None = None,
    dropout: float = 0.0,
    dataset: str | None = None,
) -> nn.Module:
    """USB's WRN (microsoft/Semi-supervised-learning) in eval mode: its ``{'model', 'ema_model', ...}``
    checkpoint (the EMA weights by default) or a bare state dict; ``dataset`` picks the input recorded where
    10 classes leave CIFAR-10 and SVHN open."""
    return checkpoints.load("usb", path_or_dict, weights=weights, dropout=dropout, dataset=dataset)


def load_dm(
    path_or_dict: str | os.PathLike | dict[str, Any], act: str | None = None, dataset: str | None = None
) -> nn.Module:
    """DeepMind's WRN (RobustBench's ``DMWideResNet``) in eval mode, from its state dict (bare or under
    ``'state_dict'``/``'model'``). ``act``: its activation, which the file does not hold: ``"silu"`` (swish,
    the top RobustBench entries; the default, with a note) or ``"relu"``; ``dataset``: whose mean/std its
    forward applies, where the file does not hold them and its classes do not tell."""
    return checkpoints.load("dm", path_or_dict, act=act, dataset=dataset)


def load_robustness(
    path_or_dict: str | os.PathLike | dict[str, Any],
    weights: str | None = None,
    act: str | None = None,
    dataset: str | None = None,
) -> nn.Module:
    """A WRN saved by DM-Improves-AT or adversarial_robustness_pytorch (see :func:`read_robustness`)."""
    return checkpoints.load("robustness", path_or_dict, weights=weights, act=act, dataset=dataset)
