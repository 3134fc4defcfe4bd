"""Import the WRN checkpoints of today's research, each exactly as its project computes it.

* FixMatch (kekmodel/FixMatch-pytorch, ``models/wideresnet.py``): xternalz's key names, but leaky ReLU 0.1, BN
  momentum 0.001, and only the first block of group 1 feeds its pre-activated input to ``conv1`` and the
  shortcut (``activate_before_residual``); the first blocks of groups 2 and 3 feed their raw input. Its
  ``train.py`` saves ``{'state_dict', 'ema_state_dict', 'acc', 'best_acc', 'optimizer', 'scheduler', ...}``.
* USB (microsoft/Semi-supervised-learning, ``semilearn/nets/wrn/wrn.py``): the same network with a bias on
  the stem conv, head BN eps 1e-3 and a ``classifier`` head, saved as ``{'model', 'ema_model', ...}``.
* DeepMind's WRN (RobustBench's ``dm_wide_resnet.py``): keys ``init_conv``,
  ``layer.G.block.I.{batchnorm_0,conv_0,batchnorm_1,conv_1,shortcut}``, ``batchnorm``, ``logits``; swish;
  'SAME' padding (0, 1, 0, 1) on the stride-2 convs; a mean/std inside the forward (``mean``/``std`` buffers
  in newer files, else the code's CIFAR-10 constants, CIFAR-100's for 100 classes).
* The robustness training code (wzekai99/DM-Improves-AT, imrahulr/adversarial_robustness_pytorch):
  ``{'model_state_dict': averaged, 'unaveraged_model_state_dict': ...}`` of DataParallel around a Sequential
  of an optional normalisation layer and the xternalz or DeepMind WRN (``module.0.`` / ``module.1.``).

Where a file holds both the trained weights and their average (EMA), the average is read by default, as
those projects report it; ``weights="model"`` reads the other. A normalisation inside the forward becomes
the model's ``input_mean``/``input_std`` (pixels in [0, 1]) and is recorded for eval, predict and export.
Files are opened with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import torch
from torch import nn

from wrn.errors import CheckpointError
from wrn.models.formats import _is_fixmatch_file, _is_usb_file
from wrn.models.registry import FIXMATCH_OPTIONS
from wrn.models.xternalz import (
    ConversionWarning,
    _few,
    _read,
    _state_dict,
    build_from_xternalz_keys,
)

FIXMATCH = FIXMATCH_OPTIONS
USB = {**FIXMATCH, "stem_bias": True, "head_bn_eps": 1e-3}
# the constants in the projects' code (pixels in [0, 1])
DM_NORM = {
    10: ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
AT_NORM = {  # DM-Improves-AT's and adversarial_robustness_pytorch's data descriptions
    10: ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
WEIGHTS = ("ema", "model")
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


def _note(text: str) -> None:
    warnings.warn(text, ConversionWarning, stacklevel=3)


def _choose(obj: dict[str, Any], source: str, keys: dict[str, str], weights: str | None) -> Any:
    """The entry of ``obj`` that ``weights`` names (``keys``: weights choice -> key), the EMA by default when
    the file holds both, with one note saying so."""
    if weights is not None and weights not in WEIGHTS:
        raise CheckpointError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    present = {w: k for w, k in keys.items() if isinstance(obj.get(k), (dict, list))}
    if weights is None:
        weights = "ema" if "ema" in present else "model"
        if len(present) == 2:
            _note(
                f"read the averaged (EMA) weights '{present['ema']}' of {source}, which its project reports; "
                "--weights model reads the trained weights instead"
            )
    if weights not in present:
        raise CheckpointError(
            f"{source} holds no {keys[weights]!r} weights (it has {_few([str(k) for k in obj])}); "
            f"choose --weights {'model' if weights == 'ema' else 'ema'}"
        )
    return obj[present[weights]]


def load_fixmatch(
    path_or_dict: str | os.PathLike | dict[str, Any], weights: str | None = None, dropout: float = 0.0
) -> nn.Module:
    """FixMatch's WRN (kekmodel/FixMatch-pytorch and its copies) in eval mode: its ``train.py`` checkpoint
    (the EMA weights by default) or a bare state dict."""
    obj, source = _read(path_or_dict)
    if _is_fixmatch_file(obj):
        obj = _choose(obj, source, {"ema": "ema_state_dict", "model": "state_dict"}, weights)
    params = _state_dict(obj, source)
    _expect(params, source, "block1.layer.0.conv1.weight", "fc.weight", "FixMatch")
    return build_from_xternalz_keys(params, source, dropout=dropout, **FIXMATCH)


def load_usb(
    path_or_dict: str | os.PathLike | dict[str, Any], weights: str | None = None, dropout: float = 0.0
) -> nn.Module:
    """USB's WRN (microsoft/Semi-supervised-learning) in eval mode: its ``{'model', 'ema_model', ...}``
    checkpoint (the EMA weights by default) or a bare state dict."""
    obj, source = _read(path_or_dict)
    if _is_usb_file(obj):
        obj = _choose(obj, source, {"ema": "ema_model", "model": "model"}, weights)
    params = _state_dict(obj, source)
    _expect(params, source, "block1.layer.0.conv1.weight", "classifier.weight", "USB")
    params = {
        ("fc." + k[len("classifier.") :] if k.startswith("classifier.") else k): v for k, v in params.items()
    }
    return build_from_xternalz_keys(params, source, dropout=dropout, **USB)


def _expect(params: dict[str, torch.Tensor], source: str, first: str, head: str, project: str) -> None:
    if first not in params or head not in params:
        from wrn.models.resemble import resemblance

        raise CheckpointError(
            f"{source} is not a {project} WideResNet state dict ({first!r} ... {head!r}): {resemblance(params)}"
        )


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


def _build_dm(params: dict[str, torch.Tensor], source: str, act: str | None, outer=None) -> nn.Module:
    """Our WRN with 'SAME' padding and the input normalisation from DeepMind-named ``params``."""
    if act is None:
        act = "silu"
        _note(
            f"{source} does not hold its activation: built with swish (SiLU), as the top RobustBench entries; "
            "--act relu builds DeepMind's ReLU WRN"
        )
    from wrn.models.checked import load_state_dict_checked
    from wrn.models.registry import create_model

    norm = _norm_from(params, ("mean", "std"))
    classes = params["logits.weight"].shape[0] if "logits.weight" in params else 0
    if norm is None:
        norm = DM_NORM[100 if classes == 100 else 10]
        _note(
            f"{source} does not hold its mean/std: used the code's CIFAR-{100 if classes == 100 else 10} constants "
            f"mean {norm[0]}, std {norm[1]}"
        )
    mean, std = _compose(outer, norm)
    state, extra = {}, []
    for key, value in params.items():
        ours = _dm_our_key(key)
        if ours is not None:
            state[ours] = value
        elif key not in ("mean", "std"):
            extra.append(key)
    if extra or "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
        raise CheckpointError(
            f"{source} is not DeepMind's WRN: unexpected keys {_few(extra or list(params))}"
        )
    blocks = {int(m.group(2)) for k in params if (m := _DM_BLOCK.match(k)) and m.group(1) == "0"}
    width, rem = divmod(state["layer1.0.conv1.weight"].shape[0], 16)
    if rem or not blocks:
        raise CheckpointError(f"{source}: group 1 is {state['layer1.0.conv1.weight'].shape[0]} wide, not 16k")
    model = create_model(
        f"wrn-{6 * len(blocks) + 4}-{width}",
        num_classes=classes,
        in_channels=state["conv1.weight"].shape[1],
        act=act,
        bn_momentum=0.01,
        same_padding=True,
        input_mean=mean,
        input_std=std,
    )
    own = model.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    load_state_dict_checked(model, state, source)
    return model.eval()


def load_dm(path_or_dict: str | os.PathLike | dict[str, Any], act: str | None = None) -> nn.Module:
    """DeepMind's WRN (RobustBench's ``DMWideResNet``) in eval mode, from its state dict (bare or under
    ``'state_dict'``/``'model_state_dict'``). ``act``: its activation, which the file does not hold:
    ``"silu"`` (swish, the top RobustBench entries; the default, with a note) or ``"relu"``."""
    obj, source = _read(path_or_dict)
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):
        obj = obj["model_state_dict"]
    params = _state_dict(obj, source)
    if "init_conv.weight" not in params:
        from wrn.models.resemble import resemblance

        raise CheckpointError(
            f"{source} is not DeepMind's WRN ('init_conv.weight' ...): {resemblance(params)}"
        )
    return _with_input_record(_build_dm(params, source, act), source)


def load_robustness(
    path_or_dict: str | os.PathLike | dict[str, Any], weights: str | None = None, act: str | None = None
) -> nn.Module:
    """A WRN saved by DM-Improves-AT or adversarial_robustness_pytorch: ``model_state_dict`` (the averaged
    weights they evaluate) by default, ``weights="model"`` for ``unaveraged_model_state_dict``; the
    normalisation layer ``module.0`` (constants from the code's data description, by number of classes) or
    ``mu``/``sigma`` buffers are kept inside the forward."""
    obj, source = _read(path_or_dict)
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = _choose(
            obj, source, {"ema": "model_state_dict", "model": "unaveraged_model_state_dict"}, weights
        )
    if isinstance(obj, list):
        raise CheckpointError(f"{source} holds an ensemble of {len(obj)} networks; wrn imports one network")
    params = _state_dict(obj, source)
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
        from wrn.models.resemble import resemblance

        raise CheckpointError(f"{source} is not a robustness WRN state dict: {resemblance(params)}")
    classes = params[head].shape[0]
    outer = None
    if layer:
        outer = AT_NORM[100 if classes == 100 else 10]
        _note(
            f"{source} has a normalisation layer whose constants the file does not hold: used the code's "
            f"CIFAR-{100 if classes == 100 else 10} mean {outer[0]}, std {outer[1]}"
        )
    outer = buffers if buffers is not None else outer
    if dm:
        model = _build_dm(params, source, act, outer)
    else:
        norm = {} if outer is None else {"input_mean": outer[0], "input_std": outer[1]}
        model = build_from_xternalz_keys(params, source, **norm)
    return _with_input_record(model, source)


def _with_input_record(model: nn.Module, source: str) -> nn.Module:
    """Record, for eval, predict and export, that a model normalising inside its forward takes pixels/255."""
    if model.config.get("input_mean") is None:
        return model
    classes = model.config["num_classes"]
    model.wrn_metadata = {
        # 'svhn' is the project's name for pixels / 255, the [0, 1] input these networks take
        "normalization": "svhn",
        **({"dataset": {10: "cifar10", 100: "cifar100"}[classes]} if classes in (10, 100) else {}),
        "input": {
            "channels": model.config["in_channels"],
            "size": 32,
            "normalization": "svhn",
            "mean": [0.0] * model.config["in_channels"],
            "std": [255.0] * model.config["in_channels"],
            "resize": "short-side",
            "inside_forward": {"mean": model.config["input_mean"], "std": model.config["input_std"]},
        },
    }
    return model
