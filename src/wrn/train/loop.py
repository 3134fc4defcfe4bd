"""The training run: :func:`train` starts one from a config, :func:`resume` continues one; both are the whole
of ``wrn train``.

A run is built from named parts (docs/architecture.md): the trainables (:func:`~wrn.train.build.build_trainables`),
its :class:`~wrn.train.state.RunState` (the checkpoint is its ``state_dict()``), the epoch's
:class:`~wrn.train.meter.EpochMeter`, the :class:`~wrn.train.recipe.Schedule` that gives every step's lr, and
the :class:`~wrn.train.policy.CheckpointPolicy` that says when to stop or checkpoint. :func:`train_one_epoch`
reads top to bottom. What the run directory holds is :mod:`wrn.train.rundir`.
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

from wrn.data.policies import describe_data
from wrn.errors import ConfigError, WriteError, WRNError
from wrn.train import checkpoint as ckpt
from wrn.train import distributed as D
from wrn.train import recipe
from wrn.train.build import build_loaders, build_model, build_trainables, prepare_device
from wrn.train.config import TrainConfig, dump_yaml, flatten, resolve, validate, with_epochs
from wrn.train.evaluate import evaluate
from wrn.train.meter import EpochMeter
from wrn.train.options import volatile_keys
from wrn.train.policy import CheckpointPolicy, Signals
from wrn.train.precision import PRECISION_NAMES, amp_warning
from wrn.train.rundir import LOCK_FD_ENV, RunDir, RunLock
from wrn.train.state import RunState


class NonFiniteLoss(WRNError):
    """The training loss, or the weights, became NaN or infinite."""


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


# --------------------------------------------------------------------------------------------- the run directory


def default_out_dir(cfg: TrainConfig, root: str | Path = "runs") -> Path:
    name = cfg.preset or f"{cfg.dataset.name}-{cfg.model.name}"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    n = 2
    while path.exists():
        path = Path(root) / f"{name}-{stamp}-{n}"
        n += 1
    return path


def check_new_out_dir(out: Path) -> None:
    """A new run may go into a folder that does not exist, an empty one, or one killed before its first
    checkpoint; anything else is refused in one sentence."""
    from wrn.paths import check_output_dir

    run_dir = RunDir(out)
    check_output_dir(out, "--out")  # a file, a path under a file, a read-only or unwritable place
    if run_dir.is_unstarted():
        return  # killed before its first checkpoint: it starts afresh
    if out.exists() and any(out.iterdir()):
        if run_dir.checkpoint.exists():
            raise ConfigError(
                f"the output directory {str(out)!r} already exists and is a run directory; continue it with "
                f"'wrn train --resume {out}' or choose another --out"
            )
        raise ConfigError(
            f"the output directory {str(out)!r} already exists and is not empty; choose another --out"
        )


def _hold_lock(run_dir: RunDir) -> RunLock:
    """The run's lock, for this process's lifetime (one process trains a run at a time)."""
    lock = RunLock(run_dir.lock)
    inherited = os.environ.get(LOCK_FD_ENV, "")
    if inherited.isdigit() and lock.adopt(int(inherited)):
        return lock  # `wrn reproduce` took it for us
    try:
        taken = lock.acquire()
    except OSError as exc:
        raise ConfigError(
            f"cannot create the run's lock file {str(run_dir.lock)!r} ({exc.strerror}); "
            "train into a folder you can write to"
        ) from None
    if not taken:
        pid = lock.holder()
        who = f"process {pid}" if pid else "another process"
        raise ConfigError(
            f"{run_dir} is being trained by {who} right now; wait for it to finish, or stop it first"
            + (f" (kill {pid})" if pid else "")
        )
    return lock


# --------------------------------------------------------------------------------------------- one epoch


@dataclass
class Loop:
    """What one training process works with: built once by :func:`_run`, handed to each epoch."""

    cfg: TrainConfig
    run_dir: RunDir
    dist: D.DistInfo
    device: torch.device
    state: RunState
    schedule: recipe.Schedule
    policy: CheckpointPolicy
    test_loader: Any
    info: Any
    logger: Any = None
    verbose: bool = False
    last_good: tuple[int, int] | None = None  # (epoch, step) of the last checkpoint written

    @property
    def meter(self) -> EpochMeter:
        return self.state.meter


def train_one_epoch(loop: Loop) -> None:
    """Train epoch ``state.epoch + 1`` from step ``state.step`` to its end, checkpointing and stopping as the
    policy says. The loss and correct counts stay on the device, read back every ``run.log_every_steps``."""
    from wrn.train.progress import EpochProgress

    state, meter, cfg = loop.state, loop.meter, loop.cfg
    epoch = state.epoch + 1
    if state.step == 0:
        meter.reset()
        state.epoch_lr = loop.schedule.lr(epoch, 0)
    net, step_fn = state.trainables.net, state.trainables.step
    net.train()
    bar = EpochProgress(
        meter,
        state.steps_per_epoch - state.step,
        desc=f"epoch {epoch}/{cfg.schedule.epochs}",
        enabled=loop.dist.is_main and cfg.run.progress,
    )
    try:
        start = time.perf_counter()
        for images, labels in state.train_loader:
            loop.schedule.apply(state.optimizer, epoch, state.step)
            loss, logits = step_fn(images, labels)
            meter.update(loss, logits, step_fn.counted(labels))
            state.step += 1
            state.global_step += 1
            loop.policy.step()
            bar.update()
            if state.step >= state.steps_per_epoch:
                continue  # the epoch's end: evaluated and checkpointed by the caller
            if state.global_step % cfg.run.log_every_steps == 0:
                _read_back(loop)
            stop, save, bad = loop.policy.decide(state.global_step, meter.bad)
            if bad:
                _stop_non_finite(loop, weights=False)
            if stop or save:
                meter.train_time += time.perf_counter() - start
                _save(loop)
                if stop:
                    _interrupted(loop)
                start = time.perf_counter()  # checkpoint writes are not training time
        if loop.device.type == "cuda":
            torch.cuda.synchronize(loop.device)  # the epoch's kernels are done before its time is taken
        meter.train_time += time.perf_counter() - start
    finally:
        bar.close()
    if state.step != state.steps_per_epoch:
        raise RuntimeError(
            f"the training loader gave {state.step} batches in epoch {epoch} but len() said {state.steps_per_epoch}"
        )


def _read_back(loop: Loop) -> None:
    """The one host sync every ``run.log_every_steps`` steps: the NaN check (a single process; under DDP the
    policy's collective does it) and the per-step TensorBoard scalars."""
    if loop.dist.enabled and not loop.dist.is_main:
        return
    reading = loop.meter.read(loop.dist.world_size)
    if reading.bad and not loop.dist.enabled:
        _stop_non_finite(loop, weights=False)
    if loop.logger is not None and reading.step_loss is not None:
        loop.logger.log_step(
            loop.state.global_step,
            loss=reading.step_loss,
            lr=loop.state.optimizer.param_groups[0]["lr"],
            images_per_s=reading.images_per_s,
        )


def end_epoch(loop: Loop) -> dict[str, Any]:
    """Evaluate on the test set and make the epoch's record (sums over every process)."""
    from wrn.train.progress import format_epoch_summary

    state, cfg = loop.state, loop.cfg
    _check_finite(loop)  # an epoch that blew up is not evaluated nor logged
    evaluated = _evaluated(cfg, state.ema is not None)
    test = _test(loop, state.model, state.trainables.net) if "model" in evaluated else None
    ema = _test(loop, state.ema.module) if "ema" in evaluated else None
    sums = loop.meter.totals()
    D.all_reduce_sum(loop.dist, sums)
    loss_total, correct_total, seen_total = sums.tolist()
    train_time = loop.meter.train_time
    state.epoch += 1
    state.step = 0
    record = {
        "epoch": state.epoch,
        "lr": state.epoch_lr,
        "train_loss": loss_total / seen_total,
        "train_acc": 100.0 * correct_total / seen_total,
        **({f"test_{k}": test[k] for k in ("loss", "acc", "error")} if test is not None else {}),
        **(
            {"test_top5": test["top5"], "test_top5_error": test["top5_error"]}
            if test and "top5" in test
            else {}
        ),
        **({f"ema_test_{k}": ema[k] for k in ("loss", "acc", "error")} if ema is not None else {}),
        **({"evaluated": list(evaluated)} if state.ema is not None else {}),
        "n_parameters": sum(p.numel() for p in state.model.parameters()),
        "train_time": train_time,
        "test_time": (test or ema)["time"],  # the plain model's test pass, or the EMA's alone
        "images_per_s": seen_total / train_time if train_time > 0 else None,
        "train_precision": PRECISION_NAMES[cfg.run.amp],
        "test_precision": PRECISION_NAMES[cfg.run.eval_amp],
    }
    state.last_record = record
    if loop.dist.is_main and loop.verbose:
        mixed = " (train acc: of the mixed targets' larger part)" if state.trainables.step.mixing else ""
        print(format_epoch_summary(state.epoch, cfg.schedule.epochs, record) + mixed, flush=True)
    return record


def _evaluated(cfg: TrainConfig, ema_on: bool) -> tuple[str, ...]:
    """What each epoch's test pass evaluates: the plain model, and with an EMA, as ``run.eval_models`` says."""
    if not ema_on:
        return ("model",)
    return {"both": ("model", "ema"), "ema": ("ema",), "model": ("model",)}[cfg.run.eval_models]


def _test(loop: Loop, model: torch.nn.Module, net: torch.nn.Module | None = None) -> dict[str, Any]:
    """The test pass of ``model`` (run through ``net``, its compiled form, if given), with rank 0's BN
    statistics on every rank."""
    D.broadcast_buffers(loop.dist, model)
    return evaluate(
        net if net is not None else model,
        loop.test_loader,
        loop.device,
        amp=loop.cfg.run.eval_amp,
        channels_last=loop.cfg.run.channels_last,
        dist_info=loop.dist,
    )


# --------------------------------------------------------------------------------------------- checkpoints


def _check_finite(loop: Loop) -> None:
    """Stop if a loss since the epoch began, a weight or an optimizer state is not finite (one host sync)."""
    loss_bad, weights_bad = torch.stack([loop.meter.bad, ~loop.state.finite().to(loop.device)]).tolist()
    if D.any_rank(loop.dist, bool(loss_bad or weights_bad), loop.device):
        _stop_non_finite(loop, weights=bool(weights_bad) and not loss_bad)


def _save(loop: Loop, checked: bool = False) -> None:
    """Write the checkpoint; never one whose weights or optimizer state are not finite."""
    state = loop.state
    if not checked:  # checked=True: the caller has just checked, and no step ran since
        _check_finite(loop)
    checkpoint = state.state_dict()
    if loop.dist.is_main:
        try:
            ckpt.atomic_save(checkpoint, loop.run_dir.checkpoint)
        except WriteError as exc:
            kept = "the last checkpoint is kept" if loop.run_dir.checkpoint.exists() else "nothing was saved"
            exc.fix = f"{kept}; free space and continue with 'wrn train --resume {loop.run_dir}'"
            raise
    loop.last_good = (state.epoch, state.step)
    loop.policy.saved()


def _stop_non_finite(loop: Loop, *, weights: bool) -> None:
    where = f"epoch {loop.state.epoch + 1}, step {loop.state.step}"
    what = "the weights" if weights else "the training loss"
    if loop.last_good is not None and loop.run_dir.checkpoint.exists():
        epoch, step = loop.last_good
        at = f"after epoch {epoch}" if step == 0 else f"at epoch {epoch + 1}, step {step}"
        kept = f"the last good checkpoint ({at}) in {loop.run_dir} is kept"
    else:
        kept = "no checkpoint had been written yet"
    raise NonFiniteLoss(
        f"{what} became NaN or infinite ({where}); {kept}: lower --lr, turn off --amp fp16, or check the data"
    )


def _interrupted(loop: Loop) -> None:
    signum = loop.policy.signals.signum or signal.SIGINT
    raise Interrupted(
        f"{signal.Signals(signum).name} received: checkpoint saved at epoch {loop.state.epoch + 1}, step "
        f"{loop.state.step}; continue with 'wrn train --resume {loop.run_dir}'",
        signum,
    )


# --------------------------------------------------------------------------------------------- train / resume


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


def _with_run(cfg: TrainConfig, updates: dict[str, Any]) -> TrainConfig:
    return validate({**cfg.to_dict(), "run": {**cfg.run.model_dump(), **updates}}) if updates else cfg


def train(
    cfg: TrainConfig | dict[str, Any],
    out: str | Path | None = None,
    *,
    epochs: int | None = None,
    verbose: bool = False,
) -> TrainResult:
    """Train a new run from ``cfg`` into ``out`` (a new directory; default ``runs/<preset>-<timestamp>``).

    ``epochs`` changes the run's length by the rule of ``--epochs`` (a recipe's lr drops move along, given
    ones are kept). ``verbose`` prints the header, one line per epoch and a progress display (the command
    line's output); the returned model is in eval mode. Bad input raises a :class:`wrn.errors.WRNError`
    before anything is written. Continue a stopped run with :func:`resume`.
    """
    if cfg is None:
        raise ConfigError("train() needs a config; to continue a run, call resume(RUN_DIR)")
    cfg = cfg if isinstance(cfg, TrainConfig) else validate(cfg)
    if epochs is not None:
        cfg = with_epochs(cfg, epochs)
    cfg = _with_run(cfg, {} if verbose else {"progress": False})
    cfg = validate({**resolve(cfg).to_dict(), "provenance": _provenance()})
    return _launch(cfg, Path(out) if out is not None else None, None, verbose)


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    run: dict[str, Any] | None = None,
    verbose: bool = False,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its checkpoint, bit for bit, with the config it started with.

    ``epochs`` trains it longer (or up to that epoch); ``run`` may change what cannot change its result
    (``progress``, ``checkpoint_every_minutes``, ``checkpoint_every_steps``). A run directory that never
    reached its first checkpoint starts afresh from its config.yaml; a finished run is left as it is (what
    it lacks, such as curves.png, is drawn).
    """
    run_dir = RunDir(run_dir)
    updates = dict(run or {})
    if not verbose:
        updates["progress"] = False
    if run_dir.is_unstarted():
        cfg = _with_run(_read_config_yaml(run_dir), updates)
        if epochs is not None:
            cfg = with_epochs(cfg, epochs)
        _say(
            verbose, f"{run_dir} never reached its first checkpoint: starting it afresh from its config.yaml"
        )
        return _launch(resolve(cfg), run_dir.path, None, verbose, fresh=True)
    checkpoint = ckpt.load(run_dir.path)
    base = validate(checkpoint["config"])
    if _is_complete(run_dir, checkpoint, base) and epochs in (None, base.schedule.epochs):
        return _already_complete(run_dir, checkpoint, verbose)
    if epochs is not None and epochs != base.schedule.epochs:
        _check_extension(base, checkpoint, epochs)
        base = validate({**base.to_dict(), "schedule": {**base.schedule.model_dump(), "epochs": epochs}})
    if run_dir.metrics.exists():
        from wrn.train.logging import read_metrics

        read_metrics(run_dir.path)  # a corrupt metrics file is refused before anything is written
    return _launch(resolve(_with_run(base, updates)), run_dir.path, checkpoint, verbose)


def _is_complete(run_dir: RunDir, checkpoint: dict[str, Any], cfg: TrainConfig) -> bool:
    # (killed after its last checkpoint but before writing the model: it still needs finishing)
    done = int(checkpoint["epoch"]) >= cfg.schedule.epochs and not checkpoint["step"]
    return done and run_dir.model_json.is_file()


def _check_extension(cfg: TrainConfig, checkpoint: dict[str, Any], epochs: int) -> None:
    done = int(checkpoint["epoch"])
    if epochs < max(done, 1) or (epochs == done and checkpoint["step"]):
        raise ConfigError(
            f"--epochs {epochs} is fewer than the {done} epochs this run has already trained; "
            f"give at least {max(done, 1)}"
        )
    if cfg.schedule.name == "cosine":
        raise ConfigError(
            "a cosine schedule cannot be extended on resume (its rate is already annealed towards 0); "
            "start a new run with the longer schedule instead"
        )


def _read_config_yaml(run_dir: RunDir) -> TrainConfig:
    import yaml

    try:
        data = yaml.safe_load(run_dir.config.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(
            f"{run_dir.config} is not valid YAML; fix it or start a new run with 'wrn train'"
        ) from None
    return validate(data)


def _config_edits(run_dir: RunDir, saved: dict[str, Any]) -> list[str]:
    """Dotted keys where the run's config.yaml differs from the config its checkpoint was written with."""
    import yaml

    try:
        on_disk = yaml.safe_load(run_dir.config.read_text())
    except FileNotFoundError:
        return []
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return ["(the whole file: it is no longer valid YAML)"]
    if not isinstance(on_disk, dict):
        return ["(the whole file)"]
    ignored = volatile_keys()
    a, b = flatten(on_disk), flatten(saved)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in keys if k not in ignored and k.split(".")[0] not in ignored]


