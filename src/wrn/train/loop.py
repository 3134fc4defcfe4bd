"""The training run: build everything from a config, train epoch by epoch, checkpoint, resume.

:func:`train` is the whole of ``wrn train``. One run directory holds ``config.yaml`` (the resolved config),
``metrics.jsonl`` and TensorBoard events (one record per epoch), ``checkpoint.pt`` (everything needed to
continue bit for bit), and at the end ``model.safetensors`` + ``model.json`` and ``curves.png``.

Resume is exact: the checkpoint holds the weights, BN statistics, optimizer (momentum buffers), the position
in the schedule and in the epoch, the grad scaler, every RNG state and the data loader's state, for every
rank. A run killed at any moment and resumed from its last checkpoint ends with the same weights, bit for bit,
as a run never interrupted (on CPU, or on GPU with ``run.deterministic``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from wrn.errors import CheckpointError, ConfigError, WRNError
from wrn.train import checkpoint as ckpt
from wrn.train import distributed as D
from wrn.train import recipe
from wrn.train.build import build_loaders, build_model, prepare_device
from wrn.train.config import TrainConfig, dump_yaml, flatten, resolve, validate, with_epochs
from wrn.train.evaluate import evaluate
from wrn.train.precision import PRECISION_NAMES, amp_warning
from wrn.train.step import TrainStep, compile_net

CONFIG_NAME = "config.yaml"
# Under DDP, ranks agree every this many steps on stopping (signal), time-based checkpoints and bad losses.
DIST_SYNC_EVERY = 10


class NonFiniteLoss(WRNError):
    """The training loss became NaN or infinite."""


class Interrupted(WRNError):
    """SIGINT or SIGTERM: a checkpoint was saved and the run stopped; ``signum`` tells which."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class TrainResult:
    out_dir: Path
    model: torch.nn.Module  # the plain model (no DDP / compile wrapper), on the training device
    last: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics record (empty if none)


# --------------------------------------------------------------------------------------------- helpers


def default_out_dir(cfg: TrainConfig, root: str | Path = "runs") -> Path:
    name = cfg.preset or f"{cfg.dataset.name}-{cfg.model.name}"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    n = 2
    while path.exists():
        path = Path(root) / f"{name}-{stamp}-{n}"
        n += 1
    return path


# What a run writes before its first checkpoint: a folder holding only these has nothing worth keeping.
_BEFORE_FIRST_CHECKPOINT = (CONFIG_NAME, "metrics.jsonl", "tensorboard")


def unstarted_run(path: Path) -> bool:
    """A run directory killed before its first checkpoint: a config.yaml, no checkpoint.pt, nothing else
    but an empty metrics file, TensorBoard events or a torn checkpoint temporary."""
    if not path.is_dir() or not (path / CONFIG_NAME).is_file() or (path / ckpt.CHECKPOINT_NAME).exists():
        return False
    for entry in path.iterdir():
        if entry.name.startswith(f".{ckpt.CHECKPOINT_NAME}.") and entry.name.endswith(".tmp"):
            continue
        if entry.name not in _BEFORE_FIRST_CHECKPOINT:
            return False
    metrics = path / "metrics.jsonl"
    return not metrics.exists() or not metrics.read_text(encoding="utf-8", errors="replace").strip()


