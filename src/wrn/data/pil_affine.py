"""Pillow's NEAREST affine transform (``Image.transform(AFFINE)``, and ``Image.rotate`` without ``expand``) on
uint8 tensors, pixel for pixel equal to Pillow on the installed version.

Pillow's ``ImagingTransformAffine`` (Geometry.c) takes its 16.16 fixed-point path (``affine_fixed``) for NEAREST
when the matrix keeps the image's corners inside +-32768: the coefficients are ``floor(v * 65536 + 0.5)``, with
the offsets moved by half a pixel, and output pixel (x, y) reads input ``((a2 + y a1 + x a0) >> 16, (a5 + y a4
+ x a3) >> 16)``; a read outside the image leaves the output at its fill (0 here: ``Image.rotate``'s default,
and torchvision's ``RandomRotation(fill=0)``). A matrix without shear or rotation (``a1 = a3 = 0``) goes to
``ImagingScaleAffine`` instead; of those only the identity is taken here.

``Image.rotate(angle)`` builds the inverse matrix about the centre (w / 2, h / 2), with its cosine and sine
rounded to 15 decimals (:func:`rotation_matrix`). torchvision's ``RandomRotation(degrees)`` on a PIL image is
``Image.rotate(angle, NEAREST, expand=False, center=None, fillcolor=0)`` with the angle drawn uniformly from
``[-degrees, degrees]``.

The coefficients are computed in Python, as Pillow computes them (float64, Python's ``round``), one image at a
time (:func:`rotation_coefficients`); the reads (:func:`affine_reads`) and the gather (:func:`transform`) are
tensor operations on whatever device the images are on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

ONE = 1 << 16  # Pillow's 16.16 fixed point
IDENTITY = (ONE, 0, ONE // 2, 0, ONE, ONE // 2)


def fix(v: float) -> int:
    return math.floor(v * 65536.0 + 0.5)  # Geometry.c's FIX: FLOOR((v) * 65536.0 + 0.5)


def _check_fixed(a, w: int, h: int) -> bool:
    return all(
        abs(x * a[0] + y * a[1] + a[2]) < 32768.0 and abs(x * a[3] + y * a[4] + a[5]) < 32768.0
        for x, y in ((0, 0), (w, h), (0, h), (w, 0))
    )


def rotation_matrix(angle: float, w: int, h: int) -> list[float]:
    """``Image.rotate(angle)``'s inverse matrix (no expand, centre (w / 2, h / 2)), as Pillow computes it."""
    angle = -math.radians(angle % 360.0)
    matrix = [
        round(math.cos(angle), 15),
        round(math.sin(angle), 15),
        0.0,
        round(-math.sin(angle), 15),
        round(math.cos(angle), 15),
        0.0,
    ]
    cx, cy = w / 2, h / 2
    a, b, c, d, e, f = matrix
    x, y = -cx - 0, -cy - 0
    matrix[2], matrix[5] = a * x + b * y + c, d * x + e * y + f
    matrix[2] += cx
    matrix[5] += cy
    return matrix


def fixed_coefficients(a: Sequence[float], w: int, h: int, what: str = "the transform") -> tuple[int, ...]:
    """The 16.16 fixed-point (a0, a1, a2, a3, a4, a5) of the affine matrix ``a`` on a ``w`` x ``h`` image."""
    if a[1] == 0 and a[3] == 0:  # ImagingScaleAffine
        if tuple(a) != (1, 0, 0, 0, 1, 0):
            raise ValueError(f"{what} scales or translates: only the identity is supported without shear")
        return IDENTITY
    if not _check_fixed(a, w, h):
        raise ValueError(f"{what} on a {w} x {h} image leaves Pillow's fixed-point range: not supported")
    return (
        fix(a[0]),
        fix(a[1]),
        fix(a[2] + a[0] * 0.5 + a[1] * 0.5),
        fix(a[3]),
        fix(a[4]),
        fix(a[5] + a[3] * 0.5 + a[4] * 0.5),
    )


def rotation_coefficients(angles, h: int, w: int) -> torch.Tensor:
    """int64 [n, 6]: the fixed-point coefficients of ``Image.rotate(angle)`` for each of ``angles`` (degrees;
    Pillow returns a copy at 0, the identity here)."""
    return torch.tensor(
        [fixed_coefficients(rotation_matrix(float(t), w, h), w, h, "a rotation") for t in angles],
        dtype=torch.int64,
    ).view(-1, 6)


def draw_angles(n: int, rotate: float, g: torch.Generator) -> torch.Tensor:
    """``n`` angles in degrees, uniform in ``[-rotate, rotate]`` in float32, as torchvision's
    ``RandomRotation(rotate)`` draws each one (from ``g`` here, all at once)."""
    return torch.empty(n).uniform_(-rotate, rotate, generator=g)


def affine_reads(coefficients: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """int64 [n, h w]: for each coefficient row [n, 6] (on the device of the result), the flat input pixel each
    output pixel reads, ``h w`` where it reads outside the image."""
    c = coefficients.view(-1, 6, 1, 1)
    ys = torch.arange(h, dtype=torch.int64, device=c.device).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.int64, device=c.device).view(1, 1, w)
    xin = (c[:, 2] + ys * c[:, 1] + xs * c[:, 0]) >> 16
    yin = (c[:, 5] + ys * c[:, 4] + xs * c[:, 3]) >> 16
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    return torch.where(inside, yin * w + xin, h * w).view(c.shape[0], h * w)


def transform(images: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """``images`` [B, C, H, W] (any dtype), each moved by its row of ``coefficients`` [B, 6] (int64, any device):
    one gather, 0 where the image is read from outside."""
    b, c, h, w = images.shape
    reads = affine_reads(coefficients.to(images.device), h, w)
    flat = torch.cat([images.reshape(b, c, h * w), images.new_zeros(b, c, 1)], dim=2)
    return flat.gather(2, reads.unsqueeze(1).expand(b, c, h * w)).view(b, c, h, w)
