"""The seed of every random stream of a run, from one function.

A run has one seed (``run.seed``). It seeds torch's global generator before the weights are drawn (so the
weights depend on the seed alone) and the device-resident loader's order. Every other stream draws from a seed
derived here, apart from each other and from those two: the per-image policies of each batch, the image
folders' order and samples, Cutout's holes, mixup/CutMix's draws, the adversarial attack's starts of each process, the unlabelled images' order and
strong views, and each process's own
global stream (dropout) under several processes. :func:`stream_seed` mixes the run's seed, the stream's name
and where the stream is (epoch, rank, batch, ...) through numpy's ``SeedSequence``, so that nearby seeds give
unrelated streams.
"""

from __future__ import annotations

import numpy as np

# One fixed word per stream (the first word of the SeedSequence's entropy), never reused.
STREAMS = {
    "policy": 0x706F6C696379,  # the per-image policies and random erasing, per (epoch, rank, batch)
    "folder": 0x666F6C646572,  # an image folder's order and per-sample augmentation, per epoch
    "cutout": 0x6375746F7574,  # Cutout's holes, per rank
    "mixing": 0x6D6978,  # mixup / CutMix, per rank
    "process": 0x70726F63,  # each process's global generator (dropout) under several processes, per rank
    "adversary": 0x616476,  # the random starts of adversarial training's attack, per rank
    "holdout": 0x686F6C64,  # the starts of the attack on the held-out images (adv.holdout), per (epoch, rank)
    "unlabelled": 0x756E6C6162,  # the unlabelled loader's order and weak views (--ssl), per run
    "strong": 0x7374726F6E67,  # the strong views' flips and crops, per epoch of the unlabelled loader
    "strong-policy": 0x73706F6C,  # the strong policy of each batch of unlabelled images, per (epoch, rank, batch)
}


def stream_seed(seed: int, stream: str, *where: int) -> int:
    """The seed (a non-negative 63-bit int) of ``stream`` at ``where`` (e.g. epoch, rank, batch) of a run
    seeded ``seed``."""
    words = np.random.SeedSequence([STREAMS[stream], int(seed), *map(int, where)]).generate_state(
        2, np.uint32
    )
    return (int(words[0]) << 31 | int(words[1]) >> 1) % 2**63


__all__ = ["STREAMS", "stream_seed"]
