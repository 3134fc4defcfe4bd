"""A training run's life: :func:`train` starts one from a config, :func:`resume` continues one; both are the
whole of ``wrn train``.

A run is checked before anything is written (the config, the output folder, the data, the model), takes its
lock, writes its config.yaml and first checkpoint, trains its epochs (:mod:`wrn.train.epoch`) and finishes by
writing the model and curves.png. What the run directory holds is :mod:`wrn.train.rundir`; what a checkpoint
holds is :class:`~wrn.train.state.RunState`.
"""

from __future__ import annotations

import os
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wrn.errors import ConfigError, Interrupted, WRNError
from wrn.seeds import stream_seed
from wrn.train import checkpoint as ckpt
from wrn.train import distributed as D
from wrn.train import recipe
from wrn.train.build import build_loaders, build_model, build_trainables, load_initial_weights, prepare_device
from wrn.train.compose import dump_yaml, with_epochs
from wrn.train.config import TrainConfig, replace, validate
from wrn.train.epoch import Loop, end_epoch, final_model, interrupted, model_metadata, save, train_one_epoch
from wrn.train.header import print_header, warn
from wrn.train.holdout import HoldoutSelection
from wrn.train.meter import EpochMeter
from wrn.train.policy import CheckpointPolicy
from wrn.train.resolve import provenance, resolve
from wrn.train.rundir import RunDir, default_out_dir
from wrn.train.signals import Signals
from wrn.train.state import RunState