def _keep_edited_config(run_dir: RunDir, saved: dict[str, Any]) -> None:
    edits = _config_edits(run_dir, saved)
    if edits:
        os.replace(run_dir.config, run_dir.edited_config)
        _warn(
            f"{run_dir.config} was edited ({', '.join(edits[:6])}); a run continues with the config it started "
            f"with, so these edits are ignored (your file is kept as {run_dir.edited_config.name}); to train "
            f"longer, use --resume {run_dir} --epochs N",
        )


def _already_complete(run_dir: RunDir, checkpoint: dict[str, Any], verbose: bool) -> TrainResult:
    """``--resume`` of a finished run: say so, draw curves.png if a kill left it out, touch nothing else."""
    import wrn

    epochs = int(checkpoint["epoch"])
    last = dict(checkpoint.get("last_record") or {})
    if not run_dir.curves.exists():
        _draw_curves(run_dir)
    key, whose = ("ema_test_error", "the EMA weights' ") if "ema_test_error" in last else ("test_error", "")
    error = f" ({whose}test error {last[key]:.2f}%)" if isinstance(last.get(key), float) else ""
    _say(
        verbose,
        f"{run_dir} is complete: {epochs} of {recipe.epochs_text(epochs)} trained{error}; nothing to do. To train "
        f"it longer: wrn train --resume {run_dir} --epochs N (N > {epochs})",
    )
    return TrainResult(out_dir=run_dir.path, model=wrn.load_model(run_dir.path), last=last)


