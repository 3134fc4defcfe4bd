"""The per-image policies (AutoAugment's CIFAR-10 policy, RandAugment, TrivialAugmentWide) and random erasing:
through the loaders, image for image equal to torchvision's transforms applied by hand on the same seeds; the
same batches with any number of workers and after a restore (AutoAugment as the AutoAugment and sam codes
train it too: tests/test_data_autoaugment.py checks their images); a run on digits that trains with one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import wrn.cli
from wrn.data import DeviceLoader, folder_transform, load_arrays
from wrn.data.policies import PerImage, batch_seed
from wrn.data.registry import POLICY_CHOICES

MEAN, STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)


def _torchvision(policy: str, n: int = 2, m: int = 9):
    """The reference transforms, built here from torchvision alone."""
    return {
        "autoaugment": T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
        "randaugment": T.RandAugment(num_ops=n, magnitude=m),
        "trivialaugment": T.TrivialAugmentWide(),
        "none": None,
    }[policy]


def _data(n: int, c: int, side: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish images (a ramp plus noise) so that equalize, autocontrast and the rest all change something
    ramp = torch.linspace(0, 200, side).view(1, 1, 1, side)
    x = (ramp + torch.randint(0, 56, (n, c, side, side), generator=g)).to(torch.uint8)
    return x, torch.randint(0, 10, (n,), generator=g)


def _crop_flipped(x, y, batch_size, seed, epochs, augment="flip-crop"):
    """Every epoch's batches of the plain loader (no policy) as its plan draws them: per batch, the uncropped
    uint8 images and each one's crop offset (rows, cols) and flip."""
    plain = DeviceLoader(x, y, batch_size, augment=augment, seed=seed, drop_last=False)
    out = []
    for _ in range(epochs):
        plan = {k: v.cpu() for k, v in plain._epoch_plan().items()}
        out.append([
            (x[plan["index"][sel]], plan["offset"][sel], plan["flip"][sel])
            for sel in (slice(b * batch_size, (b + 1) * batch_size) for b in range(len(plain)))
        ])  # fmt: skip
        assert sum(1 for _ in plain) == len(plain)  # on to the next epoch
    return out


def _by_hand(crop_flipped, policy, erasing: float, mean, std, seed: int):
    """torchvision's per-image pipeline in the AutoAugment code's order, on each image: policy (uint8) ->
    4-pixel reflection pad and crop at the loader's offsets -> flip -> Normalize -> RandomErasing (p, value=0),
    torch's generator seeded per batch as the loader documents."""
    import torchvision.transforms.functional as TF

    mean = torch.tensor(mean).view(-1, 1, 1)
    std = torch.tensor(std).view(-1, 1, 1)
    erase = T.RandomErasing(p=erasing, value=0) if erasing else None
    out = []
    for epoch, batches in enumerate(crop_flipped):
        for b, (images, offsets, flips) in enumerate(batches):
            torch.manual_seed(batch_seed(seed, epoch, 0, b))
            done = []
            for img, (top, left), flip in zip(images, offsets.tolist(), flips.tolist(), strict=True):
                img = policy(img) if policy is not None else img
                side = img.shape[-1]
                img = TF.crop(TF.pad(img, 4, padding_mode="reflect"), top, left, side, side)
                img = TF.hflip(img) if flip else img
                img = (img.to(torch.float32) - mean) / std
                done.append(erase(img) if erase is not None else img)
            out.append(torch.stack(done))
    return out


def _epochs(loader, epochs):
    return [images for _ in range(epochs) for images, _ in loader]


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
@pytest.mark.parametrize("shape", [(3, 32), (1, 8)], ids=["cifar", "digits"])
def test_a_policy_through_the_loader_equals_torchvision_by_hand(policy, shape):
    c, side = shape
    x, y = _data(40, c, side)
    seed, epochs, bs = 3, 2, 16
    mean, std = MEAN[:c], STD[:c]
    n, m = (3, 14) if policy == "randaugment" else (2, 9)
    loader = DeviceLoader(
        x, y, bs, normalize=(mean, std), seed=seed, drop_last=False, per_image=PerImage(policy, n, m)
    )
    ours = _epochs(loader, epochs)
    plain = _crop_flipped(x, y, bs, seed, epochs)
    want = _by_hand(plain, _torchvision(policy, n, m), 0.0, mean, std, seed)
    assert len(ours) == len(want) == epochs * 3
    for i, (a, b) in enumerate(zip(ours, want, strict=True)):
        assert torch.equal(a, b), i
    # the policy really acts: most images differ from the crop-flipped ones normalised
    untouched = _by_hand(plain, None, 0.0, mean, std, seed)
    changed = sum(int((a != b).flatten(1).any(1).sum()) for a, b in zip(ours, untouched, strict=True))
    assert changed >= 0.5 * epochs * len(x)


