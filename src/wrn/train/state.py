"""Everything a run must keep to continue bit for bit: :class:`RunState`, whose ``state_dict()`` is the
checkpoint (the PyTorch pattern: ``load_state_dict`` puts it back).

The checkpoint holds the weights and BN statistics, the optimizer (momentum buffers), the grad scaler, the
position (epochs done, steps of the current epoch done, steps in all), the epoch's metric sums, the last
epoch's record, the average of the weights (EMA) when it is on (with its count of updates, which its warm-up
reads), and for every process its RNG states, Cutout's generator when it is on, its objective's state
(mixup/CutMix's generator, ...) and its data loader's position. SAM, AWP (its proxy is reloaded every step and its SGD has no momentum), the lr warm-up and
gradient clipping keep no state of their own (the warm-up's rate follows from the step count). A run killed at any
moment and resumed from its last checkpoint ends with the same weights, bit for bit, as one never stopped
(on a CPU, or on a GPU with ``run.deterministic``).
"""

from __future__ import annotations

from typing import Any

import torch

from wrn.errors import CheckpointError
from wrn.train import checkpoint as ckpt
from wrn.train import distributed as D
from wrn.train.build import Trainables
from wrn.train.config import TrainConfig
from wrn.train.meter import EpochMeter


class RunState:
    """The state of one training process: what it trains (``trainables``), where it is, what it has summed.

    ``epoch`` epochs are complete and ``step`` batches of epoch ``epoch + 1`` are done; ``global_step``
    counts every step of the run.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        trainables: Trainables,
        train_loader,
        meter: EpochMeter,
        dist_info: D.DistInfo,
    ) -> None:
        self.cfg = cfg
        self.trainables = trainables
        self.train_loader = train_loader
        self.meter = meter
        self.dist = dist_info
        self.steps_per_epoch = len(train_loader)
        self.epoch = 0
        self.step = 0
        self.global_step = 0
        self.epoch_lr: float | None = None
        self.last_record: dict[str, Any] = {}
        self.holdout = None  # a HoldoutSelection (adv.holdout), set by build_loop
        self.recent_acc: list[float] = []  # the test accuracies of the last 20 epochs (with --labels)

    @property
    def model(self) -> torch.nn.Module:
        return self.trainables.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.trainables.optimizer

    @property
    def ema(self):
        """The :class:`~wrn.train.ema.WeightEMA` of the run, or ``None`` when ``optim.ema_decay`` is 0."""
        return self.trainables.step.ema

    def finite(self) -> torch.Tensor:
        """One device flag: every weight, buffer and optimizer state tensor of this process is finite."""
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        for per_param in self.optimizer.state.values():
            tensors += [t for t in per_param.values() if torch.is_tensor(t) and t.is_floating_point()]
        flags = [torch.isfinite(t).all() for t in tensors]
        return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool)

    def state_dict(self) -> dict[str, Any] | None:
        """The checkpoint: this rank's part gathered to rank 0, which returns the whole; other ranks None."""
        local = {
            "rng": ckpt.rng_state(),
            "loader": self.train_loader.state_dict(),
            "sums": self.meter.state_dict(),
        }
        step = self.trainables.step
        if step.cutout is not None:
            local["cutout"] = step.cutout.state_dict()
        local["objective"] = step.objective.state_dict()
        parts = D.gather_objects(self.dist, local)
        if not self.dist.is_main:
            return None
        return {
            "format": ckpt.FORMAT,
            "version": ckpt.VERSION,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "world_size": self.dist.world_size,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"epoch_lr": self.epoch_lr, "steps_per_epoch": self.steps_per_epoch},
            "scaler": self.trainables.step.scaler.state_dict(),
            "ranks": parts,
            "last_record": dict(self.last_record),
            **({"recent_acc": list(self.recent_acc)} if self.cfg.ssl.labels is not None else {}),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            **({"holdout": self.holdout.state_dict()} if self.holdout is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by a run of the same config on as many processes."""
        if state.get("world_size", 1) != self.dist.world_size:
            raise CheckpointError(
                f"the checkpoint was written by {state.get('world_size')} processes but this run has "
                f"{self.dist.world_size}; resume with torchrun --nproc-per-node={state.get('world_size')}"
            )
        if state["schedule"].get("steps_per_epoch") != self.steps_per_epoch:
            raise CheckpointError(
                f"the training data now gives {self.steps_per_epoch} batches per epoch but the checkpoint was "
                f"written with {state['schedule'].get('steps_per_epoch')}; resume with the same data set"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"the checkpoint's weights do not fit the run's {self.cfg.model.name} ({reason[:200]}); "
                "the file is not this run's: restore it from a backup or start a new run"
            ) from None
        self._load_recipes(state)
        self.trainables.step.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.last_record = dict(state.get("last_record") or {})
        self.recent_acc = [float(a) for a in state.get("recent_acc", [])]
        self.epoch_lr = state["schedule"].get("epoch_lr")
        mine = state["ranks"][self.dist.rank]
        self.train_loader.load_state_dict(mine["loader"])
        self.meter.load_state_dict(mine["sums"])
        ckpt.set_rng_state(mine["rng"])

    def _load_recipes(self, state: dict[str, Any]) -> None:
        """The EMA, this rank's Cutout generator and its objective's state, where the run has them."""
        step, mine = self.trainables.step, state["ranks"][self.dist.rank]
        missing = [
            name
            for name, on, saved in (("ema", self.ema, state), ("cutout", step.cutout, mine))
            if on is not None and name not in saved
        ]
        if missing:
            raise CheckpointError(
                f"the checkpoint holds no {' and no '.join(missing)} state although the run's config has it on; "
                "the file is not this run's: restore it from a backup or start a new run"
            )
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.holdout is not None:
            if "holdout" not in state:
                raise CheckpointError(
                    "the checkpoint holds no hold-out state although the run's config has --adv-holdout on; the "
                    "file is not this run's: restore it from a backup or start a new run"
                )
            self.holdout.load_state_dict(state["holdout"])
        if step.cutout is not None:
            step.cutout.load_state_dict(mine["cutout"])
        # (checkpoints written before objectives kept mixup/CutMix's generator beside the others: "mixing")
        objective_state = mine.get("objective", mine)
        try:
            step.objective.load_state_dict(objective_state)
        except KeyError as exc:
            raise CheckpointError(
                f"the checkpoint holds no {exc.args[0]} state although the run's config has it on; the file is "
                "not this run's: restore it from a backup or start a new run"
            ) from None