def _launch(cfg, out, checkpoint, verbose: bool, fresh: bool = False) -> TrainResult:
    """Start the processes' side (DDP under torchrun) and train; signals are caught from here on, so that a
    SIGTERM during the start-up or the final write ends the same way as one during an epoch."""
    dist_info = D.setup(cfg.run.device.split(":")[0])
    try:
        with Signals() as signals:
            return _run(cfg, out, checkpoint, dist_info, verbose and dist_info.is_main, signals, fresh)
    finally:
        D.teardown()


def _resolve_device(cfg: TrainConfig, dist_info: D.DistInfo) -> torch.device:
    """The device with its index: torch.cuda.set_device refuses a bare "cuda"."""
    if cfg.run.device == "cuda":
        return torch.device(
            "cuda", dist_info.local_rank if dist_info.enabled else torch.cuda.current_device()
        )
    return torch.device(cfg.run.device)


def _decide_out_dir(cfg: TrainConfig, out: Path | None, dist_info: D.DistInfo) -> RunDir:
    """A new run's directory, decided and checked on rank 0 before anything is built or written."""
    problem, out_dir = None, None
    if dist_info.is_main:
        out_dir = out if out is not None else default_out_dir(cfg)
        try:
            check_new_out_dir(out_dir)
        except WRNError as exc:  # said on every rank
            problem = str(exc)
    problem, out_dir = D.broadcast_object(dist_info, (problem, out_dir))
    if problem:
        raise ConfigError(problem)
    return RunDir(out_dir)


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build(cfg: TrainConfig, run_dir: RunDir, dist_info: D.DistInfo, device: torch.device, signals, verbose):
    """Data, model and state, in the order that fixes every random number: data, then the model's weights
    from the seed alone, then each rank's own stream (dropout masks) under DDP."""
    _seed_all(cfg.run.seed)
    train_loader, test_loader, info = build_loaders(cfg, device, dist_info)
    if cfg.dataset.image_size is None:  # an image folder: the size its images were read at
        cfg.dataset.image_size = int(info.image_size)
    _seed_all(cfg.run.seed)
    model = build_model(cfg, info)
    if dist_info.enabled:
        _seed_all(cfg.run.seed + 1_000_003 * dist_info.rank)
    trainables = build_trainables(cfg, model, device, dist_info)
    state = RunState(cfg, trainables, train_loader, EpochMeter(device), dist_info)
    schedule = recipe.Schedule(cfg.schedule, cfg.optim.lr, state.steps_per_epoch)
    policy = CheckpointPolicy(cfg.run, dist_info, device, signals)
    return Loop(cfg, run_dir, dist_info, device, state, schedule, policy, test_loader, info, verbose=verbose)


