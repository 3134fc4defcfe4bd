"""make_loaders for array data sets and image folders, the DataLoader path and its bad inputs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wrn.data import (
    DATASETS,
    DeviceLoader,
    FolderLoader,
    load_arrays,
    make_loaders,
    normalization_constants,
    zca_whiten,
)
from wrn.errors import ConfigError, DataError


def test_registry_and_constants():
    assert normalization_constants("cifar10") == ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7))
    assert normalization_constants("svhn")[1] == (255.0, 255.0, 255.0)
    assert DATASETS["cifar100"].normalization == "cifar10"  # as the paper did
    assert DATASETS["svhn"].train_split == "train+extra" and DATASETS["svhn"].augment == "none"
    for name, info in DATASETS.items():
        assert info.train_split in info.splits and info.test_split in info.splits, name
    with pytest.raises(ConfigError, match="zca"):
        normalization_constants("zca")
    with pytest.raises(ConfigError, match="unknown normalization"):
        normalization_constants("cifar")


def test_digits_loaders():
    train, test, info = make_loaders("digits", None, batch_size=64, seed=1)
    assert isinstance(train, DeviceLoader) and isinstance(test, DeviceLoader)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 8)
    x, y = next(iter(train))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(train) == 1437 // 64 and len(test) == 6
    xt, yt = load_arrays("digits", None, "test")
    mean, std = normalization_constants("digits")
    out = torch.cat([b for b, _ in test])
    torch.testing.assert_close(out, (xt.float() - mean[0]) / std[0])
    assert torch.equal(torch.cat([b for _, b in test]), yt)
    # the split is fixed: another training seed evaluates on the same images
    assert torch.equal(torch.cat([b for _, b in make_loaders("digits", None, batch_size=64, seed=2)[1]]), yt)


def test_cifar_defaults(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4]}
        (base / name).write_bytes(pickle.dumps(obj, protocol=2))
    train, test, info = make_loaders("cifar10", tmp_path, batch_size=8, verify=False)
    assert train.augment == "flip-crop" and train.pad == 4 and len(train) == 2 and len(test) == 1
    x, _ = load_arrays("cifar10", tmp_path, "test", verify=False)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalization_constants("cifar10"))
    torch.testing.assert_close(next(iter(test))[0], (x.float() - mean) / std)
    with pytest.raises(ConfigError, match="image_size"):
        make_loaders("cifar10", tmp_path, batch_size=8, verify=False, image_size=64)
    with pytest.raises(ConfigError, match="augment"):
        make_loaders("cifar10", tmp_path, batch_size=8, verify=False, augment="mixup")


def test_zca_through_make_loaders_is_cached_next_to_the_data(tmp_path):
    train, test, _ = make_loaders("digits", tmp_path, batch_size=32, normalization="zca")
    assert train.mean is None and train.x.dtype == torch.float32
    _, xt = zca_whiten(load_arrays("digits", None, "train")[0], load_arrays("digits", None, "test")[0])
    torch.testing.assert_close(torch.cat([b for b, _ in test]), xt)
    assert len(list((tmp_path / "wrn-cache").iterdir())) == 1
    images, _ = next(iter(train))  # flip/crop on top of the whitened images would also work
    assert images.shape == (32, 1, 8, 8)


# ------------------------------------------------------------------------------------------ image folders


def write_folder(root, sizes=(12, 12), mode="RGB", classes=("cat", "dog", "emu"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                shape = (sizes[0], sizes[1], 3) if mode == "RGB" else sizes
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(d / f"{i}.png")


def test_small_folder_uses_the_device_path(tmp_path):
    write_folder(tmp_path, sizes=(12, 10))
    train, test, info = make_loaders("imagefolder", tmp_path, batch_size=4, normalization="none")
    assert isinstance(train, DeviceLoader) and info.num_classes == 3 and info.classes == ("cat", "dog", "emu")
    assert (info.in_channels, tuple(test.x.shape[2:])) == (3, (12, 10))
    x, y = next(iter(test))
    ref = np.array(Image.open(tmp_path / "val" / "cat" / "0.png")).transpose(2, 0, 1)
    assert torch.equal(x[0], torch.from_numpy(ref).float()) and y[:4].tolist() == [0, 0, 0, 1]
    gray = tmp_path / "gray"
    write_folder(gray, mode="L", classes=("a", "b"))
    _, _, info = make_loaders("imagefolder", gray, batch_size=2)
    assert info.in_channels == 1 and info.num_classes == 2


def test_large_folder_dataloader_path_resumes(tmp_path):
    write_folder(tmp_path, per_class=4)
    train, test, info = make_loaders("imagefolder", tmp_path, batch_size=3, image_size=72, workers=0, seed=4)
    assert isinstance(train, FolderLoader) and info.image_size == 72 and info.num_classes == 3
    assert len(train) == 4 and len(test) == 4
    x, y = next(iter(test))
    assert x.shape == (3, 3, 72, 72) and x.dtype == torch.float32 and y.tolist() == [0, 0, 0]
    full = [y.tolist() for _, y in train] + [y.tolist() for _, y in train]
    assert sorted(sum(full[:4], [])) == [0] * 4 + [1] * 4 + [2] * 4  # every image once per epoch
    assert full[:4] != full[4:]  # a fresh permutation each epoch
    again, _, _ = make_loaders("imagefolder", tmp_path, batch_size=3, image_size=72, workers=0, seed=4)
    seen = []
    for i, (_, y) in enumerate(again):
        seen.append(y.tolist())
        if i == 1:
            break
    state = again.state_dict()
    resumed, _, _ = make_loaders("imagefolder", tmp_path, batch_size=3, image_size=72, workers=0, seed=4)
    resumed.load_state_dict(state)
    seen += [y.tolist() for _, y in resumed] + [y.tolist() for _, y in resumed]
    assert seen == full and resumed.epoch == 2
    shards = [FolderLoader(train.dataset, 2, rank=r, world_size=2, workers=0).epoch_batches() for r in (0, 1)]
    flat = [sum(s, []) for s in shards]
    assert not set(flat[0]) & set(flat[1]) and len(flat[0]) == len(flat[1]) == 6


def test_imagenet_folder_with_workers(tmp_path):
    write_folder(tmp_path, classes=("n01", "n02"), per_class=2)
    train, test, info = make_loaders("imagenet", tmp_path, batch_size=2, image_size=32, workers=2)
    assert info.num_classes == 2 and train.dataset.transform is not None
    images, labels = next(iter(train))
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all() and labels.dtype == torch.int64
    assert sum(len(y) for _, y in test) == 4


def test_folder_augmentation_is_seeded_per_sample(tmp_path):
    """Same images for any number of workers, a mid-epoch resume sees the same augmented images, and the
    ranks of a multi-process run draw different augmentations."""
    write_folder(tmp_path, classes=("n01", "n02"), per_class=4)

    def loader(workers, rank=0, world_size=1):
        train, _, _ = make_loaders(
            "imagenet",
            tmp_path,
            batch_size=2,
            image_size=32,
            workers=workers,
            seed=3,
            rank=rank,
            world_size=world_size,
        )
        return train

    serial = [x for x, _ in loader(0)]
    parallel = [x for x, _ in loader(2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    assert not torch.equal(serial[0][0], serial[0][1])
    first = loader(2)
    it = iter(first)
    next(it)
    state = first.state_dict()
    resumed = loader(0)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(serial[1:], [x for x, _ in resumed], strict=True))
    seeds = [{seed for batch in loader(0, r, 2)._epoch_plan() for _, seed in batch} for r in (0, 1)]
    assert len(seeds[0]) == len(seeds[1]) == 4 and not seeds[0] & seeds[1]


def test_folder_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_loaders("imagefolder", tmp_path / "none", batch_size=2)
    write_folder(tmp_path, classes=("a", "b"))
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*empty holds no images"):
        make_loaders("imagefolder", tmp_path, batch_size=2)
    (tmp_path / "train" / "empty").rmdir()
    bad = tmp_path / "train" / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png cannot be decoded"):
        make_loaders("imagefolder", tmp_path, batch_size=2)
    train, _, _ = make_loaders("imagefolder", tmp_path, batch_size=7, image_size=72, workers=1)
    with pytest.raises(DataError) as err:
        list(train)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)
    bad.unlink()
    for p in (tmp_path / "val").rglob("*"):
        if p.is_file():
            p.unlink()
    with pytest.raises(DataError, match="holds no images"):
        make_loaders("imagefolder", tmp_path, batch_size=2)


# ------------------------------------------------------------------------- ImageNet: fb.resnet.torch's recipe


def _fb_sized_crop_reference(img: Image.Image, size: int) -> Image.Image:
    """fb.resnet.torch's RandomSizedCrop as its transforms.lua reads, drawing from torch's generator in the
    order area, ratio, swap, y, x."""

    def uniform(a, b):
        return a + (b - a) * float(torch.rand(()))

    width, height = img.size
    for _ in range(10):
        area = uniform(0.08, 1.0) * width * height
        ratio = uniform(3 / 4, 4 / 3)  # uniform, not log-uniform as torchvision
        w, h = int(np.floor(np.sqrt(area * ratio) + 0.5)), int(np.floor(np.sqrt(area / ratio) + 0.5))
        if float(torch.rand(())) < 0.5:
            w, h = h, w
        if h <= height and w <= width:
            y, x = int(torch.randint(0, height - h + 1, ())), int(torch.randint(0, width - w + 1, ()))
            return img.crop((x, y, x + w, y + h)).resize((size, size), Image.BICUBIC)
    raise AssertionError("the reference never falls back on these images")


def test_imagenet_random_sized_crop_is_fb_resnet_torch_s():
    from wrn.data.folder import FbRandomSizedCrop

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    for seed in range(40):
        torch.manual_seed(seed)
        ours = FbRandomSizedCrop(24)(img)
        torch.manual_seed(seed)
        assert np.array_equal(np.asarray(ours), np.asarray(_fb_sized_crop_reference(img, 24))), seed
    assert ours.size == (24, 24)
    # a crop that never fits falls back to scale + centre crop (fb.resnet.torch's CenterCrop rounds up)
    thin = Image.fromarray(rng.integers(0, 256, (4, 300, 3), dtype=np.uint8))
    out = FbRandomSizedCrop(8)(thin)
    assert out.size == (8, 8)


def test_imagenet_colour_jitter_runs_in_random_order_without_clamping():
    from wrn.data.folder import FbColorJitter

    img = torch.full((3, 4, 4), 250.0)
    img[0, 0, 0] = 10.0
    outs = []
    for seed in range(30):
        torch.manual_seed(seed)
        outs.append(FbColorJitter(0.4, 0.4, 0.4)(img))
    assert max(float(o.max()) for o in outs) > 255.0  # never clamped (torchvision's clamps each step)
    # reference: the three blends of fb.resnet.torch in the drawn order
    torch.manual_seed(7)
    order = torch.randperm(3).tolist()
    x = img.clone()
    for which in order:
        alpha = 1.0 + (-0.4 + 0.8 * float(torch.rand(())))
        gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
        target = 0.0 if which == 0 else (gray.mean() if which == 1 else gray)
        x = x * alpha + (1 - alpha) * target
    torch.testing.assert_close(outs[7], x)
    orders = set()
    for seed in range(30):
        torch.manual_seed(seed)
        orders.add(tuple(torch.randperm(3).tolist()))
    assert len(orders) == 6  # every order happens


def test_imagenet_keeps_the_last_partial_training_batch(tmp_path):
    write_folder(tmp_path, classes=("n01", "n02"), per_class=5)  # 10 images, batches of 4: 4 + 4 + 2
    train, _, info = make_loaders("imagenet", tmp_path, batch_size=4, image_size=32, workers=0)
    assert not info.drop_last and len(train) == 3
    assert [len(y) for _, y in train] == [4, 4, 2]
    cifar_like, _, _ = make_loaders("imagefolder", tmp_path, batch_size=4, image_size=72, workers=0)
    assert len(cifar_like) == 2  # the CIFAR recipe drops it


def test_imagenet_evaluation_scales_the_short_side_then_crops_the_centre(tmp_path):
    from wrn.data.folder import folder_transform

    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    out = folder_transform(False, "imagenet", 28)(img)
    assert out.shape == (3, 28, 28) and out.dtype == torch.uint8
    scaled = img.resize((45, 32), Image.BICUBIC)  # 28 * 256/224 = 32; 70/50 * 32 = 44.8 -> 45
    expected = np.asarray(scaled.crop((9, 2, 37, 30))).transpose(2, 0, 1)  # ceil((45-28)/2) = 9, ceil(2) = 2
    assert np.array_equal(out.numpy(), expected)


def test_scan_samples_honours_torchvision_s_make_dataset_contract(tmp_path):
    """extensions and is_valid_file are used as torchvision's make_dataset uses them (never ignored)."""
    from PIL import Image

    from wrn.data.folder import CheckedImageFolder, scan_samples

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / cls / "a.png")
        Image.new("RGB", (4, 4)).save(tmp_path / cls / "b.jpg")
        (tmp_path / cls / "notes.txt").write_text("not an image")
    index = {"cat": 0, "dog": 1}
    names = lambda samples: [(Path(p).parent.name + "/" + Path(p).name, i) for p, i in samples]  # noqa: E731
    assert names(scan_samples(tmp_path, index)) == [
        ("cat/a.png", 0),
        ("cat/b.jpg", 0),
        ("dog/a.png", 1),
        ("dog/b.jpg", 1),
    ]
    assert names(scan_samples(tmp_path, index, extensions=(".png",))) == [("cat/a.png", 0), ("dog/a.png", 1)]
    chosen = scan_samples(tmp_path, index, is_valid_file=lambda p: p.endswith("b.jpg"))
    assert names(chosen) == [("cat/b.jpg", 0), ("dog/b.jpg", 1)]
    with pytest.raises(ValueError, match="not both"):
        scan_samples(tmp_path, index, extensions=(".png",), is_valid_file=lambda p: True)
    folder = CheckedImageFolder(tmp_path)
    assert folder.classes == ["cat", "dog"] and len(folder) == len(folder.imgs) == 4


def test_the_crop_of_small_images_pads_the_same_share_of_their_side(tmp_path):
    """8x8 images get a 1-pixel crop padding (4 of 32); before, 4 pixels emptied half of an 8x8 image."""
    import numpy as np
    from PIL import Image

    from wrn.data import make_loaders
    from wrn.data.registry import crop_pad

    assert [crop_pad(s) for s in (8, 16, 32, 224)] == [1, 2, 4, 4]
    for cls in ("a", "b"):
        for split in ("train", "val"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(16):
                Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    train, _, info = make_loaders(
        "imagefolder", tmp_path, batch_size=32, augment="crop", crop_padding="zeros", normalization="none",
        workers=0, seed=1,
    )  # fmt: skip
    assert info.image_size == 8
    images = torch.cat([x for x, _ in train])
    zero_rows = (images == 0).all(1).all(-1).sum(-1)  # per image: rows of padding
    zero_cols = (images == 0).all(1).all(-2).sum(-1)
    assert int(zero_rows.max()) == 1 and int(zero_cols.max()) == 1  # offsets 0..2 of 1 pixel of padding
