"""One registry of the checkpoint formats that ``wrn convert`` and the ``load_*`` functions import (timm's
style: one entry per format).

Each :class:`Format` holds everything about its files: what code writes them, its reader (the function that
turns the loaded file into our model), its detector ("does this loaded file look like mine, and how sure am
I": a :class:`Claim`, a score and a phrase saying what shows it) and the options it takes. ``wrn convert``,
its ``--help``, its choices and its refusals, the public functions and docs/models.md's import section all
come from :data:`FORMATS`.

A file is read once (``torch.load(weights_only=True)``), then every detector looks at it. The format asked
for reads it only if no other format claims it more surely; otherwise one sentence names the format that
does and the ``wrn convert FORMAT`` to use. Scores:

* 1.0 (``WRAPPER``): the wrapper the project's training code writes around its weights;
* 0.8 (``KEYS``): key names only that project's network has;
* 0.6 (``WEIGHTS``): key names several networks share, and weights that show which one wrote them;
* 0.3 (``SHARED``): key names several networks share, and weights that show nothing (the phrase says how to
  choose).

To add a format: write its reader ``read(obj, source, **options) -> nn.Module`` (``obj`` is the loaded
file) and its detector ``detect(obj) -> Claim | None``, and add one :class:`Format` to :data:`FORMATS`;
options new to the registry go into :data:`OPTIONS`. Nothing else lists formats.

This module imports torch only inside its functions, so ``wrn --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wrn.errors import CheckpointError, ConfigError

WRAPPER, KEYS, WEIGHTS, SHARED = 1.0, 0.8, 0.6, 0.3


class ConversionWarning(UserWarning):
    """Something a conversion left out or chose on purpose (one line; ``wrn convert`` prints it as a note)."""


def note(text: str) -> None:
    """One line that ``wrn convert`` prints as ``note: ...`` (a :class:`ConversionWarning`)."""
    warnings.warn(text, ConversionWarning, stacklevel=3)


@dataclass(frozen=True)
class Option:
    """An option some formats take: its values (None: a number), what it does, and who needs it."""

    name: str
    choices: tuple[str, ...] | None
    help: str
    needed_by: str  # the phrase of the refusal "--NAME applies to {needed_by} (FORMATS), not FORMAT"


OPTIONS: dict[str, Option] = {
    "weights": Option(
        "weights",
        ("ema", "model"),
        "for files holding both: the averaged (EMA) weights their project reports (default, with a note) or "
        "the trained ones",
        "files holding two sets of weights",
    ),
    "act": Option(
        "act",
        ("silu", "relu"),
        "the activation of DeepMind's WRN, which its files do not hold (default: silu = swish, with a note)",
        "DeepMind's WRN, whose files do not hold it",
    ),
    "dataset": Option(
        "dataset",
        ("cifar10", "cifar100", "svhn"),
        "the data set the network was trained on, where the file does not tell: it picks the input mean/std "
        "of the project's code (inside the forward for DeepMind's WRN: DM-Improves-AT's SVHN models use 0.5) "
        "and the input recorded for predict",
        "the formats whose input constants depend on the data set",
    ),
    "dropout": Option(
        "dropout",
        None,
        "the dropout rate to build the model with, for fine-tuning (no file holds it; default 0)",
        "the WRNs of the xternalz port and of FixMatch and USB",
    ),
}


@dataclass(frozen=True)
class Claim:
    """A detector's answer: how sure (see the module's scores) and what in the file shows it."""

    score: float
    what: str


@dataclass(frozen=True)
class Format:
    """One checkpoint format: the facts ``wrn convert``, its help, the docs and the refusals are made of."""

    name: str
    summary: str  # one line for `wrn convert --help`
    code: str  # the code that writes such files (recorded in model.json as metadata.code)
    layout: str  # the files it reads
    evidence: str  # what its detector looks at
    options: tuple[str, ...]
    reader: str  # "module:function", called as function(obj, source, **options)
    detect: Callable[[Any], Claim | None]
    function: str  # the public function that reads it

    def read(self, obj: Any, source: str, **options: Any):
        module, name = self.reader.split(":")
        return getattr(importlib.import_module(module), name)(obj, source, **options)


# ------------------------------------------------------------------------------------------ looking at files

_PREFIXES = ("module.", "_orig_mod.")


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        if not obj:
            return "an empty dict"
        keys = [str(k) for k in obj]
        return (
            "a dict with keys "
            + ", ".join(repr(k) for k in keys[:5])
            + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        )
    return f"a {type(obj).__name__}"


def tensors_in(obj: Any, wrappers: tuple[str, ...] = ("state_dict", "model")) -> dict[str, Any] | None:
    """The flat ``name -> tensor`` dict that ``obj`` holds, bare or under the first of ``wrappers`` it has, without
    DataParallel's ``module.`` or ``torch.compile``'s ``_orig_mod.`` prefix; None if it holds none. Never raises:
    the detectors use it on any file."""
    import torch

    if isinstance(obj, dict):
        for key in wrappers:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        return None
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    params = dict(obj)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in params):
            params = {k[len(prefix) :]: v for k, v in params.items()}
    return params


def state_dict(obj: Any, source: str, fmt: str, wrappers: tuple[str, ...] = ("state_dict", "model")):
    """:func:`tensors_in` for a reader: the state dict, every entry checked, or one sentence saying what is
    wrong (a non-string key, a value that is no tensor, a sparse, complex, integer, scalar or non-finite
    weight), before any of it is used."""
    import torch

    inner = obj
    if isinstance(obj, dict):
        for key in wrappers:
            if isinstance(obj.get(key), dict):
                inner = obj[key]
                break
    if not isinstance(inner, dict) or not inner:
        raise CheckpointError(
            f"{source} holds {_describe(inner)}, not a state dict of tensors as `wrn convert {fmt}` reads"
        )
    for key, value in inner.items():
        where = f"{source}: the entry {key!r}"
        if not isinstance(key, str):
            raise CheckpointError(f"{where} has a {type(key).__name__} key; a state dict's keys are names")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where} is a {type(value).__name__}, not a tensor; is this a state dict?")
        if value.layout != torch.strided:
            raise CheckpointError(f"{where} is a sparse tensor ({value.layout}); weights are dense tensors")
        if key.endswith("num_batches_tracked"):
            continue
        if value.is_complex() or not value.is_floating_point():
            raise CheckpointError(f"{where} holds {value.dtype} values; weights are floating-point numbers")
        if value.dim() == 0:
            raise CheckpointError(f"{where} is a single number; weights are tensors with a shape")
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{where} holds NaN or infinite values: the checkpoint is broken (a diverged run?)"
            )
    params = tensors_in(inner, ())
    return {k: v.detach() for k, v in params.items()}


def _holds_tensors(obj: Any, wrappers: tuple[str, ...]) -> bool:
    import torch

    if isinstance(obj, dict):
        inner = next((obj[k] for k in wrappers if isinstance(obj.get(k), dict)), obj)
        return isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values())
    return False


def _has(params: dict | None, *names: str) -> bool:
    return params is not None and all(n in params for n in names)


def _untouched(params: dict, prefix: str) -> bool:
    """True if the BN ``prefix`` still holds one weight for every channel and a zero bias, as a BN that never
    got a gradient (an EMA moves the weight by rounding only, never apart)."""
    import torch

    w, b = params.get(prefix + "weight"), params.get(prefix + "bias")
    if not all(isinstance(t, torch.Tensor) and t.layout == torch.strided and t.numel() for t in (w, b)):
        return False
    return bool((w == w.flatten()[0]).all()) and bool((b == 0).all())


def network_evidence(params: dict) -> str:
    """What an xternalz-named state dict's BN weights say of its network: ``"fixmatch"`` (the first BNs of
    groups 2 and 3 never trained, as FixMatch's network never uses them, while others did), ``"xternalz"``
    (they trained) or ``"unknown"`` (no BN trained at all)."""
    skipped = ("block2.layer.0.bn1.", "block3.layer.0.bn1.")
    if not all(_untouched(params, p) for p in skipped):
        return "xternalz"
    bns = {k[: -len("running_mean")] for k in params if k.endswith("running_mean")} - set(skipped)
    return "fixmatch" if any(not _untouched(params, p) for p in bns) else "unknown"


_XTERNALZ_KEYS = ("block1.layer.0.conv1.weight", "fc.weight")
_FIXMATCH_MARKS = ("ema_state_dict", "best_acc", "scheduler")  # what kekmodel's train.py saves beside it
_ROBUSTNESS_MARKS = ("model_state_dict", "unaveraged_model_state_dict")


def _detect_official(obj: Any) -> Claim | None:
    wrapped = isinstance(obj, dict) and isinstance(obj.get("params"), dict)
    params = tensors_in(obj, ("params", "state_dict", "model"))
    score = WRAPPER if wrapped else KEYS
    if _has(params, "conv0", "group0.block0.conv0"):
        shown = "{'params': ...} with " if wrapped else ""
        return Claim(
            score, f"a checkpoint of the authors' CIFAR code ({shown}`conv0`, `group0.block0.conv0`)"
        )
    if _has(params, "conv0.weight", "group3.block0.conv_dim.weight"):
        return Claim(
            score,
            "the authors' BN-folded ImageNet WRN-50-2 export (`conv0.weight`, `group3.block0.conv_dim`, biased "
            "convs and no BN)",
        )
    return None


def _detect_xternalz(obj: Any) -> Claim | None:
    params = tensors_in(obj)
    if not _has(params, *_XTERNALZ_KEYS) or network_evidence(params) != "xternalz":
        return None
    return Claim(
        WEIGHTS,
        "the xternalz WideResNet port (`block1.layer.0.conv1`, `bn1`, `fc`; the BNs of the first blocks of "
        "groups 2 and 3 trained)",
    )


def _detect_fixmatch(obj: Any) -> Claim | None:
    if isinstance(obj, dict) and "state_dict" in obj and any(k in obj for k in _FIXMATCH_MARKS):
        marks = ", ".join(k for k in _FIXMATCH_MARKS if k in obj)
        return Claim(WRAPPER, f"a checkpoint of FixMatch's training code (it holds {marks})")
    params = tensors_in(obj)
    if not _has(params, *_XTERNALZ_KEYS):
        return None
    evidence = network_evidence(params)
    if evidence == "fixmatch":
        return Claim(
            WEIGHTS,
            "FixMatch's WRN: the BNs of the first blocks of groups 2 and 3 never trained (weights all equal, "
            "biases 0), as in FixMatch's network, which never uses them",
        )
    if evidence == "unknown":
        return Claim(
            SHARED,
            "a WRN in which no BN has trained, which cannot be told apart between xternalz's network and "
            "FixMatch's (the weights do not show it, and the two give other logits): if FixMatch's code wrote "
            "it, `wrn convert fixmatch` reads it; an untrained xternalz network is wrn.create_model('wrn-D-K')",
        )
    return None


def _detect_usb(obj: Any) -> Claim | None:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "ema_model" in obj:
        return Claim(WRAPPER, "a USB checkpoint ('model' and 'ema_model')")
    if _has(tensors_in(obj), "block1.layer.0.conv1.weight", "classifier.weight"):
        return Claim(KEYS, "a USB WideResNet (`classifier.*`, a bias on the stem conv)")
    return None


def _detect_dm(obj: Any) -> Claim | None:
    if _has(tensors_in(obj), "init_conv.weight"):
        return Claim(KEYS, "DeepMind's WRN (`init_conv`, `layer.G.block.I.conv_0`, `logits`)")
    return None


def _detect_robustness(obj: Any) -> Claim | None:
    if isinstance(obj, dict) and any(k in obj for k in _ROBUSTNESS_MARKS):
        return Claim(
            WRAPPER,
            "a checkpoint of the robustness training code (DM-Improves-AT, adversarial_robustness_pytorch: "
            "'model_state_dict')",
        )
    params = tensors_in(obj, ())
    if params is None:
        return None
    backbone = ("block1.layer.0.conv1.weight", "init_conv.weight")
    if any(f"{p}.{b}" in params for p in ("0", "1") for b in backbone):
        return Claim(
            KEYS, "a robustness training WRN (a Sequential: `0.` normalisation or the WRN, `1.` the WRN)"
        )
    if _has(params, "mu", "sigma") and any(b in params for b in backbone):
        return Claim(KEYS, "a robustness WRN with its input normalisation (`mu`, `sigma` beside the WRN)")
    return None


def _not_a_format(params: dict | None) -> str | None:
    """What a state dict that no format claims is, where wrn knows it."""
    if _has(params, "layer1.0.conv1.weight", "layer4.0.conv1.weight"):
        return (
            "an ImageNet ResNet in torchvision's format (build it with wrn.create_model and load_state_dict)"
        )
    if _has(params, "layer1.0.conv1.weight", "bn.weight"):
        return "a wrn CIFAR model's own state dict (load it with load_state_dict into wrn.create_model)"
    return None


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "official",
            "the authors' code: the CIFAR port's model.pt7 (or its params dict), or the BN-folded ImageNet "
            "WRN-50-2 export",
            "szagoruyko/wide-residual-networks (the functional PyTorch port; the folded WRN-50-2 export)",
            "`{'params': flat dict, 'epoch', 'optimizer'}` or the flat dict (`conv0`, `group{g}.block{i}.*`, "
            "`bn`, `fc`); the BN-folded WRN-50-2 (`conv0.weight`, `group{0..3}.block{i}.conv{0,1,2}`, "
            "`conv_dim`, biases, no BN)",
            "the `params` wrapper; the keys `conv0` + `group0.block0.conv0` (CIFAR) or `conv0.weight` + "
            "`group3.block0.conv_dim.weight` (folded ImageNet)",
            (),
            "wrn.models.official:read_official",
            _detect_official,
            "wrn.load_official",
        ),
        Format(
            "xternalz",
            "the widely copied PyTorch WideResNet port (wideresnet.py: conv1, block{1,2,3}.layer.{i}.*, bn1, "
            "fc), as in TRADES and RobustBench's WRN-34-10s",
            "xternalz/WideResNet-pytorch and its copies",
            "a state dict, bare or under `'state_dict'`/`'model'`, DataParallel's `module.` prefix optional",
            "the keys `block1.layer.0.conv1.weight` + `fc.weight`, and BN weights showing that the first "
            "blocks of groups 2 and 3 trained (FixMatch's network never uses them)",
            ("dropout",),
            "wrn.models.xternalz:read_xternalz",
            _detect_xternalz,
            "wrn.load_xternalz",
        ),
        Format(
            "fixmatch",
            "FixMatch's WRN (kekmodel/FixMatch-pytorch and its copies): xternalz's names, another network",
            "kekmodel/FixMatch-pytorch (models/wideresnet.py)",
            "its train.py checkpoint `{'state_dict', 'ema_state_dict', 'acc', 'best_acc', 'optimizer', "
            "'scheduler', ...}` or a state dict",
            "the train.py wrapper (`state_dict` with `ema_state_dict`/`best_acc`/`scheduler`); or xternalz's "
            "keys whose first BNs of groups 2 and 3 never trained (no trained BN at all: it cannot be told "
            "from xternalz's, and only this format reads it)",
            ("weights", "dropout"),
            "wrn.models.imports:read_fixmatch",
            _detect_fixmatch,
            "wrn.models.imports.load_fixmatch",
        ),
        Format(
            "usb",
            "USB's WRN (microsoft/Semi-supervised-learning): {'model', 'ema_model', ...}, a 'classifier' head",
            "microsoft/Semi-supervised-learning (semilearn/nets/wrn/wrn.py)",
            "`{'model', 'ema_model', 'optimizer', 'loss_scaler', 'it', 'epoch', 'best_it', 'best_eval_acc'}` "
            "or a state dict",
            "the wrapper (`model` + `ema_model`); or the keys `block1.layer.0.conv1.weight` + "
            "`classifier.weight`",
            ("weights", "dropout", "dataset"),
            "wrn.models.imports:read_usb",
            _detect_usb,
            "wrn.models.imports.load_usb",
        ),
        Format(
            "dm",
            "DeepMind's WRN as RobustBench's code defines it (DMWideResNet: init_conv, layer.G.block.I.*, "
            "logits), swish by default",
            "RobustBench/robustbench (robustbench/model_zoo/architectures/dm_wide_resnet.py)",
            "a state dict, bare or under `'state_dict'`/`'model'`",
            "the key `init_conv.weight`",
            ("act", "dataset"),
            "wrn.models.imports:read_dm",
            _detect_dm,
            "wrn.models.imports.load_dm",
        ),
        Format(
            "robustness",
            "DM-Improves-AT / adversarial_robustness_pytorch: {'model_state_dict', "
            "'unaveraged_model_state_dict'} with module.0./module.1. prefixes",
            "wzekai99/DM-Improves-AT (core/models/wideresnetwithswish.py, wideresnet.py), "
            "imrahulr/adversarial_robustness_pytorch",
            "`{'model_state_dict', 'unaveraged_model_state_dict'}` of DataParallel around "
            "`Sequential(Normalization, WRN)` (`module.1.`) or `Sequential(WRN)` (`module.0.`), the WRN "
            "xternalz's or DeepMind's; or a state dict with `mu`/`sigma` buffers",
            "the wrapper (`model_state_dict`); or a WRN's keys under `0.`/`1.`, or beside `mu` + `sigma`",
            ("weights", "act", "dataset"),
            "wrn.models.imports:read_robustness",
            _detect_robustness,
            "wrn.models.imports.load_robustness",
        ),
    )
}


def formats_taking(option: str) -> list[str]:
    return [f.name for f in FORMATS.values() if option in f.options]


def claims(obj: Any) -> dict[str, Claim]:
    """Every format's claim on a loaded file, the surest first."""
    found = {name: c for name, f in FORMATS.items() if (c := f.detect(obj)) is not None}
    return dict(sorted(found.items(), key=lambda item: -item[1].score))