def _run(
    cfg, out, checkpoint, dist_info: D.DistInfo, verbose: bool, signals: Signals, fresh: bool
) -> TrainResult:
    from wrn.train.logging import RunLogger

    device = _resolve_device(cfg, dist_info)
    prepare_device(device, processes_here=dist_info.local_world_size, deterministic=cfg.run.deterministic)
    resumed = checkpoint is not None
    run_dir = RunDir(out) if resumed or fresh else _decide_out_dir(cfg, out, dist_info)
    loop = _build(cfg, run_dir, dist_info, device, signals, verbose)  # bad data stops here, nothing written
    lock = _hold_lock(run_dir) if dist_info.is_main else None
    try:
        if dist_info.is_main and not resumed:
            check_new_out_dir(run_dir.path)  # again, now that the lock is ours
        if resumed:
            loop.state.load_state_dict(checkpoint)
            loop.last_good = (loop.state.epoch, loop.state.step)
        if dist_info.is_main:
            _write_start(loop, checkpoint)
        loop.logger = RunLogger(
            run_dir.path, enabled=dist_info.is_main, **({"resume_epoch": loop.state.epoch} if resumed else {})
        )
        try:
            _header(loop, resumed)
            _epochs(loop, resumed)
        finally:
            loop.logger.close()
        if dist_info.is_main:
            _finish(loop)
        if signals.signum is not None:
            raise Interrupted(
                f"{signal.Signals(signals.signum).name} received while the run finished: it is complete in "
                f"{run_dir}",
                signals.signum,
            )
        return TrainResult(out_dir=run_dir.path, model=loop.state.model.eval(), last=loop.state.last_record)
    finally:
        if lock is not None:
            lock.release()


