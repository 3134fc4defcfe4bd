"""Clean and robust accuracy of a run or model directory under an attack (``wrn eval --attack``).

The attack acts on pixels in [0, 1]: the test images are loaded without normalisation and the model is wrapped
with the normalisation it was trained with (:class:`wrn.attacks.PixelModel`), so that the attack
differentiates through it, as RobustBench evaluates. ``pgd`` is :func:`wrn.attacks.pgd`; ``autoattack`` is
the authors' AutoAttack, "standard" version (APGD-CE, APGD-T, FAB-T, Square, each on the points still
classified correctly), from the ``pyautoattack`` package, which packages their code. The record is written
as RobustBench's ``model_info`` files write theirs (accuracies as text with two decimals), with the attack's
settings beside it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wrn.attacks import NORMS, PixelModel, pgd
from wrn.errors import ConfigError
from wrn.train.evaluate import load_for_eval
from wrn.train.fields import radius_text

ATTACKS = ("pgd", "autoattack")


@dataclass(frozen=True)
class AttackSpec:
    """An attack and its budget: ``eps`` on pixels in [0, 1]; PGD's ``steps``, ``step_size`` (default 2.5 x
    eps / steps, Madry et al.'s rule) and ``restarts``; ``seed`` for the random starts."""

    attack: str
    eps: float
    norm: str = "linf"
    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    seed: int = 0

    def check(self) -> None:
        if self.attack not in ATTACKS:
            raise ConfigError(
                f"--attack {self.attack!r} is not an attack here; choose one of {', '.join(ATTACKS)}"
            )
        if self.norm not in NORMS:
            raise ConfigError(f"--norm {self.norm!r} is not a norm here; choose one of {', '.join(NORMS)}")
        if not (isinstance(self.eps, float) and math.isfinite(self.eps) and 0 < self.eps <= 1):
            raise ConfigError(
                f"--eps {self.eps!r} is not a radius on pixels in [0, 1]; give a number in (0, 1], e.g. 8/255"
            )
        if self.steps < 1 or self.steps > 100_000:
            raise ConfigError(f"--steps must be an integer from 1 to 100000, not {self.steps}")
        if self.restarts < 1 or self.restarts > 1000:
            raise ConfigError(f"--restarts must be an integer from 1 to 1000, not {self.restarts}")
        if self.step_size is not None and not (math.isfinite(self.step_size) and 0 < self.step_size <= 1):
            raise ConfigError(f"--step-size must be a number in (0, 1], not {self.step_size}")
        pgd_only = {
            f.name: f.default
            for f in dataclasses.fields(self)
            if f.name in ("steps", "step_size", "restarts")
        }
        if self.attack == "autoattack" and any(getattr(self, k) != v for k, v in pgd_only.items()):
            raise ConfigError(
                "--steps, --step-size and --restarts set PGD; AutoAttack's standard version fixes its own "
                "budget: leave them out with --attack autoattack"
            )

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def eps_text(self) -> str:
        return radius_text(self.eps)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attack": self.attack, "norm": self.norm, "eps": self.eps, "seed": self.seed}
        if self.attack == "pgd":
            out.update(steps=self.steps, step_size=self.alpha, restarts=self.restarts)
        else:
            out.update(version="standard", attacks=["apgd-ce", "apgd-t", "fab-t", "square"])
        return out


def record_path(run_dir: Path, spec: AttackSpec) -> Path:
    """Where ``wrn eval --attack`` keeps its record: one file per attack, norm and radius."""
    from wrn.train.rundir import RunDir

    return RunDir(run_dir).robust_record(spec.attack, spec.norm, spec.eps_text())


