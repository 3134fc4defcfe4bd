"""What ``wrn train`` prints before its first step: the warnings of the config, the precision and the machine,
then the run's header (where it trains, the model and data, the schedule and optimizer, the device) and the
per-image augmentation line."""

from __future__ import annotations

import os
import warnings

import torch

from wrn.data.policies import describe_data
from wrn.train import recipe
from wrn.train.precision import amp_warning
from wrn.train.resolve import config_warnings


def warn(text: str) -> None:
    """A warning: a :class:`UserWarning` (the command line shows it as one ``warning: ...`` line)."""
    warnings.warn(text, UserWarning, stacklevel=3)


def print_header(loop, resumed: bool) -> None:
    """Rank 0: the warnings, then the header lines (printed when ``loop.verbose``)."""
    cfg, state, device = loop.cfg, loop.state, loop.device
    if not loop.dist.is_main:
        return
    side = int(loop.info.image_size or 0) or None
    probe = (
        _example(state.model, loop.info, cfg, device)
        if cfg.run.amp == "bf16" and device.type == "cpu"
        else None
    )
    timed = amp_warning(device, cfg.run.amp, state.model, probe) if probe is not None else None
    for text in [*config_warnings(cfg, side), timed, _busy_cpu(device)]:
        if text:
            warn(text)
    if not loop.verbose:
        return
    where = "continuing" if resumed else "run directory"
    at = f" at epoch {state.epoch + 1}, step {state.step}" if resumed else ""
    n_parameters = sum(p.numel() for p in state.model.parameters())
    count = torch.get_num_threads()
    threads = f" ({count} thread{'s' * (count != 1)})" if device.type == "cpu" else ""
    print(
        f"{where}: {loop.run_dir}{at}\n"
        f"model {cfg.model.name} ({n_parameters:,} parameters) on {cfg.dataset.name}, "
        f"{recipe.epochs_text(cfg.schedule.epochs)} of {state.steps_per_epoch} steps, batch {cfg.optim.batch_size}, "
        f"{recipe.describe(cfg.schedule, cfg.optim.lr)}{recipe.describe_optim(cfg.optim)}{describe_recipes(cfg)}, "
        f"device {device}{threads}"
        + (f" x {loop.dist.world_size} processes" if loop.dist.enabled else "")
        + f", amp {cfg.run.amp}",
        flush=True,
    )
    per_image = describe_data(cfg.dataset)  # the policies and random erasing, when on
    if per_image:
        print(per_image, flush=True)
    split = _split(cfg)
    if split:
        print(split, flush=True)


def describe_recipes(cfg) -> str:
    """The run's other active recipes in a few words, each after a comma ('' when none is on): dropout,
    Cutout, rotation, mixup, CutMix, label smoothing, the objective, adversarial training and its early
    stopping, torch.compile."""
    data, optim, run = cfg.dataset, cfg.optim, cfg.run
    parts = [
        f"dropout {cfg.model.dropout:g}" if cfg.model.dropout else "",
        f"Cutout {data.cutout} px" + (" (one place per batch)" if data.cutout_per == "batch" else "")
        if data.cutout
        else "",
        f"rotation up to {data.rotate:g} degrees" if data.rotate else "",
        f"mixup {data.mixup:g}" if data.mixup else "",
        f"CutMix {data.cutmix:g}" if data.cutmix else "",
        f"label smoothing {optim.label_smoothing:g}" if optim.label_smoothing else "",
        _objective(cfg.objective),
        _adversary(cfg.adv),
        _best_epoch(cfg.adv),
        f"torch.compile ({run.compile_mode})" if run.compile else "",
    ]
    return "".join(f", {p}" for p in parts if p)


def _split(cfg) -> str:
    """``labelled: 250 images (fold 1); FixMatch on every training image, unlabelled batch 448 (mu 7), ...``,
    or '' without a labelled split."""
    ssl = cfg.ssl
    if ssl.labels is None:
        return ""
    text = f"labelled: {ssl.labels:,} images (fold {ssl.fold}), epochs of {ssl.epoch_steps} steps"
    if ssl.method == "none":
        return text + "; supervised on them alone (no --ssl)"
    where = f"{cfg.dataset.workers} worker processes" if cfg.dataset.workers else "the training process"
    where = "a batch at a time on the device" if ssl.strong_on == "device" else where
    return (
        f"{text}; {ssl.method} on every training image as unlabelled: batch {ssl.mu * cfg.optim.batch_size} (mu "
        f"{ssl.mu}), threshold {ssl.threshold:g}, lambda-u {ssl.lambda_u:g}, strong views {ssl.strong_policy} + "
        f"Cutout, {where}"
    )


def _example(model, info, cfg, device) -> torch.Tensor:
    """A few random images of the run's shape and memory format, for timing its model."""
    side = int(info.image_size or 32)
    x = torch.randn(min(16, cfg.optim.batch_size), int(info.in_channels), side, side, device=device)
    return x.contiguous(memory_format=torch.channels_last) if cfg.run.channels_last else x


def _objective(objective) -> str:
    """``objective focal (gamma 2)``, or '' for the paper's cross-entropy."""
    if objective.name == "cross-entropy":
        return ""
    options = getattr(objective, objective.name.replace("-", "_"), None)
    given = ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in dict(options or {}).items()
    )
    return f"objective {objective.name}" + (f" ({given})" if given else "")


def _adversary(adv) -> str:
    """``adversarial training pgd (eps 8/255, 10 steps of 2/255)``, with ``, AWP gamma 0.01`` (and ``from epoch
    N`` after a warm-up) when AWP is on, or '' without it."""
    from wrn.train.fields import radius_text as text

    if adv.method == "none":
        return ""
    beta = f", beta {adv.trades_beta:g}" if adv.method.startswith("trades") else ""
    awp = f", AWP gamma {adv.awp:g}" if adv.awp else ""
    if adv.awp and adv.awp_warmup:
        awp += f" from epoch {adv.awp_warmup + 1}"
    return (
        f"adversarial training {adv.method} (eps {text(adv.eps)}, {adv.steps} steps of {text(adv.step_size)}"
        f"{beta}{awp})"
    )


def _best_epoch(adv) -> str:
    """``best epoch kept by robust accuracy on the 1000 held-out images`` (or ``on the first 10000 test
    images``: rule awp), or '' without adv.holdout."""
    from wrn.train.holdout import holdout_images

    if not adv.holdout:
        return ""
    return f"best epoch kept by robust accuracy on {holdout_images(adv.holdout, adv.holdout_rule)}"


def _busy_cpu(device: torch.device) -> str | None:
    """A hint when other programs keep the CPU busy (a run then trains several times slower)."""
    if device.type != "cpu" or not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load < 2 * cores:  # (this run itself and a few short jobs keep the load near the cores)
        return None
    return (
        f"the CPU is busy before this run starts (load {load:.1f} on {cores} cores): other programs share it, so "
        "training will be slower than on an idle machine"
    )