def _write_start(loop: Loop, checkpoint: dict[str, Any] | None) -> None:
    """Rank 0, once everything is checked and built: the folder, config.yaml (the edits of a resumed run's
    copy kept aside)."""
    from wrn.atomic import atomic_write_text

    run_dir = loop.run_dir
    if checkpoint is None:
        run_dir.clear_unstarted()
    else:
        _keep_edited_config(run_dir, checkpoint["config"])
    run_dir.path.mkdir(parents=True, exist_ok=True)
    ckpt.remove_stale_temporaries(run_dir.path)
    atomic_write_text(run_dir.config, dump_yaml(loop.cfg))


def _header(loop: Loop, resumed: bool) -> None:
    cfg, state, device = loop.cfg, loop.state, loop.device
    if not loop.dist.is_main:
        return
    hole = _cutout_warning(cfg.dataset.cutout, int(loop.info.image_size or 0))
    for text in [
        *recipe.warnings_for(cfg.schedule),
        hole,
        amp_warning(device, cfg.run.amp),
        _busy_cpu(device),
    ]:
        if text:
            _warn(text)
    where = "continuing" if resumed else "run directory"
    at = f" at epoch {state.epoch + 1}, step {state.step}" if resumed else ""
    n_parameters = sum(p.numel() for p in state.model.parameters())
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    _say(
        loop.verbose,
        f"{where}: {loop.run_dir}{at}\n"
        f"model {cfg.model.name} ({n_parameters:,} parameters) on {cfg.dataset.name}, "
        f"{recipe.epochs_text(cfg.schedule.epochs)} of {state.steps_per_epoch} steps, batch {cfg.optim.batch_size}, "
        f"{recipe.describe(cfg.schedule, cfg.optim.lr)}{recipe.describe_optim(cfg.optim)}, device {device}{threads}"
        + (f" x {loop.dist.world_size} processes" if loop.dist.enabled else "")
        + f", amp {cfg.run.amp}",
    )
    per_image = describe_data(cfg.dataset)  # the policies and random erasing, when on
    if per_image:
        _say(loop.verbose, per_image)


