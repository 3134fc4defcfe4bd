"""How long the light commands take from a cold start: `wrn --help`, every `--help`, `wrn models`,
`wrn data list`, `wrn presets` (targets: help under 0.5 s, models under 3 s, data list under 1 s).

    python benchmarks/cli_speed.py [--repeat 5]

Prints the median wall time of each command over the repeats, and `python -c "import torch"` for scale.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ["--help"],
    *([c, "--help"] for c in ("models", "convert", "export", "predict", "data", "train", "eval", "presets", "plot")),
    ["models"],
    ["data", "list"],
    ["presets"],
]
TARGETS = {"--help": 0.5, "models": 3.0, "list": 1.0}


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    rows = [("python -c 'import torch'", [sys.executable, "-c", "import torch"])]
    rows += [("wrn " + " ".join(c), [sys.executable, "-m", "wrn", *c]) for c in COMMANDS]
    for label, argv in rows:
        median = statistics.median(wall(argv) for _ in range(repeat))
        target = TARGETS.get(argv[-1])
        verdict = "" if target is None else ("  ok" if median < target else f"  OVER the {target} s target")
        print(f"{label:<28} {median:6.3f} s{verdict}", flush=True)


if __name__ == "__main__":
    main()
