"""``wrn bench figure4``: the paper's Figure 4, training time of one minibatch for thin and wide networks.

The paper timed forward + backward + update of one minibatch of 32 on a Titan X (its Figure 4):
pre-act ResNet-164 85 ms, ResNet-1001 512 ms, WRN-40-4 68 ms, WRN-16-10 164 ms, WRN-28-10 312 ms.
Milliseconds do not carry over to other hardware; the ratios do: WRN-40-4 trains 512/68 = 7.5x faster than
ResNet-1001 at similar accuracy, WRN-28-10 512/312 = 1.64x faster and more accurate, and WRN-40-4 85/68 =
1.25x faster than ResNet-164.

Each model is timed with the step ``wrn train`` takes (see :mod:`wrn.bench.train`: device-resident random
CIFAR-sized data, DeviceLoader flip-crop and normalisation, TrainStep), one model after the other.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from wrn.errors import ConfigError

FORMAT = "wrn-bench-figure4"
VERSION = 1
# Model name -> the paper's ms per minibatch of 32 (Titan X), in the paper's order.
PAPER_MS: dict[str, float] = {
    "preact-resnet-164": 85.0,
    "preact-resnet-1001": 512.0,
    "wrn-40-4": 68.0,
    "wrn-16-10": 164.0,
    "wrn-28-10": 312.0,
}
MODELS = tuple(PAPER_MS)
# (slow, fast): the paper's claims of how much faster the wide network trains.
RATIOS = (
    ("preact-resnet-1001", "wrn-40-4"),
    ("preact-resnet-1001", "wrn-28-10"),
    ("preact-resnet-164", "wrn-40-4"),
)
LABELS = {
    "preact-resnet-164": "ResNet-164",
    "preact-resnet-1001": "ResNet-1001",
    "wrn-40-4": "WRN-40-4",
    "wrn-16-10": "WRN-16-10",
    "wrn-28-10": "WRN-28-10",
}


def parse_models(text: str | None) -> list[str]:
    """``a,b,...`` -> the named Figure 4 models in the paper's order; None or empty -> all five."""
    if not text:
        return list(MODELS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in PAPER_MS]
    if unknown:
        raise ConfigError(f"--models {unknown[0]!r} is not in Figure 4; choose among {', '.join(MODELS)}")
    return [m for m in MODELS if m in names]


def run(
    *,
    batch_size: int = 32,
    device: str = "auto",
    steps: int = 10,
    warmup: int = 3,
    models: list[str] | str | None = None,
    amp: str | None = None,
    channels_last: bool | None = None,
    compile: bool = False,
    compile_mode: str = "default",
    num_samples: int | None = None,
    rounds: int = 1,
    seed: int = 0,
    progress=None,
    step_progress=None,
) -> dict[str, Any]:
    """Time each model's training step; the ``figure4.json`` dict (see docs/benchmarks.md).

    With ``rounds == 1`` the models run one after the other; with ``rounds > 1`` all are built and warmed up
    first and their timed steps alternate in that many chunks, so that a passing load on a shared machine
    falls on every model alike. ``progress(name, entry)`` is called after each model's figures, if given, and
    ``step_progress(label, phase, i, n)`` after each step (see :class:`wrn.bench.common.Progress`).
    """
    from wrn.bench.common import (
        check_counts,
        machine_info,
        prepare_device,
        random_images,
        resolve_settings,
        sample_count,
    )
    from wrn.bench.train import maker, measure_sides, ours_runner

    names = parse_models(models) if not isinstance(models, list) else parse_models(",".join(models))
    check_counts(steps, warmup, batch_size, rounds)
    settings = resolve_settings(
        names[0],
        device=device,
        amp=amp,
        channels_last=channels_last,
        compile=compile,
        compile_mode=compile_mode,
        batch_size=batch_size,
    )
    prepare_device(settings.device)
    n = sample_count(num_samples, batch_size, 32)
    x, y = random_images(n, 3, 32, 10, seed)
    device = settings.device
    makers = [
        maker(ours_runner, device, name, settings, x, y, batch_size, 10, seed, label=f"{name} ({i} of {len(names)})")
        for i, name in enumerate(names, 1)
    ]  # fmt: skip
    if rounds > 1:
        sides = measure_sides(makers, warmup, steps, rounds, step_progress)
    else:  # one at a time, so that progress shows as each model finishes
        sides = (measure_sides([make], warmup, steps, 1, step_progress)[0] for make in makers)
    entries = []
    for name, measured in zip(names, sides, strict=True):
        entries.append(_entry(name, measured["step_ms"], batch_size))
        if progress is not None:
            progress(name, entries[-1])
    return {
        "format": FORMAT,
        "version": VERSION,
        "machine": machine_info(settings.device),
        "settings": {
            "batch_size": batch_size,
            "steps": steps,
            "warmup": warmup,
            "amp": settings.amp,
            "channels_last": settings.channels_last,
            "compile": settings.compile,
            "rounds": rounds,
        },
        "models": entries,
        "ratios": ratios(entries),
    }