def _cutout_warning(hole: int, side: int) -> str | None:
    """A Cutout hole as large as the images (a recipe's 16 px on the 8x8 digits) leaves nothing to learn from."""
    if not hole or not side or hole < side:
        return None
    return (
        f"--cutout {hole} is not smaller than the {side}x{side} images: each hole covers most or all of its "
        f"image; give --cutout {max(1, side // 2)} or less (Cutout's 16 px is for 32x32 CIFAR-10)"
    )


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


def _epochs(loop: Loop, resumed: bool) -> None:
    state = loop.state
    if not resumed:
        _save(loop)  # the run is resumable from its very first step
    if loop.policy.stop_everywhere():
        _interrupted(loop)  # a signal during the start-up: what it built is saved
    while state.epoch < loop.cfg.schedule.epochs:
        train_one_epoch(loop)
        record = end_epoch(loop)
        loop.logger.log_epoch(record)
        _save(loop, checked=True)
        if loop.policy.stop_everywhere() and state.epoch < loop.cfg.schedule.epochs:
            _interrupted(loop)  # saved just above


def _draw_curves(run_dir: RunDir) -> None:
    try:
        from wrn.train.plot import plot_run

        plot_run(run_dir.path)
    except Exception as exc:  # the weights are saved; a figure is not worth failing the run for
        _warn(f"could not draw curves.png ({exc})")


