"""Write random CIFAR-10 files in the exact format of the real ones (for timing ``wrn train`` offline).

    python benchmarks/fake_cifar10.py DATA_ROOT [--train 50000] [--test 10000] [--seed 0]

Writes ``DATA_ROOT/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta) as the originals are
encoded; the pixels and labels are random, so train on them with ``wrn train ... --data-dir DATA_ROOT
--no-verify`` (their md5 differ from the real files').
"""

from __future__ import annotations

import argparse
import time

from wrn.bench.cifar_files import write_random_cifar10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="data root (the folder --data-dir names)")
    p.add_argument("--train", type=int, default=50_000, help="training images (default 50,000)")
    p.add_argument("--test", type=int, default=10_000, help="test images (default 10,000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    start = time.perf_counter()
    base = write_random_cifar10(args.root, train=args.train, test=args.test, seed=args.seed)
    print(
        f"wrote {args.train:,} training and {args.test:,} test images of random CIFAR-10 to {base} "
        f"in {time.perf_counter() - start:.1f} s (train with --no-verify)"
    )


if __name__ == "__main__":
    main()
