"""FixMatch's RA strong augmentation (:mod:`wrn.data.fixmatch_augment`) on a whole batch of uint8 images
[B, C, H, W] as torch tensor operations, on whatever device the batch is on (CPU or GPU), image for image
equal to :func:`~wrn.data.fixmatch_augment.apply_policy` given the same per-image parameters.

The per-image code runs PIL on an RGBA image; here the batch holds the same RGBA pixels (uint8 planes [B, 4,
H W + 1], the last pixel (0, 0, 0, 0) for reads outside the image), and each op is Pillow's arithmetic (its C
code, read and checked against Pillow itself) written out on tensors, with per-image parameters:

- the wrap table (:func:`~wrn.data.fixmatch_augment.fixmatch_wrap_table`), then alpha 255;
- AutoContrast, Equalize, Posterize and Solarize (``ImageOps``): their lookup tables per image and channel
  (AutoContrast's ``int(ix * scale + offset)`` in float64 as Python computes it; Equalize's integer
  ``(step // 2 + cumulated histogram) // step``, clipped to 255 as ``Image.point`` clips), on the RGB image
  their ``convert('RGB')`` keeps: alpha 255 afterwards, so pixels emptied before come back (black after a
  geometric op, or the colour an enhancement left);
- Color, Contrast, Brightness and Sharpness (``ImageEnhance``): ``Image.blend(degenerate, image, factor)``,
  C's ``(UINT8)(in1 + alpha * (in2 - in1))`` in float32 (``factor`` rounded to float32, clipped when it
  extrapolates). The degenerate images keep the image's alpha (``putalpha`` / ``LA``), so the blend keeps alpha
  and emptied pixels stay emptied (their colour changes). Color's grey is ``convert('LA')``'s
  ``(19595 r + 38470 g + 7471 b + 32768) >> 16``; Contrast's mean is ``int(mean + 0.5)`` of that grey over every
  pixel, emptied ones included (integer: ``(2 S + N) // (2 N)``); Sharpness's is ``filter(SMOOTH)`` on all
  bands, Pillow's 3 x 3 float32 loop (kernel 1/13 and 5/13 in float32, an offset of 0.5 for rounding, the row
  below first, each row ``(l k0 + c k1) + r k2``, then truncated) with the border pixels kept;
- Rotate, ShearX/Y (``Image.transform(AFFINE)`` NEAREST, through ``Image.rotate`` for Rotate: its matrix
  about (w / 2, h / 2), cos and sin rounded to 15 decimals): Pillow's ``affine_fixed`` 16.16 fixed-point
  path, the coefficients ``floor(v * 65536 + 0.5)`` (the offsets moved by half a pixel), output (x, y) reading
  input ``((a2 + y a1 + x a0) >> 16, (a5 + y a4 + x a3) >> 16)``, (0, 0, 0, 0) outside;
- TranslateX/Y (``ImagingScaleAffine``: an integer shift), Identity, then Cutout's box and the emptied mask.

Per op slot, the images that run a geometric op are one gather (a cached table, per op, level and sign, of the
input pixel each output pixel reads), those that run one of the four ``convert('RGB')`` ops one table lookup
(per image and channel), and each enhancement one blend. No op falls back to PIL: every op is exact (the tests
compare each op at every level and sign, and every pair, with :func:`~wrn.data.fixmatch_augment.apply_policy`),
on the installed Pillow. One difference in behaviour: Posterize at level 10 (``max_level=11``) keeps 0 bits,
which Pillow's ``ImageOps.posterize`` refuses; both codes raise ValueError there.

The float arithmetic is written as separate tensor ops, each rounded to float32 (or float64) as Pillow's C and
Python round (no ``lerp``, ``addcmul`` or ``torch.compile``, which could fuse a multiply-add and round once).
It runs on the CPU or a CUDA device (float64 is needed for AutoContrast's table; ``params`` stay on the CPU,
the indices they give are sent to the device in one copy, so nothing waits on the device until the result is
used). On 448 images of 32 x 32 on a 2-core CPU it costs about a tenth of the per-image code per image.

Parameters (:class:`RAParams`, drawn by :func:`draw_params` or given): per image and op slot the op index in
:data:`~wrn.data.fixmatch_augment.RANDOM_POLICY_OPS`, its level, its coin (applied or not) and its sign
(negated or not, used by geometric ops only), and Cutout's centre (row, col). The per-image code draws them
one image at a time from torch's global generator in their order; :func:`draw_params` is a different sampler of
the same distribution, vectorised, from a given generator. :func:`policy_draws` gives, for one image of a
:class:`RAParams`, the policy and the values of the draws that make ``apply_policy`` use those parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from wrn.data.autoaugment import MAX_LEVEL, enhance_factor, rotate_degrees, shear_amount
from wrn.data.fixmatch_augment import (
    CUTOUT,
    EMPTIED_VALUE,
    GEOMETRIC,
    RANDOM_POLICY_OPS,
    FixMatchRA,
    cutout_size,
    shift_pixels,
)
from wrn.data.pil_affine import ONE, affine_reads, fixed_coefficients, rotation_matrix

OP_INDEX = {name: i for i, name in enumerate(RANDOM_POLICY_OPS)}
_LUT_OPS = ("AutoContrast", "Equalize", "Posterize", "Solarize")
_ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")
_GEOMETRIC_INDICES = frozenset(OP_INDEX[name] for name in GEOMETRIC)


@dataclass(frozen=True)
class RAParams:
    """The per-image parameters of a batch of B images and K op slots (all on the CPU).

    ``ops``: int64 [B, K], indices into ``RANDOM_POLICY_OPS``; ``levels``: int64 [B, K], 0..10 (theirs 1..9);
    ``coins``: bool [B, K], op applied (their ``random.random() < 0.5``); ``signs``: bool [B, K], the value
    negated (their ``random.random() > 0.5``; only geometric ops use it); ``centres``: int64 [B, 2], Cutout's
    centre (row, col) (unused when Cutout is off)."""

    ops: torch.Tensor
    levels: torch.Tensor
    coins: torch.Tensor
    signs: torch.Tensor
    centres: torch.Tensor

    def __post_init__(self):
        b, k = self.ops.shape
        for name in ("levels", "coins", "signs"):
            if tuple(getattr(self, name).shape) != (b, k):
                raise ValueError(f"{name} must be [{b}, {k}] as ops, got {tuple(getattr(self, name).shape)}")
        if tuple(self.centres.shape) != (b, 2):
            raise ValueError(f"centres must be [{b}, 2], got {tuple(self.centres.shape)}")
        if self.ops.numel() and not (
            0 <= int(self.ops.min()) and int(self.ops.max()) < len(RANDOM_POLICY_OPS)
        ):
            raise ValueError(f"ops must be in 0..{len(RANDOM_POLICY_OPS) - 1}")
        if self.levels.numel() and not (0 <= int(self.levels.min()) and int(self.levels.max()) <= MAX_LEVEL):
            raise ValueError(f"levels must be in 0..{MAX_LEVEL}")

    def __len__(self) -> int:
        return self.ops.shape[0]

    @classmethod
    def of(cls, ops, levels, coins, signs, centres) -> RAParams:
        """From nested lists or tensors; ``ops`` may hold op names."""
        ops = [[OP_INDEX[o] if isinstance(o, str) else int(o) for o in row] for row in _as_list(ops)]
        return cls(
            torch.tensor(ops, dtype=torch.int64).view(len(ops), -1),
            torch.as_tensor(levels, dtype=torch.int64).view(len(ops), -1).cpu(),
            torch.as_tensor(coins, dtype=torch.bool).view(len(ops), -1).cpu(),
            torch.as_tensor(signs, dtype=torch.bool).view(len(ops), -1).cpu(),
            torch.as_tensor(centres, dtype=torch.int64).view(len(ops), 2).cpu(),
        )


def _as_list(x):
    return x.tolist() if isinstance(x, torch.Tensor) else [list(row) for row in x]


def draw_params(
    batch: int,
    height: int,
    width: int,
    ops: int = 2,
    max_level: int = 10,
    generator: torch.Generator | None = None,
) -> RAParams:
    """The parameters of ``batch`` images from ``generator`` (a CPU generator; None: torch's global one), in
    this order, each one vectorised call: op indices ``randint(14, [B, ops])`` (uniform with replacement),
    levels ``1 + randint(max_level - 1, [B, ops])``, coins ``rand([B, ops]) < 0.5``, signs ``rand([B, ops]) >
    0.5``, Cutout rows ``randint(height, [B])`` then columns ``randint(width, [B])`` (drawn whether or not
    Cutout runs, so the number of draws depends on the batch's shape only)."""
    if not 2 <= max_level <= MAX_LEVEL + 1:
        raise ValueError(f"max_level must be in 2..{MAX_LEVEL + 1}, got {max_level}")
    g = {"generator": generator}
    op_idx = torch.randint(len(RANDOM_POLICY_OPS), (batch, ops), **g)
    levels = 1 + torch.randint(max_level - 1, (batch, ops), **g)
    coins = torch.rand((batch, ops), **g) < 0.5
    signs = torch.rand((batch, ops), **g) > 0.5
    rows = torch.randint(height, (batch,), **g)
    cols = torch.randint(width, (batch,), **g)
    return RAParams(op_idx, levels, coins, signs, torch.stack([rows, cols], dim=1))


def policy_draws(params: RAParams, i: int, cutout: int = CUTOUT):
    """Image ``i``'s parameters as :func:`~wrn.data.fixmatch_augment.apply_policy` takes them: ``(policy,
    uniforms, randints)``, the policy ``[(name, 0.5, level), ...]`` and, in the order it draws them, the values
    its ``_uniform()`` (each op's coin, then a geometric op's sign where it runs) and ``_randint()`` (Cutout's
    row and column, where ``cutout`` is not 0) must return to apply those parameters."""
    policy, uniforms = [], []
    for k in range(params.ops.shape[1]):
        op = int(params.ops[i, k])
        policy.append((RANDOM_POLICY_OPS[op], 0.5, int(params.levels[i, k])))
        applied = bool(params.coins[i, k])
        uniforms.append(0.25 if applied else 0.75)
        if applied and op in _GEOMETRIC_INDICES:
            uniforms.append(0.75 if bool(params.signs[i, k]) else 0.25)
    randints = [int(params.centres[i, 0]), int(params.centres[i, 1])] if cutout > 0 else []
    return policy, uniforms, randints


# ---------------------------------------------------------------------------------- the ops
#
# The batch is ``planes``, uint8 [B, 4, P + 1] (P = H W): each image's R, G, B and A planes, then one pixel
# (0, 0, 0, 0) that the geometric ops read outside the image. The ops run on a subset of the images, their RGB
# a view [n, 3, P]. On the CPU, operations in place on the batch are much faster than ones that allocate a new
# batch-sized tensor (page faults), hence the in-place arithmetic below.


def _wrap_into(out: torch.Tensor, images: torch.Tensor) -> None:
    """``out = fixmatch_wrap_table()[images]`` (uint8, same shape or broadcast): the values 1..47 one less
    (checked against the table by the tests), ``max(x, 1) - 1 + (min(max(x, 47), 48) - 47)`` in uint8 arithmetic."""
    if out.shape != images.shape:  # 1 channel: wrapped, then broadcast
        out.copy_(images.clamp(min=1).sub_(1).add_(images.clamp(47, 48)).sub_(47))
        return
    torch.clamp(images, min=1, out=out)
    out.sub_(1).add_(images.clamp(47, 48)).sub_(47)  # modulo 256: the partial sums may wrap, the result not


def _autocontrast_lut(rgb: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast's table [n, 3, 256] for the RGB [n, 3, P]: ``int(ix * scale + offset)`` in
    float64, clipped; the identity for a flat channel."""
    lo = rgb.amin(dim=2).double()  # [n, 3]
    hi = rgb.amax(dim=2).double()
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp(min=1.0)  # a number over a tensor: a reciprocal
    offset = -lo * scale
    ix = torch.arange(256, dtype=torch.float64, device=rgb.device)
    lut = (ix * scale[..., None] + offset[..., None]).clamp(0.0, 255.0).to(torch.uint8)  # int(): truncates
    return torch.where((hi > lo)[..., None], lut, ix.to(torch.uint8))


def _equalize_lut(rgb: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize's table [n, 3, 256] for the RGB [n, 3, P] (int64): ``step = (count - count of the
    top value) // 255``, entry ``i`` ``(step // 2 + count below i) // step``, clipped to 255 (Image.point
    clips); the identity for one value or step 0."""
    n, _, pixels = rgb.shape
    base = torch.arange(0, n * 768, 256, device=rgb.device).view(n, 3, 1)
    hist = torch.bincount((rgb + base).view(-1), minlength=n * 768).view(n, 3, 256)
    last = hist.gather(2, rgb.amax(dim=2, keepdim=True))
    step = (pixels - last) // 255
    lut = ((step // 2 + hist.cumsum(2) - hist) // step.clamp(min=1)).clamp(max=255).to(torch.uint8)
    keep = ((hist > 0).sum(2, keepdim=True) <= 1) | (step == 0)
    return torch.where(keep, torch.arange(256, device=rgb.device).to(torch.uint8), lut)


def _static_luts() -> torch.Tensor:
    """[2, 11, 256] uint8: Posterize's and Solarize's tables per level (Posterize at level 10: unused, below)."""
    ix = torch.arange(256)
    posterize, solarize = [], []
    for level in range(MAX_LEVEL + 1):
        bits = max(1, 4 - level * 4 // MAX_LEVEL)  # int(level * 4 / 10)
        posterize.append(ix & (~((1 << (8 - bits)) - 1) & 0xFF))
        threshold = 256 - level * 256 // MAX_LEVEL  # 256 - int(level * 256 / 10)
        solarize.append(torch.where(ix < threshold, ix, 255 - ix))
    return torch.stack([torch.stack(posterize), torch.stack(solarize)]).to(torch.uint8)


_STATIC_LUTS = _static_luts()


def _grey(rgb: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB to L of [n, 3, P]: ``(19595 r + 38470 g + 7471 b + 0x8000) >> 16``, [n, 1, P] int32."""
    c = rgb.to(torch.int32)
    return (c[:, 0:1] * 19595 + c[:, 1:2] * 38470 + c[:, 2:3] * 7471 + 0x8000) >> 16


def _color(rgb: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return _grey(rgb).float()


def _contrast(rgb: torch.Tensor, h: int, w: int) -> torch.Tensor:
    total = _grey(rgb).sum(dim=(1, 2), dtype=torch.int64)
    mean = (2 * total + h * w) // (2 * h * w)  # int(total / count + 0.5)
    return mean.float().view(-1, 1, 1)


def _brightness(rgb: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.zeros((), device=rgb.device)


_K1 = (torch.tensor(1.0, dtype=torch.float32) / torch.tensor(13.0, dtype=torch.float32)).item()
_K5 = (torch.tensor(5.0, dtype=torch.float32) / torch.tensor(13.0, dtype=torch.float32)).item()


def _sharpness(rgb: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``filter(SMOOTH)``: Pillow's ImagingFilter3x3 in float32 (the kernel's float32 1/13 and 5/13, 0.5 for
    rounding, then the row below, the row, the row above, each ``(left k + centre k) + right k``),
    truncated, the border kept."""
    out = rgb.float()
    if h < 3 or w < 3:
        return out
    x = out.unflatten(2, (h, w))

    def row(r, centre):
        return (r[..., :-2] * _K1 + r[..., 1:-1] * centre) + r[..., 2:] * _K1

    total = row(x[:, :, 2:], _K1) + 0.5
    total = total + row(x[:, :, 1:-1], _K5)
    total = total + row(x[:, :, :-2], _K1)
    x[:, :, 1:-1, 1:-1] = total.clamp(0.0, 255.0).trunc()
    return out


_DEGENERATE = {"Color": _color, "Contrast": _contrast, "Brightness": _brightness, "Sharpness": _sharpness}


def _coefficients(op: str, level: int, negate: bool, w: int, h: int, side: int) -> tuple[int, ...]:
    """The 16.16 fixed-point (a0, a1, a2, a3, a4, a5) of a geometric op: output (x, y) reads input
    ``((a2 + y a1 + x a0) >> 16, (a5 + y a4 + x a3) >> 16)``."""
    if op in ("TranslateX", "TranslateY"):
        # ImagingScaleAffine: input x + 0.5 + t, truncated (-1 below 0): x + t for an integer t
        shift = -shift_pixels(level, side) if negate else shift_pixels(level, side)
        tx, ty = (shift, 0) if op == "TranslateX" else (0, shift)
        return (ONE, 0, tx * ONE + ONE // 2, 0, ONE, ty * ONE + ONE // 2)
    if op == "Rotate":
        angle = rotate_degrees(level)
        a = rotation_matrix(-angle if negate else angle, w, h)
    else:
        shear = -shear_amount(level) if negate else shear_amount(level)
        a = [1, shear, 0, 0, 1, 0] if op == "ShearX" else [1, 0, 0, shear, 1, 0]
    return fixed_coefficients(a, w, h, op)  # level 0: the identity (ImagingScaleAffine)


_GEOMETRIC_OPS = tuple(name for name in RANDOM_POLICY_OPS if name in GEOMETRIC)
_GEOMETRIC_POSITION = {OP_INDEX[name]: i for i, name in enumerate(_GEOMETRIC_OPS)}


@lru_cache(maxsize=16)
def _geometric_table(h: int, w: int, side: int, device: torch.device) -> torch.Tensor:
    """int64 [5 x 11 x 2, P + 1]: for each geometric op, level 0..10 and sign (row ``(op * 11 + level) * 2 +
    negated``), the input pixel each output pixel reads (P, the zero pixel, outside), then P."""
    c = torch.tensor(
        [
            _coefficients(op, level, negate, w, h, side)
            for op in _GEOMETRIC_OPS
            for level in range(MAX_LEVEL + 1)
            for negate in (False, True)
        ],
        dtype=torch.int64,
    )
    flat = affine_reads(c, h, w)
    return torch.cat([flat, torch.full((c.shape[0], 1), h * w)], dim=1).to(device)


# ---------------------------------------------------------------------------------- the batch


@lru_cache(maxsize=16)
def _constants(device: torch.device):
    """Posterize's and Solarize's tables [2, 11, 256] and the enhancements' float32 factors [11] per level,
    on ``device``."""
    factors = torch.tensor([enhance_factor(level) for level in range(MAX_LEVEL + 1)], dtype=torch.float32)
    return _STATIC_LUTS.to(device), factors.to(device)


def _rows(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask, as_tuple=True)[0]


class _Plan:
    """The index tensors of a batch's steps, built on the CPU from the parameters, then sent to the device in
    one copy (no device-to-host synchronisation while the ops run)."""

    def __init__(self):
        self.parts: list[torch.Tensor] = []

    def put(self, t: torch.Tensor) -> int:
        self.parts.append(t.to(torch.int64).reshape(-1))
        return len(self.parts) - 1

    def send(self, device: torch.device) -> list[torch.Tensor]:
        if device.type == "cpu" or not self.parts:
            return self.parts
        flat = torch.cat(self.parts)
        if device.type == "cuda":
            flat = flat.pin_memory()
        return list(flat.to(device, non_blocking=True).split([t.numel() for t in self.parts]))


def _geometric(planes, rows, config, table):
    """All the images of a slot that run a geometric op: one gather of their pixels."""
    reads = table.index_select(0, config).unsqueeze(1).expand(-1, 4, -1)
    planes.index_put_((rows,), planes.index_select(0, rows).gather(2, reads))


def _through_rgb(planes, rows, parts, p, static):
    """The images of a slot that run AutoContrast, Equalize, Posterize or Solarize: one table per image and
    channel, applied to their RGB, alpha 255 (``convert('RGB')`` then ``'RGBA'``)."""
    sub = planes.index_select(0, rows)
    rgb = sub[:, :3, :p].long()  # [n, 3, P]
    lut = torch.empty((sub.shape[0], 3, 256), dtype=torch.uint8, device=planes.device)
    for name, where, levels in parts:
        if name in ("Posterize", "Solarize"):
            lut[where] = static[0 if name == "Posterize" else 1][levels].unsqueeze(1).expand(-1, 3, -1)
        else:
            table = _autocontrast_lut if name == "AutoContrast" else _equalize_lut
            lut[where] = table(rgb if where.numel() == sub.shape[0] else rgb.index_select(0, where))
    sub[:, :3, :p] = lut.gather(2, rgb)
    sub[:, 3, :p] = 255
    planes.index_put_((rows,), sub)


def _enhance(planes, rows, name, factor, h, w):
    """ImageEnhance's ``Image.blend(degenerate, image, factor)`` on the RGB: ``degenerate + factor * (image
    - degenerate)`` in float32, clipped and truncated (alpha: the degenerate's is the image's, kept)."""
    p = h * w
    sub = planes.index_select(0, rows)
    rgb = sub[:, :3, :p]
    start = _DEGENERATE[name](rgb, h, w)
    out = rgb.float().sub_(start).mul_(factor.view(-1, 1, 1)).add_(start)  # float32 (no fused multiply-add)
    sub[:, :3, :p] = out.clamp_(0.0, 255.0)
    planes.index_put_((rows,), sub)


_GEOMETRIC_LIST = torch.tensor(sorted(_GEOMETRIC_INDICES))
_THROUGH_RGB_LIST = torch.tensor([OP_INDEX[name] for name in _LUT_OPS])
_POSITION = torch.tensor([_GEOMETRIC_POSITION.get(i, 0) for i in range(len(RANDOM_POLICY_OPS))])


def _plan(params: RAParams):
    """The steps of each op slot, their indices in a :class:`_Plan`."""
    plan, steps = _Plan(), []
    for k in range(params.ops.shape[1]):
        ops = torch.where(params.coins[:, k], params.ops[:, k], -1)
        levels, signs = params.levels[:, k], params.signs[:, k]
        rows = _rows(torch.isin(ops, _GEOMETRIC_LIST))
        if rows.numel():
            config = (_POSITION[ops[rows]] * (MAX_LEVEL + 1) + levels[rows]) * 2 + signs[rows]
            steps.append(("geometric", plan.put(rows), plan.put(config)))
        rows = _rows(torch.isin(ops, _THROUGH_RGB_LIST))
        if rows.numel():
            parts = []
            for name in _LUT_OPS:
                where = _rows(ops[rows] == OP_INDEX[name])
                if not where.numel():
                    continue
                if name == "Posterize" and int(levels[rows][where].max()) >= MAX_LEVEL:
                    # 0 bits: ImageOps.posterize refuses it (the per-image code raises the same)
                    raise ValueError("bits must be between or equal to 1 and 8 (Posterize at level 10)")
                parts.append((name, plan.put(where), plan.put(levels[rows][where])))
            steps.append(("rgb", plan.put(rows), parts))
        for name in _ENHANCE_OPS:
            rows = _rows(ops == OP_INDEX[name])
            if rows.numel():
                steps.append((name, plan.put(rows), plan.put(levels[rows])))
    return plan, steps


def apply_batched(images: torch.Tensor, params: RAParams, side: int | None = None, cutout: int = CUTOUT):
    """FixMatch's RA on uint8 images [B, C, H, W] (C = 1 or 3) with per-image ``params``: each image as
    :func:`~wrn.data.fixmatch_augment.apply_policy` with the same ops, levels, coins, signs and Cutout
    centre (``cutout`` pixels at side 32, 0: none; ``side``: the side the pixel constants scale to, None: the
    images' shorter side). Runs on ``images.device`` (``params`` stay on the CPU).

    Returns ``(images, emptied)``: uint8 [B, C, H, W], 128 where emptied, and the bool [B, H, W] mask of the
    emptied pixels (alpha 0 after the ops, or Cutout's box)."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 [B, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}")
    b, channels, h, w = images.shape
    if len(params) != b:
        raise ValueError(f"params are for {len(params)} images, the batch has {b}")
    side = min(h, w) if side is None else side
    dev, p = images.device, h * w
    plan, steps = _plan(params)
    centres = plan.put(params.centres)
    sent = plan.send(dev)
    static, factors = _constants(dev)

    planes = torch.empty((b, 4, p + 1), dtype=torch.uint8, device=dev)
    _wrap_into(planes[:, :3, :p], images.view(b, channels, p))  # 1 channel: broadcast to 3
    planes[:, 3, :p] = 255
    planes[:, :, p] = 0
    for step in steps:
        kind, rows = step[0], sent[step[1]]
        if kind == "geometric":
            _geometric(planes, rows, sent[step[2]], _geometric_table(h, w, side, dev))
        elif kind == "rgb":
            parts = [(name, sent[where], sent[levels]) for name, where, levels in step[2]]
            _through_rgb(planes, rows, parts, p, static)
        else:
            _enhance(planes, rows, kind, factors[sent[step[2]]], h, w)

    kept = planes[:, 3, :p].clamp(max=1)  # uint8 [B, P]: 0 where emptied (alpha 0), else 1
    size = cutout_size(cutout, side)
    if size:  # rows max(0, row - size // 2) : min(H, row + size // 2), columns likewise
        half, centre = size // 2, sent[centres].view(b, 2)
        rows = torch.arange(h, device=dev).view(1, h) - centre[:, :1]
        cols = torch.arange(w, device=dev).view(1, w) - centre[:, 1:]
        in_rows = ((rows >= -half) & (rows < half)).to(torch.uint8)
        in_cols = ((cols >= -half) & (cols < half)).to(torch.uint8)
        kept.view(b, h, w).mul_(1 - in_rows[:, :, None] * in_cols[:, None, :])
    out = torch.empty_like(images)
    pixels = out.view(b, channels, p)
    pixels.copy_(planes[:, :channels, :p])  # then 128 where emptied: (x - 128) * kept + 128, modulo 256
    pixels.sub_(EMPTIED_VALUE).mul_(kept.view(b, 1, p)).add_(EMPTIED_VALUE)
    emptied = (1 - kept).view(torch.bool).view(b, h, w)  # 0 / 1 bytes: a bool tensor as it is
    return out, emptied


class BatchedFixMatchRA(FixMatchRA):
    """:class:`~wrn.data.fixmatch_augment.FixMatchRA` on a batch: :func:`draw_params` from ``generator``
    (None: torch's global one) then :func:`apply_batched` on the batch's device."""

    def __init__(
        self,
        ops: int = 2,
        max_level: int = 10,
        cutout: int = CUTOUT,
        side: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(ops, max_level, cutout, side)
        self.generator = generator

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """The strong views of ``images``, drawn from ``generator`` (None: the one it was made with)."""
        b, _, h, w = images.shape
        params = draw_params(b, h, w, self.ops, self.max_level, generator or self.generator)
        return apply_batched(images, params, self.side, self.cutout)
