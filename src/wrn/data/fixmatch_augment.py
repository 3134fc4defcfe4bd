"""FixMatch's "RA" strong augmentation as google-research/fixmatch runs it (``--augment d.d.rac``, the
ablation ``ablation/ab_fixmatch_ra.py``), op for op, on one uint8 image [C, H, W].

Their ``AugmentPoolRAMC(nops=2, magnitude=10)`` (libml/augment.py) draws per image the policy
``[(op, 0.5, np.random.randint(1, 10)) for op in np.random.choice(RANDOM_POLICY_OPS, 2)]``: 2 of the 14
:data:`RANDOM_POLICY_OPS` uniformly with replacement, then one level 1..9 per op. Their
``third_party/auto_augment/augmentations.py`` (the AutoAugment code's file with mean and std 0.5, an
``Identity`` op and ``cutout_numpy``) applies it: ``apply_policy`` runs each op where ``random.random() <
0.5`` (Rotate, ShearX/Y and TranslateX/Y draw their sign ``random.random() > 0.5`` as they run) on the RGBA
image ``pil_wrap`` makes, ``pil_unwrap`` returns to floats, then ``cutout_numpy`` zeroes a 16 x 16 box about
a centre row ``np.random.randint(0, H)`` then column ``np.random.randint(0, W)``, rows ``max(0, r - 8) :
min(H, r + 8)``, columns likewise. The ops are :mod:`wrn.data.autoaugment`'s ``_PAPER_OPS`` (the same PIL
code), Identity and the translations (scaled, below) aside. Our draws come from torch's generator, in their
order: op 1, op 2, level 1, level 2, then per op its coin and (where it runs and is geometric) its sign, then
Cutout's row and column; ``np.random.choice(ops, 2)`` is two ``randint(14)``, ``np.random.randint(1, 10)``
is ``1 + randint(9)``.

Their image is ``x * (2 / 255) - 1`` in float32 (libml/data.py ``record_parse``); ``pil_wrap`` makes
``np.uint8((img * 0.5 + 0.5) * 255)`` in float32, which truncates: 1..47 become one less
(:func:`fixmatch_wrap_table`), then an RGBA image with alpha 255; ``pil_unwrap`` returns ``(v / 255 - 0.5) /
0.5`` with the pixels of alpha 0 (emptied by a geometric op) set to 0, and Cutout multiplies its box by 0.
So their "emptied" pixels are 0, gray 127.5 on 0..255, which no uint8 value is. :class:`FixMatchRA` returns
``(image, emptied)``: the uint8 values their ``pil_unwrap`` normalises (128 where emptied) and a bool [H, W]
mask of the pixels that are 0 in their output. Normalised with mean 127.5 and std 127.5 in float32 and the
emptied pixels set to 0, it is their float32 image bit for bit (the 256 values ``(v - 127.5) / 127.5`` in
float32 equal their ``float32((v / 255 - 0.5) / 0.5)`` computed in float64).

Image sides: their pixel constants are for 32 x 32 images (translations ``int(level * 10 / 10)`` = level
pixels, Cutout 16). ``side`` (default: the image's shorter side) scales both by ``side / 32``, rounded down:
translations ``level * side // 32`` pixels, Cutout ``16 * side // 32`` (their ``r`` variants'
``int(0.5 * side)``), at least 2 pixels (their box is ``2 * (size // 2)`` wide: 1 would cut nothing, and
their ``create_cutout_mask`` asserts the box is not empty). At 32 it is their code exactly; ``side=32`` is
their code on any side (their code keeps the 32-pixel constants on every side, STL-10's 96 included).

Where it differs from their code:

- draws: theirs are numpy's (the policy, in the main process), Python's ``random`` (coins and signs) and
  numpy's (Cutout's centre) in a ``multiprocessing.Pool`` of ``para_augment`` (5) workers per GPU, forked
  with the parent's numpy state: numpy never reseeds in a child (Python's ``random`` does from 3.7), so
  every worker draws the same sequence of Cutout centres, the k-th image of each worker cut in the same
  place. Ours are all from torch's generator, per image, seeded by the loader per worker;
- the final float: theirs float64 then ``astype('f')``; ours the loader's float32 normalisation, bit for bit
  the same values (above);
- 1-channel images: their ``pil_wrap`` refuses an [H, W, 1] image (PIL: "Cannot handle this data type");
  ours runs the RGB image (v, v, v) and keeps its first channel;
- non-square images: their ``create_cutout_mask`` asserts a square and ``pil_unwrap`` reshapes to (W, H):
  ours takes any [C, H, W], rows from H and columns from W;
- sides other than 32: scaled, above (``side=32`` for theirs);
- emptied pixels: theirs 0 in the float image, ours the ``emptied`` mask (128 in the uint8 image);
- the input: in their pipeline RA runs on the weakly augmented image (their TensorFlow flip and 4-pixel
  reflect-padded shift, ``d`` before the numpy pool); here on whatever image the loader passes;
- PIL: the ops run on the installed Pillow (through torchvision's PIL functionals), theirs on the Pillow of
  their runs (unpinned in their requirements.txt).

Their ranges against torchvision's ``RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31)``
(``_augmentation_space``; the same 14 op names, 2 drawn uniformly with replacement; +- a random sign):

| | FixMatch RA (theirs, this module) | torchvision RandAugment |
|---|---|---|
| magnitude | drawn per op: level 1..9 (of 10) | fixed M of 0..30 (default 9) |
| each op applied | with probability 0.5 | always |
| Rotate (deg, +-) | 3 x level: 3..27 | linspace(0, 30, 31)[M]: 9 |
| ShearX/Y (+-) | 0.03 x level: 0.03..0.27 | linspace(0, 0.3, 31)[M]: 0.09 |
| TranslateX/Y (+-) | level px at side 32: 1..9 | 150/331 x side x M/30: 4.35 px at side 32 |
| Solarize threshold | 256 - int(25.6 x level): 231, 205, ..., 26 | linspace(255, 0, 31)[M]: 178.5 |
| Posterize bits | 4 - int(0.4 x level): 4, 4, 3, 3, 2, 2, 2, 1, 1 | 8 - round(M / 7.5): 7 (8..4) |
| Color, Contrast, Brightness, Sharpness | 0.1 + 0.18 x level: 0.28..1.72 | 1 +- 0.03 M: 1 +- 0.27 |
| emptied pixels | 0 after normalisation (gray 127.5) | fill (default 0: black) |
| the image the ops see | PIL RGBA after their truncating wrap (*) | the image as given |
| Cutout | a 16 px box (clipped) after the ops, always | none |

(*) AutoContrast, Equalize, Posterize and Solarize run on its RGB: pixels emptied before count as black there
and come back (alpha 255).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from wrn.data.autoaugment import (
    _PAPER_OPS,
    MAX_LEVEL,
    _as_rgb,
    _paper_affine,
    _paper_sign,
    _randint,
    _uniform,
)

# libml/augment.py's RANDOM_POLICY_OPS, in their order (the index a draw picks)
RANDOM_POLICY_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Rotate",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "TranslateX",
    "TranslateY",
    "Posterize",
    "ShearY",
)
CUTOUT = 16  # cutout_numpy's size, pixels at side 32
SIDE = 32  # the side their pixel constants are for
EMPTIED_VALUE = 128  # the uint8 value of emptied pixels (theirs: 0 after normalisation, 127.5 on 0..255)
GEOMETRIC = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})  # the ops that draw a sign


def fixmatch_wrap_table() -> np.ndarray:
    """[256] uint8: each value after their float32 round trip, ``x * (2 / 255) - 1`` (record_parse) then
    ``np.uint8((img * 0.5 + 0.5) * 255)`` (pil_wrap), which truncates: 1..47 become one less, the other 209
    values stay. Every image goes through it, whatever it draws."""
    f32 = np.float32
    img = np.arange(256, dtype=f32) * f32(2.0 / 255) - f32(1.0)
    return np.uint8((img * f32(0.5) + f32(0.5)) * f32(255.0))


_WRAP = fixmatch_wrap_table()


def shift_pixels(level: int, side: int) -> int:
    """Their TranslateX/Y's shift before its sign: ``int(level * 10 / 10)`` pixels at side 32, scaled to
    ``side``."""
    return level * 10 * side // (MAX_LEVEL * SIDE)


def _shift(level: int, side: int) -> int:
    return _paper_sign(shift_pixels(level, side))


def _op(img: Image.Image, name: str, level: int, side: int) -> Image.Image:
    """One of their ops on their RGBA image (a geometric op draws its sign)."""
    if name == "Identity":
        return img
    if name == "TranslateX":
        return _paper_affine(img, (1, 0, _shift(level, side), 0, 1, 0))
    if name == "TranslateY":
        return _paper_affine(img, (1, 0, 0, 0, 1, _shift(level, side)))
    return _PAPER_OPS[name](img, level)


def cutout_size(cutout: int, side: int) -> int:
    """Cutout's size at ``side``: ``cutout * side // 32``, at least 2 (0: no Cutout, and no draws)."""
    return 0 if cutout <= 0 else max(2, cutout * side // SIDE)


def cutout_mask(h: int, w: int, size: int) -> np.ndarray:
    """Their ``create_cutout_mask``: bool [H, W], true in the box of side ``size`` about a centre drawn (row,
    then column), clipped to the image; all false (and nothing drawn) for ``size`` 0."""
    mask = np.zeros((h, w), dtype=bool)
    if size > 0:
        row, col = _randint(h), _randint(w)
        half = size // 2
        mask[max(0, row - half) : min(h, row + half), max(0, col - half) : min(w, col + half)] = True
    return mask


def apply_policy(img: torch.Tensor, policy, cutout: int = 0, side: int | None = None):
    """Their ``apply_policy`` then ``cutout_numpy`` on a uint8 image [C, H, W] (C = 1 or 3): each
    ``(name, probability, level)`` of ``policy`` applied where a uniform draw is below its probability, then
    (``cutout`` > 0) a box of :func:`cutout_size` about a centre drawn (row, then column) emptied.

    Returns ``(image, emptied)``: the uint8 image [C, H, W] their ``pil_unwrap`` normalises, 128 where
    emptied, and the bool [H, W] mask of the pixels that are 0 in their float output (alpha 0, or Cutout's
    box). ``side``: the side the pixel constants scale to (None: the image's shorter side; 32: theirs)."""
    h, w = img.shape[-2:]
    side = min(h, w) if side is None else side
    rgb = _WRAP[_as_rgb(img).permute(1, 2, 0).numpy()]
    pil = Image.fromarray(np.concatenate([rgb, np.full((h, w, 1), 255, dtype=np.uint8)], axis=2))
    for name, probability, level in policy:
        if _uniform() < probability:
            pil = _op(pil, name, level, side)
    out = np.asarray(pil)
    emptied = (out[:, :, 3] == 0) | cutout_mask(h, w, cutout_size(cutout, side))
    pixels = np.where(emptied[:, :, None], np.uint8(EMPTIED_VALUE), out[:, :, : img.shape[0]])
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), torch.from_numpy(emptied)


