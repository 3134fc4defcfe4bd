"""Loss, accuracy and error of a model on a test loader, in eval mode (dropout off, BN running statistics)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from wrn.errors import CheckpointError, ConfigError
from wrn.train.distributed import DistInfo, all_reduce_sum
from wrn.train.precision import autocast
from wrn.train.rundir import RunDir


def evaluate(
    model: torch.nn.Module,
    loader: Any,
    device: torch.device,
    *,
    amp: str = "off",
    channels_last: bool = False,
    dist_info: DistInfo | None = None,
) -> dict[str, float]:
    """Cross-entropy (no label smoothing), accuracy and error in percent over every batch of ``loader``;
    with more than 10 classes also the top-5 accuracy and error (``top5``, ``top5_error``), as the paper's
    ImageNet tables report.

    Under DDP each rank evaluates its shard and the sums are added over ranks.
    """
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    classes = 0
    with torch.inference_mode():
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = model(images)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(1) == labels).sum()
            count += labels.numel()
            classes = logits.shape[1]
            if classes > 10:
                top5 += (logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum()
    sums = torch.stack([loss_sum, correct.double(), count.double(), top5.double()])
    all_reduce_sum(dist_info or DistInfo(), sums)
    loss_total, correct_total, n, top5_total = sums.tolist()
    model.train(was_training)
    if n == 0:
        return {"loss": float("nan"), "acc": float("nan"), "error": float("nan"), "n": 0, "time": 0.0}
    acc = 100.0 * correct_total / n
    result = {"loss": loss_total / n, "acc": acc, "error": 100.0 - acc}
    if classes > 10:
        result.update(top5=100.0 * top5_total / n, top5_error=100.0 - 100.0 * top5_total / n)
    return {**result, "n": int(n), "time": time.perf_counter() - start}


def _read_run_data(path: Path) -> dict[str, Any]:
    """Data settings from a run's config.yaml, else from model.json's metadata, else nothing."""
    try:
        return RunDir(path).read_config().dataset.model_dump()
    except ConfigError:  # no run's config (a converted model), or one that cannot be read: model.json's
        pass
    model_file = RunDir(path).model_json
    if model_file.is_file():
        try:
            meta = json.loads(model_file.read_text()).get("metadata") or {}
        except (ValueError, AttributeError, RecursionError):
            meta = {}
        found = {"name": meta.get("dataset"), "normalization": meta.get("normalization")}
        return {k: v for k, v in found.items() if v}
    return {}


def evaluate_dir(
    path: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    normalization: str | None = None,
    image_size: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    amp: str = "off",
    download: bool = False,
    split: str | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """Evaluate the model of a run or model directory on its (or the given) test set, or on another
    ``split`` of the data set (e.g. ``train``, or SVHN's ``extra``), in eval mode.

    A directory with ``model.safetensors`` + ``model.json`` is loaded with :func:`wrn.load_model`; a run
    directory without them (an unfinished run) uses the weights of its ``checkpoint.pt``.
    """
    given = {"name": dataset, "root": data_dir, "normalization": normalization, "image_size": image_size}
    found = load_for_eval(path, {**given, "verify": None if verify else False}, batch_size=batch_size,
                          device=device, amp=amp, download=download, split=split)  # fmt: skip
    result = evaluate(found.model, found.loader, found.device, amp=found.cfg.run.amp)
    return {**found.record(), **result}


@dataclass
class Found:
    """What :func:`load_for_eval` found: the model, the test loader, the run's resolved config (its data
    settings with the given ones on top) and where the weights came from."""

    model: torch.nn.Module
    loader: Any
    info: Any  # wrn.data.registry.DatasetInfo
    cfg: Any  # wrn.train.config.TrainConfig
    source: str  # "model", or the checkpoint of an unfinished run
    split: str
    run_dir: RunDir

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.run.device)

    def record(self) -> dict[str, Any]:
        name = getattr(self.model, "config", {}).get("name", type(self.model).__name__)
        return {"model": name, "dataset": self.cfg.dataset.name, "split": self.split, "source": self.source}


def load_for_eval(
    path: str | Path,
    given: dict[str, Any],
    *,
    batch_size: int = 256,
    device: str = "auto",
    amp: str = "off",
    download: bool = False,
    split: str | None = None,
    loader_normalization: str | None = None,
) -> Found:
    """The model of a run or model directory and the test loader of its data set (``given``: data settings
    that override the run's); ``loader_normalization`` makes the loader normalise otherwise than the run
    (``pixels``: the images in [0, 1] that attacks act on). Everything is checked before any data is read."""
    from wrn.data import dataset_info, make_loaders

    run_dir, has_model = _check_dir(path, batch_size)
    cfg = _data_config(run_dir, given, download, device, amp)
    dev, data = torch.device(cfg.run.device), cfg.dataset
    splits = dataset_info(data.name).splits
    if split is not None and split not in splits:
        raise ConfigError(f"{data.name} has no split {split!r}; choose one of {', '.join(splits)}")
    _, test_loader, info = make_loaders(
        data.name,
        data.root,
        batch_size=batch_size,
        augment=data.augment,  # the test loader never augments; image folders pick their test transform by it
        normalization=loader_normalization or data.normalization,
        device=dev,
        download=data.download,
        verify=data.verify,
        image_size=data.image_size,
        workers=data.workers,
        eval_batch_size=batch_size,
        split_test=split,
    )
    model, source = _load_model(run_dir, has_model, info, dev)
    _check_fits(model, info, data)
    split_name = split or dataset_info(data.name).test_split
    return Found(model, test_loader, info, cfg, source, split_name, run_dir)


def _check_dir(path: str | Path, batch_size: int):
    """The run or model directory, and whether it holds final weights; checked before any data is read."""
    from wrn.paths import check_input_dir

    run_dir = RunDir(check_input_dir(path, "the run", "pass a run directory or a model directory"))
    has_model = run_dir.state() == "done"
    if not has_model and not run_dir.checkpoint.is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} holds neither model.safetensors + model.json nor {run_dir.checkpoint.name}; "
            "pass a directory written by 'wrn train' or wrn.save_model"
        )
    if batch_size <= 0:
        raise ConfigError(f"--batch-size must be a positive integer, not {batch_size}")
    if has_model:
        from wrn.models.io import read_model_doc

        read_model_doc(run_dir.path)  # a model.json out of its schema is named before any data is read
    return run_dir, has_model


def _data_config(run_dir, given: dict[str, Any], download: bool, device: str, amp: str):
    """The run's data settings with the given ones on top; another data set brings its own defaults."""
    from wrn.train.config import validate
    from wrn.train.resolve import resolve

    saved = _read_run_data(run_dir.path)
    settings = {**saved, **{k: v for k, v in given.items() if v is not None}}
    if "name" not in settings:
        raise ConfigError(f"{str(run_dir)!r} does not say which data set it was trained on; pass --dataset")
    dataset = given["name"]
    if dataset is not None and dataset != saved.get("name"):
        if given["normalization"] is None:
            settings["normalization"] = None  # another data set: its own normalisation
        settings["augment"] = None  # (only used to pick the test transform of image folders)
        if given["image_size"] is None:
            settings.pop("image_size", None)  # the saved size was the other data set's
    if download:
        settings["download"] = True
    return resolve(validate({"dataset": settings, "run": {"device": device, "amp": amp}}))


def _load_model(run_dir, has_model: bool, info, dev: torch.device):
    """The final model, or the weights of an unfinished run's checkpoint; and which of the two."""
    import wrn

    if has_model:
        return wrn.load_model(run_dir.path, map_location=dev), "model"
    from wrn.models.checked import load_state_dict_checked
    from wrn.train import checkpoint as ckpt
    from wrn.train.build import build_model
    from wrn.train.config import validate

    state = ckpt.load(run_dir.path)
    model = build_model(validate(state["config"]), info)
    load_state_dict_checked(model, state["model"], source=str(run_dir.checkpoint))
    return model.to(dev), f"checkpoint (epoch {state['epoch']}, step {state['step']})"


def _check_fits(model: torch.nn.Module, info, data) -> None:
    """The model's outputs and input channels are the data set's."""
    out_features = _num_outputs(model)
    if out_features is not None and info.num_classes is not None and out_features != info.num_classes:
        raise ConfigError(
            f"the model has {out_features} outputs but {data.name} has {info.num_classes} classes; pass the "
            "--dataset it was trained on"
        )
    channels = getattr(model, "config", {}).get("in_channels")
    if channels is not None and channels != info.in_channels:
        kinds = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}
        raise ConfigError(
            f"the model takes {kinds.get(channels, f'{channels}-channel')} images but {data.name} "
            f"{'at ' + str(data.root) + ' ' if data.name == 'imagefolder' else ''}gives "
            f"{kinds.get(info.in_channels, f'{info.in_channels}-channel')} ones; pass the --dataset it was trained on"
        )


def _num_outputs(model: torch.nn.Module) -> int | None:
    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            last = module
    return last.out_features if last is not None else None