def clear_unstarted(path: Path) -> None:
    """Remove what a run killed before its first checkpoint left, so it starts afresh."""
    import shutil

    if unstarted_run(path):
        for entry in path.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def check_new_out_dir(out: Path) -> None:
    if unstarted_run(out):
        return  # killed before its first checkpoint: it starts afresh
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a run directory" if (out / ckpt.CHECKPOINT_NAME).exists() else "not empty"
        hint = f"continue it with 'wrn train --resume {out}' or " if what == "a run directory" else ""
        raise ConfigError(
            f"the output directory {str(out)!r} already exists and is {what}; {hint}choose another --out"
        )


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Signals:
    """SIGINT / SIGTERM set a flag that the loop reads between steps; a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _Signals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------- the run


class _Run:
    """The state of one training process; :func:`train` drives it."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, dist_info: D.DistInfo, device: torch.device):
        self.cfg = cfg
        self.out_dir = out_dir
        self.dist = dist_info
        self.device = device
        self.is_main = dist_info.is_main
        self.epochs = cfg.schedule.epochs
        # Position: `epoch` epochs are complete, `step` batches of epoch `epoch + 1` are done.
        self.epoch = 0
        self.step = 0
        self.global_step = 0
        self.last_record: dict[str, Any] = {}
        self.logger = None  # the RunLogger, for per-step scalars
        # Where the last read-back of the device sums left off: (time, epoch, images seen, loss sum).
        self._last_read = (time.perf_counter(), 0, 0, 0.0)

    # ------------------------------------------------------------------ setup
    def build(self, train_loader, test_loader, info, model: torch.nn.Module) -> None:
        cfg, device = self.cfg, self.device
        self.train_loader, self.test_loader, self.info = train_loader, test_loader, info
        model = model.to(device)
        if cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dist.enabled and cfg.run.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model  # the plain module: its state_dict has no `module.` / `_orig_mod.` prefixes
        self.n_parameters = sum(p.numel() for p in model.parameters())
        net: torch.nn.Module = model
        if self.dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.run.compile:
            net = compile_net(net, cfg.run.compile_mode)
        self.net = net
        self.optimizer = recipe.make_optimizer(model, cfg.optim)
        self.step_fn = TrainStep(
            net,
            self.optimizer,
            torch.nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing),
            device=device,
            amp=cfg.run.amp,
            channels_last=cfg.run.channels_last,
        )
        self.scaler = self.step_fn.scaler
        self.steps_per_epoch = len(train_loader)
        self._new_epoch_sums()

    def _new_epoch_sums(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.seen = 0
        self.train_time = 0.0
        self.epoch_lr = None
        self.bad = torch.zeros((), dtype=torch.bool, device=self.device)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any] | None:
        """This rank's part of the checkpoint, gathered to rank 0; the full checkpoint on rank 0."""
        local = {
            "rng": ckpt.rng_state(),
            "loader": self.train_loader.state_dict(),
            "sums": {
                "loss_sum": self.loss_sum.detach().cpu(),
                "correct": self.correct.detach().cpu(),
                "seen": self.seen,
                "train_time": self.train_time,
            },
        }
        parts = D.gather_objects(self.dist, local)
        if not self.is_main:
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
            "schedule": {
                "name": self.cfg.schedule.name,
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_lr": self.epoch_lr,
                "steps_per_epoch": self.steps_per_epoch,
            },
            "scaler": self.scaler.state_dict(),
            "ranks": parts,
            "last_record": dict(self.last_record),
        }

    def check_finite(self) -> None:
        """Stop (before any checkpoint is written) if a loss since the last check was NaN or infinite."""
        bad = D.any_rank(self.dist, bool(self.bad.item()), self.device)
        if bad:
            where = f"epoch {self.epoch + 1}, step {self.step}"
            kept = (
                f"the last good checkpoint in {self.out_dir} is kept"
                if (self.out_dir / ckpt.CHECKPOINT_NAME).exists()
                else "no checkpoint had been written yet"
            )
            raise NonFiniteLoss(
                f"the training loss became NaN or infinite ({where}); {kept}: lower --lr, "
                "turn off --amp fp16, or check the data"
            )

    def save(self) -> None:
        self.check_finite()
        state = self.state()
        if self.is_main:
            ckpt.atomic_save(state, self.out_dir / ckpt.CHECKPOINT_NAME)
        self._last_save = time.monotonic()
        self._steps_since_save = 0

    def restore(self, state: dict[str, Any]) -> None:
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
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.last_record = dict(state.get("last_record") or {})
        mine = state["ranks"][self.dist.rank]
        self.train_loader.load_state_dict(mine["loader"])
        sums = mine["sums"]
        self.loss_sum = sums["loss_sum"].to(self.device)
        self.correct = sums["correct"].to(self.device)
        self.seen = int(sums["seen"])
        self.train_time = float(sums["train_time"])
        self.epoch_lr = state["schedule"].get("epoch_lr")
        self._rng_to_restore = mine["rng"]
        self._last_read = (time.perf_counter(), self.epoch, self.seen, float(self.loss_sum))

    # ------------------------------------------------------------------ training
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = self.step_fn(images, labels)
        # Kept on the device: no host sync per step.
        n = labels.shape[0]
        batch_loss = loss.double() * n
        batch_correct = (logits.detach().argmax(1) == labels).sum()
        self.loss_sum += batch_loss
        self.correct += batch_correct
        self.bad |= ~torch.isfinite(loss)
        self.seen += n
        return batch_loss, batch_correct

    def _decide(self, signals: _Signals) -> tuple[bool, bool]:
        """(stop now, checkpoint now) after a step; a collective every DIST_SYNC_EVERY steps under DDP."""
        run = self.cfg.run
        by_steps = (
            run.checkpoint_every_steps is not None and self._steps_since_save >= run.checkpoint_every_steps
        )
        by_time = (
            run.checkpoint_every_minutes is not None
            and time.monotonic() - self._last_save >= 60.0 * run.checkpoint_every_minutes
        )
        stop = signals.signum is not None
        read_now = self.global_step % run.log_every_steps == 0
        if not self.dist.enabled:
            if read_now:
                self.read_back()
            return stop, by_steps or by_time
        if read_now and self.is_main:
            self.read_back(check=False)  # the ranks check their losses together below
        if self.global_step % DIST_SYNC_EVERY:
            return False, by_steps  # steps are counted alike on every rank
        flags = torch.tensor(
            [int(stop), int(by_time and self.is_main), int(bool(self.bad.item()))], device=self.device
        )
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        stop, by_time, bad = (bool(v) for v in flags.tolist())
        if stop and signals.signum is None:
            signals.signum = signal.SIGTERM  # another rank got it
        if bad:
            self.check_finite()
        return stop, by_steps or by_time

    def read_back(self, check: bool = True) -> None:
        """Every ``run.log_every_steps`` steps: one host sync reads the device-side sums, checks that every
        loss since the last read was finite, and logs the mean loss, the lr and the images/s of the steps
        since then as per-step TensorBoard scalars."""
        bad, loss_sum = torch.stack([self.bad.double(), self.loss_sum]).tolist()
        if check and bad:
            self.check_finite()
        now = time.perf_counter()
        then, epoch, seen, loss_before = self._last_read
        if epoch != self.epoch:  # the sums restarted with this epoch
            seen, loss_before = 0, 0.0
        images = self.seen - seen
        if self.logger is not None and images > 0:
            self.logger.log_step(
                self.global_step,
                loss=(loss_sum - loss_before) / images,
                lr=self.optimizer.param_groups[0]["lr"],
                images_per_s=images * self.dist.world_size / (now - then) if now > then else None,
            )
        self._last_read = (now, self.epoch, self.seen, loss_sum)

    def interrupt(self, signals: _Signals, save: bool = True) -> None:
        if save:
            self.save()
        name = signal.Signals(signals.signum).name if signals.signum else "signal"
        raise Interrupted(
            f"{name} received: checkpoint saved at epoch {self.epoch + 1}, step {self.step}; "
            f"continue with 'wrn train --resume {self.out_dir}'",
            signals.signum or signal.SIGINT,
        )

    def run_epoch(self, signals: _Signals) -> None:
        from wrn.train.progress import EpochProgress

        e = self.epoch + 1
        cfg = self.cfg
        if self.step == 0:
            self._new_epoch_sums()
            self.epoch_lr = recipe.start_epoch(
                self.optimizer, cfg.schedule, cfg.optim.lr, e, self.steps_per_epoch
            )
        per_step_lr = cfg.schedule.name == "cosine"
        self.net.train()
        bar = EpochProgress(
            self.steps_per_epoch - self.step,
            desc=f"epoch {e}/{self.epochs}",
            enabled=self.is_main and cfg.run.progress,
        )
        try:
            start = time.perf_counter()
            for images, labels in self.train_loader:
                if per_step_lr:
                    recipe.set_lr(
                        self.optimizer,
                        recipe.lr_at(cfg.schedule, cfg.optim.lr, e, self.step, self.steps_per_epoch),
                    )
                batch_loss, batch_correct = self.train_step(images, labels)
                self.step += 1
                self.global_step += 1
                self._steps_since_save += 1
                bar.update(labels.shape[0], batch_loss, batch_correct)
                if self.step >= self.steps_per_epoch:
                    continue  # the epoch's end: evaluated and checkpointed by the caller
                stop, save = self._decide(signals)
                if stop or save:
                    self.train_time += time.perf_counter() - start
                    if stop:
                        self.interrupt(signals)
                    self.save()
                    start = time.perf_counter()  # checkpoint writes are not training time
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # the epoch's kernels are done before its time is taken
            self.train_time += time.perf_counter() - start
        finally:
            bar.close()
        if self.step != self.steps_per_epoch:
            raise RuntimeError(
                f"the training loader gave {self.step} batches in epoch {e} but len() said {self.steps_per_epoch}"
            )

    def end_epoch(self) -> dict[str, Any]:
        from wrn.train.progress import format_epoch_summary

        self.check_finite()
        D.broadcast_buffers(self.dist, self.model)
        test = evaluate(
            self.net,
            self.test_loader,
            self.device,
            amp=self.cfg.run.eval_amp,
            channels_last=self.cfg.run.channels_last,
            dist_info=self.dist,
        )
        sums = torch.stack([self.loss_sum, self.correct.double()]).double()
        sums = torch.cat([sums, torch.tensor([float(self.seen)], dtype=torch.float64, device=self.device)])
        D.all_reduce_sum(self.dist, sums)
        loss_total, correct_total, seen_total = sums.tolist()
        self.epoch += 1
        self.step = 0
        record = {
            "epoch": self.epoch,
            "lr": self.epoch_lr,
            "train_loss": loss_total / seen_total,
            "train_acc": 100.0 * correct_total / seen_total,
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "test_error": test["error"],
            **({"test_top5": test["top5"], "test_top5_error": test["top5_error"]} if "top5" in test else {}),
            "n_parameters": self.n_parameters,
            "train_time": self.train_time,
            "test_time": test["time"],
            "images_per_s": seen_total / self.train_time if self.train_time > 0 else None,
            "train_precision": PRECISION_NAMES[self.cfg.run.amp],
            "test_precision": PRECISION_NAMES[self.cfg.run.eval_amp],
        }
        self.last_record = record
        self._last_read = (time.perf_counter(), self.epoch, 0, 0.0)
        if self.is_main and self.verbose:
            print(format_epoch_summary(self.epoch, self.epochs, record), flush=True)
        return record