def apply_op(img: torch.Tensor, name: str, level: int, side: int | None = None):
    """One of :data:`RANDOM_POLICY_OPS` at ``level`` on a uint8 image [C, H, W], as :func:`apply_policy` with
    the policy ``[(name, 1.0, level)]`` and no Cutout (its coin is drawn, as theirs, then its sign)."""
    return apply_policy(img, [(name, 1.0, level)], 0, side)


def check_ra_options(ops: int, max_level: int, cutout: int, side: int | None) -> None:
    """RA's options: ``ops`` >= 0, levels ``1 .. max_level - 1`` (their ``np.random.randint(1, max_level)``)
    of at most 10, ``cutout`` >= 0, ``side`` >= 1 or None."""
    if ops < 0:
        raise ValueError(f"ops must be >= 0, got {ops}")
    if not 2 <= max_level <= MAX_LEVEL + 1:
        raise ValueError(f"max_level must be in 2..{MAX_LEVEL + 1}, got {max_level}")
    if cutout < 0:
        raise ValueError(f"cutout must be >= 0, got {cutout}")
    if side is not None and side < 1:
        raise ValueError(f"side must be >= 1 or None, got {side}")


class FixMatchRA:
    """FixMatch's RA strong augmentation (``AugmentPoolRAMC(nops=2, magnitude=10)``) on a uint8 image
    [C, H, W]: ``ops`` of :data:`RANDOM_POLICY_OPS` drawn uniformly with replacement, a level
    ``1 .. max_level - 1`` per op, each op applied with probability 0.5, then Cutout ``cutout`` (pixels at
    side 32, 0: none). Returns ``(image, emptied)`` as :func:`apply_policy`. ``side``: the side the pixel
    constants scale to (None: the image's shorter side, theirs on 32 x 32 images; 32: theirs on any side).
    """

    def __init__(self, ops: int = 2, max_level: int = 10, cutout: int = CUTOUT, side: int | None = None):
        check_ra_options(ops, max_level, cutout, side)
        self.ops, self.max_level, self.cutout, self.side = ops, max_level, cutout, side

    def draw_policy(self) -> list[tuple[str, float, int]]:
        """Their policy: the ops first (``np.random.choice``), then a level per op (``np.random.randint``)."""
        names = [RANDOM_POLICY_OPS[_randint(len(RANDOM_POLICY_OPS))] for _ in range(self.ops)]
        return [(name, 0.5, 1 + _randint(self.max_level - 1)) for name in names]

    def __call__(self, img: torch.Tensor):
        return apply_policy(img, self.draw_policy(), self.cutout, self.side)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(ops={self.ops}, max_level={self.max_level}, cutout={self.cutout}, "
            f"side={self.side})"
        )
