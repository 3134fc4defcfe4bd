"""Small pieces shared by every family: the activation choices and the checks of their options.

The paper's networks use ReLU and PyTorch's BN momentum 0.1 (Torch's default of the time); both stay the
defaults. The variants are those of the large WRN communities:

* ``act="leaky_relu"``: leaky ReLU with negative slope 0.1, as the FixMatch family of semi-supervised WRNs;
* ``act="silu"``: SiLU (swish), as the large robustness WRNs (WRN-70-16 and friends);
* ``bn_momentum``: PyTorch's convention, the weight of the new batch in the running statistics (FixMatch's
  TensorFlow decay 0.999 is ``bn_momentum=0.001`` here).

None of them adds a parameter or changes a state-dict key.
"""

from __future__ import annotations

import contextlib

from torch import nn

from wrn.errors import ConfigError

ACTIVATIONS = ("relu", "leaky_relu", "silu")
LEAKY_RELU_SLOPE = 0.1


def check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(
            f"num_classes must be a positive integer (or 0 for the pooled features), got {num_classes!r}."
        )


def check_act(act: str) -> None:
    if act not in ACTIVATIONS:
        raise ConfigError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}.")


def check_bn_momentum(momentum: float) -> None:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 < momentum <= 1.0:
        raise ConfigError(
            f"bn_momentum must be in (0, 1] (PyTorch's convention: 0.1 is the default, FixMatch uses 0.001), "
            f"got {momentum!r}."
        )


def make_act(act: str, inplace: bool = False) -> nn.Module:
    """The activation module of name ``act`` (see :data:`ACTIVATIONS`)."""
    check_act(act)
    if act == "relu":
        return nn.ReLU(inplace=inplace)
    if act == "leaky_relu":
        return nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=inplace)
    return nn.SiLU(inplace=inplace)


@contextlib.contextmanager
def bn_set(model: nn.Module, name: str, value):
    """Every BN module of ``model`` with attribute ``name`` set to ``value`` for the passes inside, each back at
    its own value after (``value`` None: left as they are). ``bn_set(net, "momentum", 1.0)``: one step at
    momentum 1 (DM-Improves-AT's ``set_bn_momentum``); ``bn_set(net, "track_running_stats", False)``: training
    mode without updating the running statistics (their ``track_bn_stats(model, False)``)."""
    norms = (
        []
        if value is None
        else [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    )
    own = [getattr(m, name) for m in norms]
    for m in norms:
        setattr(m, name, value)
    try:
        yield
    finally:
        for m, was in zip(norms, own, strict=True):
            setattr(m, name, was)