def check_claims(fmt: str, obj: Any, source: str) -> None:
    """Refuse, in one sentence naming the format to use, a file that another format claims more surely than
    ``fmt``, or one that no format claims."""
    found = claims(obj)
    own = found.get(fmt)
    best_name, best = next(iter(found.items()), (None, None))
    if best is not None and (own is None or best.score > own.score):
        raise CheckpointError(
            f"{source} is not a {fmt} checkpoint: it looks like {best.what}; use `wrn convert {best_name}`"
        )
    if own is None:
        wrappers = ("params", "state_dict", "model", "model_state_dict")
        if _holds_tensors(obj, wrappers):  # a broken entry (an int key, a scalar, ...) is named first
            state_dict(obj, source, fmt, wrappers)
        params = tensors_in(obj, wrappers)
        known = _not_a_format(params)
        if known is None and params is not None:
            keys = list(params)
            known = (
                "keys "
                + ", ".join(repr(k) for k in keys[:5])
                + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            )
        raise CheckpointError(
            f"{source} is not in a known {fmt} format (expected {FORMATS[fmt].evidence}): it holds "
            f"{known or _describe(obj)}"
        )


def check_options(fmt: str, options: dict[str, Any]) -> None:
    """Refuse an option (given, not None) that ``fmt`` does not take, or a value outside its choices."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown checkpoint format {fmt!r}: choose one of {', '.join(FORMATS)}")
    for name, value in options.items():
        if value is None:
            continue
        option = OPTIONS.get(name)
        if option is None:
            raise ConfigError(f"{fmt} takes no option {name!r}; the options are: {', '.join(OPTIONS)}")
        if name not in FORMATS[fmt].options:
            raise ConfigError(
                f"--{name} applies to {option.needed_by} ({', '.join(formats_taking(name))}), not {fmt}"
            )
        if option.choices is not None and value not in option.choices:
            raise ConfigError(f"--{name} must be one of {', '.join(option.choices)}, not {value!r}")
        if option.choices is None and (isinstance(value, bool) or not 0 <= value < 1):
            raise ConfigError(f"--{name} must be a number in [0, 1), not {value!r}")


def read_file(path_or_dict: str | os.PathLike | dict[str, Any]) -> tuple[Any, str]:
    """The loaded file (``torch.load(weights_only=True)``) and how to name it in messages."""
    if isinstance(path_or_dict, dict):
        return path_or_dict, "the given dict"
    from wrn.models.io import read_torch_file

    return read_torch_file(path_or_dict, "a checkpoint file (.pt7, .pt, .pth or .tar)"), str(path_or_dict)


def load(fmt: str, path_or_dict: str | os.PathLike | dict[str, Any], **options: Any):
    """Our model, in eval mode, from a checkpoint of format ``fmt`` (a path or an already loaded dict), with
    ``model.wrn_metadata`` saying what it was converted from and what input it takes."""
    check_options(fmt, options)
    obj, source = read_file(path_or_dict)
    check_claims(fmt, obj, source)
    entry = FORMATS[fmt]
    model = entry.read(obj, source, **{k: v for k, v in options.items() if v is not None})
    model.wrn_metadata = {**getattr(model, "wrn_metadata", {}), "format": fmt, "code": entry.code}
    return model.eval()


def create_checked(name: str, source: str, num_classes: int, in_channels: int, **kwargs: Any):
    """``create_model`` for a reader, after checking the sizes read off the file against the bounds that
    ``wrn.load_model`` applies (a model it would refuse is never built nor written)."""
    from wrn.models.io import check_loadable
    from wrn.models.registry import create_model

    check_loadable({"arch": "WideResNet", "num_classes": num_classes, "in_channels": in_channels}, source)
    return create_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)


def input_record(
    model,
    normalization: str,
    mean,
    std,
    size: int = 32,
    resize: str = "short-side",
    dataset: str | None = None,
) -> dict[str, Any]:
    """The ``metadata`` of a converted model that inference needs: ``input`` (channels, size, the named
    normalisation with its mean and std on the 0..255 scale, how other sizes are brought to it) and the data
    set (its class names with it)."""
    from wrn.data.registry import dataset_info

    channels = model.config["in_channels"]
    meta: dict[str, Any] = {
        "normalization": normalization,
        "input": {
            "channels": channels,
            "size": size,
            "normalization": normalization,
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "resize": resize,
        },
    }
    if dataset is not None:
        meta["dataset"] = dataset
        classes = dataset_info(dataset).classes
        if classes is not None and len(classes) == model.config["num_classes"]:
            meta["classes"] = list(classes)
    return meta


def help_text() -> str:
    """The formats and their options, for ``wrn convert --help``."""
    parts = []
    for f in FORMATS.values():
        takes = f" [{', '.join('--' + o for o in f.options)}]" if f.options else ""
        parts.append(f"{f.name}{takes}: {f.summary}")
    return "; ".join(parts)


def markdown_table() -> str:
    """docs/models.md's table of formats, written from the registry."""
    rows = [
        "| format | code that writes it | files read | detector looks at | options | function |",
        "|---|---|---|---|---|---|",
    ]
    for f in FORMATS.values():
        opts = ", ".join(f"`--{o}`" for o in f.options) or "none"
        rows.append(f"| `{f.name}` | {f.code} | {f.layout} | {f.evidence} | {opts} | `{f.function}` |")
    return "\n".join(rows)


def options_table() -> str:
    """docs/models.md's table of options, written from the registry."""
    rows = ["| option | values | formats | what it does |", "|---|---|---|---|"]
    for o in OPTIONS.values():
        values = ", ".join(f"`{c}`" for c in o.choices) if o.choices else "a number in [0, 1)"
        rows.append(f"| `--{o.name}` | {values} | {', '.join(formats_taking(o.name))} | {o.help} |")
    return "\n".join(rows)
