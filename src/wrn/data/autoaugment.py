"""AutoAugment's CIFAR policy as two codes train it, op for op: the paper's own (``autoaugment-paper``) and
google-research/sam's TensorFlow port (``autoaugment-sam``).

Both draw one of the same 95 sub-policies per image (:data:`CIFAR_POLICY`: the 19 policies of 5 that the
AutoAugment search kept, tensorflow/models ``research/autoaugment/policies.py`` ``good_policies()``, equal to
sam's ``policy_cifar()``; torchvision's ``AutoAugmentPolicy.CIFAR10`` is the paper's 25-sub-policy appendix,
20 of which are among the 95) and apply each of its two operations with its probability. They differ in
what an operation of a given level does:

- :class:`PaperAutoAugment` follows ``augmentation_transforms.py``: PIL operations on an RGBA image made from
  the normalised float image (``pil_wrap``) and back (``pil_unwrap``), where pixels left empty by a rotation,
  shear, translation or their Cutout (alpha 0) become 0 after normalisation, the data mean;
- :class:`SamAutoAugment` follows sam's ``autoaugment/autoaugment.py`` (forked from the EfficientNet code):
  TensorFlow operations on the uint8 image with ImageNet constants (translate 250 px and Cutout 100 px at
  level 10, empty pixels gray 128), and that code's Contrast and Solarize.

Both run on a uint8 image [C, H, W] in the loader's workers (:mod:`wrn.data.policies`) and draw from torch's
generator; a 1-channel image runs as the RGB image (v, v, v) and keeps its first channel.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

# The AutoAugment search's CIFAR policy: 19 policies of 5 sub-policies in their order (exp0_0 .. exp2_7),
# each sub-policy two (operation, probability, level 0..10).
CIFAR_POLICY: tuple[tuple[tuple[str, float, int], ...], ...] = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.0, 2)),
    (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.4, 3)),
    (("Equalize", 0.7, 5), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 1)),
    (("TranslateY", 0.8, 9), ("TranslateY", 0.9, 9)),
    (("AutoContrast", 0.8, 0), ("TranslateY", 0.7, 9)),
    (("TranslateY", 0.2, 7), ("Color", 0.9, 6)),
    (("Equalize", 0.7, 6), ("Color", 0.4, 9)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Brightness", 0.3, 7), ("AutoContrast", 0.5, 8)),
    (("AutoContrast", 0.9, 4), ("AutoContrast", 0.5, 6)),
    (("Solarize", 0.3, 5), ("Equalize", 0.6, 5)),
    (("TranslateY", 0.2, 4), ("Sharpness", 0.3, 3)),
    (("Brightness", 0.0, 8), ("Color", 0.8, 8)),
    (("Solarize", 0.2, 6), ("Color", 0.8, 6)),
    (("Solarize", 0.2, 6), ("AutoContrast", 0.8, 1)),
    (("Solarize", 0.4, 1), ("Equalize", 0.6, 5)),
    (("Brightness", 0.0, 0), ("Solarize", 0.5, 2)),
    (("AutoContrast", 0.9, 5), ("Brightness", 0.5, 3)),
    (("Contrast", 0.7, 5), ("Brightness", 0.0, 2)),
    (("Solarize", 0.2, 8), ("Solarize", 0.1, 5)),
    (("Contrast", 0.5, 1), ("TranslateY", 0.2, 9)),
    (("AutoContrast", 0.6, 5), ("TranslateY", 0.0, 9)),
    (("AutoContrast", 0.9, 4), ("Equalize", 0.8, 4)),
    (("Brightness", 0.0, 7), ("Equalize", 0.4, 7)),
    (("Solarize", 0.2, 5), ("Equalize", 0.7, 5)),
    (("Equalize", 0.6, 8), ("Color", 0.6, 2)),
    (("Color", 0.3, 7), ("Color", 0.2, 4)),
    (("AutoContrast", 0.5, 2), ("Solarize", 0.7, 2)),
    (("AutoContrast", 0.2, 0), ("Equalize", 0.1, 0)),
    (("ShearY", 0.6, 5), ("Equalize", 0.6, 5)),
    (("Brightness", 0.9, 3), ("AutoContrast", 0.4, 1)),
    (("Equalize", 0.8, 8), ("Equalize", 0.7, 7)),
    (("Equalize", 0.7, 7), ("Solarize", 0.5, 0)),
    (("Equalize", 0.8, 4), ("TranslateY", 0.8, 9)),
    (("TranslateY", 0.8, 9), ("TranslateY", 0.6, 9)),
    (("TranslateY", 0.9, 0), ("TranslateY", 0.5, 9)),
    (("AutoContrast", 0.5, 3), ("Solarize", 0.3, 4)),
    (("Solarize", 0.5, 3), ("Equalize", 0.4, 4)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("AutoContrast", 0.1, 5), ("Brightness", 0.0, 0)),
    (("Cutout", 0.2, 4), ("Equalize", 0.1, 1)),
    (("Equalize", 0.7, 7), ("AutoContrast", 0.6, 4)),
    (("Color", 0.1, 8), ("ShearY", 0.2, 3)),
    (("ShearY", 0.4, 2), ("Rotate", 0.7, 0)),
    (("ShearY", 0.1, 3), ("AutoContrast", 0.9, 5)),
    (("TranslateY", 0.3, 6), ("Cutout", 0.3, 3)),
    (("Equalize", 0.5, 0), ("Solarize", 0.6, 6)),
    (("AutoContrast", 0.3, 5), ("Rotate", 0.2, 7)),
    (("Equalize", 0.8, 2), ("Invert", 0.4, 0)),
    (("Equalize", 0.9, 5), ("Color", 0.7, 0)),
    (("Equalize", 0.1, 1), ("ShearY", 0.1, 3)),
    (("AutoContrast", 0.7, 3), ("Equalize", 0.7, 0)),
    (("Brightness", 0.5, 1), ("Contrast", 0.1, 7)),
    (("Contrast", 0.1, 4), ("Solarize", 0.6, 5)),
    (("Solarize", 0.2, 3), ("ShearX", 0.0, 0)),
    (("TranslateX", 0.3, 0), ("TranslateX", 0.6, 0)),
    (("Equalize", 0.5, 9), ("TranslateY", 0.6, 7)),
    (("ShearX", 0.1, 0), ("Sharpness", 0.5, 1)),
    (("Equalize", 0.8, 6), ("Invert", 0.3, 6)),
    (("AutoContrast", 0.3, 9), ("Cutout", 0.5, 3)),
    (("ShearX", 0.4, 4), ("AutoContrast", 0.9, 2)),
    (("ShearX", 0.0, 3), ("Posterize", 0.0, 3)),
    (("Solarize", 0.4, 3), ("Color", 0.2, 4)),
    (("Equalize", 0.1, 4), ("Equalize", 0.7, 6)),
    (("Equalize", 0.3, 8), ("AutoContrast", 0.4, 3)),
    (("Solarize", 0.6, 4), ("AutoContrast", 0.7, 6)),
    (("AutoContrast", 0.2, 9), ("Brightness", 0.4, 8)),
    (("Equalize", 0.1, 0), ("Equalize", 0.0, 6)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 4)),
    (("Equalize", 0.5, 5), ("AutoContrast", 0.1, 2)),
    (("Solarize", 0.5, 5), ("AutoContrast", 0.9, 5)),
    (("AutoContrast", 0.6, 1), ("AutoContrast", 0.7, 8)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.1, 2)),
    (("Equalize", 0.6, 9), ("Equalize", 0.4, 4)),
)
MAX_LEVEL = 10  # both codes' PARAMETER_MAX / _MAX_LEVEL


def _uniform() -> float:
    return torch.rand(()).item()


def _randint(n: int) -> int:
    return int(torch.randint(n, ()))


def _as_rgb(img: torch.Tensor) -> torch.Tensor:
    return img.expand(3, -1, -1) if img.shape[0] == 1 else img


# ---------------------------------------------------------------------------- the AutoAugment paper's code

# augmentation_transforms.py's MEANS and STDS (CIFAR-10's, on 0..1): data_utils.py normalises CIFAR-10 and
# CIFAR-100 with them before the policy, and pil_wrap / pil_unwrap go back and forth through them.
PAPER_MEANS = (0.49139968, 0.48215841, 0.44653091)
PAPER_STDS = (0.24703223, 0.24348513, 0.26158784)
_PAPER_CUTOUT_RGBA = (125, 122, 113, 0)  # their Cutout's colour (alpha 0: the mean after pil_unwrap)


def paper_wrap_table() -> np.ndarray:
    """[256, 3] uint8: each channel's value after their float round trip, ``x / 255`` normalised with their
    mean and std (data_utils.py) then ``np.uint8((x * STDS + MEANS) * 255)`` (pil_wrap), which truncates:
    x, or x - 1 for 58 of the 768 (mostly dark values). Every image goes through it, whatever it draws."""
    x = np.arange(256, dtype=np.float64)[:, None] / 255.0
    means, stds = np.asarray(PAPER_MEANS), np.asarray(PAPER_STDS)
    return np.uint8(((x - means) / stds * stds + means) * 255.0)


def enhance_factor(level: int) -> float:
    """Their enhancements' factor: ``float_parameter(level, 1.8) + 0.1``."""
    return float(level) * 1.8 / MAX_LEVEL + 0.1


