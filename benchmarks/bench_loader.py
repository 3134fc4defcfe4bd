"""Throughput of the device-resident loader on CIFAR-sized data (not a test).

    python benchmarks/bench_loader.py [--device cpu] [--batch-size 128] [--epochs 3] [--augment flip-crop]

Prints images per second for one pass over 50,000 random 3x32x32 uint8 images with the paper's CIFAR
augmentation (per-sample flip and crop from a 4-pixel reflection pad) and mean/std normalisation.
"""

from __future__ import annotations

import argparse
import time

import torch

from wrn.data import DeviceLoader, normalization_constants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=50_000)
    parser.add_argument("--augment", default="flip-crop")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.num_samples, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (args.num_samples,), generator=g)
    loader = DeviceLoader(
        x,
        y,
        args.batch_size,
        augment=args.augment,
        normalize=normalization_constants("cifar10"),
        device=args.device,
    )
    sync = torch.cuda.synchronize if loader.device.type == "cuda" else (lambda: None)
    for _ in loader:  # warm-up epoch
        pass
    rates = []
    for _ in range(args.epochs):
        sync()
        start = time.perf_counter()
        n = 0
        for images, _labels in loader:
            n += len(images)
        sync()
        rates.append(n / (time.perf_counter() - start))
    print(
        f"DeviceLoader {args.augment} batch {args.batch_size} on {loader.device} ({torch.get_num_threads()} threads):"
        f" {max(rates):,.0f} images/s best, {sum(rates) / len(rates):,.0f} mean over {args.epochs} epochs"
    )


if __name__ == "__main__":
    main()
