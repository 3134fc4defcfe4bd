"""What a run is made of, built from its config: the data loaders and the model.

Shared by the training loop and by evaluation of a run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from wrn.data.registry import DatasetInfo
from wrn.errors import ConfigError
from wrn.train import distributed as D
from wrn.train.config import TrainConfig
from wrn.train.objectives import adversary_class, objective_class, semi_supervised_class
from wrn.train.objectives.base import Context
from wrn.train.step import TrainStep, compile_net


def prepare_device(device: torch.device, *, processes_here: int = 1, deterministic: bool = False) -> None:
    """The process's share of the machine, as training wants it: on a CPU all its cores split among the
    ``processes_here`` processes of this machine (``OMP_NUM_THREADS`` wins), a GPU made current, and cuDNN
    autotuning unless deterministic kernels are asked for (bitwise resume on a GPU)."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes_here))
    if device.type == "cuda" and device.index is not None:  # set_device refuses a bare "cuda"
        torch.cuda.set_device(device)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic


@dataclass
class Trainables:
    """What a training step needs: the plain ``model`` (its state dict has no ``module.`` / ``_orig_mod.``
    prefixes), the ``net`` the step calls (DDP and torch.compile wrappers around it), the optimizer and the
    step itself."""

    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: TrainStep


def build_trainables(
    cfg: TrainConfig,
    model: torch.nn.Module,
    device: torch.device,
    dist_info: D.DistInfo | None = None,
    unlabelled=None,
) -> Trainables:
    """``model`` on ``device`` as the config trains it: channels_last, SyncBatchNorm and DDP over several
    processes, torch.compile, the recipe's optimizer and loss, under the config's mixed precision. Used by
    ``wrn train`` and by ``wrn bench``, so that the benchmark times the step the loop takes. ``unlabelled``:
    the loader of the unlabelled images that semi-supervised training (``ssl.method``) takes its batches from."""
    from wrn.train.recipe import make_optimizer

    dist_info = dist_info or D.DistInfo()
    replicas = _replica_batch(cfg, dist_info)
    model = model.to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist_info.enabled and cfg.run.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    awp = _awp(cfg, model, device, dist_info)  # (its proxy copies the plain model, before DDP)
    net: torch.nn.Module = model
    if dist_info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.run.compile:
        net = compile_net(net, cfg.run.compile_mode)
    optimizer = make_optimizer(model, cfg.optim)
    classes = getattr(model, "config", {}).get("num_classes")  # (a model not built by wrn may not say)
    ctx = Context(cfg, classes, device, dist_info.rank, dist_info.world_size, unlabelled)
    cutout, ema, sam = _step_recipes(ctx, model)
    objective = objective_class(cfg.objective.name)(ctx)
    if cfg.adv.method != "none":  # adversarial training: the objective on the examples of its attack
        objective = adversary_class(cfg.adv.method)(objective, ctx)
    if (
        cfg.ssl.method != "none"
    ):  # semi-supervised: the objective on the labelled batch, and the unlabelled loss
        objective = semi_supervised_class(cfg.ssl.method)(objective, ctx)
    step = TrainStep(
        net,
        optimizer,
        objective,
        device=device,
        amp=cfg.run.amp,
        channels_last=bool(cfg.run.channels_last),
        cutout=cutout,
        ema=ema,
        sam=sam,
        grad_clip=cfg.optim.grad_clip,
        replica_batch=replicas,
        awp=awp,
    )
    return Trainables(model, net, optimizer, step)


def _awp(cfg: TrainConfig, model: torch.nn.Module, device: torch.device, dist_info: D.DistInfo):
    """Adversarial weight perturbation (``adv.awp``), with its method's proxy rate; ``None`` when off."""
    from wrn.train.awp import AWP
    from wrn.train.objectives import ADVERSARIES, awp_warmup
    from wrn.train.step import Forward

    adv = cfg.adv
    if not adv.awp:
        return None
    method = ADVERSARIES[adv.method]
    warmup = adv.awp_warmup if adv.awp_warmup is not None else awp_warmup(adv)["awp_warmup"]
    return AWP(
        model,
        adv.awp,
        cfg.optim.lr if method.awp_lr is None else method.awp_lr,
        warmup,
        lambda proxy: Forward(proxy, device, cfg.run.amp, bool(cfg.run.channels_last)),
        dist_info.world_size,
    )