def _resolve_device(cfg: TrainConfig, dist_info: D.DistInfo) -> torch.device:
    """The device with its index: torch.cuda.set_device refuses a bare "cuda"."""
    if cfg.run.device == "cuda":
        return torch.device(
            "cuda", dist_info.local_rank if dist_info.enabled else torch.cuda.current_device()
        )
    return torch.device(cfg.run.device)


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


def _warn(text: str) -> None:
    """A warning: a :class:`UserWarning` (the command line shows it as one ``warning: ...`` line)."""
    warnings.warn(text, UserWarning, stacklevel=3)


def _provenance() -> dict[str, Any]:
    import platform
    import shlex

    import wrn

    return {
        "wrn": wrn.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
    }


def _config_edits(out_dir: Path, saved: dict[str, Any]) -> list[str]:
    """Dotted keys where the run's config.yaml differs from the config its checkpoint was written with."""
    import yaml

    path = out_dir / CONFIG_NAME
    try:
        on_disk = yaml.safe_load(path.read_text())
    except OSError:
        return []
    except yaml.YAMLError:
        return ["(the whole file: it is no longer valid YAML)"]
    if not isinstance(on_disk, dict):
        return ["(the whole file)"]
    ignored = {"provenance", "run.progress", "run.checkpoint_every_minutes", "run.checkpoint_every_steps"}
    a, b = flatten(on_disk), flatten(saved)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in keys if k not in ignored and k.split(".")[0] not in ignored]


