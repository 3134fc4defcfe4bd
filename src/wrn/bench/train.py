"""``wrn bench train``: the speed of the training step that ``wrn train`` takes, beside a plain baseline.

Ours is exactly the loop's step: random uint8 images of a CIFAR-like data set kept on the device, batches
assembled and augmented there by :class:`wrn.data.DeviceLoader` (flip + crop, mean/std normalisation), then
:class:`wrn.train.step.TrainStep` (autocast, channels_last, ``torch.compile`` as configured; SGD with the
paper's Nesterov momentum and weight decay). Each timed step is "next batch + step", as in the loop.

The baseline is the same network trained the way common ports train it, in the same process: eager fp32,
NCHW, a torchvision-style data set of uint8 images turned into PIL images one at a time, with per-sample
host-side torchvision transforms (RandomCrop with 4-pixel padding, RandomHorizontalFlip, ToTensor,
Normalize) through a ``torch.utils.data.DataLoader``, each batch copied to the device, and a plain SGD step
with the same hyper-parameters. It is given pinned memory and worker processes, as the ports use them.

Figures: the median of the timed steps and their min-max; images/s = batch / median; TFLOP/s = batch x
training FLOPs per image / median, where training FLOPs per image = 6 x the forward multiply-adds counted by
:func:`wrn.models.complexity.count_macs` (2 FLOPs per multiply-add, a training step about 3x the forward).
"""

from __future__ import annotations

import gc
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from wrn.bench.common import (
    TRAIN_FLOPS_PER_MAC,
    StepTimer,
    check_counts,
    machine_info,
    peak_memory,
    prepare_device,
    random_images,
    reset_peak_memory,
    resolve_settings,
    sample_count,
    summarize,
    unreliable,
)
from wrn.errors import ConfigError

FORMAT = "wrn-bench-train"
VERSION = 1
NORMALIZATION = "cifar10"


# ---------------------------------------------------------------------------------------------- ours


def build_model(name: str, num_classes: int, device: torch.device, seed: int) -> nn.Module:
    from wrn.models import create_model

    torch.manual_seed(seed)
    return create_model(name, num_classes=num_classes).to(device).train()


def make_step(model: nn.Module, settings, batch_size: int, unlabelled=None):
    """The training loop's step for ``model``: :func:`wrn.train.build.build_trainables` (channels_last,
    compile, the recipe's optimizer and loss), as ``wrn train`` builds it; ``unlabelled``: the loader of
    unlabelled images a semi-supervised step takes its batches from."""
    from wrn.train.build import build_trainables
    from wrn.train.config import replace

    cfg = replace(settings.cfg, optim={"batch_size": batch_size})
    return build_trainables(cfg, model, settings.device, unlabelled=unlabelled).step


def unlabelled_loader(cfg, x: torch.Tensor, batch_size: int, device: torch.device, seed: int = 0):
    """With ``--ssl``: the loop's loader of the unlabelled images' weak and strong views over ``x``, ``mu`` x
    ``batch_size`` a batch, the strong augmentation in ``dataset.workers`` processes; else None."""
    if cfg.ssl.method == "none":
        return None
    from wrn.data import normalization_constants
    from wrn.data.semi_supervised import StrongView, UnlabelledLoader

    return UnlabelledLoader(
        x.cpu(),
        cfg.ssl.mu * batch_size,
        StrongView(cfg.ssl.strong_policy, int(x.shape[-1]), cfg.dataset.randaugment_m, cfg.ssl.strong_on),
        augment="flip-crop",
        normalize=normalization_constants(NORMALIZATION),
        device=device,
        seed=seed,
        workers=strong_workers(cfg),
    )


def strong_workers(cfg) -> int:
    """The processes of the strong augmentation: ``dataset.workers``, at most as many as the baseline's loader
    gets on this machine (:func:`default_workers`)."""
    return min(cfg.dataset.workers, default_workers())


def device_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device, seed: int = 0):
    """The loop's CIFAR path: the whole set on ``device``, flip + crop and normalisation done there."""
    from wrn.data import DeviceLoader, normalization_constants

    return DeviceLoader(
        x,
        y,
        batch_size,
        train=True,
        augment="flip-crop",
        normalize=normalization_constants(NORMALIZATION),
        device=device,
        seed=seed,
        drop_last=True,
    )


def _forever(loader):
    while True:
        yield from loader