def rotate_degrees(level: int) -> int:
    """Their Rotate's angle before its sign: ``int_parameter(level, 30)``."""
    return int(level * 30 / MAX_LEVEL)


def shear_amount(level: int) -> float:
    """Their ShearX/Y's shear before its sign: ``float_parameter(level, 0.3)``."""
    return level * 0.3 / MAX_LEVEL


def _paper_sign(value):
    return -value if _uniform() > 0.5 else value  # their `if random.random() > 0.5: level = -level`


def _paper_affine(img: Image.Image, matrix) -> Image.Image:
    # PIL's map of output (x, y) to input (a x + b y + c, d x + e y + f), nearest pixel, empty pixels
    # (0, 0, 0, 0), with their matrix as it is (torchvision's affine rebuilds it from angles in degrees)
    return img.transform(img.size, Image.AFFINE, matrix)


def _paper_shift(level: int) -> int:
    return _paper_sign(int(level * 10 / MAX_LEVEL))  # level pixels


def _through_rgb(op):
    """Their AutoContrast, Equalize, Invert, Posterize and Solarize: on ``convert('RGB')`` then back to RGBA, so
    that pixels emptied before (alpha 0) show their colour and count again, black after a geometric op."""
    return lambda img, level: op(img.convert("RGB"), level).convert("RGBA")