def train(
    cfg: TrainConfig | dict[str, Any] | None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    epochs: int | None = None,
    checkpoint_every: dict[str, Any] | None = None,
    progress: bool | None = None,
    verbose: bool = False,
) -> TrainResult:
    """Train from ``cfg`` into ``out`` (a new directory), or continue the run in ``resume``.

    With ``resume``, ``cfg`` is ignored (pass ``None``): the run's saved config is used, and only ``epochs``
    (to extend a run), ``checkpoint_every`` (``{'checkpoint_every_minutes': .., 'checkpoint_every_steps': ..}``)
    and ``progress`` may change. A run directory that never reached its first checkpoint starts afresh from its
    config.yaml; a finished run is left as it is. ``epochs`` for a new run scales the multistep milestones
    along, as ``--epochs`` does. ``verbose`` prints the header, one line per epoch and a progress display (the
    command line's output); the returned model is in eval mode. Bad input raises a
    :class:`wrn.errors.WRNError` before anything is written.
    """
    state = None
    fresh_dir = None  # a run directory killed before its first checkpoint, to start afresh
    if resume is not None:
        out_dir = Path(resume)
        if unstarted_run(out_dir):
            cfg = _read_config_yaml(out_dir)
            fresh_dir = out_dir
            _say(
                verbose,
                f"{out_dir} never reached its first checkpoint: starting it afresh from its {CONFIG_NAME}",
            )
        else:
            state = ckpt.load(out_dir)
            base = validate(state["config"]).to_dict()
            done = int(state["epoch"])
            # (killed after its last checkpoint but before writing the model: it still needs finishing)
            finished = (
                done >= base["schedule"]["epochs"]
                and not state["step"]
                and (out_dir / "model.json").is_file()
            )
            if finished and (epochs is None or epochs == base["schedule"]["epochs"]):
                return _already_complete(out_dir, state, verbose)
            if epochs is not None and epochs != base["schedule"]["epochs"]:
                if epochs < max(done, 1) or (epochs == done and state["step"]):
                    raise ConfigError(
                        f"--epochs {epochs} is fewer than the {done} epochs this run has already trained; "
                        f"give at least {max(done, 1)}"
                    )
                if base["schedule"]["name"] == "cosine":
                    raise ConfigError(
                        "a cosine schedule cannot be extended on resume (its rate is already annealed towards 0); "
                        "start a new run with the longer schedule instead"
                    )
                base["schedule"]["epochs"] = epochs
            edits = _config_edits(out_dir, state["config"])
            if edits:
                kept = out_dir / "config.edited.yaml"
                os.replace(out_dir / CONFIG_NAME, kept)
                _warn(
                    f"{out_dir / CONFIG_NAME} was edited ({', '.join(edits[:6])}); a run continues with the "
                    f"config it started with, so these edits are ignored (your file is kept as {kept.name}); "
                    f"to train longer, use --resume {out_dir} --epochs N",
                )
            cfg = validate(base)
    else:
        if cfg is None:
            raise ConfigError("train() needs a config, or resume=RUN_DIR to continue a run")
        cfg = cfg if isinstance(cfg, TrainConfig) else validate(cfg)
        if epochs is not None:
            cfg = with_epochs(cfg, epochs)
    run_updates: dict[str, Any] = dict(checkpoint_every or {})
    if progress is not None:
        run_updates["progress"] = progress
    if not verbose:
        run_updates["progress"] = False
    if run_updates:
        cfg = validate({**cfg.to_dict(), "run": {**cfg.run.model_dump(), **run_updates}})
    cfg = resolve(cfg)
    if state is None:  # a new run records what runs it; a resumed one keeps what started it
        cfg = validate({**cfg.to_dict(), "provenance": _provenance()})

    device_kind = cfg.run.device.split(":")[0]
    dist_info = D.setup(device_kind)
    try:
        return _train(cfg, fresh_dir or out, state, resume if state is not None else None, dist_info, verbose)
    finally:
        D.teardown()


