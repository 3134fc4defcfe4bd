"""What every training/evaluation loader of the package shares, whatever feeds it.

One ``for`` loop is one epoch of this rank's shard; ``len(loader)`` is its number of batches; ``epoch`` and
``position`` say where the loader stands, and ``state_dict()`` / ``load_state_dict()`` save and restore that
(plain ints and tensors, loadable with ``torch.load(weights_only=True)``) so a resumed run sees exactly the
batches an uninterrupted one would. Training shards are cut to a multiple of ``world_size`` so every rank runs
the same number of batches; evaluation keeps every sample (an uneven shard per rank: sum the counts).
"""

from __future__ import annotations

import math

import torch

from wrn.errors import ConfigError


class EpochLoader:
    def _setup_protocol(
        self,
        num_samples: int,
        batch_size: int,
        train: bool,
        drop_last: bool,
        rank: int,
        world_size: int,
        seed: int,
        normalize,
        device,
        dtype: torch.dtype,
        channels: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}.")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size}).")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.drop_last = bool(drop_last) if train else False
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.dtype = dtype
        n = self.num_samples
        self._shard_size = n // world_size if train else len(range(rank, n, world_size))
        self.mean = self.std = None
        if normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=dtype).reshape(1, -1, 1, 1) for v in normalize)
            if channels is not None and (
                mean.shape[1] not in (1, channels) or std.shape[1] not in (1, channels)
            ):
                raise ConfigError(f"normalize has {mean.shape[1]} channels but the images have {channels}.")
            self.mean, self.std = mean.to(self.device), std.to(self.device)
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self._shard_size // self.batch_size
        return math.ceil(self._shard_size / self.batch_size)

    def _normalize_(self, images: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` in place (mean and std on the 0..255 scale), or ``images`` as they are."""
        return images if self.mean is None else images.sub_(self.mean).div_(self.std)

    def state_dict(self) -> dict:
        """The epoch, the batches already served in it, and what must match for a restore to line up."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a state saved by a loader of another data size, batch size or number
        of processes is refused (its batches would not line up)."""
        for key in ("num_samples", "batch_size", "world_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ConfigError(
                    f"the saved loader state has {key} {int(state[key])} but this loader has "
                    f"{getattr(self, key)}: resume with the same data and batch size."
                )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        if "seed" in state:
            self.seed = int(state["seed"])