def attack_dir(
    path: str | Path,
    spec: AttackSpec,
    *,
    n: int | None = None,
    out: str | Path | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    download: bool = False,
    verify: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Clean and robust accuracy (percent) of the first ``n`` test images (all by default) under ``spec``;
    the record is written to ``out`` (default :func:`record_path` in the directory), checked to be writable
    before the attack starts."""
    spec.check()
    if n is not None and n < 1:
        raise ConfigError(f"--n must be a positive number of test images, not {n}")
    given = {"name": dataset, "root": data_dir, "normalization": None, "image_size": None,
             "verify": None if verify else False}  # fmt: skip
    found = load_for_eval(path, given, batch_size=batch_size, device=device, download=download, split=split,
                          loader_normalization="pixels")  # fmt: skip
    target = Path(out) if out is not None else record_path(found.run_dir.path, spec)
    _check_writable(target)
    model = _pixel_model(found).eval()
    x, y = _first_images(found.loader, n, found.device)
    start = time.perf_counter()
    with torch.no_grad():
        clean = _predict(model, x, batch_size) == y
    robust = robust_flags(model, x, y, spec, clean=clean, batch_size=batch_size, progress=progress)
    result = {
        **found.record(),
        "n": len(y),
        "clean_acc": 100.0 * clean.double().mean().item(),
        "robust_acc": 100.0 * robust.double().mean().item(),
        **spec.settings(),
        "time": time.perf_counter() - start,
    }
    result["record"] = str(target)
    _write_record(target, _robustbench_record(result, spec, found))
    return result


def _check_writable(target: Path) -> None:
    from wrn.paths import check_new_output_file

    check_new_output_file(target, force=True, what="the attack's record (--out)")


def _pixel_model(found) -> torch.nn.Module:
    """The model on pixels in [0, 1], with the normalisation of its run."""
    from wrn.data.registry import pixel_constants

    name = found.cfg.dataset.normalization
    if name == "zca":
        raise ConfigError(
            "this model was trained on ZCA-whitened images; attacks here act on pixels through a per-channel "
            "normalisation only: evaluate a model trained with a mean/std normalisation"
        )
    return PixelModel(found.model, *pixel_constants(name, found.info.in_channels)).to(found.device)


def _first_images(loader, n: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, have = [], [], 0
    for images, labels in loader:
        xs.append(images.to(device))
        ys.append(labels.to(device))
        have += len(labels)
        if n is not None and have >= n:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    if n is not None and n > len(y):
        raise ConfigError(
            f"--n {n} asks for more images than the test set's {len(y)}; pass --n {len(y)} or less"
        )
    if x.min() < 0 or x.max() > 1:
        raise ConfigError("the test images are not pixels in [0, 1]; this data set cannot be attacked here")
    return (x[:n], y[:n]) if n is not None else (x, y)


def _predict(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def robust_flags(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    clean: torch.Tensor | None = None,
    batch_size: int = 256,
    progress: bool | None = False,
) -> torch.Tensor:
    """Whether each image of ``x`` (pixels in [0, 1]) is still classified as ``y`` by ``model`` (on pixels, in
    eval mode) under the attack ``spec``; only the images classified correctly (``clean``) are attacked, in
    batches of ``batch_size``, with a progress bar unless ``progress`` is False (None: on a terminal)."""
    from tqdm import tqdm

    spec.check()
    if clean is None:
        with torch.no_grad():
            clean = _predict(model, x, batch_size) == y
    robust = clean.clone()
    generator = torch.Generator(x.device).manual_seed(spec.seed)
    run = _autoattack(model, spec, x.device) if spec.attack == "autoattack" else None
    bar = tqdm(total=len(y), desc=f"{spec.attack} {spec.norm} eps {spec.eps_text()}", unit="img",
               disable=None if progress is None else not progress)  # fmt: skip
    with bar:
        for i in range(0, len(y), batch_size):
            todo = torch.nonzero(clean[i : i + batch_size]).flatten() + i
            if len(todo):
                xb, yb = x[todo], y[todo]
                if run is None:
                    adv = pgd(model, xb, yb, eps=spec.eps, step_size=spec.alpha, steps=spec.steps, norm=spec.norm,
                              restarts=spec.restarts, generator=generator)  # fmt: skip
                else:
                    adv, _ = run.run_standard_evaluation(xb, yb, batch_size=len(yb))
                with torch.no_grad():
                    robust[todo] = model(adv).argmax(1) == yb
            bar.update(min(batch_size, len(y) - i))
            bar.set_postfix(robust=f"{100.0 * robust[: i + batch_size].double().mean().item():.2f}%")
    return robust


def require_attack(attack: str) -> None:
    """The package an attack needs is installed (AutoAttack: pyautoattack); else one sentence naming the fix.
    Checked before anything is trained or attacked."""
    if attack == "autoattack" and importlib.util.find_spec("pyautoattack") is None:
        raise ConfigError(
            "--attack autoattack needs the pyautoattack package (the authors' AutoAttack); install it with "
            "pip install 'wrn[robust]'"
        )


def _autoattack(model, spec: AttackSpec, device: torch.device):
    require_attack("autoattack")
    from pyautoattack import AutoAttack

    logger = logging.getLogger("auto-attack")
    if not any(isinstance(f, _Once) for f in logger.filters):
        logger.addFilter(_Once())  # its checks warn once per batch: once is enough
    norm = {"linf": "Linf", "l2": "L2"}[spec.norm]
    return AutoAttack(model, norm=norm, eps=spec.eps, version="standard", device=device, seed=spec.seed)


class _Once(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _robustbench_record(result: dict[str, Any], spec: AttackSpec, found) -> dict[str, Any]:
    """The fields of a RobustBench ``model_info`` entry that a run can fill, then the attack's settings."""
    import wrn

    key = "autoattack_acc" if spec.attack == "autoattack" else "pgd_acc"
    return {
        "name": result["model"],
        "architecture": getattr(found.model, "config", {}).get("name", result["model"]),
        "dataset": result["dataset"],
        "threat_model": {"linf": "Linf", "l2": "L2"}[spec.norm],
        "eps": spec.eps_text(),
        "clean_acc": f"{result['clean_acc']:.2f}",
        key: f"{result['robust_acc']:.2f}",
        "n_points": result["n"],
        "split": result["split"],
        "source": result["source"],
        "settings": spec.settings(),
        "wrn": wrn.__version__,
    }


def _write_record(target: Path, record: dict[str, Any]) -> None:
    from wrn.atomic import atomic_write_text

    atomic_write_text(target, json.dumps(record, indent=2) + "\n")


__all__ = ["ATTACKS", "AttackSpec", "attack_dir", "record_path", "require_attack", "robust_flags"]