def _replica_batch(cfg: TrainConfig, dist_info: D.DistInfo) -> int:
    """``optim.replica_batch``, checked against this process's share of the batch (0: the whole share)."""
    size, share = cfg.optim.replica_batch, cfg.optim.batch_size // dist_info.world_size
    if size and share % size:
        raise ConfigError(
            f"--replica-batch {size} does not divide each of the {dist_info.world_size} processes' {share} images "
            f"into equal slices; give a divisor of {share}, or run fewer processes"
        )
    return size


def _step_recipes(ctx: Context, model: torch.nn.Module):
    """Cutout, the average of the weights and SAM, each ``None`` when its option is off (nothing is drawn
    then); Cutout draws from its own stream, one per process."""
    from wrn.train.cutout import Cutout
    from wrn.train.ema import WeightEMA
    from wrn.train.sam import SAM

    data, optim = ctx.cfg.dataset, ctx.cfg.optim
    cutout = Cutout(data.cutout, ctx.device, ctx.seed("cutout"), per=data.cutout_per) if data.cutout else None
    ema = (
        WeightEMA(
            model,
            optim.ema_decay,
            warmup=optim.ema_warmup,
            buffers=optim.ema_buffers,
            rule=optim.ema_warmup_rule,
        )
        if optim.ema_decay
        else None
    )
    sam = SAM(optim.sam_rho, ctx.device) if optim.sam_rho else None
    return cutout, ema, sam


def build_loaders(cfg: TrainConfig, device: torch.device, dist_info: D.DistInfo):
    """The training and test loaders, the data's facts, the loader of the images the best epoch is picked on
    (``adv.holdout``; else None) and that of the unlabelled images (``ssl.method``; else None)."""
    from wrn.data import make_loaders
    from wrn.data.policies import PerImage

    if cfg.optim.batch_size % dist_info.world_size:
        raise ConfigError(
            f"batch size {cfg.optim.batch_size} does not split evenly over {dist_info.world_size} processes; "
            f"choose a multiple of {dist_info.world_size}"
        )
    data = cfg.dataset
    loaders = make_loaders(
        data.name,
        data.root,
        batch_size=cfg.optim.batch_size // dist_info.world_size,
        augment=data.augment,
        normalization=data.normalization,
        device=device,
        seed=cfg.run.seed,
        download=data.download,
        verify=data.verify,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        image_size=data.image_size,
        workers=data.workers,
        eval_batch_size=cfg.optim.eval_batch_size,
        per_image=PerImage(data.policy, data.randaugment_n, data.randaugment_m, data.random_erasing),
        crop_padding=data.crop_padding,
        rotate=data.rotate,
        holdout=cfg.adv.holdout,
        holdout_rule=cfg.adv.holdout_rule,
        aux_data=data.aux_data,
        aux_fraction=data.aux_fraction,
        split_train=data.train_split,
        split=labelled_split(cfg, dist_info),
    )
    train_loader, test_loader, info, *extra = (
        loaders  # make_loaders' order: the held-out, then the unlabelled
    )
    holdout = extra.pop(0) if cfg.adv.holdout else None
    unlabelled = extra.pop(0) if cfg.ssl.method != "none" else None
    if len(train_loader) == 0:
        raise ConfigError(
            f"batch size {cfg.optim.batch_size} is larger than the {data.name} training set; use a smaller --batch-size"
        )
    return train_loader, test_loader, info, holdout, unlabelled


def labelled_split(cfg: TrainConfig, dist_info: D.DistInfo):
    """The labelled split of ``ssl.labels`` (None without it), with this process's unlabelled batch: ``mu`` x
    its share of ``--batch-size`` (0 without ``--ssl``)."""
    from wrn.data.semi_supervised import LabelledSplit

    ssl = cfg.ssl
    if ssl.labels is None:
        return None
    share = cfg.optim.batch_size // dist_info.world_size
    return LabelledSplit(
        ssl.labels, ssl.fold, ssl.epoch_steps, ssl.mu * share if ssl.method != "none" else 0, ssl.strong_policy,
        cfg.dataset.randaugment_m, ssl.strong_on,
    )  # fmt: skip