def _paper_enhance(op):
    return lambda img, level: op(img, enhance_factor(level))  # PIL's ImageEnhance, on RGBA


def _paper_cutout(img: Image.Image, level: int) -> Image.Image:
    """Their Cutout of side 2 x level: a centre (row, col) drawn in that order, then the box that their loop
    paints, columns and rows both from ``max(0, row - side // 2)`` to ``min(W, col + side // 2)`` (nothing
    where that is empty), in (125, 122, 113) with alpha 0."""
    size = int(level * 20 / MAX_LEVEL)
    if size <= 0:
        return img
    width, height = img.size
    row, col = _randint(height), _randint(width)
    start, stop = max(0, row - size // 2), min(width, col + size // 2)
    if start < stop:
        img.paste(_PAPER_CUTOUT_RGBA, (start, start, stop, stop))
    return img


_PAPER_OPS = {
    "AutoContrast": _through_rgb(lambda img, level: F.autocontrast(img)),
    "Equalize": _through_rgb(lambda img, level: F.equalize(img)),
    "Invert": _through_rgb(lambda img, level: F.invert(img)),
    "Posterize": _through_rgb(lambda img, level: F.posterize(img, 4 - int(level * 4 / MAX_LEVEL))),
    "Solarize": _through_rgb(lambda img, level: F.solarize(img, 256 - int(level * 256 / MAX_LEVEL))),
    "Color": _paper_enhance(F.adjust_saturation),
    "Contrast": _paper_enhance(F.adjust_contrast),
    "Brightness": _paper_enhance(F.adjust_brightness),
    "Sharpness": _paper_enhance(F.adjust_sharpness),
    "Rotate": lambda img, level: F.rotate(img, _paper_sign(rotate_degrees(level))),
    "ShearX": lambda img, level: _paper_affine(img, (1, _paper_sign(shear_amount(level)), 0, 0, 1, 0)),
    "ShearY": lambda img, level: _paper_affine(img, (1, 0, 0, _paper_sign(shear_amount(level)), 1, 0)),
    "TranslateX": lambda img, level: _paper_affine(img, (1, 0, _paper_shift(level), 0, 1, 0)),
    "TranslateY": lambda img, level: _paper_affine(img, (1, 0, 0, 0, 1, _paper_shift(level))),
    "Cutout": _paper_cutout,
}


class PaperAutoAugment:
    """The AutoAugment code's policy on a uint8 image [C, H, W] (tensorflow/models ``research/autoaugment``).

    Per image: a sub-policy drawn uniformly, then each operation applied where a uniform draw is below its
    probability (a sign and Cutout's centre drawn as the operation runs), in their order and on their RGBA
    image. The uint8 image is their float image exactly: the image their policy wraps is
    :func:`paper_wrap_table` of ours; a pixel left with alpha 0 is 0 after their normalisation, here the
    uint8 ``fill`` (the loader's mean rounded, half a gray level from it at most); every other pixel is the
    value their unwrap normalises. ``mean``: the loader's normalisation mean on 0..255 (one value or one per
    channel), None for their CIFAR-10 mean. ``policy``: the sub-policies to draw from.
    """

    def __init__(self, mean=None, policy=CIFAR_POLICY):
        mean = np.asarray(PAPER_MEANS) * 255.0 if mean is None else np.asarray(mean, dtype=np.float64)
        self.fill = np.broadcast_to(np.clip(np.round(mean), 0, 255).astype(np.uint8), (3,)).copy()
        self.policy = policy
        self._wrap = paper_wrap_table()

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        rgb = self._wrap[_as_rgb(img).permute(1, 2, 0).numpy(), np.arange(3)]
        alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
        pil = Image.fromarray(np.concatenate([rgb, alpha], axis=2))
        for name, probability, level in self.policy[_randint(len(self.policy))]:
            if _uniform() < probability:
                pil = _PAPER_OPS[name](pil, level)
        out = np.asarray(pil)
        out = np.where(out[:, :, 3:] == 0, self.fill, out[:, :, :3])
        return torch.from_numpy(np.ascontiguousarray(out[:, :, : img.shape[0]])).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------- google-research/sam's port

SAM_GRAY = 128  # their replace value: empty pixels and Cutout
SAM_TRANSLATE = 250  # translate_const: pixels at level 10
SAM_CUTOUT = 100  # cutout_const: half side at level 10
_F32 = np.float32


def _t32(value) -> torch.Tensor:
    return torch.tensor(_F32(value))


def _sam_sign(value: float) -> np.float32:
    # their _randomly_negate_tensor: kept where floor(u + 0.5) is 1, in float32
    return _F32(value) if _F32(_uniform()) + _F32(0.5) >= 1 else -_F32(value)


def _sam_blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    """Their blend: ``degenerate + factor * (image - degenerate)`` in float32, truncated to uint8 (clipped
    first where the factor extrapolates); torchvision's blend computes ``f a + (1 - f) b``."""
    if factor == 0.0:
        return degenerate
    if factor == 1.0:
        return image
    start = degenerate.float()
    temp = start + _t32(factor) * (image.float() - start)
    return (temp if 0.0 < factor < 1.0 else temp.clamp(0.0, 255.0)).to(torch.uint8)


def _sam_gray(img: torch.Tensor) -> torch.Tensor:
    """tf.image.rgb_to_grayscale on uint8 [3, H, W]: ``x * (1/255)`` in float32, 0.2989 r + 0.587 g + 0.114 b,
    times 255.5 and truncated (torchvision's truncates ``0.2989 r + ...`` on 0..255)."""
    flt = img.float() * _t32(1.0 / 255)
    gray = flt[0] * _t32(0.2989) + flt[1] * _t32(0.5870) + flt[2] * _t32(0.1140)
    return (gray * _t32(255.5)).to(torch.uint8)


def _sam_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    # their "mean" is the sum of the gray histogram over 256 bins: the pixel count / 256 (4 on 32 x 32 images)
    mean = _F32(img.shape[-2] * img.shape[-1]) / _F32(256.0)
    return _sam_blend(torch.full_like(img, int(min(max(mean, 0.0), 255.0))), img, factor)


def _sam_sharpness(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Their Sharpness: PIL's SMOOTH kernel ([1 1 1; 1 5 1; 1 1 1] / 13 in float32) over the interior, the
    products summed row by row in float32 and truncated (torchvision's rounds), the border kept."""
    h, w = img.shape[-2:]
    flt, kernel = img.float(), (torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=torch.float32) / 13.0)
    total = None
    for dy in range(3):
        for dx in range(3):
            term = flt[:, dy : dy + h - 2, dx : dx + w - 2] * kernel[dy, dx]
            total = term if total is None else total + term
    degenerate = img.clone()
    if total is not None and total.numel():
        degenerate[:, 1:-1, 1:-1] = total.clamp(0.0, 255.0).to(torch.uint8)
    return _sam_blend(degenerate, img, factor)


def _sam_autocontrast(img: torch.Tensor) -> torch.Tensor:
    """Per channel ``x * scale + offset`` in float32 with ``scale = 255 / (hi - lo)``, ``offset = -lo *
    scale``, clipped and truncated; a flat channel is kept (torchvision's computes ``(x - lo) / ...``)."""
    lo = img.amin(dim=(1, 2), keepdim=True).float()
    hi = img.amax(dim=(1, 2), keepdim=True).float()
    scale = _t32(255.0) / (hi - lo)  # a true division (a Python number over a tensor is a reciprocal)
    scaled = (img.float() * scale + (-lo * scale)).clamp(0.0, 255.0).to(torch.uint8)
    return torch.where(hi > lo, scaled, img)


def _sam_posterize(img: torch.Tensor, bits: int) -> torch.Tensor:
    shift = min(8 - bits, 7)  # TensorFlow's shifts stop at 7 bits: 0 bits keeps the top one
    return (img >> shift) << shift


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    whole = v.trunc()
    return whole + torch.where((v - whole).abs() >= 0.5, v.sign(), torch.zeros_like(v))  # std::round


def _sam_warp(img: torch.Tensor, t) -> torch.Tensor:
    """tfa.image.transform with ``t = (a0, a1, a2, b0, b1, b2)`` in float32: output (x, y) on integer pixel
    coordinates reads input ``(a0 x + a1 y + a2, b0 x + b1 y + b2)`` rounded half away from zero; outside
    the image their wrap's extra channel is 0 and unwrap fills gray 128."""
    h, w = img.shape[-2:]
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    a0, a1, a2, b0, b1, b2 = (_t32(v) for v in t)
    col = _round_half_away(a0 * xs + a1 * ys + a2).long()
    row = _round_half_away(b0 * xs + b1 * ys + b2).long()
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).view(-1)  # one flat gather: fast on small images
    out = img.reshape(img.shape[0], h * w).index_select(1, flat).view(-1, h, w)
    return torch.where(inside, out, torch.full_like(out, SAM_GRAY))


def _sam_rotate(img: torch.Tensor, level: int) -> torch.Tensor:
    """tfa.image.rotate by ``level * 3`` degrees about the image centre ((W - 1) / 2, (H - 1) / 2), in float32
    (cos and sin of the float32 angle rounded to float32)."""
    radians = _sam_sign(level / MAX_LEVEL * 30.0) * _F32(math.pi / 180.0)
    cos, sin = _F32(math.cos(radians)), _F32(math.sin(radians))
    w1, h1 = _F32(img.shape[-1] - 1), _F32(img.shape[-2] - 1)
    x_offset = (w1 - (cos * w1 - sin * h1)) / _F32(2.0)
    y_offset = (h1 - (sin * w1 + cos * h1)) / _F32(2.0)
    return _sam_warp(img, (cos, -sin, x_offset, sin, cos, y_offset))


def _sam_cutout(img: torch.Tensor, level: int) -> torch.Tensor:
    """Their Cutout: a centre (row, col) drawn in that order and the box within ``pad`` of it, gray 128,
    ``pad = level * 10`` pixels (a 60 x 60 box at level 3 covers a 32 x 32 image from most centres)."""
    pad = int(level / MAX_LEVEL * SAM_CUTOUT)
    h, w = img.shape[-2:]
    row, col = _randint(h), _randint(w)
    out = img.clone()
    out[:, max(0, row - pad) : min(h, row + pad), max(0, col - pad) : min(w, col + pad)] = SAM_GRAY
    return out


def _sam_enhance(op):
    return lambda img, level: op(img, level / MAX_LEVEL * 1.8 + 0.1)


def _sam_shift(level: int) -> np.float32:
    return _sam_sign(level / MAX_LEVEL * SAM_TRANSLATE)


def _sam_shear(level: int) -> np.float32:
    return _sam_sign(level / MAX_LEVEL * 0.3)


def _sam_solarize(img: torch.Tensor, level: int) -> torch.Tensor:
    threshold = int(level / MAX_LEVEL * 256)  # inverts the pixels >= threshold: level 0 inverts them all
    return F.solarize(img, threshold) if threshold <= 255 else img


_SAM_OPS = {
    "AutoContrast": lambda img, level: _sam_autocontrast(img),
    "Equalize": lambda img, level: F.equalize(img),  # PIL's algorithm, as theirs
    "Invert": lambda img, level: F.invert(img),
    "Posterize": lambda img, level: _sam_posterize(img, int(level / MAX_LEVEL * 4)),
    "Solarize": _sam_solarize,
    "Color": _sam_enhance(lambda img, factor: _sam_blend(_sam_gray(img).expand(3, -1, -1), img, factor)),
    "Contrast": _sam_enhance(_sam_contrast),
    "Brightness": _sam_enhance(lambda img, factor: _sam_blend(torch.zeros_like(img), img, factor)),
    "Sharpness": _sam_enhance(_sam_sharpness),
    "Rotate": _sam_rotate,
    "ShearX": lambda img, level: _sam_warp(img, (1, _sam_shear(level), 0, 0, 1, 0)),
    "ShearY": lambda img, level: _sam_warp(img, (1, 0, 0, _sam_shear(level), 1, 0)),
    "TranslateX": lambda img, level: _sam_warp(img, (1, 0, _sam_shift(level), 0, 1, 0)),
    "TranslateY": lambda img, level: _sam_warp(img, (1, 0, 0, 0, 1, _sam_shift(level))),
    "Cutout": _sam_cutout,
}


class SamAutoAugment:
    """google-research/sam's AutoAugment (``autoaugment/autoaugment.py``, ``distort_image_with_autoaugment``
    with ``policy_cifar``) on a uint8 image [C, H, W], before their flip and crop.

    Per image: a sub-policy drawn uniformly, then each operation applied where ``floor(u + p)`` is 1 in
    float32 for a uniform draw u (a sign and Cutout's centre drawn as the operation runs). ``policy``: the
    sub-policies to draw from.
    """

    def __init__(self, policy=CIFAR_POLICY):
        self.policy = policy

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        out = _as_rgb(img)
        for name, probability, level in self.policy[_randint(len(self.policy))]:
            if _F32(_uniform()) + _F32(probability) >= 1:
                out = _SAM_OPS[name](out, level)
        return out[: img.shape[0]].contiguous()