class Runner:
    """A prepared training side: ``step(images, labels) -> loss`` fed by ``batches``, an endless iterator.

    ``warm(n)`` takes ``n`` untimed steps; ``timed(n)`` takes ``n`` timed ones and appends their ms to
    ``step_ms``. ``info`` holds what the side wants reported besides its times.
    """

    def __init__(self, step, batches, device: torch.device, info: dict[str, Any] | None = None):
        self.step = step
        self.batches = batches
        self.device = device
        self.info = info if info is not None else {}
        self.step_ms: list[float] = []
        self.cpu_s = 0.0  # CPU time of this process over the timed steps
        self._loss = None
        self.label = ""
        self.progress = None  # progress(label, phase, i, n) after each step, if set (see common.Progress)
        self._timed = 0  # timed steps taken so far (over all chunks)

    def _tell(self, phase: str, i: int, n: int) -> None:
        if self.progress is not None:
            self.progress(self.label, phase, i, n)

    def warm(self, n: int) -> None:
        for i in range(n):
            images, labels = next(self.batches)
            self._loss = self.step(images, labels)
            self._tell("warm-up", i + 1, n)

    def timed(self, n: int, total: int | None = None) -> None:
        """``n`` timed steps, of ``total`` in all (the progress shown; default ``n``)."""
        timer = StepTimer(self.device)
        timer.start()
        for _ in range(n):
            images, labels = next(self.batches)
            self._loss = self.step(images, labels)
            timer.lap()
            self._timed += 1
            self._tell("timed", self._timed, total or n)
        self.step_ms += timer.finish()
        self.cpu_s += timer.cpu_s

    @property
    def loss(self) -> float:
        """The last step's loss (one read from the device)."""
        return float(self._loss.item())


def ours_runner(name: str, settings, x, y, batch_size: int, num_classes: int, seed: int = 0) -> Runner:
    """The loop's step: DeviceLoader batch + TrainStep."""
    model = build_model(name, num_classes, settings.device, seed)
    unlabelled = unlabelled_loader(settings.cfg, x, batch_size, settings.device, seed)
    train_step = make_step(model, settings, batch_size, unlabelled)
    loader = device_loader(x, y, batch_size, settings.device, seed)
    return Runner(lambda images, labels: train_step(images, labels)[0], _forever(loader), settings.device)


def chunks(steps: int, rounds: int) -> list[int]:
    """``steps`` split into ``rounds`` near-equal positive parts (fewer parts if steps < rounds)."""
    rounds = max(1, min(rounds, steps))
    return [steps // rounds + (1 if i < steps % rounds else 0) for i in range(rounds)]


def measure_sides(
    make_runners: list, warmup: int, steps: int, rounds: int = 1, progress=None
) -> list[dict[str, Any]]:
    """Time each side (``make_runners``: functions that build a :class:`Runner`); one result dict per side.

    With ``rounds == 1`` the sides run one after the other, each alone in memory, and the peak memory is each
    side's own. With ``rounds > 1`` all sides are built and warmed up first, then their timed steps alternate
    in ``rounds`` chunks (A B A B ...), so that a load that comes and goes on a shared machine falls on every
    side alike; the peak memory is then that of all sides together. ``progress(label, phase, i, n)`` is told
    of every step (each maker's ``label`` names its side).
    """
    out = []
    if rounds <= 1:
        for make in make_runners:
            reset_peak_memory(_device_of(make))
            runner = _built(make, progress)
            device = runner.device
            runner.warm(warmup)
            runner.timed(steps)
            memory, kind = peak_memory(device)
            out.append(_side(runner, memory, kind))
            del runner
            release(device)
        return out
    reset_peak_memory(_device_of(make_runners[0]))
    runners = []
    for make in make_runners:
        runner = _built(make, progress)
        runner.warm(warmup)
        runners.append(runner)
    for n in chunks(steps, rounds):
        for runner in runners:
            runner.timed(n, steps)
    memory, kind = peak_memory(runners[0].device)
    kind += f" (all {len(runners)} models alive: --rounds {rounds})"
    out = [_side(r, memory, kind) for r in runners]
    device = runners[0].device
    del runners
    release(device)
    return out


def _built(make, progress) -> Runner:
    runner = make()
    runner.label, runner.progress = getattr(make, "label", ""), progress
    return runner


def _device_of(make) -> torch.device:
    return getattr(make, "device", torch.device("cpu"))


def _side(runner: Runner, memory: int, kind: str) -> dict[str, Any]:
    return {
        "step_ms": list(runner.step_ms),
        "cpu_s": runner.cpu_s,
        "loss": runner.loss,
        "peak_memory_bytes": memory,
        "memory_kind": kind,
        **runner.info,
    }


def measure_ours(
    name: str, settings, x, y, batch_size: int, num_classes: int, warmup: int, steps: int, seed: int = 0
) -> dict[str, Any]:
    """``wrn bench train``'s measurement of the loop's step alone: step ms, last loss, peak memory."""
    return measure_sides(
        [maker(ours_runner, settings.device, name, settings, x, y, batch_size, num_classes, seed)],
        warmup,
        steps,
    )[0]


def maker(fn, device: torch.device, *args, label: str = ""):
    """A function that builds a runner, knowing its device before it is called (to reset the memory peak) and
    the ``label`` its progress shows."""

    def make():
        return fn(*args)

    make.device = device
    make.label = label
    return make


# ---------------------------------------------------------------------------------------------- baseline


class PILImageDataset(torch.utils.data.Dataset):
    """A data set as torchvision's CIFAR10 class is: uint8 HWC images in one array, a PIL image per item."""

    def __init__(self, data: np.ndarray, targets: list[int], transform):
        self.data = data
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.data[index])
        return self.transform(image), self.targets[index]


