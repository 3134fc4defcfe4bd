"""The summary of ``benchmarks/gpu.sh``: every check's verdict and figures, beside the targets of the speed work.

    python benchmarks/gpu_summary.py RESULTS_DIR

Reads RESULTS_DIR/status.txt, bench.json, compile*.json, figure4.json and run-*/metrics.jsonl; prints plain
text. A figure that is missing (its check failed or was skipped) is reported as missing, never guessed.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

TARGET_IMAGES_PER_S = 12_000  # WRN-28-10, batch 128, training, one H100/H200-class GPU
TARGET_SPEEDUP = 4.0  # over the plain baseline measured in the same run
TARGET_200_EPOCHS_MIN = 15.0  # a 200-epoch CIFAR-10 run, training time
EPOCHS = 200


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _metrics(run_dir: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError):
        return []


def _what(run_dir: Path) -> str:
    """'MODEL, batch B, amp A, channels_last C' from a run's config.yaml ('?' if absent)."""
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        return (
            f"{cfg['model']['name']} ({cfg['dataset']['name']}, batch {cfg['optim']['batch_size']}, amp "
            f"{cfg['run']['amp']}, channels_last {cfg['run']['channels_last']}, compile {cfg['run']['compile']})"
        )
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return "?"


def _met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _side(r: dict) -> str:
    return (
        f"{r['images_per_s']:,.0f} img/s ({r['ms']:.1f} ms/step, min-max {r['ms_min']:.1f}-{r['ms_max']:.1f}, "
        f"{r['tflops']:.1f} TFLOP/s, peak {r['peak_memory_bytes'] / 2**30:.1f} GiB)"
    )


def main(res: Path) -> None:
    lines = []
    machine = (res / "machine.txt").read_text().strip() if (res / "machine.txt").is_file() else "?"
    lines += ["== machine", machine, "", "== checks (verdict, seconds)"]
    status = (res / "status.txt").read_text().strip() if (res / "status.txt").is_file() else ""
    lines += [status or "(no status recorded)", ""]

    bench = _json(res / "bench.json")
    eager = None
    if bench:
        s = bench["settings"]
        lines.append(f"== wrn bench train --model {s['model']} --batch-size {s['batch_size']} --baseline")
        eager = bench["ours"]["images_per_s"]
        lines.append(
            f"settings: amp {s['amp']}, channels_last {s['channels_last']}, compile {s['compile']}, "
            f"{s['steps']} steps after {s['warmup']}"
        )
        lines.append(f"ours:     {_side(bench['ours'])}")
        if bench.get("baseline"):
            lines.append(f"baseline: {_side(bench['baseline'])}")
            lines.append(
                f"ours / baseline = {bench['speedup']:.2f}x  [target >= {TARGET_SPEEDUP:.0f}x: "
                f"{_met(bench['speedup'] >= TARGET_SPEEDUP)}]"
            )
        lines.append(
            f"ours {eager:,.0f} img/s  [target >= {TARGET_IMAGES_PER_S:,} img/s: "
            f"{_met(eager >= TARGET_IMAGES_PER_S)}]"
        )
    else:
        lines += ["== wrn bench train --baseline", "missing (see bench.log)"]
    for name, label in (
        ("compile", "default"),
        ("compile-ro", "reduce-overhead"),
        ("compile-at", "max-autotune"),
    ):
        r = _json(res / f"{name}.json")
        if r is None:
            if (res / f"{name}.log").is_file():
                lines.append(f"compile {label}: missing (see {name}.log)")
            continue
        best = r["ours"]["images_per_s"]
        vs = f", {best / eager:.2f}x eager" if eager else ""
        lines.append(f"compile {label}: {_side(r['ours'])}{vs}")
        if eager:
            lines.append(
                f"  compiled {label} ({best:,.0f} img/s) {'beats' if best > eager else 'does not beat'} eager"
            )
        log = res / f"{name}.log"
        text = log.read_text(errors="replace") if log.is_file() else ""
        skipped = [ln for ln in text.splitlines() if "skipping cudagraphs" in ln]
        if skipped:
            lines.append(f"  CUDA graphs were skipped: {skipped[0].strip()[:200]}")
    lines.append("")

    f4 = _json(res / "figure4.json")
    batch = f4["settings"]["batch_size"] if f4 else 32
    lines.append(f"== wrn bench figure4 (ms per minibatch of {batch}; paper: Titan X, 32)")
    if f4:
        for e in f4["models"]:
            lines.append(f"{e['name']:<20} paper {e['paper_ms']:>5.0f} ms   ours {e['ms']:>8.2f} ms")
        for r in f4["ratios"]:
            ours = "-" if r["ours"] is None else f"{r['ours']:.2f}"
            lines.append(f"{r['slow']} / {r['fast']}: paper {r['paper']:.2f}, ours {ours}")
    else:
        lines.append("missing (see figure4.log)")
    lines.append("")

    lines.append(
        f"== wrn train {_what(res / 'run-28-10')}, 2 epochs on random CIFAR-10 files, default settings"
    )
    m = _metrics(res / "run-28-10")
    if len(m) >= 2:
        for r in m:
            lines.append(
                f"epoch {r['epoch']}: train {r['train_time']:.1f} s ({r['images_per_s']:,.0f} img/s), "
                f"evaluation {r['test_time']:.1f} s, train loss {r['train_loss']:.3f}"
            )
        train_min = EPOCHS * m[-1]["train_time"] / 60
        test_min = EPOCHS * m[-1]["test_time"] / 60
        lines.append(
            f"200 epochs (from epoch 2): {train_min:.1f} min of training + {test_min:.1f} min of evaluation  "
            f"[target: training under {TARGET_200_EPOCHS_MIN:.0f} min: {_met(train_min < TARGET_200_EPOCHS_MIN)}]"
        )
    else:
        lines.append("missing (see train2.log)")
    lines.append("")

    lines.append("== short runs, 1 epoch")
    for name in ("fp16", "bf16"):
        m = _metrics(res / f"run-{name}")
        if m:
            r = m[-1]
            name = f"{name} {_what(res / f'run-{name}')}"
            finite = math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"])
            lines.append(
                f"{name}: train loss {r['train_loss']:.3f} (finite: {finite}), {r['images_per_s']:,.0f} img/s, "
                f"train {r['train_time']:.1f} s, evaluation {r['test_time']:.1f} s"
            )
        else:
            lines.append(f"{name}: missing (see {name}.log)")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-results"))