def _read_config_yaml(out_dir: Path) -> TrainConfig:
    import yaml

    path = out_dir / CONFIG_NAME
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise ConfigError(f"{path} is not valid YAML; fix it or start a new run with 'wrn train'") from None
    return validate(data)


def _already_complete(out_dir: Path, state: dict[str, Any], verbose: bool) -> TrainResult:
    """``--resume`` of a finished run: say so and touch nothing."""
    import wrn

    epochs = int(state["epoch"])
    last = dict(state.get("last_record") or {})
    error = f" (test error {last['test_error']:.2f}%)" if isinstance(last.get("test_error"), float) else ""
    _say(
        verbose,
        f"{out_dir} is complete: {epochs} of {recipe.epochs_text(epochs)} trained{error}; nothing to do. To train it longer: "
        f"wrn train --resume {out_dir} --epochs N (N > {epochs})",
    )
    return TrainResult(out_dir=out_dir, model=wrn.load_model(out_dir), last=last)


def _train(cfg, out, state, resume, dist_info: D.DistInfo, verbose: bool) -> TrainResult:
    device = _resolve_device(cfg, dist_info)
    prepare_device(device, processes_here=dist_info.local_world_size, deterministic=cfg.run.deterministic)
    verbose = verbose and dist_info.is_main

    # The output directory: decided (and checked) on rank 0, before anything is built or written.
    if state is None:
        problem, out_dir = None, None
        if dist_info.is_main:
            out_dir = Path(out) if out is not None else default_out_dir(cfg)
            try:
                check_new_out_dir(out_dir)
            except ConfigError as exc:
                problem = str(exc)
        problem, out_dir = D.broadcast_object(dist_info, (problem, out_dir))
        if problem:
            raise ConfigError(problem)
    else:
        out_dir = Path(resume)

    _seed_all(cfg.run.seed)
    train_loader, test_loader, info = build_loaders(cfg, device, dist_info)
    if cfg.dataset.image_size is None:  # an image folder: the size its images were read at
        cfg.dataset.image_size = int(info.image_size)
    _seed_all(cfg.run.seed)  # the model's initial weights depend on the seed only
    model = build_model(cfg, info)
    if dist_info.enabled:  # different dropout masks per rank
        _seed_all(cfg.run.seed + 1_000_003 * dist_info.rank)

    run = _Run(cfg, out_dir, dist_info, device)
    run.verbose = verbose
    run.build(train_loader, test_loader, info, model)
    if state is not None:
        run.restore(state)
        ckpt.set_rng_state(run._rng_to_restore)
    del state

    from wrn.train.logging import RunLogger

    if dist_info.is_main:
        if resume is None:
            clear_unstarted(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(out_dir)
        from wrn.atomic import atomic_write_text

        atomic_write_text(out_dir / CONFIG_NAME, dump_yaml(cfg))
    logger_kwargs = {"resume_epoch": run.epoch} if resume is not None else {}
    logger = RunLogger(out_dir, enabled=dist_info.is_main, **logger_kwargs)
    run.logger = logger
    if dist_info.is_main:
        for text in [*recipe.warnings_for(cfg.schedule), amp_warning(device, cfg.run.amp)]:
            if text:
                _warn(text)
        where = "continuing" if resume is not None else "run directory"
        at = f" at epoch {run.epoch + 1}, step {run.step}" if resume is not None else ""
        epochs = recipe.epochs_text(cfg.schedule.epochs)
        _say(
            verbose,
            f"{where}: {out_dir}{at}\n"
            f"model {cfg.model.name} ({run.n_parameters:,} parameters) on {cfg.dataset.name}, "
            f"{epochs} of {run.steps_per_epoch} steps, batch {cfg.optim.batch_size}, "
            f"{recipe.describe(cfg.schedule, cfg.optim.lr)}, device {device}"
            + (f" x {dist_info.world_size} processes" if dist_info.enabled else "")
            + f", amp {cfg.run.amp}",
        )

    run._last_save = time.monotonic()
    run._steps_since_save = 0
    try:
        with _Signals() as signals:
            if resume is None:
                run.save()  # the run is resumable from its very first step
            while run.epoch < run.epochs:
                run.run_epoch(signals)
                record = run.end_epoch()
                logger.log_epoch(record)
                run.save()
                if D.any_rank(dist_info, signals.signum is not None, run.device) and run.epoch < run.epochs:
                    signals.signum = signals.signum or signal.SIGTERM  # another rank got it
                    run.interrupt(signals, save=False)  # saved just above
    finally:
        logger.close()

    if dist_info.is_main:
        _finish(run, out_dir, verbose)
    return TrainResult(out_dir=out_dir, model=run.model.eval(), last=run.last_record)


def _finish(run: _Run, out_dir: Path, verbose: bool) -> None:
    import wrn
    from wrn.data.registry import preprocessing_record

    data, info = run.cfg.dataset, run.info
    classes = list(info.classes) if info.classes else None
    wrn.save_model(
        run.model,
        out_dir,
        metadata={
            "dataset": data.name,
            "normalization": data.normalization,
            "epochs": run.epoch,
            "test_error": run.last_record.get("test_error"),
            "input": preprocessing_record(info, data.normalization, data.augment),
            "classes": classes,
        },
    )
    try:
        from wrn.train.plot import plot_run

        plot_run(out_dir)
    except Exception as exc:  # the weights are saved; a figure is not worth failing the run for
        _warn(f"could not draw curves.png ({exc})")
    last = run.last_record
    if last:
        _say(
            verbose,
            f"done: test error {last['test_error']:.2f}% (accuracy {last['test_acc']:.2f}%) after "
            f"{recipe.epochs_text(run.epoch)}; model and curves in {out_dir}",
        )


__all__ = ["Interrupted", "NonFiniteLoss", "TrainResult", "train", "default_out_dir", "check_new_out_dir"]