def baseline_transform(image_size: int):
    """The common ports' CIFAR training transform, per sample on the host."""
    from torchvision import transforms as T

    from wrn.data import normalization_constants

    mean, std = normalization_constants(NORMALIZATION)
    return T.Compose(
        [
            T.RandomCrop(image_size, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([m / 255 for m in mean], [s / 255 for s in std]),
        ]
    )


def baseline_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, workers: int, device: torch.device):
    data = x.permute(0, 2, 3, 1).contiguous().numpy()  # N, H, W, C as torchvision keeps CIFAR
    if data.shape[-1] == 1:
        data = data[..., 0]
    dataset = PILImageDataset(data, y.tolist(), baseline_transform(x.shape[-1]))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def baseline_runner(
    name: str, device: torch.device, x, y, batch_size: int, num_classes: int, workers: int, seed: int = 0
) -> Runner:
    """The plain way: eager fp32 NCHW model, per-sample PIL transforms through a DataLoader, copy, SGD step."""
    from wrn.train.config import OptimSection

    model = build_model(name, num_classes, device, seed)
    paper = OptimSection()  # the paper's SGD hyper-parameters, as ours uses (the paper, section 4)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=paper.lr,
        momentum=paper.momentum,
        nesterov=paper.nesterov,
        weight_decay=paper.weight_decay,
    )
    criterion = nn.CrossEntropyLoss()
    loader = baseline_loader(x, y, batch_size, workers, device)
    info = {
        "loader": {
            "kind": "torch.utils.data.DataLoader",
            "workers": workers,
            "pin_memory": device.type == "cuda",
            "transforms": [type(t).__name__ for t in loader.dataset.transform.transforms],
            "batches": 0,
            "images": 0,
        }
    }
    counted = info["loader"]

    def batches():
        while True:
            for inputs, targets in loader:
                counted["batches"] += 1
                counted["images"] += len(inputs)
                yield inputs, targets

    def step(inputs, targets):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return Runner(step, batches(), device, info)


def release(device: torch.device) -> None:
    """Free what a finished measurement left (its model, optimizer and loader are out of scope by now)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- the run


def model_flops(name: str, image_size: int) -> dict[str, Any]:
    """Parameters and forward multiply-adds of one image (counted on the meta device), and the training FLOPs."""
    from wrn.models import create_model, model_info
    from wrn.models.complexity import count_macs, count_parameters

    info = model_info(name)
    with torch.device("meta"):
        model = create_model(name)
    macs = count_macs(model, image_size)
    return {
        "name": name,
        "params": count_parameters(model),
        "num_classes": int(model.config["num_classes"]),
        "in_channels": int(model.config.get("in_channels", 3)),
        "native_size": int(info["input_size"]),
        "macs_per_image": int(macs),
        "train_flops_per_image": int(TRAIN_FLOPS_PER_MAC * macs),
    }


def _image_size(model: str, image_size: int | None) -> int:
    """The side to time: the given one, else the model's own; large enough for a crop with 4-pixel padding."""
    from wrn.models import model_info

    image_size = image_size or int(model_info(model)["input_size"])
    if image_size <= 4:
        raise ConfigError(
            f"--image-size {image_size} is too small for a crop with 4-pixel padding; use 5 or more"
        )
    return image_size


