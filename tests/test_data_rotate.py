"""``--rotate DEG``: each training image turned by an angle uniform in [-DEG, DEG] after its crop and flip, as
torchvision's ``RandomRotation(DEG)`` turns a PIL image (AT-AWP's, Rice et al.'s and DM-Improves-AT's CIFAR-100
code). The reference is torchvision itself, on PIL images, given the loader's angles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms

from wrn.data import DeviceLoader
from wrn.data.folder import folder_transform
from wrn.data.generated import Generated
from wrn.data.pil_affine import rotation_coefficients, transform
from wrn.data.policies import PerImage
from wrn.errors import ConfigError


def _images(n, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


def _torchvision_rotation(image: torch.Tensor, angle: float, monkeypatch) -> torch.Tensor:
    """``RandomRotation(15)`` on the PIL image of ``image`` [C, H, W] uint8, its draw made ``angle``."""
    monkeypatch.setattr(transforms.RandomRotation, "get_params", staticmethod(lambda degrees, a=angle: a))
    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    out = np.asarray(transforms.RandomRotation(15)(pil))
    return torch.from_numpy(out.reshape(*out.shape[:2], -1).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (3, 28, 20)])
def test_rotation_equals_torchvision_random_rotation_on_pil(shape, monkeypatch):
    x = _images(120, *shape, seed=1)
    g = torch.Generator().manual_seed(2)
    angles = torch.empty(len(x)).uniform_(-15, 15, generator=g).tolist()
    angles[:6] = [0.0, 15.0, -15.0, 1e-9, -7.5, 90.0]  # the ends, a tiny angle, a right angle
    out = transform(x, rotation_coefficients(angles, *shape[1:]))
    for k in range(len(x)):
        assert torch.equal(out[k], _torchvision_rotation(x[k], angles[k], monkeypatch)), (k, angles[k])
    # Corners are black, the rest are the image's own pixels: a rotation, not a blur.
    assert (out[1][:, 0, 0] == 0).all() and not torch.equal(out[1], x[1])


def test_loader_batches_are_their_crop_flip_and_rotation(monkeypatch):
    """AT-AWP's CIFAR-100 pipeline: RandomCrop(32, padding=4), RandomHorizontalFlip, RandomRotation(15), each
    image with the offsets, flip and angle the loader drew for it."""
    x, y = _images(96, seed=3), torch.arange(96)
    loader = DeviceLoader(x, y, 48, augment="flip-crop", crop_padding="zeros", rotate=15, seed=4)
    out, labels = next(iter(loader))
    plan = loader._epoch_plan()
    angles = plan["angle"][:48]
    assert angles.abs().max() <= 15 and angles.min() < -5 and angles.max() > 5
    for k in range(48):
        img = TF.crop(TF.pad(x[labels[k]], 4), *plan["offset"][k].tolist(), 32, 32)
        img = TF.hflip(img) if plan["flip"][k] else img
        assert torch.equal(out[k], _torchvision_rotation(img, float(angles[k]), monkeypatch).float())


def test_the_angles_are_drawn_after_everything_else():
    """A rotation changes nothing else of the epoch (order, crops, flips): a run's draws are those of the same
    run without it, and the angles spread uniformly over [-DEG, DEG]."""
    x, y = _images(2000, 1, 8, 8), torch.arange(2000)
    plain = DeviceLoader(x, y, 100, augment="flip-crop", pad=2, seed=7)
    turned = DeviceLoader(x, y, 100, augment="flip-crop", pad=2, seed=7, rotate=30)
    a, b = plain._epoch_plan(), turned._epoch_plan()
    assert set(b) == set(a) | {"angle", "rotation"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = torch.histc(b["angle"], bins=4, min=-30, max=30)
    assert b["angle"].abs().max() <= 30 and hist.min() > 400  # 500 expected in each quarter
    test = DeviceLoader(x, y, 100, train=False, seed=7, rotate=30)
    assert "rotation" not in test._epoch_plan()  # training only


def test_every_path_of_the_loader_rotates_the_same(tmp_path):
    """The generated-data mix and the per-image stage in worker processes rotate as the plain path does: each
    batch is the unrotated loader's batch turned by the angles of its plan."""
    x, y = _images(64, seed=5), torch.arange(64) % 10
    gen = Generated(
        images=np.ascontiguousarray(_images(200, seed=6).permute(0, 2, 3, 1).numpy()),
        labels=np.arange(200) % 10,
        fraction=0.5,
        path="generated.npz",
        mapped=False,
    )
    cases = {
        "plain": {},
        "generated": {"generated": gen},
        "per-image": {"per_image": PerImage("autoaugment"), "workers": 1},
    }
    for name, extra in cases.items():
        common = {"augment": "flip-crop", "seed": 8, **extra}
        turned = DeviceLoader(x, y, 32, rotate=15, **common)
        plain = DeviceLoader(x, y, 32, **common)
        plan = turned._epoch_plan()  # this epoch's (kept until it ends)
        for k, ((a, la), (b, lb)) in enumerate(zip(turned, plain, strict=True)):
            assert torch.equal(la, lb), name
            want = transform(b.to(torch.uint8), plan["rotation"][k * 32 : (k + 1) * 32])
            assert torch.equal(a, want.float()) and not torch.equal(a, b), name


def test_a_resumed_loader_turns_the_same_images_the_same_way():
    x, y = _images(64, seed=9), torch.arange(64)
    run = DeviceLoader(x, y, 16, augment="flip-crop", seed=2, rotate=15)
    it = iter(run)
    next(it)
    state = run.state_dict()
    rest = [b.clone() for b, _ in it]
    resumed = DeviceLoader(x, y, 16, augment="flip-crop", seed=2, rotate=15)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, (b, _) in zip(rest, resumed, strict=True))


def test_image_folders_rotate_with_torchvision():
    steps = folder_transform(True, "flip-crop", 32, rotate=15).transforms
    kinds = [type(t).__name__ for t in steps]
    assert kinds[-3:] == ["RandomCrop", "RandomRotation", "PILToTensor"] and steps[-2].degrees == [
        -15.0,
        15.0,
    ]
    assert "RandomRotation" not in [
        type(t).__name__ for t in folder_transform(True, "flip-crop", 32).transforms
    ]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"rotate": -1}, "from 0 to 180"),
        ({"rotate": 15, "augment": "imagenet"}, "augment none, crop or flip-crop"),
        ({"rotate": 15, "crop_padding": "mean"}, "crop padding reflect or zeros"),
    ],
)
def test_the_loader_refuses_what_it_cannot_rotate(kwargs, words):
    x, y = _images(8), torch.arange(8)
    with pytest.raises(ConfigError, match=words):
        DeviceLoader(x, y, 4, **{"augment": "flip-crop", **kwargs})