def _entry(name: str, step_ms: list[float], batch_size: int) -> dict[str, Any]:
    """One model's line of figure4.json: the paper's ms, ours (median, min, max), parameters, images/s."""
    import torch

    from wrn.bench.common import summarize
    from wrn.models import create_model
    from wrn.models.complexity import count_parameters

    with torch.device("meta"):
        params = count_parameters(create_model(name))
    s = summarize(step_ms, batch_size, None)
    keys = ("ms", "ms_min", "ms_max")
    return {"name": name, "paper_ms": PAPER_MS[name], **{k: s[k] for k in keys}, "params": params,
            "images_per_s": s["images_per_s"]}  # fmt: skip


def ratios(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's three speed ratios (slow model's ms / fast model's ms), ours None where a model was not run."""
    ms = {e["name"]: e["ms"] for e in entries}
    out = []
    for slow, fast in RATIOS:
        ours = ms[slow] / ms[fast] if slow in ms and fast in ms else None
        out.append({"slow": slow, "fast": fast, "paper": PAPER_MS[slow] / PAPER_MS[fast], "ours": ours})
    return out


ABOUT = (
    "Time of forward + backward + update of one minibatch, as in the paper's Figure 4 (a Titan X). What carries "
    "over to other hardware is the ratios, not the milliseconds."
)


def settings_text(result: dict[str, Any]) -> str:
    """The machine and the settings of a figure4.json, in words."""
    m, s = result.get("machine") or {}, result.get("settings") or {}
    parts = [str(m.get("device_name") or m.get("device") or "unknown device")]
    parts += [f"{k} {m[v]}" for k, v in (("torch", "torch"), ("CUDA", "cuda")) if m.get(v)]
    if m.get("threads"):
        parts.append(f"{m['threads']} threads")
    if s.get("batch_size"):
        parts.append(f"minibatch of {s['batch_size']}")
    if s.get("steps"):
        parts.append(f"median of {s['steps']} timed steps after {s.get('warmup', '?')} warm-up")
    amp = s.get("amp")
    if amp:
        parts.append("fp32" if amp == "off" else f"{amp} autocast")
    if "channels_last" in s:
        parts.append("channels_last memory format" if s["channels_last"] else "NCHW memory format")
    if "compile" in s:
        parts.append("torch.compile" if s["compile"] else "eager")
    return ", ".join(parts)


def unreliable(result: dict[str, Any]) -> list[str]:
    """Sentences that say which figures of a figure4.json cannot be trusted, and why; empty when all can."""
    from wrn.bench.common import MIN_STEPS, SPREAD_WHY, readable, spread, too_few

    steps = (result.get("settings") or {}).get("steps")
    models = [e for e in result.get("models") or [] if isinstance(e.get("ms"), (int, float))]
    out = []
    few = too_few(steps)
    if few and models:
        out.append(
            f"Every time is unreliable: too few timed steps per network ({steps}; give --steps {MIN_STEPS} or more)."
        )
    noisy = [(e, spread(e.get("ms_min"), e.get("ms_max"))) for e in models]
    noisy = [(e, x) for e, x in noisy if x is not None]
    if noisy:
        shown = ", ".join(
            f"{e['name']} {readable(e['ms_min'])}–{readable(e['ms_max'])} ms ({x:.1f}x)" for e, x in noisy
        )
        out.append(f"The timed steps of {shown} were {SPREAD_WHY}.")
    bad = {e["name"] for e in models} if few else {e["name"] for e, _ in noisy}
    used = [f"{r['slow']} / {r['fast']}" for r in result.get("ratios") or []
            if r.get("ours") is not None and bad & {r["slow"], r["fast"]}]  # fmt: skip
    if used:
        out.append(f"The ratios {', '.join(used)} are unreliable with them.")
    return out


def format_table(result: dict[str, Any]) -> str:
    from wrn.bench.common import readable

    m, s = result["machine"], result["settings"]
    cuda = f", CUDA {m['cuda']}" if m["cuda"] else ""
    lines = [
        f"Figure 4: forward + backward + update of one minibatch of {s['batch_size']} "
        f"(median of {s['steps']} steps after {s['warmup']} warm-up; amp {s['amp']}, "
        f"{'channels_last' if s['channels_last'] else 'NCHW'}, {'compiled' if s['compile'] else 'eager'})",
        f"device: {m['device']} ({m['device_name']}), torch {m['torch']}{cuda}, {m['threads']} threads",
        "",
        f"{'model':<20} {'params':>11} {'paper ms':>9} {'ours ms':>10} {'min - max':>21} {'images/s':>10}",
    ]
    for e in result["models"]:
        lines.append(
            f"{e['name']:<20} {e['params']:>11,} {e['paper_ms']:>9.0f} {e['ms']:>10.1f} "
            f"{e['ms_min']:>10.1f} - {e['ms_max']:<8.1f} {readable(e['images_per_s']):>10}"
        )
    lines += ["", f"{'speed ratio (ms / ms)':<42} {'paper':>6} {'ours':>6}"]
    for r in result["ratios"]:
        ours = "-" if r["ours"] is None else f"{r['ours']:.2f}"
        lines.append(f"{r['slow'] + ' / ' + r['fast']:<42} {r['paper']:>6.2f} {ours:>6}")
    notes = unreliable(result)
    if notes:
        lines += ["", *(f"UNRELIABLE: {n}" for n in notes)]
    return "\n".join(lines)


def draw(result: dict[str, Any], path: str | Path) -> Path:
    """Draw ``figure4.png`` from a ``figure4.json`` dict: ms per minibatch and the speed ratios, ours beside the
    paper's (the report of `wrn reproduce` shows the same picture).

    The ms panel has a log scale, since ours may be on another device than the paper's Titan X. A model or a
    ratio that was not measured shows as "not run" / "n/a".
    """
    from matplotlib.figure import Figure

    from wrn.train.plot import COLOURS, DPI, save_figure

    m, s = result.get("machine") or {}, result.get("settings") or {}
    ours_ms = {
        e["name"]: e["ms"] for e in result.get("models") or [] if isinstance(e.get("ms"), (int, float))
    }
    fig = Figure(figsize=(11, 4.4), dpi=DPI, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[5, 3])
    width = 0.38
    xs = range(len(MODELS))
    paper_colour, ours_colour = COLOURS[1], COLOURS[0]
    ax1.bar([x - width / 2 for x in xs], [PAPER_MS[n] for n in MODELS], width, color=paper_colour,
            label="paper (Titan X)")  # fmt: skip
    ours_here = [(x, ours_ms[n]) for x, n in zip(xs, MODELS, strict=True) if n in ours_ms]
    ax1.bar([x + width / 2 for x, _ in ours_here], [v for _, v in ours_here], width, color=ours_colour,
            label=f"ours ({m.get('device_name') or m.get('device') or '?'})")  # fmt: skip
    tallest = max([PAPER_MS[n] for n in MODELS] + list(ours_ms.values()))
    lowest = min([PAPER_MS[n] for n in MODELS] + list(ours_ms.values()))
    for x, n in zip(xs, MODELS, strict=True):
        ax1.annotate(f"{PAPER_MS[n]:.0f}", (x - width / 2, PAPER_MS[n]), ha="center", va="bottom", fontsize=7)
        at, text = (ours_ms[n], _ms_text(ours_ms[n])) if n in ours_ms else (lowest / 1.8, "not run")
        ax1.annotate(text, (x + width / 2, at), ha="center", va="bottom", fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylim(lowest / 2, tallest * 8)  # room above the tallest bar for its label and the legend
    ax1.set_xticks(list(xs), [LABELS[n] for n in MODELS], fontsize=8)
    ax1.set_ylabel(f"ms per minibatch of {s.get('batch_size', 32)} (log scale)")
    ax1.set_title("forward + backward + update", fontsize=10)
    ax1.legend(fontsize=8, loc="upper center", ncol=2)
    ax1.grid(True, axis="y", alpha=0.3)

    rs = result.get("ratios") or []
    xr = range(len(rs))
    ax2.bar([x - width / 2 for x in xr], [r["paper"] for r in rs], width, color=paper_colour, label="paper")
    ours_r = [(x, r["ours"]) for x, r in zip(xr, rs, strict=True) if r.get("ours") is not None]
    ax2.bar(
        [x + width / 2 for x, _ in ours_r], [v for _, v in ours_r], width, color=ours_colour, label="ours"
    )
    for x, r in zip(xr, rs, strict=True):
        ax2.annotate(f"{r['paper']:.2f}", (x - width / 2, r["paper"]), ha="center", va="bottom", fontsize=7)
        text, height = ("n/a", 0.0) if r.get("ours") is None else (f"{r['ours']:.2f}", r["ours"])
        ax2.annotate(text, (x + width / 2, height), ha="center", va="bottom", fontsize=7)
    ax2.axhline(1.0, color="black", linewidth=0.6)
    ax2.set_ylim(0, 1.3 * max([r["paper"] for r in rs] + [v for _, v in ours_r] + [1.0]))
    ax2.set_xticks(list(xr), [f"{LABELS[r['slow']]}\n/ {LABELS[r['fast']]}" for r in rs], fontsize=7)
    ax2.set_ylabel("speed-up of the wide network (x)")
    ax2.set_title("time ratios", fontsize=10)
    ax2.legend(fontsize=8, loc="upper right", ncol=2)
    ax2.grid(True, axis="y", alpha=0.3)
    amp = s.get("amp", "?")
    precision = f"{'fp32' if amp == 'off' else amp}, {'channels_last' if s.get('channels_last') else 'NCHW'}"
    fig.suptitle(
        f"Figure 4: training time per minibatch, thin deep vs wide networks ({precision}, "
        f"torch {m.get('torch', '?')})",
        fontsize=10,
    )
    return save_figure(fig, Path(path))


def _ms_text(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 10 or not math.isfinite(ms) else f"{ms:.1f}"


def read(path: str | Path) -> dict[str, Any]:
    """A figure4.json's content; an empty dict if it cannot be read or is not one."""
    import json

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else {}


def write(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``figure4.json`` and ``figure4.png`` into ``out_dir``; return their paths."""
    import json

    from wrn.atomic import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(out_dir / "figure4.json", json.dumps(result, indent=2) + "\n")
    png_path = draw(result, out_dir / "figure4.png")
    return json_path, png_path