def run(
    model: str = "wrn-28-10",
    *,
    batch_size: int = 128,
    image_size: int | None = None,
    device: str = "auto",
    amp: str | None = None,
    channels_last: bool | None = None,
    compile: bool = False,
    compile_mode: str = "default",
    baseline: bool = False,
    baseline_workers: int | None = None,
    steps: int = 20,
    warmup: int = 5,
    num_samples: int | None = None,
    rounds: int = 1,
    seed: int = 0,
    progress=None,
    options: dict[str, Any] | None = None,
    vs_plain: bool = False,
) -> dict[str, Any]:
    """Time ``steps`` training steps of ``model`` after ``warmup`` (and the baseline's, if asked); every figure.

    ``amp`` (None: as ``wrn train`` resolves it, bf16 on CUDA and fp32 on the CPU), ``channels_last``
    (None: as ``wrn train``, on for CUDA and the CPU) and ``compile`` are those of ``wrn train``; ``compile_mode`` is torch.compile's mode.
    ``rounds > 1`` alternates ours and the baseline in that many chunks of steps (see :func:`measure_sides`).
    ``progress(label, phase, i, n)`` is told of every step (``wrn bench train`` shows :class:`Progress`).
    ``options`` are ``wrn train``'s optimizer options as dotted keys (``{"optim.sam_rho": 0.05}``: the SAM
    step, two forward-backward passes); ``vs_plain`` also times the step without them, interleaved in
    ``rounds`` chunks, and gives the cost ratio.
    """
    check_counts(steps, warmup, batch_size, rounds)
    plain = resolve_settings(
        model,
        device=device,
        amp=amp,
        channels_last=channels_last,
        compile=compile,
        compile_mode=compile_mode,
        batch_size=batch_size,
    )
    settings = _with_options(plain, options or {})
    image_size = _image_size(model, image_size)
    info = model_flops(model, image_size)
    workers = default_workers() if baseline_workers is None else int(baseline_workers)
    if workers < 0:
        raise ConfigError(
            f"--baseline-workers {workers} is negative; give 0 (load in the main process) or more"
        )
    n = sample_count(num_samples, batch_size, image_size, info["in_channels"])
    prepare_device(settings.device)
    x, y = random_images(n, info["in_channels"], image_size, info["num_classes"], seed)

    classes, device = info["num_classes"], settings.device
    sides_of = {"ours": settings, "plain": plain if vs_plain else None}
    makers = [
        maker(ours_runner, device, model, side, x, y, batch_size, classes, seed, label=f"{label} {model}")
        for label, side in sides_of.items()
        if side is not None
    ]
    if baseline:
        makers.append(maker(baseline_runner, device, model, device, x, y, batch_size, classes, workers, seed,
                            label=f"baseline {model}"))  # fmt: skip
    sides = measure_sides(makers, warmup, steps, rounds if len(makers) > 1 else 1, progress)
    for side in sides:
        side.update(summarize(side["step_ms"], batch_size, info["train_flops_per_image"]))
    ours, plain_side, base = sides[0], (sides[1] if vs_plain else None), (sides[-1] if baseline else None)
    if base is not None:
        base.update({"amp": "off", "channels_last": False, "compile": False})
    run_settings = {
        "model": model,
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds if len(makers) > 1 else 1,
        "num_samples": n,
    }
    return {**_result(settings, run_settings, info, ours, base), **_versus_plain(options, ours, plain_side)}


def _versus_plain(options: dict[str, Any] | None, ours: dict[str, Any], plain: dict[str, Any] | None):
    """The record's options and, with ``--vs-plain``, the plain side and the ratio of their step times."""
    ratio = ours["ms"] / plain["ms"] if plain else None
    return {"options": dict(options or {}), "plain": plain, "cost_vs_plain": ratio}


def _with_options(settings, options: dict[str, Any]):
    """``settings`` whose config has ``options`` (dotted keys) set; a bad value is a :class:`ConfigError`."""
    import dataclasses

    from wrn.train.config import validate

    if not options:
        return settings
    data = settings.cfg.to_dict()
    for key, value in options.items():
        section, name = key.split(".", 1)
        data[section][name] = value
    if data["ssl"]["method"] != "none" and data["ssl"]["labels"] is None:  # (the step draws from every image)
        data["ssl"]["labels"] = 40
    return dataclasses.replace(settings, cfg=validate(data))


