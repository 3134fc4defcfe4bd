"""FixMatch's RA on a batch (:mod:`wrn.data.fixmatch_batched`): image for image equal (torch.equal on the
uint8 images and the emptied masks) to the per-image PIL code, :func:`wrn.data.fixmatch_augment.apply_policy`,
fed the same parameters through its draws: every op at every level and sign, every pair of ops (so every op
after one that empties pixels), with and without Cutout, 1-channel images, other sides; then the sampler's
distribution and order."""

from __future__ import annotations

import pytest
import torch

from conftest import ra_reference
from wrn.data.fixmatch_augment import CUTOUT, GEOMETRIC, RANDOM_POLICY_OPS
from wrn.data.fixmatch_batched import (
    BatchedFixMatchRA,
    RAParams,
    apply_batched,
    draw_params,
    policy_draws,
)

N_OPS = len(RANDOM_POLICY_OPS)
RGB_OPS = ("AutoContrast", "Equalize", "Posterize", "Solarize")  # run on convert('RGB'): alpha 255 after


def _varied(h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Nine uint8 [3, H, W] images that take each op's branches: ramps with noise, a flat patch and a dark
    patch of 1..47 (the values the wrap truncates); one flat colour (AutoContrast's and Equalize's identity);
    noise over 0..255; dark values 1..47 only; saturated 0 / 255 with a few 1 / 254; per-channel ramps; two
    values per channel; mostly 255 with a few dark pixels (Equalize's step 0); low contrast 100..110."""
    g = torch.Generator().manual_seed(seed)

    def randint(lo, hi, shape=(3, h, w)):
        return torch.randint(lo, hi, shape, generator=g, dtype=torch.int64)

    ramp = torch.linspace(0, 180, w).view(1, 1, w)
    first = (ramp + randint(0, 60)).clamp(0, 255)
    first[:, : h // 3, : w // 3] = randint(0, 256, (3, 1, 1))
    first[:, -max(1, h // 4) :, w // 2 :] = randint(1, 48, (3, max(1, h // 4), w - w // 2))
    flat = randint(0, 256, (3, 1, 1)).expand(3, h, w)
    saturated = torch.where(randint(0, 2) == 1, 255, 0)
    saturated[randint(0, 20) == 0] = 1
    saturated[randint(0, 20) == 0] = 254
    ramps = torch.stack(
        [
            torch.linspace(0, 255, w).view(1, w).expand(h, w),
            torch.linspace(255, 0, h).view(h, 1).expand(h, w),
            (torch.linspace(0, 90, h).view(h, 1) + torch.linspace(0, 90, w).view(1, w)),
        ]
    )
    two = torch.where(randint(0, 2) == 1, randint(0, 256, (3, 1, 1)), randint(0, 256, (3, 1, 1)))
    bright = torch.full((3, h, w), 255)
    bright[randint(0, 100) == 0] = 7
    images = [first, flat, randint(0, 256), randint(1, 48), saturated, ramps, two, bright, randint(100, 111)]
    return torch.stack([x.round().to(torch.uint8) for x in images])


def _assert_equal(script, images, params, cutout=CUTOUT, side=None):
    out, emptied = apply_batched(images, params, side=side, cutout=cutout)
    ref_out, ref_emptied = ra_reference(script, images, params, cutout, side)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert emptied.dtype == torch.bool and emptied.shape == (images.shape[0],) + images.shape[2:]
    bad = [
        i
        for i in range(len(params))
        if not (torch.equal(out[i], ref_out[i]) and torch.equal(emptied[i], ref_emptied[i]))
    ]
    assert not bad, [(policy_draws(params, i, cutout)[0], params.signs[i].tolist(), i % 9) for i in bad[:10]]
    return out, emptied


def _sweep(images: torch.Tensor, levels=range(0, 11)):
    """Every op at every level and both signs on every image, applied (one op slot)."""
    posterize = RANDOM_POLICY_OPS.index("Posterize")
    configs = [
        (op, level, sign)
        for op in range(N_OPS)
        for level in levels
        for sign in (False, True)
        if not (op == posterize and level == 10)  # Pillow refuses 0 bits: test_posterize_level_10
    ]
    n = images.shape[0]
    ops = torch.tensor([c[0] for c in configs]).repeat_interleave(n).view(-1, 1)
    levels = torch.tensor([c[1] for c in configs]).repeat_interleave(n).view(-1, 1)
    signs = torch.tensor([c[2] for c in configs]).repeat_interleave(n).view(-1, 1)
    b = ops.shape[0]
    centres = torch.stack([torch.arange(b) % images.shape[2], (7 * torch.arange(b)) % images.shape[3]], 1)
    params = RAParams(ops, levels, torch.ones(b, 1, dtype=torch.bool), signs, centres)
    return images.repeat(len(configs), 1, 1, 1), params


@pytest.mark.parametrize("cutout", [0, CUTOUT])
def test_every_op_level_and_sign(scripted, cutout):
    """Levels 1..9 (theirs) and 0 and 10 (max_level 11), each op alone, 9 varied images."""
    images, params = _sweep(_varied())
    out, emptied = _assert_equal(scripted, images, params, cutout=cutout)
    if cutout == 0:
        wrapped = apply_batched(images, RAParams.of([[0]] * len(params), [[1]] * len(params),
                                                    [[True]] * len(params), [[False]] * len(params),
                                                    [[0, 0]] * len(params)), cutout=0)[0]  # fmt: skip
        for op, name in enumerate(RANDOM_POLICY_OPS):
            rows = params.ops[:, 0] == op
            if name != "Identity":  # each op changes some image: the comparison tests something
                assert not torch.equal(out[rows], wrapped[rows]), name
            assert bool(emptied[rows].any()) == (name in GEOMETRIC), name


def test_every_pair_of_ops(scripted):
    """The 14 x 14 ordered pairs, random levels and signs, on the varied images (after a geometric op the
    next op sees alpha-0 pixels; the RGB ops bring them back, the enhancements blend their colour)."""
    images = _varied(seed=1)
    n = images.shape[0]
    g = torch.Generator().manual_seed(2)
    pairs = torch.cartesian_prod(torch.arange(N_OPS), torch.arange(N_OPS))
    ops = pairs.repeat_interleave(n, 0)
    b = ops.shape[0]
    levels = 1 + torch.randint(9, (b, 2), generator=g)
    levels[:, 0] = torch.where(torch.rand(b, generator=g) < 0.5, 9, levels[:, 0])  # large first shifts
    signs = torch.rand((b, 2), generator=g) > 0.5
    centres = torch.stack([torch.randint(32, (b,), generator=g), torch.randint(32, (b,), generator=g)], 1)
    params = RAParams(ops, levels, torch.ones(b, 2, dtype=torch.bool), signs, centres)
    batch = images.repeat(len(pairs), 1, 1, 1)
    for cutout in (0, CUTOUT):
        _, emptied = _assert_equal(scripted, batch, params, cutout=cutout)
    emptied = apply_batched(batch, params, cutout=0)[1].flatten(1).any(1)
    first = torch.tensor([RANDOM_POLICY_OPS[i] in GEOMETRIC for i in range(N_OPS)])[ops[:, 0]]
    through_rgb = torch.isin(ops[:, 1], torch.tensor([RANDOM_POLICY_OPS.index(name) for name in RGB_OPS]))
    assert not bool(emptied[through_rgb].any())  # the pixels a geometric op emptied come back
    # an enhancement keeps them emptied (its blend keeps alpha 0)
    assert bool(emptied[first & ~through_rgb].any())


def test_random_policies_with_coins(scripted):
    """Parameters from the sampler (coins included), Cutout on, on the varied images and random ones."""
    noise = torch.randint(
        0, 256, (1000, 3, 32, 32), generator=torch.Generator().manual_seed(3), dtype=torch.uint8
    )
    images = torch.cat([_varied(seed=3)] * 100 + [noise])
    params = draw_params(images.shape[0], 32, 32, generator=torch.Generator().manual_seed(4))
    _assert_equal(scripted, images, params)


def test_one_channel_images(scripted):
    """1-channel images run as (v, v, v) and keep their first channel, as the per-image code."""
    images = torch.cat([_varied(seed=5)[:, :1]] * 12)
    params = draw_params(images.shape[0], 32, 32, max_level=11, generator=torch.Generator().manual_seed(6))
    out, _ = _assert_equal(scripted, images, params)
    assert out.shape[1] == 1
    images, params = _sweep(_varied(seed=7)[:, 1:2], levels=(1, 5, 9))
    _assert_equal(scripted, images, params)


@pytest.mark.parametrize(("h", "w", "side"), [(8, 8, None), (8, 8, 32), (24, 40, None), (3, 5, None)])
def test_other_sides(scripted, h, w, side):
    """8 x 8 with the constants scaled (translations level * 8 // 32 px, Cutout 4) and unscaled (side 32);
    a non-square image (Rotate's centre (w / 2, h / 2), Cutout's rows from H and columns from W); a tiny one
    (Sharpness keeps a border with no interior)."""
    images, params = _sweep(_varied(h, w, seed=8), levels=range(1, 10))
    _assert_equal(scripted, images, params, side=side)
    images = torch.cat([_varied(h, w, seed=9)] * 8)
    params = draw_params(images.shape[0], h, w, generator=torch.Generator().manual_seed(10))
    _assert_equal(scripted, images, params, side=side)


def test_sampler_distribution_and_order():
    n = 30000
    params = draw_params(n, 32, 24, generator=torch.Generator().manual_seed(11))
    assert params.ops.shape == params.levels.shape == params.coins.shape == params.signs.shape == (n, 2)
    assert params.centres.shape == (n, 2)

    def assert_uniform(values, k):  # counts within 5 standard deviations of n / k
        counts = torch.bincount(values.reshape(-1), minlength=k).double()
        expected = values.numel() / k
        assert counts.numel() == k
        assert (counts - expected).abs().max() < 5 * (expected * (1 - 1 / k)) ** 0.5, counts

    assert_uniform(params.ops, N_OPS)  # uniform over the 14, with replacement: both slots independent
    assert (params.ops[:, 0] == params.ops[:, 1]).double().mean().sub(1 / N_OPS).abs() < 0.01
    assert int(params.levels.min()) == 1 and int(params.levels.max()) == 9
    assert_uniform(params.levels - 1, 9)
    for flags in (params.coins, params.signs):
        assert abs(flags.double().mean().item() - 0.5) < 0.01
    assert_uniform(params.centres[:, 0], 32)  # rows from H
    assert_uniform(params.centres[:, 1], 24)  # columns from W
    assert abs((params.coins[:, 0] & params.coins[:, 1]).double().mean().item() - 0.25) < 0.01

    # the documented order: ops, levels, coins, signs, rows, columns, one call each
    g = torch.Generator().manual_seed(12)
    expected = (
        torch.randint(N_OPS, (5, 2), generator=g),
        1 + torch.randint(9, (5, 2), generator=g),
        torch.rand((5, 2), generator=g) < 0.5,
        torch.rand((5, 2), generator=g) > 0.5,
        torch.stack([torch.randint(7, (5,), generator=g), torch.randint(6, (5,), generator=g)], 1),
    )
    got = draw_params(5, 7, 6, generator=torch.Generator().manual_seed(12))
    for a, b in zip(expected, (got.ops, got.levels, got.coins, got.signs, got.centres), strict=True):
        assert torch.equal(a, b)
    levels = draw_params(2000, 8, 8, max_level=11, generator=torch.Generator().manual_seed(13)).levels
    assert set(levels.unique().tolist()) == set(range(1, 11))


def test_posterize_level_10(scripted):
    """Level 10 (max_level 11) makes Posterize keep 0 bits, which Pillow's ImageOps.posterize refuses: both
    raise, where it is applied."""
    images = _varied()[:2]
    params = RAParams.of(
        [["Posterize"], ["Posterize"]], [[10], [10]], [[False], [True]], [[False]] * 2, [[0, 0]] * 2
    )
    with pytest.raises(ValueError, match="bits"):
        apply_batched(images, params)
    with pytest.raises(ValueError, match="bits"):
        ra_reference(scripted, images, params, CUTOUT)
    unapplied = RAParams.of([["Posterize"]], [[10]], [[False]], [[False]], [[0, 0]])
    _assert_equal(scripted, images[:1], unapplied)


def test_batched_transform_and_checks():
    images = torch.cat([_varied(seed=14)] * 4)
    ra = BatchedFixMatchRA(generator=torch.Generator().manual_seed(15))
    out, emptied = ra(images)
    again = BatchedFixMatchRA(generator=torch.Generator().manual_seed(15))(images)
    assert torch.equal(out, again[0]) and torch.equal(emptied, again[1])
    params = draw_params(images.shape[0], 32, 32, generator=torch.Generator().manual_seed(15))
    expected = apply_batched(images, params)
    assert torch.equal(out, expected[0]) and torch.equal(emptied, expected[1])
    assert bool((out[emptied[:, None].expand_as(out)] == 128).all())
    assert "BatchedFixMatchRA(ops=2" in repr(ra)
    with pytest.raises(ValueError, match="uint8"):
        apply_batched(images.float(), params)
    with pytest.raises(ValueError, match="params are for"):
        apply_batched(images[:3], params)
    with pytest.raises(ValueError, match="levels"):
        RAParams.of([["Rotate"]], [[11]], [[True]], [[False]], [[0, 0]])
    with pytest.raises(ValueError, match="max_level"):
        BatchedFixMatchRA(max_level=12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu():
    images = torch.cat([_varied(seed=16)] * 50)
    params = draw_params(images.shape[0], 32, 32, max_level=11, generator=torch.Generator().manual_seed(17))
    cpu = apply_batched(images, params)
    gpu = apply_batched(images.cuda(), params)
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


def test_the_wrap_arithmetic_is_the_wrap_table():
    """The batched wrap (uint8 arithmetic, in place) is their float round trip's table for all 256 values, for
    an image of its own shape and for one channel broadcast to three."""
    from wrn.data.fixmatch_augment import fixmatch_wrap_table
    from wrn.data.fixmatch_batched import _wrap_into

    table = torch.from_numpy(fixmatch_wrap_table())
    values = torch.arange(256).to(torch.uint8)
    out = torch.empty_like(values)
    _wrap_into(out, values)
    assert torch.equal(out, table)
    out3 = torch.empty(3, 256, dtype=torch.uint8)
    _wrap_into(out3, values.view(1, 256))
    assert torch.equal(out3, table.expand(3, -1))
