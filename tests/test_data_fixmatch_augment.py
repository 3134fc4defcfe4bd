"""FixMatch's RA strong augmentation (``--augment d.d.rac``): image for image equal to a reference written
here from their code (google-research/fixmatch ``third_party/auto_augment/augmentations.py`` in numpy + PIL as
theirs, and libml/augment.py's ``AugmentPoolRAMC`` policy draw), with the same draws from torch's generator,
compared in their float space: every op at every level and sign, after an op that empties pixels, their wrap
table, the whole transform on 3- and 1-channel images, the side scaling, and the draws' distribution."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from wrn.data import fixmatch_augment
from wrn.data.fixmatch_augment import (
    CUTOUT,
    GEOMETRIC,
    RANDOM_POLICY_OPS,
    FixMatchRA,
    apply_op,
    apply_policy,
    cutout_size,
    fixmatch_wrap_table,
)

LEVELS = range(1, 10)  # np.random.randint(1, 10)
F32 = np.float32


def _rand() -> float:  # stands for their random.random(): our draws
    return torch.rand(()).item()


def _randint(high: int) -> int:  # stands for np.random.randint(0, high)
    return int(torch.randint(high, ()))


def _images(n: int, seed: int, side: int = 32, channels: int = 3) -> torch.Tensor:
    """uint8 images with flat regions, ramps and noise, and a dark patch of 1..47 (the values their wrap
    truncates): every op changes something."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 180, side).view(1, 1, 1, side)
    noise = torch.randint(0, 60, (n, channels, side, side), generator=g)
    x = (ramp + noise).to(torch.uint8)
    x[: n // 2, :, : side // 3, : side // 3] = torch.randint(0, 256, (n // 2, channels, 1, 1), generator=g)
    dark = torch.randint(1, 48, (n, channels, side // 4, side // 2), generator=g, dtype=torch.uint8)
    x[:, :, -(side // 4) :, side // 2 :] = dark
    return x


# ------------------------------------------------------------- their code, from its files

PARAMETER_MAX = 10
TRACE = {"signs": [], "alpha0": 0, "policies": []}  # what the reference drew, for the tests' coverage checks


def float_parameter(level, maxval):
    return float(level) * maxval / PARAMETER_MAX


def int_parameter(level, maxval):
    return int(level * maxval / PARAMETER_MAX)


def record_parse(x: np.ndarray) -> np.ndarray:
    # libml/data.py: tf.cast(image, tf.float32) * (2.0 / 255) - 1.0
    return x.astype(F32) * F32(2.0 / 255) - F32(1.0)


def pil_wrap(img, mean=0.5, std=0.5):
    return Image.fromarray(np.uint8((img * std + mean) * 255.0)).convert("RGBA")


def pil_unwrap(pil_img, mean=0.5, std=0.5):
    s = pil_img.size
    pic_array = np.asarray(pil_img).astype(np.int64).reshape((s[0], s[1], 4)) / 255.0  # np.array(getdata())
    i1, i2 = np.where(pic_array[:, :, 3] == 0)
    TRACE["alpha0"] += len(i1)
    pic_array = (pic_array[:, :, :3] - mean) / std
    pic_array[i1, i2] = [0, 0, 0]
    return pic_array


def create_cutout_mask(img_height, img_width, num_channels, size):
    assert img_height == img_width
    height_loc = _randint(img_height)
    width_loc = _randint(img_width)
    upper_coord = (max(0, height_loc - size // 2), max(0, width_loc - size // 2))
    lower_coord = (min(img_height, height_loc + size // 2), min(img_width, width_loc + size // 2))
    mask_height = lower_coord[0] - upper_coord[0]
    mask_width = lower_coord[1] - upper_coord[1]
    assert mask_height > 0
    assert mask_width > 0
    mask = np.ones((img_height, img_width, num_channels))
    mask[upper_coord[0] : lower_coord[0], upper_coord[1] : lower_coord[1], :] = 0
    return mask, upper_coord, lower_coord


def cutout_numpy(img, size=16):
    if size <= 0:
        return img
    assert len(img.shape) == 3
    img_height, img_width, num_channels = img.shape
    mask = create_cutout_mask(img_height, img_width, num_channels, size)[0]
    return img * mask


def _signed(value):
    if _rand() > 0.5:
        value = -value
    TRACE["signs"].append(value > 0)
    return value


def _rotate_impl(pil_img, level):
    return pil_img.rotate(_signed(int_parameter(level, 30)))


def _posterize_impl(pil_img, level):
    return ImageOps.posterize(pil_img.convert("RGB"), 4 - int_parameter(level, 4)).convert("RGBA")


def _shear_x_impl(pil_img, level):
    return pil_img.transform(
        pil_img.size, Image.AFFINE, (1, _signed(float_parameter(level, 0.3)), 0, 0, 1, 0)
    )


def _shear_y_impl(pil_img, level):
    return pil_img.transform(
        pil_img.size, Image.AFFINE, (1, 0, 0, _signed(float_parameter(level, 0.3)), 1, 0)
    )


def _translate(side):  # their int_parameter(level, 10): 10 pixels at level 10, scaled to ``side`` here
    return lambda level: _signed(int_parameter(level, 10 * side / 32))


def _translate_x_impl(pil_img, level, side=32):
    return pil_img.transform(pil_img.size, Image.AFFINE, (1, 0, _translate(side)(level), 0, 1, 0))


def _translate_y_impl(pil_img, level, side=32):
    return pil_img.transform(pil_img.size, Image.AFFINE, (1, 0, 0, 0, 1, _translate(side)(level)))


def _solarize_impl(pil_img, level):
    return ImageOps.solarize(pil_img.convert("RGB"), 256 - int_parameter(level, 256)).convert("RGBA")


def _enhancer_impl(enhancer):
    def impl(pil_img, level):
        return enhancer(pil_img).enhance(float_parameter(level, 1.8) + 0.1)

    return impl


NAME_TO_TRANSFORM = {
    "Identity": lambda pil_img, level: pil_img,
    "AutoContrast": lambda pil_img, level: ImageOps.autocontrast(pil_img.convert("RGB")).convert("RGBA"),
    "Equalize": lambda pil_img, level: ImageOps.equalize(pil_img.convert("RGB")).convert("RGBA"),
    "Rotate": _rotate_impl,
    "Posterize": _posterize_impl,
    "ShearX": _shear_x_impl,
    "ShearY": _shear_y_impl,
    "TranslateX": _translate_x_impl,
    "TranslateY": _translate_y_impl,
    "Solarize": _solarize_impl,
    "Color": _enhancer_impl(ImageEnhance.Color),
    "Contrast": _enhancer_impl(ImageEnhance.Contrast),
    "Brightness": _enhancer_impl(ImageEnhance.Brightness),
    "Sharpness": _enhancer_impl(ImageEnhance.Sharpness),
}


def apply_policy_theirs(policy, img, side=32):
    pil_img = pil_wrap(img)
    for name, probability, level in policy:
        if _rand() < probability:  # TransformT.pil_transformer
            if name in ("TranslateX", "TranslateY"):
                pil_img = NAME_TO_TRANSFORM[name](pil_img, level, side)
            else:
                pil_img = NAME_TO_TRANSFORM[name](pil_img, level)
    return pil_unwrap(pil_img)


def ramc_policy(nops=2, magnitude=10):
    """AugmentPoolRAMC's policy draw:
    ``[(op, 0.5, np.random.randint(1, magnitude)) for op in np.random.choice(RANDOM_POLICY_OPS, nops)]``."""
    ops = [RANDOM_POLICY_OPS[_randint(len(RANDOM_POLICY_OPS))] for _ in range(nops)]  # np.random.choice
    policy = [(op, 0.5, 1 + _randint(magnitude - 1)) for op in ops]  # np.random.randint(1, magnitude)
    TRACE["policies"].append(policy)
    return policy


def _their_input(x: torch.Tensor) -> np.ndarray:
    """Their float image of one uint8 image [C, H, W] (1-channel images: the RGB image (v, v, v))."""
    return record_parse(np.repeat(x.permute(1, 2, 0).numpy(), 3 // x.shape[0], axis=2))


def ra_reference(x: torch.Tensor, side=32, cutout=16) -> np.ndarray:
    """AugmentPoolRAMC.numpy_apply_policies on one image: ``cutout_numpy(apply_policy(policy, y))`` in
    float32."""
    policy = ramc_policy()
    return cutout_numpy(apply_policy_theirs(policy, _their_input(x), side), size=cutout).astype("f")


def policy_reference(x: torch.Tensor, policy, side=32) -> np.ndarray:
    return apply_policy_theirs(policy, _their_input(x), side).astype("f")


def _assert_equal_theirs(ours, theirs: np.ndarray) -> int:
    """Ours in their float space: ``(img - 127.5) / 127.5`` in float32, emptied pixels 0; equal to theirs
    (atol 1e-6, and in fact bit for bit). Returns the number of emptied pixels."""
    img, emptied = ours
    assert img.dtype == torch.uint8 and emptied.dtype == torch.bool and emptied.shape == img.shape[-2:]
    c = img.shape[0]
    flt = (img.permute(1, 2, 0).float() - 127.5) / 127.5
    flt[emptied] = 0.0
    flt = flt.numpy()
    theirs = theirs[:, :, :c]  # a 1-channel image keeps the red channel of their RGB one
    assert np.array_equal(flt, theirs)
    assert (img.permute(1, 2, 0)[emptied] == 128).all()
    return int(emptied.sum())


# ------------------------------------------------------------------------------------------- tests


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _trace():
    TRACE.update(signs=[], alpha0=0, policies=[])


def test_their_ops_and_constants():
    assert len(RANDOM_POLICY_OPS) == len(set(RANDOM_POLICY_OPS)) == 14
    assert set(RANDOM_POLICY_OPS) == set(NAME_TO_TRANSFORM)
    assert GEOMETRIC == {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}
    assert CUTOUT == 16 and cutout_size(CUTOUT, 32) == 16
    assert [cutout_size(16, s) for s in (1, 3, 4, 8, 24, 96)] == [2, 2, 2, 4, 12, 48]
    assert cutout_size(0, 32) == 0
    with pytest.raises(ValueError):
        FixMatchRA(max_level=1)


@pytest.mark.parametrize("before", [None, ("Rotate", 1.0, 9), ("TranslateY", 1.0, 6), ("ShearX", 1.0, 7)])
def test_every_op_at_every_level_and_sign_equals_their_code(before):
    """Each op at each level 1..9 (both signs where it draws one), on 4 images, alone and after an op that
    empties pixels (which later ops see as black through convert('RGB'), or keep empty)."""
    x = _images(4, seed=1)
    emptied = 0
    for name in RANDOM_POLICY_OPS:
        for level in LEVELS:
            policy = [*([before] if before else []), (name, 1.0, level)]
            for i, img in enumerate(x):
                signs = set()
                for seed in range(1000 * level + 10 * i, 1000 * level + 10 * i + 10):
                    TRACE["signs"] = []
                    torch.manual_seed(seed)
                    ours = apply_policy(img, policy) if before else apply_op(img, name, level)
                    torch.manual_seed(seed)
                    emptied += _assert_equal_theirs(ours, policy_reference(img, policy))
                    if name not in GEOMETRIC:
                        break
                    signs.add(TRACE["signs"][-1])
                    if len(signs) == 2:
                        break
                assert name not in GEOMETRIC or signs == {True, False}, (name, level, i)
    assert emptied > 0  # the emptied pixels were checked too


def test_the_wrap_table_is_their_float32_round_trip():
    """Their float32 ``x * (2 / 255) - 1`` then ``np.uint8((img * 0.5 + 0.5) * 255)`` truncates exactly the 47
    values 1..47 by one; every image goes through it (here with Identity, which draws nothing but its coin).
    The final normalisation (v - 127.5) / 127.5 in float32 is their float64 unwrap's float32, all 256
    values."""
    table = fixmatch_wrap_table()
    values = np.arange(256)
    theirs = np.uint8((record_parse(values) * 0.5 + 0.5) * 255.0)
    assert table.dtype == np.uint8 and table.shape == (256,) and np.array_equal(table, theirs)
    changed = np.nonzero(table != values)[0]
    assert len(changed) == 47 and changed.tolist() == list(range(1, 48))
    assert (values[changed] - table[changed] == 1).all()

    x = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, -1, -1).contiguous()
    torch.manual_seed(0)
    ours = apply_op(x, "Identity", 5)
    torch.manual_seed(0)
    _assert_equal_theirs(ours, policy_reference(x, [("Identity", 1.0, 5)]))
    assert torch.equal(ours[0][0].flatten(), torch.from_numpy(table))
    assert not ours[1].any()

    # the loader's normalisation (--normalization fixmatch: (v - mean) / std in float32) of every value
    from wrn.data.device_loader import DeviceLoader
    from wrn.data.registry import normalization_for

    loader = DeviceLoader(x[None], torch.zeros(1), 1, train=False, normalize=normalization_for("fixmatch", 3))
    ours_f = next(iter(loader))[0][0, 0].flatten()
    assert np.array_equal(ours_f.numpy(), ((values / 255.0 - 0.5) / 0.5).astype("f"))


@pytest.mark.parametrize("channels", [3, 1])
def test_the_ra_transform_equals_their_code_image_for_image(channels):
    n = 500 if channels == 3 else 150
    x = _images(n, seed=3, channels=channels)
    ra = FixMatchRA()
    emptied = 0
    for i, img in enumerate(x):
        torch.manual_seed(i)
        ours = ra(img)
        torch.manual_seed(i)
        emptied += _assert_equal_theirs(ours, ra_reference(img))
    drawn = {name for policy in TRACE["policies"] for name, _, _ in policy}
    assert TRACE["alpha0"] > 0 and emptied > TRACE["alpha0"]  # geometric ops and Cutout both emptied pixels
    if channels == 3:
        assert drawn == set(RANDOM_POLICY_OPS)  # every op


@pytest.mark.parametrize("side", [8, 24, 96])
def test_other_sides_scale_the_translations_and_cutout(side):
    """At other sides the translations (level * side // 32 pixels) and Cutout (16 * side // 32) scale; the
    reference is theirs with those two constants scaled. ``side=32`` is theirs unscaled on any side."""
    x = _images(60, seed=4, side=side)
    for i, img in enumerate(x):
        torch.manual_seed(i)
        ours = FixMatchRA()(img)
        torch.manual_seed(i)
        _assert_equal_theirs(ours, ra_reference(img, side=side, cutout=cutout_size(CUTOUT, side)))
    img = x[0]
    for level in LEVELS:
        torch.manual_seed(level)
        ours = apply_op(img, "TranslateX", level, side=32)
        torch.manual_seed(level)
        _assert_equal_theirs(ours, policy_reference(img, [("TranslateX", 1.0, level)]))


def test_the_draws_cover_their_ops_and_levels_and_apply_each_op_half_the_time(monkeypatch):
    applied, calls = Counter(), []

    def record(pil, name, level, side):
        applied[name] += 1
        return pil

    def draw(self):
        policy = draw_policy(self)
        calls.append(policy)
        return policy

    draw_policy = FixMatchRA.draw_policy
    monkeypatch.setattr(fixmatch_augment, "_op", record)
    monkeypatch.setattr(FixMatchRA, "draw_policy", draw)
    torch.manual_seed(0)
    ra, img = FixMatchRA(), torch.zeros(3, 8, 8, dtype=torch.uint8)
    n = 7000
    for _ in range(n):
        ra(img)
    assert len(calls) == n and all(len(policy) == 2 for policy in calls)
    chosen = Counter(name for policy in calls for name, _, _ in policy)
    levels = Counter(level for policy in calls for _, _, level in policy)
    assert set(chosen) == set(RANDOM_POLICY_OPS)
    assert all(abs(count / (2 * n) - 1 / 14) < 0.015 for count in chosen.values()), chosen
    assert set(levels) == set(LEVELS)  # never 0 or 10
    assert all(abs(count / (2 * n) - 1 / 9) < 0.02 for count in levels.values()), levels
    assert all(abs(applied[name] / chosen[name] - 0.5) < 0.07 for name in RANDOM_POLICY_OPS), applied
    assert all(p == 0.5 for policy in calls for _, p, _ in policy)
