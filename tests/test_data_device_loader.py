"""The device-resident loader: per-sample augmentation, epochs, seeds, resume and sharding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision import transforms

from wrn.data import DeviceLoader, normalization_constants, reflect_index
from wrn.errors import ConfigError


def data(n=40, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g), torch.arange(n)


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_reflect_index_matches_torch_reflect_padding():
    row = torch.arange(7.0).view(1, 1, 7)
    padded = torch.nn.functional.pad(row, (4, 4), mode="reflect").flatten()
    assert torch.equal(reflect_index(torch.arange(-4, 11), 7).float(), padded)


def test_flip_crop_is_per_sample_and_matches_torchvision():
    x, y = data(64)
    loader = DeviceLoader(x, y, batch_size=32, augment="flip-crop", seed=3)
    out, labels = next(iter(loader))
    plan = loader._epoch_plan()
    offsets, flips = plan["offset"][:32], plan["flip"][:32]
    # Really per sample: many different offsets and both flip states inside one batch.
    assert len({tuple(o) for o in offsets.tolist()}) > 10 and 0 < int(flips.sum()) < 32
    assert labels.tolist() == plan["index"][:32].tolist()
    for k in range(32):
        img = x[labels[k]]
        ref = TF.pad(img, 4, padding_mode="reflect")
        ref = TF.crop(ref, int(offsets[k, 0]), int(offsets[k, 1]), 32, 32)
        if flips[k]:
            ref = TF.hflip(ref)
        assert torch.equal(out[k], ref.float())


def test_crop_matches_torchvision_pad_reflect_random_crop(monkeypatch):
    x, y = data(16, c=1, h=8, w=8)
    loader = DeviceLoader(x, y, batch_size=16, augment="crop", pad=3, seed=1)
    out, labels = next(iter(loader))
    offsets = loader._epoch_plan()["offset"]
    assert len({tuple(o) for o in offsets.tolist()}) > 5
    tv = transforms.Compose([transforms.Pad(3, padding_mode="reflect"), transforms.RandomCrop(8)])
    for k in range(16):
        top, left = int(offsets[k, 0]), int(offsets[k, 1])
        # RandomCrop on the same offsets as the loader drew for this sample.
        monkeypatch.setattr(
            transforms.RandomCrop, "get_params", staticmethod(lambda img, size, t=top, lf=left: (t, lf, 8, 8))
        )
        assert torch.equal(out[k], tv(x[labels[k]]).float())


@pytest.mark.parametrize("c", [1, 3])
def test_zero_padded_flip_crop_matches_torchvision_random_crop_with_padding(monkeypatch, c):
    """``crop_padding="zeros"``: torchvision's RandomCrop(32, padding=4) (fill 0) and a flip, as the Cutout and
    AutoAugment code crop; also on ZCA-like float data, whose border is 0 too."""
    x, y = data(64, c=c)
    for images in (x, x.float() / 50 - 2):
        loader = DeviceLoader(images, y, 32, augment="flip-crop", seed=5, crop_padding="zeros")
        out, labels = next(iter(loader))
        plan = loader._epoch_plan()
        offsets, flips = plan["offset"][:32], plan["flip"][:32]
        assert {0, 8} & {int(v) for v in offsets.flatten()}  # crops that reach the border
        crop = transforms.RandomCrop(32, padding=4)  # fill=0, padding_mode="constant"
        for k in range(32):
            top, left = int(offsets[k, 0]), int(offsets[k, 1])
            monkeypatch.setattr(
                transforms.RandomCrop,
                "get_params",
                staticmethod(lambda i, s, t=top, lf=left: (t, lf, 32, 32)),
            )
            ref = crop(images[labels[k]])
            ref = TF.hflip(ref) if flips[k] else ref
            assert torch.equal(out[k], ref.float()), k
    # The same draws as with reflection: only the border differs, and the inner crop is equal.
    reflect = DeviceLoader(x, y, 32, augment="flip-crop", seed=5)
    zeros = DeviceLoader(x, y, 32, augment="flip-crop", seed=5, crop_padding="zeros")
    (a, la), (b, lb) = next(iter(reflect)), next(iter(zeros))
    assert (
        torch.equal(la, lb)
        and torch.equal(a[:, :, 4:-4, 4:-4], b[:, :, 4:-4, 4:-4])
        and not torch.equal(a, b)
    )
    with pytest.raises(ConfigError, match="unknown crop padding 'edge'"):
        DeviceLoader(x, y, 32, crop_padding="edge")


def _their_zero_pad_and_crop(img, top: int, left: int, flip: bool, amount: int = 4):
    """tensorflow/models research/autoaugment: augmentation_transforms.zero_pad_and_crop on the normalised HWC
    image with its offsets given instead of drawn (np.random.randint(low=0, high=2 * amount)), then random_flip."""
    padded_img = np.zeros((img.shape[0] + amount * 2, img.shape[1] + amount * 2, img.shape[2]))
    padded_img[amount : img.shape[0] + amount, amount : img.shape[1] + amount, :] = img
    new_img = padded_img[top : top + img.shape[0], left : left + img.shape[1], :]
    return np.fliplr(new_img) if flip else new_img


@pytest.mark.parametrize("per_image", [False, True], ids=["gather", "per-image-stage"])
def test_mean_padding_is_the_autoaugment_codes_crop_image_for_image(per_image):
    """``crop_padding="mean"``: the normalised image padded with 0 (the mean colour), offsets 0..7 of the 9, the
    crop then the flip; through the one-gather path and the per-image stage's (a policy's loader)."""
    from wrn.data.policies import PerImage

    x, y = data(256)
    mean, std = normalization_constants("cifar10")
    stage = PerImage("none", erasing=1e-12) if per_image else None  # the stage on, nothing erased
    loader = DeviceLoader(x, y, 128, augment="flip-crop", seed=2, normalize=(mean, std), per_image=stage,
                          crop_padding="mean")  # fmt: skip
    out, labels = next(iter(loader))
    plan = loader._epoch_plan()  # the epoch's offsets and flips, as the batch drew them
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    for k in range(len(labels)):
        normalised = ((x[labels[k]].float() - m) / s).permute(1, 2, 0).numpy()
        top, left = (int(v) for v in plan["offset"][k])
        want = _their_zero_pad_and_crop(normalised, top, left, bool(plan["flip"][k]))
        assert torch.equal(out[k], torch.from_numpy(want.astype(np.float32)).permute(2, 0, 1)), k
    assert {int(v) for v in plan["offset"].flatten()} == set(range(8))  # never 8: their randint(0, 8)
    assert (out == 0).any() and not (out[:, :, 4:-4, 4:-4] == 0).all()


def test_every_sample_once_per_epoch_and_fresh_permutations():
    x, y = data(50)
    loader = DeviceLoader(x, y, batch_size=8, seed=0, drop_last=False)
    assert len(loader) == 7
    epochs = []
    for _ in range(2):
        labels = torch.cat([b for _, b in loader])
        assert sorted(labels.tolist()) == list(range(50))
        epochs.append(labels)
    assert loader.epoch == 2 and not torch.equal(epochs[0], epochs[1])
    dropping = DeviceLoader(x, y, batch_size=8, seed=0)
    labels = torch.cat([b for _, b in dropping])
    assert len(dropping) == 6 and len(labels) == 48 and len(set(labels.tolist())) == 48


def test_seed_reproduces_and_differs():
    x, y = data(40)
    a = DeviceLoader(x, y, 16, seed=5)
    b = DeviceLoader(x, y, 16, seed=5)
    c = DeviceLoader(x, y, 16, seed=6)
    for _ in range(2):
        ba, bb, bc = batches(a), batches(b), batches(c)
        assert_same(ba, bb)
        assert not torch.equal(ba[0][0], bc[0][0])


def test_state_dict_resume_mid_epoch_reproduces_remaining_batches():
    x, y = data(100)
    ref = DeviceLoader(x, y, 16, seed=7, normalize=normalization_constants("cifar10"))
    run = DeviceLoader(x, y, 16, seed=7, normalize=normalization_constants("cifar10"))
    uninterrupted = batches(ref) + batches(ref) + batches(ref)
    seen = batches(run)
    for i, batch in enumerate(run):  # the second epoch, interrupted after 3 batches
        seen.append((batch[0].clone(), batch[1].clone()))
        if i == 2:
            break
    buf = io.BytesIO()
    torch.save(run.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["epoch"] == 1 and state["position"] == 3
    resumed = DeviceLoader(x, y, 16, seed=7, normalize=normalization_constants("cifar10"))
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert len(rest) == len(resumed) - 3 and resumed.epoch == 2
    rest += batches(resumed)
    assert_same(seen + rest, uninterrupted)
    with pytest.raises(ConfigError, match="batch_size"):
        DeviceLoader(x, y, 32).load_state_dict(state)


def test_ranks_take_disjoint_shards_of_one_permutation():
    x, y = data(43)
    single = DeviceLoader(x, y, 4, seed=2, drop_last=False, augment="none")
    order = torch.cat([b for _, b in single])
    shards = [DeviceLoader(x, y, 4, seed=2, rank=r, world_size=3, drop_last=False) for r in range(3)]
    got = [torch.cat([b for _, b in s]) for s in shards]
    assert all(len(s) == len(shards[0]) for s in shards) and all(len(g) == 14 for g in got)
    for r in range(3):
        assert torch.equal(got[r], order[:42][r::3])
    evals = [DeviceLoader(x, y, 4, train=False, rank=r, world_size=3) for r in range(3)]
    assert sorted(torch.cat([torch.cat([b for _, b in e]) for e in evals]).tolist()) == list(range(43))


def test_eval_loader_is_ordered_plain_and_normalized():
    x, y = data(10)
    mean, std = normalization_constants("cifar10")
    loader = DeviceLoader(x, y, 4, train=False, normalize=(mean, std))
    out = batches(loader)
    assert [len(b[1]) for b in out] == [4, 4, 2] and torch.equal(torch.cat([b[1] for b in out]), y)
    expected = (x.float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(torch.cat([b[0] for b in out]), expected)
    assert_same(out, batches(loader))


def test_float_inputs_and_other_dtypes():
    x = torch.randn(12, 3, 8, 8, dtype=torch.float64)
    loader = DeviceLoader(x, torch.arange(12), 6, augment="flip-crop", pad=2, dtype=torch.float32)
    images, _ = next(iter(loader))
    assert images.dtype == torch.float32 and images.shape == (6, 3, 8, 8)
    half = DeviceLoader(data(8)[0], torch.arange(8), 4, dtype=torch.float16, train=False)
    assert next(iter(half))[0].dtype == torch.float16


def test_imagenet_augmentation_is_batched_and_reproducible():
    x, y = data(12, h=40, w=40)
    mean, std = normalization_constants("imagenet")
    a = DeviceLoader(x, y, 6, augment="imagenet", image_size=24, normalize=(mean, std), seed=1)
    b = DeviceLoader(x, y, 6, augment="imagenet", image_size=24, normalize=(mean, std), seed=1)
    ba, bb = batches(a), batches(b)
    assert ba[0][0].shape == (6, 3, 24, 24) and torch.isfinite(ba[0][0]).all()
    assert_same(ba, bb)
    gray = DeviceLoader(data(4, c=1)[0], torch.arange(4), 4, augment="imagenet")
    assert next(iter(gray))[0].shape == (4, 1, 32, 32)


def test_bad_arguments():
    x, y = data(4)
    with pytest.raises(ConfigError, match="augment"):
        DeviceLoader(x, y, 2, augment="cutout")
    with pytest.raises(ConfigError, match="rank"):
        DeviceLoader(x, y, 2, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="channels"):
        DeviceLoader(x, y, 2, normalize=((1, 2), (1, 2)))


def test_device_imagenet_augmentation_geometry():
    """The batched random-resized crop on the device: a full box is the identity, a flipped one mirrors the
    image, a top-left quarter box at half size is that quarter; jitter 1 and lighting 0 change nothing."""
    from wrn.data.device_loader import _imagenet_augment

    x = torch.randint(0, 256, (3, 3, 16, 16)).float()
    full = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 3)
    params = {
        "box": full,
        "flip": torch.tensor([False, True, False]),
        "jitter": torch.ones(3, 3),
        "lighting": torch.zeros(3, 3),
    }
    out = _imagenet_augment(x.clone(), params, 16)
    torch.testing.assert_close(out[0], x[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1], x[1].flip(-1), atol=1e-3, rtol=0)
    quarter = dict(
        params, box=torch.tensor([[0.25, 0.25, 0.5, 0.5]] * 3), flip=torch.zeros(3, dtype=torch.bool)
    )
    torch.testing.assert_close(_imagenet_augment(x.clone(), quarter, 8), x[:, :, :8, :8], atol=1e-3, rtol=0)
