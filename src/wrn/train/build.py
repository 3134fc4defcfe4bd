"""What a run is made of, built from its config: the data loaders and the model.

Shared by the training loop and by evaluation of a run directory.
"""

from __future__ import annotations

from typing import Any

import torch

from wrn.data.registry import DatasetInfo
from wrn.errors import ConfigError
from wrn.train import distributed as D
from wrn.train.config import TrainConfig


def build_loaders(cfg: TrainConfig, device: torch.device, dist_info: D.DistInfo):
    from wrn.data import make_loaders

    if cfg.optim.batch_size % dist_info.world_size:
        raise ConfigError(
            f"batch size {cfg.optim.batch_size} does not split evenly over {dist_info.world_size} processes; "
            f"choose a multiple of {dist_info.world_size}"
        )
    data = cfg.dataset
    train_loader, test_loader, info = make_loaders(
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
    )
    if len(train_loader) == 0:
        raise ConfigError(
            f"batch size {cfg.optim.batch_size} is larger than the {data.name} training set; use a smaller --batch-size"
        )
    return train_loader, test_loader, info


def build_model(cfg: TrainConfig, info: DatasetInfo) -> torch.nn.Module:
    """The config's model for the data ``info`` describes (its classes and image channels)."""
    import wrn

    overrides: dict[str, Any] = {}
    in_channels = info.in_channels
    if in_channels != 3:
        overrides["in_channels"] = in_channels
    if cfg.model.dropout:  # 0 or unset: the model's own default (no dropout; some families have none)
        overrides["dropout"] = cfg.model.dropout
    if cfg.model.act is not None:
        overrides["act"] = cfg.model.act
    if cfg.model.bn_momentum is not None:
        overrides["bn_momentum"] = cfg.model.bn_momentum
    return wrn.create_model(cfg.model.name, num_classes=info.num_classes, **overrides)