def _result(settings, run_settings: dict[str, Any], info, ours, base) -> dict[str, Any]:
    """The JSON record of a ``wrn bench train`` run."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "machine": machine_info(settings.device),
        "settings": {
            **{
                k: run_settings[k] for k in ("model", "batch_size", "image_size", "steps", "warmup", "rounds")
            },
            "amp": settings.amp,
            "channels_last": settings.channels_last,
            "compile": settings.compile,
            "compile_mode": settings.compile_mode if settings.compile else None,
            "sam_rho": settings.cfg.optim.sam_rho,
            **(
                {
                    "unlabelled_batch": settings.cfg.ssl.mu * run_settings["batch_size"],
                    "strong_workers": strong_workers(settings.cfg),
                }
                if settings.cfg.ssl.method != "none"
                else {}
            ),
            "num_samples": run_settings["num_samples"],
            "data": "random uint8 images on the device, flip-crop + normalisation (DeviceLoader)",
        },
        "model": info,
        "ours": ours,
        "baseline": base,
        "speedup": ours["images_per_s"] / base["images_per_s"] if base else None,
    }


# ---------------------------------------------------------------------------------------------- printing


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def format_report(result: dict[str, Any]) -> str:
    m, s, info = result["machine"], result["settings"], result["model"]
    cuda = f", CUDA {m['cuda']}" if m["cuda"] else ""
    compile_text = f"compile {s['compile_mode']}" if s["compile"] else "eager"
    if s.get("sam_rho"):
        compile_text += f", SAM rho {s['sam_rho']:g} (two passes per step)"
    if result.get("options"):
        compile_text += ", " + " ".join(f"{k}={v}" for k, v in result["options"].items())
    lines = [
        f"wrn bench train: {s['model']}, batch {s['batch_size']}, {s['image_size']}x{s['image_size']} images, "
        f"amp {s['amp']}, {'channels_last' if s['channels_last'] else 'NCHW'}, {compile_text}; "
        f"{s['steps']} timed steps after {s['warmup']} warm-up",
        f"device: {m['device']} ({m['device_name']}), torch {m['torch']}{cuda}, {m['threads']} threads",
        f"model: {info['params']:,} parameters, {info['macs_per_image'] / 1e9:.3f} G multiply-adds forward per "
        f"image, {info['train_flops_per_image'] / 1e9:.1f} GFLOP per training image (6 x MACs)",
        "",
        f"{'':<10} {'ms/step':>10} {'min - max':>21} {'images/s':>10} {'TFLOP/s':>9} {'peak memory':>12}",
    ]
    rows = [("ours", result["ours"])]
    if result.get("plain"):
        rows.append(("plain", result["plain"]))
    if result["baseline"]:
        rows.append(("baseline", result["baseline"]))
    for label, r in rows:
        lines.append(
            f"{label:<10} {r['ms']:>10.1f} {r['ms_min']:>10.1f} - {r['ms_max']:<8.1f} {r['images_per_s']:>10,.1f} "
            f"{r['tflops']:>9.3f} {_bytes(r['peak_memory_bytes']):>12}"
        )
    lines.append(f"peak memory: {result['ours']['memory_kind']}")
    flagged = []
    for label, r in rows:
        why = unreliable(r["ms_min"], r["ms_max"], r["steps"])
        if why:
            lines.append(f"UNRELIABLE ({label}): {why}")
            flagged.append(label)
    if result["baseline"]:
        b = result["baseline"]["loader"]
        lines.append(
            f"baseline: eager fp32 NCHW, {' + '.join(b['transforms'])} per sample through a DataLoader "
            f"({b['workers']} workers; {b['images']:,} images in {b['batches']} batches), plain SGD step"
        )
        lines.append(
            ratio_line("ours / baseline", f"{result['speedup']:.2f}x the images/s", "baseline", flagged)
        )
    if result.get("plain"):
        lines.append(
            ratio_line(
                "ours / plain (the same step without the options, interleaved)",
                f"{result['cost_vs_plain']:.2f}x the time per step",
                "plain",
                flagged,
            )
        )
    return "\n".join(lines)


def ratio_line(name: str, value: str, other: str, flagged: list[str]) -> str:
    """``name: value``, or why the ratio is withheld: a side whose timings are unreliable makes it so too."""
    bad = [side for side in ("ours", other) if side in flagged]
    if not bad:
        return f"{name}: {value}"
    return (
        f"{name}: withheld: the timings of {' and '.join(bad)} are unreliable (above), so their ratio would be "
        "too; time it again on an idle machine"
    )