@dataclass
class TrainResult:
    out_dir: Path
    model: torch.nn.Module  # the plain model (no DDP / compile wrapper), on the training device
    last: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics record (empty if none)


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


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
    cfg = resolve(replace(cfg, run={} if verbose else {"progress": False}))
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
    (the fields marked ``on_resume``: ``progress``, ``checkpoint_every_minutes``, ``checkpoint_every_steps``).
    A run directory that never reached its first checkpoint starts afresh from its config.yaml; a finished
    run is left as it is (what it lacks, such as curves.png, is drawn).
    """
    run_dir = RunDir(run_dir)
    updates = {**(run or {}), **({} if verbose else {"progress": False})}
    if run_dir.state() == "unstarted":
        if not run_dir.config.is_file():
            raise ConfigError(
                f"{run_dir} was stopped before it wrote its config.yaml, so there is nothing to continue; start "
                f"it again with 'wrn train ... --out {run_dir}'"
            )
        cfg = run_dir.read_config()
        if epochs is not None:
            cfg = with_epochs(cfg, epochs)
        _say(
            verbose, f"{run_dir} never reached its first checkpoint: starting it afresh from its config.yaml"
        )
        return _launch(resolve(_with_run(cfg, updates)), run_dir.path, None, verbose, fresh=True)
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


def _with_run(cfg: TrainConfig, updates: dict[str, Any]) -> TrainConfig:
    """``cfg`` with the run options a resume may change (given by the user: validated)."""
    return validate({**cfg.to_dict(), "run": {**cfg.run.model_dump(), **updates}}) if updates else cfg


def _is_complete(run_dir: RunDir, checkpoint: dict[str, Any], cfg: TrainConfig) -> bool:
    """The checkpoint is the run's end and the model files hold its weights. A run killed after its last
    checkpoint but before (or while) writing its model still needs finishing, from the checkpoint."""
    done = int(checkpoint["epoch"]) >= cfg.schedule.epochs and not checkpoint["step"]
    return done and run_dir.state() == "done" and run_dir.model_epochs() == int(checkpoint["epoch"])


def _check_extension(cfg: TrainConfig, checkpoint: dict[str, Any], epochs: int) -> None:
    """``--resume --epochs N``: longer runs keep their lr drops where they are; a shorter one is refused where
    the rule of ``--epochs`` would move the recipe's drops (or a cosine's annealing) that the run already
    follows; never fewer epochs than trained."""
    from wrn.train.compose import scale_milestones

    done, schedule, planned = int(checkpoint["epoch"]), cfg.schedule, cfg.schedule.epochs
    if epochs < max(done, 1) or (epochs == done and checkpoint["step"]):
        raise ConfigError(
            f"--epochs {epochs} is fewer than the {done} epochs this run has already trained; to train it "
            f"longer, give --epochs N with N > {done}"
        )
    if schedule.name == "cosine":
        raise ConfigError(
            f"a cosine schedule anneals over the run's {planned} epochs, so it cannot be lengthened or shortened "
            f"on resume; start a new run with --epochs {epochs} instead"
        )
    kept = [m for m in schedule.milestones if m <= epochs]
    moved = scale_milestones(schedule.milestones, planned, epochs)
    if epochs < planned and schedule.milestones_from == "recipe" and moved != kept:
        listed = ", ".join(map(str, schedule.milestones)) or "none"
        raise ConfigError(
            f"--epochs {epochs} would shorten this {planned}-epoch run, whose lr drops (at epochs {listed}) are "
            f"the recipe's for {planned} epochs, where a {epochs}-epoch run drops at "
            f"{', '.join(map(str, moved)) or 'none'}; start a new run with --epochs {epochs}, or resume with "
            f"--epochs {planned} or more"
        )


def _config_edits(run_dir: RunDir, saved: dict[str, Any]) -> list[str]:
    """Dotted keys where the run's config.yaml differs from the config its checkpoint was written with,
    except those whose marker says they change nothing a run computes (``volatile``)."""
    from wrn.train.compose import flatten
    from wrn.train.options import keys

    if not run_dir.config.exists():
        return []
    try:
        on_disk = run_dir.read_config().to_dict()
    except ConfigError:
        return ["(the whole file: it is no longer a valid config)"]
    ignored = set(keys("volatile"))
    a, b = flatten(on_disk), flatten(validate(saved).to_dict())
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in ignored)


def _keep_edited_config(run_dir: RunDir, saved: dict[str, Any]) -> None:
    edits = _config_edits(run_dir, saved)
    if edits:
        os.replace(run_dir.config, run_dir.edited_config)
        warn(
            f"{run_dir.config} was edited ({', '.join(edits[:6])}); a run continues with the config it started "
            f"with, so these edits are ignored (your file is kept as {run_dir.edited_config.name}); to train "
            f"longer, use --resume {run_dir} --epochs N",
        )


def _already_complete(run_dir: RunDir, checkpoint: dict[str, Any], verbose: bool) -> TrainResult:
    """``--resume`` of a finished run: say so, draw curves.png if a kill left it out (removing what the kill
    left of it), touch nothing else."""
    import wrn
    from wrn.atomic import remove_stale_temporaries

    epochs = int(checkpoint["epoch"])
    last = dict(checkpoint.get("last_record") or {})
    lock = run_dir.hold_lock()  # what it writes (the figure), it writes alone
    try:
        remove_stale_temporaries(run_dir.path)  # e.g. curves.png's, if a kill cut its drawing short
        if not run_dir.curves.exists():
            _draw_curves(run_dir)
    finally:
        lock.release()
    key, whose = ("ema_test_error", "the EMA weights' ") if "ema_test_error" in last else ("test_error", "")
    error = f" ({whose}test error {last[key]:.2f}%)" if isinstance(last.get(key), float) else ""
    _say(
        verbose,
        f"{run_dir} is complete: {epochs} of {recipe.epochs_text(epochs)} trained{error}; nothing to do. To train "
        f"it longer: wrn train --resume {run_dir} --epochs N (N > {epochs})",
    )
    return TrainResult(out_dir=run_dir.path, model=wrn.load_model(run_dir.path), last=last)


# --------------------------------------------------------------------------------------------- the processes


def _launch(cfg, out, checkpoint, verbose: bool, fresh: bool = False) -> TrainResult:
    """Start the processes' side (DDP under torchrun) and train; signals are caught from here on, so that a
    SIGTERM during the start-up or the final write ends the same way as one during an epoch."""
    dist_info = D.setup(cfg.run.device.split(":")[0])
    try:
        with Signals() as signals:
            result = _run(cfg, out, checkpoint, dist_info, verbose and dist_info.is_main, signals, fresh)
        D.finish(dist_info)
        return result
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
        out_dir = (
            out if out is not None else default_out_dir(cfg.preset or f"{cfg.dataset.name}-{cfg.model.name}")
        )
        try:
            RunDir(out_dir).check_new()
        except WRNError as exc:  # said on every rank
            problem = str(exc)
    problem, out_dir = D.broadcast_object(dist_info, (problem, out_dir))
    if problem:
        raise ConfigError(problem)
    return RunDir(out_dir)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_loop(cfg: TrainConfig, run_dir: RunDir, dist_info: D.DistInfo, device: torch.device, signals, verbose,
               record: bool = True):  # fmt: skip
    """Data, model and state, in the order that fixes every random number: data, then the model's weights
    from the seed alone, then each process's own stream (dropout masks) under DDP. ``record``: the config
    gains the provenance record of what ran it and what the machine and the data gave (a new run; a resumed
    one keeps the record of its start)."""
    _seed_all(cfg.run.seed)
    train_loader, test_loader, info, holdout_loader, unlabelled_loader = build_loaders(cfg, device, dist_info)
    _seed_all(cfg.run.seed)
    model = build_model(cfg, info)
    if record:  # a new run: --init-from's weights (a resumed run has its own in its checkpoint)
        load_initial_weights(model, cfg)
    if dist_info.enabled:
        _seed_all(stream_seed(cfg.run.seed, "process", dist_info.rank))
    found = {
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "processes": dist_info.world_size,
        "image_size": int(info.image_size) if info.image_size else None,
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
    }
    if record:
        cfg = cfg.model_copy(update={"provenance": cfg.provenance.model_copy(update=provenance(**found))})
    trainables = build_trainables(cfg, model, device, dist_info, unlabelled=unlabelled_loader)
    state = RunState(cfg, trainables, train_loader, EpochMeter(device), dist_info)
    if holdout_loader is not None:  # early stopping on robust accuracy: the best epoch kept beside the last
        state.holdout = HoldoutSelection(holdout_loader, cfg, device, dist_info)
    schedule = recipe.Schedule(cfg.schedule, cfg.optim.lr, state.steps_per_epoch)
    if state.ema is not None:  # --ema-warmup-rule gowal: the average copies the model until the warm-up ends
        state.ema.start = schedule.warmup_length()
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
    # bad data stops here, before anything is written
    loop = build_loop(cfg, run_dir, dist_info, device, signals, verbose, record=not resumed)
    lock = run_dir.hold_lock() if dist_info.is_main else None
    signals.writing = True  # the start-up is over: from here a repeated SIGTERM waits for the save
    try:
        if dist_info.is_main and not resumed:
            run_dir.check_new()  # again, now that the lock is ours
        if resumed:
            loop.state.load_state_dict(checkpoint)
            loop.last_good = (loop.state.epoch, loop.state.step)
        if dist_info.is_main:
            _write_start(loop, checkpoint)
        loop.logger = RunLogger(
            run_dir.path, enabled=dist_info.is_main, **({"resume_epoch": loop.state.epoch} if resumed else {})
        )
        try:
            print_header(loop, resumed)
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
    from wrn.atomic import atomic_write_text, remove_stale_temporaries

    run_dir = loop.run_dir
    if checkpoint is None:
        run_dir.clear_unstarted()
    else:
        _keep_edited_config(run_dir, checkpoint["config"])
    run_dir.path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir.path)  # what a killed write left (the checkpoint, the model, the figure)
    atomic_write_text(run_dir.config, dump_yaml(loop.cfg))


def _epochs(loop: Loop, resumed: bool) -> None:
    state = loop.state
    if not resumed:
        save(loop)  # the run is resumable from its very first step
    if loop.policy.stop_everywhere():
        interrupted(loop)  # a signal during the start-up: what it built is saved
    while state.epoch < loop.cfg.schedule.epochs:
        train_one_epoch(loop)
        record = end_epoch(loop)
        loop.logger.log_epoch(record)
        save(loop, checked=True)
        if loop.policy.stop_everywhere() and state.epoch < loop.cfg.schedule.epochs:
            interrupted(loop)  # saved just above


def _draw_curves(run_dir: RunDir) -> None:
    try:
        from wrn.train.plot import plot_run

        plot_run(run_dir.path)
    except Exception as exc:  # the weights are saved; a figure is not worth failing the run for
        warn(f"could not draw curves.png ({exc})")


def _finish(loop: Loop) -> None:
    import wrn

    last, holdout = loop.state.last_record, loop.state.holdout
    ema = loop.state.ema  # when on, the average of the weights is the run's model
    prefix = "ema_" if ema is not None else ""
    best = {"best": holdout.describe()} if holdout is not None else {}
    wrn.save_model(final_model(loop), loop.run_dir.path, metadata={**model_metadata(loop), **best})
    _draw_curves(loop.run_dir)
    if holdout is not None:
        _say(
            loop.verbose,
            f"best epoch on {holdout.images()}: {holdout.best_epoch} (robust accuracy "
            f"{holdout.best_acc:.2f}%), its weights in {loop.run_dir.best}",
        )
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


__all__ = ["TrainResult", "train", "resume", "build_loop"]