def build_model(cfg: TrainConfig, info: DatasetInfo) -> torch.nn.Module:
    """The config's model for the data ``info`` describes (its classes and image channels)."""
    import wrn
    from wrn.models.registry import model_info

    fixed = model_info(cfg.model.name)["args"]  # what the name sets (wrn-D-K-fixmatch: act, BN momentum)
    overrides: dict[str, Any] = {}
    in_channels = info.in_channels
    if in_channels != 3:
        overrides["in_channels"] = in_channels
    if cfg.model.dropout:  # 0 or unset: the model's own default (no dropout; some families have none)
        overrides["dropout"] = cfg.model.dropout
    if cfg.model.act is not None and cfg.model.act != fixed.get("act"):
        overrides["act"] = cfg.model.act
    if cfg.model.bn_momentum is not None and cfg.model.bn_momentum != fixed.get("bn_momentum"):
        overrides["bn_momentum"] = cfg.model.bn_momentum
    if cfg.model.init is not None:  # unset: the network's own (a named network's may differ from the paper's)
        overrides["init"] = cfg.model.init
    if "input_mean" in model_info(cfg.model.name)["defaults"]:  # wrn-D-K-dm: the mean/std inside its forward
        overrides.update(dm_input(cfg.dataset.normalization, info))
    return wrn.create_model(cfg.model.name, num_classes=info.num_classes, **overrides)


def dm_input(normalization: str | None, info: DatasetInfo) -> dict[str, Any]:
    """The mean/std that DeepMind's WRN (``wrn-D-K-dm``) applies inside its forward when it trains on ``info``'s
    data: given pixels in [0, 1] (``normalization`` ``pixels``), those of its code for the data set
    (``wideresnetwithswish``: CIFAR-100's and SVHN's, CIFAR-10's for any other of 3 channels), none for images
    of another number of channels; given images the data pipeline has normalised, none (never twice)."""
    from wrn.models.registry import DM_NORM

    if normalization != "pixels" or (info.name not in DM_NORM and info.in_channels != 3):
        return {"input_mean": None, "input_std": None}
    mean, std = DM_NORM.get(info.name, DM_NORM["cifar10"])
    return {"input_mean": mean, "input_std": std}


# What may differ between a network and the weights it starts from: the classifier's size, and what changes
# how it trains, not what it computes (dropout, BN momentum, the initialisation the weights replace).
_FREE_FOR_INIT = ("name", "num_classes", "dropout", "bn_momentum", "init")


def load_initial_weights(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """``--init-from``: the weights of a finished run or a model directory into ``model``, which must be the
    same network (one sentence names what differs); where the classes differ, ``model`` keeps its new
    classifier. Called for a new run only (a resumed one has its own weights in its checkpoint)."""
    from pathlib import Path

    import wrn
    from wrn.models.checked import load_state_dict_checked
    from wrn.train.rundir import RunDir

    source = cfg.model.init_from
    if not source:
        return
    if RunDir(Path(source)).state() == "partial":
        raise ConfigError(
            f"--init-from {source} is an unfinished run; finish it with 'wrn train --resume {source}', or give "
            "a finished run or a model directory"
        )
    theirs = wrn.load_model(source)
    ours = {k: v for k, v in model.config.items() if k not in _FREE_FOR_INIT}
    given = {k: v for k, v in theirs.config.items() if k not in _FREE_FOR_INIT}
    if ours != given:
        differ = sorted(k for k in set(ours) | set(given) if ours.get(k) != given.get(k))
        raise ConfigError(
            f"--init-from {source} holds a {theirs.config.get('name')} ({', '.join(f'{k} {given.get(k)}' for k in differ)}), "
            f"not this run's {cfg.model.name} ({', '.join(f'{k} {ours.get(k)}' for k in differ)}); give "
            f"--model {theirs.config.get('name')} or weights of a {cfg.model.name}"
        )
    state = theirs.state_dict()
    head = theirs.config.get("num_classes") != model.config.get("num_classes")
    if head:  # a new data set: its own classifier, as the model initialised it
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    load_state_dict_checked(model, {**model.state_dict(), **state}, source)  # (the new classifier kept)
