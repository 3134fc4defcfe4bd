"""One epoch of a run: :func:`train_one_epoch` reads top to bottom (the lr, the step, the meter, a read-back
every ``run.log_every_steps``, the checkpoint policy), :func:`end_epoch` checks the weights, evaluates and makes
the epoch's record, and :func:`save` writes the checkpoint, never with non-finite weights.

What a process works with is one :class:`Loop`, built by :mod:`wrn.train.run`: the run's
:class:`~wrn.train.state.RunState` (its ``state_dict()`` is the checkpoint), the
:class:`~wrn.train.recipe.Schedule` that gives every step's lr and the :class:`~wrn.train.policy.CheckpointPolicy`
that says when to stop or checkpoint.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

import torch

from wrn.errors import Interrupted, NonFiniteLoss, WriteError
from wrn.models.layers import bn_set
from wrn.train import checkpoint as ckpt
from wrn.train import distributed as D
from wrn.train import recipe
from wrn.train.config import TrainConfig
from wrn.train.evaluate import evaluate
from wrn.train.meter import EpochMeter
from wrn.train.policy import CheckpointPolicy
from wrn.train.precision import PRECISION_NAMES
from wrn.train.rundir import RunDir
from wrn.train.state import RunState


@dataclass
class Loop:
    """What one training process works with: built once by :func:`wrn.train.run.build_loop`, handed to each
    epoch."""

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
    step_fn.epoch = epoch  # (what a warm-up inside the step reads: AWP's)
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
            first = cfg.model.bn_momentum_first if state.global_step == 0 else None
            with bn_set(state.model, "momentum", first):  # --bn-momentum-first at the run's first step
                loss, logits = step_fn(images, labels)
            meter.update(loss, logits, step_fn.counted)
            state.step += 1
            state.global_step += 1
            loop.policy.step()
            bar.update()
            if state.step >= state.steps_per_epoch:
                continue  # the epoch's end: evaluated and checkpointed by the caller
            if state.global_step % cfg.run.log_every_steps == 0:
                _read_back(loop)
            stop, due, bad = loop.policy.decide(state.global_step, meter.bad)
            if bad:
                _stop_non_finite(loop, weights=False)
            if stop or due:
                meter.train_time += time.perf_counter() - start
                save(loop)
                if stop:
                    interrupted(loop)
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
    """Check the weights, evaluate on the test set and make the epoch's record (sums over every process)."""
    from wrn.train.progress import format_epoch_summary

    state, cfg = loop.state, loop.cfg
    _check_finite(loop)  # an epoch that blew up is not evaluated nor logged
    evaluated = _evaluated(cfg, state.ema is not None)
    test = _test(loop, state.model, state.trainables.net) if "model" in evaluated else None
    ema = _test(loop, state.ema.module) if "ema" in evaluated else None
    sums = loop.meter.totals()
    D.all_reduce_sum(loop.dist, sums)
    state.epoch += 1
    state.step = 0
    record = _record(loop, sums.tolist(), test, ema, evaluated)
    if cfg.ssl.labels is not None:  # FixMatch's figure: the median accuracy of the last 20 test passes
        record.update(_median_of_recent(state, record))
    state.last_record = record
    if state.holdout is not None:  # (after last_record: the best model's record is this epoch's)
        record.update(_holdout(loop))
    if loop.dist.is_main and loop.verbose:
        mixed = (
            " (train acc: of the mixed targets' larger part)"
            if state.trainables.step.objective.mixing
            else ""
        )
        print(format_epoch_summary(state.epoch, cfg.schedule.epochs, record) + mixed, flush=True)
    return record


def _record(loop: Loop, sums: list[float], test, ema, evaluated) -> dict[str, Any]:
    """The epoch's line of metrics.jsonl. ``lr`` is the rate of the epoch's first step."""
    state, cfg = loop.state, loop.cfg
    loss_total, correct_total, seen_total = sums
    train_time = loop.meter.train_time
    return {
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


MEDIAN_OF = (
    20  # FixMatch's paper: the median accuracy of the last 20 checkpoints (scripts/extract_accuracy.py)
)


def _median_of_recent(state: RunState, record: dict[str, Any]) -> dict[str, Any]:
    """``median20_test_acc`` / ``_error``: the median test accuracy (of the average of the weights where it is
    evaluated, as FixMatch's code reports it) over the last 20 epochs, those there are before the 20th."""
    import statistics

    acc = record.get("ema_test_acc", record.get("test_acc"))
    state.recent_acc = [*state.recent_acc, float(acc)][-MEDIAN_OF:]
    median = statistics.median(state.recent_acc)
    return {"median20_test_acc": median, "median20_test_error": 100.0 - median}


def _holdout(loop: Loop) -> dict[str, Any]:
    """The held-out images attacked (``adv.holdout``); the weights of a new best epoch saved in RUN/best/
    before the epoch's checkpoint (a kill between the two re-runs the epoch and saves the same weights)."""
    import wrn

    state = loop.state
    found = state.holdout.evaluate(final_model(loop), state.epoch)
    if state.holdout.improved(found, state.epoch) and loop.dist.is_main:
        accuracies = {k: v for k, v in found.items() if k != "holdout_time"}
        wrn.save_model(final_model(loop), loop.run_dir.best,
                       metadata={**model_metadata(loop), **accuracies, "holdout": loop.cfg.adv.holdout})  # fmt: skip
    return {**found, "holdout_best_epoch": state.holdout.best_epoch}


def final_model(loop: Loop) -> torch.nn.Module:
    """The weights a run saves: the average of the weights when it keeps one, else the model."""
    ema = loop.state.ema
    return ema.module if ema is not None else loop.state.model


def model_metadata(loop: Loop) -> dict[str, Any]:
    """What model.json records of the run's weights (the data they take, the epochs, the test error)."""
    from wrn.data.registry import preprocessing_record

    data, info, last, ema = loop.cfg.dataset, loop.info, loop.state.last_record, loop.state.ema
    prefix = "ema_" if ema is not None else ""
    return {
        "dataset": data.name,
        "normalization": data.normalization,
        "epochs": loop.state.epoch,
        **({"weights": "ema", "ema_decay": ema.decay} if ema is not None else {}),
        "test_error": last.get(f"{prefix}test_error"),
        **({"median20_test_error": last["median20_test_error"]} if "median20_test_error" in last else {}),
        "input": preprocessing_record(info, data.normalization, data.augment),
        "classes": list(info.classes) if info.classes else None,
    }


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


def save(loop: Loop, checked: bool = False) -> None:
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


def interrupted(loop: Loop) -> None:
    """Stop the run on the signal the policy caught (a checkpoint was just saved)."""
    signum = loop.policy.signals.signum or signal.SIGINT
    raise Interrupted(
        f"{signal.Signals(signum).name} received: checkpoint saved at epoch {loop.state.epoch + 1}, step "
        f"{loop.state.step}; continue with 'wrn train --resume {loop.run_dir}'",
        signum,
    )