def _finish(loop: Loop) -> None:
    import wrn
    from wrn.data.registry import preprocessing_record

    data, info, last = loop.cfg.dataset, loop.info, loop.state.last_record
    ema = loop.state.ema  # when on, the average of the weights is the run's model
    prefix = "ema_" if ema is not None else ""
    wrn.save_model(
        ema.module if ema is not None else loop.state.model,
        loop.run_dir.path,
        metadata={
            "dataset": data.name,
            "normalization": data.normalization,
            "epochs": loop.state.epoch,
            **({"weights": "ema", "ema_decay": ema.decay} if ema is not None else {}),
            "test_error": last.get(f"{prefix}test_error"),
            "input": preprocessing_record(info, data.normalization, data.augment),
            "classes": list(info.classes) if info.classes else None,
        },
    )
    _draw_curves(loop.run_dir)
    if prefix and "ema_test_error" not in last:  # --eval-models model: the average was never evaluated
        prefix, whose = "", "the plain weights (the saved EMA was not evaluated): "
    else:
        whose = "the EMA weights: " if prefix else ""
    if f"{prefix}test_error" in last:
        _say(
            loop.verbose,
            f"done: {whose}test error {last[f'{prefix}test_error']:.2f}% "
            f"(accuracy {last[f'{prefix}test_acc']:.2f}%) after "
            f"{recipe.epochs_text(loop.state.epoch)}; model and curves in {loop.run_dir}",
        )


__all__ = [
    "Interrupted",
    "NonFiniteLoss",
    "TrainResult",
    "train",
    "resume",
    "train_one_epoch",
    "default_out_dir",
    "check_new_out_dir",
]