AUTOAUGMENTS = ("autoaugment", "autoaugment-paper", "autoaugment-sam")


def _loader(x, y, workers, policy="autoaugment", **kw):
    per_image = PerImage(policy, erasing=0.5)
    return DeviceLoader(x, y, 8, normalize=(MEAN, STD), seed=11, per_image=per_image, workers=workers, **kw)


@pytest.mark.parametrize("policy", AUTOAUGMENTS)
def test_the_same_batches_with_0_and_2_workers_and_the_global_generator_untouched(policy):
    x, y = _data(36, 3, 32, seed=1)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    alone = _epochs(_loader(x, y, 0, policy), 2)
    assert torch.equal(torch.get_rng_state(), before)  # dropout's generator sees nothing of the policy
    two = _epochs(_loader(x, y, 2, policy), 2)
    assert len(alone) == len(two) == 2 * (36 // 8)
    assert all(torch.equal(a, b) for a, b in zip(alone, two, strict=True))
    assert not torch.equal(alone[0], alone[len(alone) // 2])  # epochs differ


@pytest.mark.parametrize("policy", AUTOAUGMENTS)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_restored_mid_epoch_gives_the_same_remaining_batches(workers, policy):
    x, y = _data(36, 3, 32, seed=2)
    straight = _epochs(_loader(x, y, workers, policy), 2)
    first = _loader(x, y, workers, policy)
    seen = [images for images, _ in first]  # epoch 1
    for images, _ in first:  # three batches of epoch 2, then stop
        seen.append(images)
        if len(seen) == len(straight) // 2 + 3:
            break
    state = first.state_dict()
    assert (state["epoch"], state["position"]) == (1, 3)
    restored = _loader(x, y, workers, policy)
    restored.load_state_dict(torch.load(_saved(state), weights_only=True))
    seen += [images for images, _ in restored]
    assert len(seen) == len(straight)
    assert all(torch.equal(a, b) for a, b in zip(seen, straight, strict=True))


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("policy", ["none", "trivialaugment"])
def test_random_erasing_equals_torchvision_after_normalisation(policy):
    x, y = _data(64, 3, 32, seed=4)
    seed, bs = 9, 16
    per_image = PerImage(policy, erasing=0.5)
    ours = _epochs(DeviceLoader(x, y, bs, normalize=(MEAN, STD), seed=seed, per_image=per_image), 2)
    want = _by_hand(_crop_flipped(x, y, bs, seed, 2), _torchvision(policy), 0.5, MEAN, STD, seed)
    assert all(torch.equal(a, b) for a, b in zip(ours, want, strict=True))
    # about half the images have a box of zeros (normalised values are almost never exactly 0 otherwise)
    zero = torch.cat([(a == 0).all(1) for a in ours])  # [N, H, W]: all channels 0
    erased = zero.flatten(1).any(1)
    assert 0.3 * len(erased) < int(erased.sum()) < 0.7 * len(erased)
    area = zero.flatten(1).sum(1)[erased].float() / (32 * 32)
    assert area.min() >= 0.015 and area.max() <= 0.34  # scale (0.02, 0.33), rounding of the sides


def test_erasing_p_0_draws_nothing():
    x, y = _data(32, 3, 32, seed=6)
    assert not PerImage("none", erasing=0.0).active
    plain = DeviceLoader(x, y, 8, normalize=(MEAN, STD), seed=1)
    off = DeviceLoader(x, y, 8, normalize=(MEAN, STD), seed=1, per_image=PerImage("none", erasing=0.0))
    assert off.per_image is None
    assert all(torch.equal(a, b) for a, b in zip(_epochs(plain, 2), _epochs(off, 2), strict=True))
    # with a policy on and p = 0, each image's policy draws follow one another with nothing in between
    policy = DeviceLoader(x, y, 8, normalize=(MEAN, STD), seed=1, per_image=PerImage("autoaugment"))
    want = _by_hand(_crop_flipped(x, y, 8, 1, 1), _torchvision("autoaugment"), 0.0, MEAN, STD, 1)
    assert all(torch.equal(a, b) for a, b in zip(_epochs(policy, 1), want, strict=True))


def test_the_folder_pipeline_ends_with_the_policy_then_normalise_then_erasing():
    g = torch.Generator().manual_seed(0)
    img = Image.fromarray(torch.randint(0, 256, (40, 40, 3), generator=g, dtype=torch.uint8).numpy())
    per_image = PerImage("autoaugment", erasing=1.0)
    ours = folder_transform(True, "flip-crop", 32, per_image=per_image, normalize=(MEAN, STD))
    reference = T.Compose(
        [
            T.Resize(32),
            T.CenterCrop(32),
            T.RandomHorizontalFlip(),
            T.Pad(4, padding_mode="reflect"),
            T.RandomCrop(32),
            T.PILToTensor(),
            T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
            T.Lambda(
                lambda t: (t.float() - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
            ),
            T.RandomErasing(p=1.0, value=0),
        ]
    )
    for seed in range(10):
        torch.manual_seed(seed)
        a = ours(img)
        torch.manual_seed(seed)
        assert torch.equal(a, reference(img)), seed
        assert (a == 0).all(0).any()


def test_digits_with_trivialaugment_trains_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "3"]
    flags = ["--policy", "trivialaugment", "--random-erasing", "0.25", "--workers", "2", "--no-progress"]
    assert wrn.cli.main([*args, *flags, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert (
        "per-image augmentation: trivialaugment (wide), random erasing p=0.25, in 2 worker processes" in said
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    # measured: 87.5% (seeds 1, 2: 91.9%, 85.6%; 95.8% without the policy); a 10-class guess is 10%
    assert records[-1]["test_acc"] >= 75.0
    import yaml

    data = yaml.safe_load((out / "config.yaml").read_text())["dataset"]
    assert (data["policy"], data["random_erasing"], data["workers"]) == ("trivialaugment", 0.25, 2)


@pytest.mark.parametrize(
    "flags",
    [
        ["--policy", "foo"],
        ["--random-erasing", "2"],
        ["--randaugment-m", "31"],
        ["--policy", "autoaugment", "--augment", "imagenet"],
    ],
)
def test_a_bad_value_is_one_sentence_and_exit_2(flags, tmp_path, capsys):
    code = wrn.cli.main(["train", "--preset", "demo", *flags, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_the_bundled_digits_go_through_every_policy():
    x, y = load_arrays("digits", None, "train")
    for policy in POLICY_CHOICES[1:]:
        loader = DeviceLoader(x[:64], y[:64], 32, normalize=((8.0,), (4.0,)), per_image=PerImage(policy))
        batches = _epochs(loader, 1)
        assert [tuple(b.shape) for b in batches] == [(32, 1, 8, 8)] * 2


def test_bench_data_says_what_each_policy_costs_per_image(tmp_path, capsys):
    out = tmp_path / "data.json"
    args = ["bench", "data", "--data-dir", str(tmp_path / "none"), "--device", "cpu", "--num-samples", "256"]
    more = [
        "--epochs",
        "1",
        "--policy",
        "all",
        "--random-erasing",
        "0.5",
        "--workers",
        "0",
        "--json",
        str(out),
    ]
    assert wrn.cli.main([*args, *more]) == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = result["per_image"]
    assert [r["stage"] for r in rows] == [
        "none",
        "autoaugment (CIFAR-10 policy), random erasing p=0.5",
        "autoaugment-paper (95 sub-policies, the AutoAugment code's ops), random erasing p=0.5",
        "autoaugment-sam (95 sub-policies, google-research/sam's ops), random erasing p=0.5",
        "randaugment (N=2, M=9), random erasing p=0.5",
        "trivialaugment (wide), random erasing p=0.5",
    ]
    assert "us_per_image" not in rows[0] and all(r["us_per_image"] > 0 for r in rows[1:])
    for r in rows:
        assert math.isclose(r["batches_per_s_median"], r["images_per_s_median"] / 128)
        assert f"{r['images_per_s_median']:,.0f}" in text
    assert result["settings"]["policy"] == "all" and result["settings"]["workers"] == 0
    assert wrn.cli.main([*args, "--policy", "autoaugment", "--workers", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--workers" in err and len(err.strip().splitlines()) == 1


def test_loader_workers_die_with_a_killed_training_process():
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import torch, sys, time\n"
        "from wrn.data import DeviceLoader\n"
        "from wrn.data.policies import PerImage\n"
        "x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)\n"
        "it = iter(DeviceLoader(x, torch.zeros(64, dtype=torch.int64), 8, per_image=PerImage('autoaugment'),"
        " workers=2))\n"
        "next(it)\n"
        "print(open(f'/proc/self/task/{__import__(\"os\").getpid()}/children').read(), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    children = [int(p) for p in proc.stdout.readline().split()]
    assert len(children) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 2  # the DataLoader's own watchdog would take 5 s
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stdout.close()
    assert not any(_alive(p) for p in children)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_image_folder_with_erasing_is_the_plain_loader_with_boxes_of_zeros(tmp_path):
    from wrn.data import make_loaders

    g = torch.Generator().manual_seed(1)
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = torch.randint(0, 256, (72, 72, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "train" / cls / f"{i}.png")
        Image.fromarray(pixels).save(tmp_path / "val" / cls / "0.png")
    common = {"batch_size": 4, "image_size": 72, "workers": 0, "seed": 3}
    plain, _, _ = make_loaders("imagefolder", tmp_path, **common)
    erased, _, _ = make_loaders("imagefolder", tmp_path, per_image=PerImage(erasing=1.0), **common)
    assert type(erased).__name__ == "FolderLoader"
    ours, want = _epochs(erased, 2), _epochs(plain, 2)
    assert len(ours) == len(want) == 4
    for a, b in zip(ours, want, strict=True):
        box = (a == 0).all(1)  # [B, H, W]: the erased pixels, every channel 0
        assert box.flatten(1).any(1).all()  # p = 1: every image has its box
        assert torch.equal(a, b.masked_fill(box[:, None], 0))  # and is the plain image elsewhere


@pytest.mark.parametrize(
    "per_image", [PerImage("randaugment", 2, 0), PerImage(erasing=1e-9)], ids=["policy", "erasing"]
)
def test_an_image_folder_with_a_per_image_stage_keeps_the_zero_padded_crop(tmp_path, per_image):
    """--crop-padding zeros on an image folder whose training images also go through a policy (RandAugment at
    magnitude 0 leaves a flat gray image as it is; AutoContrast may stretch a padded one) or random erasing:
    the crop's border is 0, not reflected."""
    from wrn.data import make_loaders

    for cls in ("a", "b"):
        for split in ("train", "val"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((72, 72, 3), 128, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    common = {
        "batch_size": 4,
        "image_size": 72,
        "workers": 0,
        "seed": 5,
        "augment": "crop",
        "per_image": per_image,
    }
    seen = {}
    for padding in ("reflect", "zeros"):
        train, _, _ = make_loaders(
            "imagefolder", tmp_path, normalization="none", crop_padding=padding, **common
        )
        assert type(train).__name__ == "FolderLoader"
        images = torch.cat([x for x, _ in train])
        seen[padding] = (images == 0).all(1).flatten(1).any(1)  # which images show a border of zeros
        if padding == "reflect":  # the reflected border is the image's own gray: the image stays flat
            assert images.unique().tolist() == [128.0]
    assert seen["zeros"].sum() >= 6  # 8 crops, each offset by 0..8 px per side: most show the padding


def test_an_image_folders_mean_padding_is_the_autoaugment_codes_crop(monkeypatch):
    """--crop-padding mean on an image folder: their zero_pad_and_crop (the border the mean colour, here
    rounded to whole gray levels on the uint8 image; offsets 0..7) and then their random_flip."""
    mean = (125.3, 123.0, 113.9)
    tf = folder_transform(True, "flip-crop", 16, 4, normalize=(mean, (63.0, 62.1, 66.7)), crop_padding="mean")
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    fill = np.array([125, 123, 114], np.uint8)
    for top, left, flip in ((0, 0, False), (7, 7, True), (3, 6, True), (4, 4, False)):
        monkeypatch.setattr(
            T.RandomCrop, "get_params", staticmethod(lambda i, s, t=top, lf=left: (t, lf, 16, 16))
        )
        monkeypatch.setattr(
            T.RandomHorizontalFlip, "forward", lambda self, img, f=flip: img.transpose(0) if f else img
        )
        padded = np.tile(fill, (24, 24, 1))
        padded[4:20, 4:20] = picture
        want = padded[top : top + 16, left : left + 16]
        want = want[:, ::-1] if flip else want
        got = tf(Image.fromarray(picture)).permute(1, 2, 0).numpy()
        assert np.array_equal(got, want), (top, left, flip)
    monkeypatch.undo()
    flat = Image.fromarray(np.full((16, 16, 3), 200, np.uint8))
    bottoms, tops = set(), set()
    for seed in range(200):
        torch.manual_seed(seed)
        rows = (tf(flat) != 200).any(0).all(1)  # which rows are border from end to end
        tops.add(int(rows[:4].sum()))
        bottoms.add(int(rows[-4:].sum()))
    assert max(tops) == 4 and max(bottoms) == 3  # offsets 0..7 of the 9: the last row of padding never shows
