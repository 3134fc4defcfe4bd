"""A config completed for the machine and the data it runs on.

:func:`resolve` fills in every ``auto`` / ``null`` choice of the user's sections (the device, mixed precision,
channels_last, the data set's own augmentation and normalisation, ...) so that the config.yaml saved with a run
says exactly what ran and a resumed run makes the same choices; it refuses impossible ones in one sentence.
:func:`provenance` is the record of what ran it and what it found that no option sets (versions, the command,
the device with its index, the threads, the image side and classes the data gave), kept apart from the user's
sections in ``provenance``.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from wrn.errors import ConfigError
from wrn.train.config import TrainConfig, replace
from wrn.train.objectives import adversary_budget, awp_warmup


def _device_kind(device: str, cuda_available: bool) -> tuple[str, str]:
    """(the device, its kind) with ``auto`` decided; a device that is not here refused."""
    import torch

    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not cuda_available:
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu")
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but is not available here; use --device cpu")
    return device, kind


def _run_choices(cfg: TrainConfig, cuda_available: bool) -> dict[str, Any]:
    run = cfg.run
    device, kind = _device_kind(run.device, cuda_available)
    amp = ("bf16" if kind == "cuda" else "off") if run.amp == "auto" else run.amp
    for option, value in (("--amp", amp), ("--eval-amp", run.eval_amp)):
        if value == "fp16" and kind != "cuda":
            raise ConfigError(
                f"{option} fp16 needs a CUDA GPU but the device is {device!r}; use {option} off (fp32: on "
                "most CPUs bf16 is slower than fp32)"
            )
    if run.sync_bn and kind != "cuda":
        raise ConfigError(
            f"--sync-bn needs CUDA GPUs (SyncBatchNorm), but the device is {device!r}; drop --sync-bn"
        )
    # on the GPU the tensor cores want channels_last; on the CPU oneDNN's kernels measured 1.1-1.3x faster
    channels_last = kind in ("cuda", "cpu") if run.channels_last is None else run.channels_last
    return {"device": device, "amp": amp, "channels_last": channels_last}


def resolve(cfg: TrainConfig, *, cuda_available: bool | None = None) -> TrainConfig:
    """``cfg`` with every machine- or data-set-dependent default filled in; :class:`ConfigError` for
    impossible choices. Unset augmentation / normalisation: the data set's own (docs/training.md; CIFAR-100
    uses the CIFAR-10 constants, as the authors' code does)."""
    import torch

    from wrn.data.registry import dataset_info
    from wrn.models.registry import model_info

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    data, model, optim = cfg.dataset, cfg.model, cfg.optim
    cores = os.cpu_count() or 1
    if data.workers > max(16, 8 * cores):  # each is a process with its own copy of the transforms
        raise ConfigError(
            f"--workers {data.workers} is more loader processes than this machine runs well ({cores} CPU cores); "
            f"give at most {max(16, 8 * cores)}"
        )
    defaults = dataset_info(data.name)
    fixed = model_info(model.name)["args"]

    def unset(value, default):
        return default if value is None else value

    return replace(
        cfg,
        run=_run_choices(cfg, cuda_available),
        dataset={
            # image folders: the size their images are read at, recorded in the provenance
            "image_size": unset(data.image_size, defaults.image_size),
            "augment": unset(data.augment, defaults.augment),
            "normalization": unset(data.normalization, defaults.normalization),
        },
        optim={"eval_batch_size": unset(optim.eval_batch_size, 2 * optim.batch_size)},  # no activations kept
        model={
            "dropout": unset(model.dropout, 0.0),
            # the paper's ReLU and BN momentum (PyTorch's convention; Torch's 0.9 in their code), or what the
            # model's name fixes (wrn-D-K-fixmatch: leaky ReLU, 0.001)
            "act": unset(model.act, fixed.get("act", "relu")),
            "bn_momentum": unset(model.bn_momentum, fixed.get("bn_momentum", 0.1)),
        },
        # the method's own attack budget, and its script's warm-up of AWP, where none is given
        adv={**adversary_budget(cfg.adv), **awp_warmup(cfg.adv)},
    )


def _command() -> str | None:
    """The command line that runs this process, as its user typed it: ``wrn train ...``, or ``python -m wrn
    train ...`` (also under torchrun ``-m wrn``), where argv[0] is the package's __main__.py."""
    if not sys.argv or not sys.argv[0]:
        return None
    program = Path(sys.argv[0])
    head = (
        ["python", "-m", "wrn"]
        if program.name == "__main__.py" and program.parent.name == "wrn"
        else [program.name]
    )
    return shlex.join([*head, *sys.argv[1:]])


def provenance(**found: Any) -> dict[str, Any]:
    """The provenance record: the versions and the command, and ``found`` (what the machine and the data
    gave: ``device``, ``threads``, ``processes``, ``image_size``, ``num_classes``, ``in_channels``)."""
    import torch

    import wrn

    return {
        "wrn": wrn.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "command": _command(),
        **found,
    }


def config_warnings(cfg: TrainConfig, image_side: int | None = None) -> list[str]:
    """What in a valid config will not act as its user likely meant (``wrn train`` and ``--print-config``
    print each as a warning): milestones at or past the run's end, a Cutout hole as large as the images.
    ``image_side``: the side of the images, when the data set's own is not known (image folders)."""
    from wrn.data.registry import dataset_info

    out = []
    schedule = cfg.schedule
    late = [m for m in schedule.milestones if m >= schedule.epochs]
    if schedule.name == "multistep" and schedule.milestones_from == "given" and late:
        listed = ", ".join(str(m) for m in late)
        out.append(
            f"lr milestone{'s' if len(late) > 1 else ''} {listed} at or past the last epoch ({schedule.epochs}): "
            "that drop changes at most the last epoch; give --milestones inside the run, or leave them out and "
            "--epochs scales the recipe's"
        )
    adv = cfg.adv
    if adv.awp and adv.awp_warmup is not None and adv.awp_warmup >= schedule.epochs:
        out.append(
            f"AWP turns on after {adv.awp_warmup} epochs of warm-up but the run has {schedule.epochs}: it never "
            f"does; give --awp-warmup below {schedule.epochs} (0: from the start)"
        )
    side = image_side or cfg.dataset.image_size or dataset_info(cfg.dataset.name).image_size
    hole = cfg.dataset.cutout
    if hole and side and hole >= side:
        out.append(
            f"--cutout {hole} is not smaller than the {side}x{side} images: each hole covers most or all of its "
            f"image; give --cutout {max(1, round(hole * side / 32))}, the same share of the side (Cutout's "
            f"{hole} px is for 32x32 CIFAR)"
        )
    return out
