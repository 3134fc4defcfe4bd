"""Generated training images (--aux-data): DM-Improves-AT's .npz format, every batch's share of them, their
labels, the refusals of bad files in one sentence, and a bitwise resume after kill -9."""

from __future__ import annotations

import random
import zipfile

import numpy as np
import pytest
import torch

from conftest import one_line_error
from wrn.data import make_loaders
from wrn.data.generated import generated_per_batch, read_generated

N = 500  # generated digits-shaped images


def generated_file(path, n=N, compressed=False, **arrays):
    """``n`` images in their format (``image`` uint8 N x 8 x 8 x 1, ``label`` int64), each marked: the top four
    rows 255 (no real digit has them) and image i's index in its fifth row."""
    images = np.zeros((n, 8, 8, 1), np.uint8)
    images[:, :4] = 255
    images[:, 4, 0, 0] = np.arange(n) % 256
    images[:, 4, 1, 0] = np.arange(n) // 256
    labels = (np.arange(n) * 7 + 3) % 10
    data = {"image": images, "label": labels, **arrays}
    (np.savez_compressed if compressed else np.savez)(
        path, **{k: v for k, v in data.items() if v is not None}
    )
    return path


def marked(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which images of an unnormalised, uncropped batch are generated ones, and their indices in the file."""
    generated = (x[:, 0, :4] == 255).flatten(1).all(1)
    index = x[:, 0, 4, 0].long() + 256 * x[:, 0, 4, 1].long()
    return generated, index


def loaders(path, fraction=0.7, batch_size=64, **kw):
    kw = {"augment": "none", "normalization": "none", **kw}
    return make_loaders("digits", None, batch_size=batch_size, aux_data=path, aux_fraction=fraction, **kw)


@pytest.mark.parametrize("compressed", [False, True], ids=["mapped", "in-memory"])
@pytest.mark.parametrize(("fraction", "batch_size"), [(0.7, 64), (0.3, 50), (0.5, 16)])
def test_every_batch_holds_int_f_b_generated_images_with_their_labels(
    tmp_path, compressed, fraction, batch_size
):
    path = generated_file(tmp_path / "gen.npz", compressed=compressed)
    train, test, _ = loaders(path, fraction, batch_size)
    assert train.mix.generated.mapped is not compressed
    labels_in_file = (np.arange(N) * 7 + 3) % 10
    want = int(batch_size * fraction)  # their int(), truncated: 0.7 x 64 = 44.8 -> 44
    assert want == generated_per_batch(batch_size, fraction)
    assert len(train) == -(-1437 // batch_size)  # their epoch: ceil(real images / batch)
    seen, first_generated = set(), batch_size
    for _ in range(2):
        for x, y in train:
            assert x.shape[0] == batch_size
            generated, index = marked(x)
            assert int(generated.sum()) == want
            assert torch.equal(y[generated], torch.from_numpy(labels_in_file)[index[generated]])
            seen |= set(index[generated].tolist())
            first_generated = min(first_generated, int(generated.nonzero()[0]))
    assert first_generated < batch_size - want  # shuffled into the batch, not appended
    assert len(seen) > N // 4  # drawn from the whole file
    assert all(not marked(x)[0].any() for x, _ in test)  # the test set is untouched


def test_real_images_come_from_a_fresh_permutation_each_epoch_and_generated_ones_with_replacement(tmp_path):
    train, _, _ = loaders(generated_file(tmp_path / "gen.npz"), 0.5, 64, augment="crop")
    epochs = []
    for _ in range(2):
        plan = train._epoch_plan()
        real = plan["index"][~plan["generated"]]
        assert len(real) == len(train) * 32 and len(set(real.tolist())) == len(real)  # no real image twice
        epochs.append(real)
        list(train)
    assert not torch.equal(epochs[0], epochs[1])
    # crop on: the marked rows move, but the share stays (reflection keeps the 255 rows' count)
    x, _ = next(iter(train))
    assert x.shape == (64, 1, 8, 8)


def test_each_process_takes_its_slots_of_the_same_batches(tmp_path):
    path = generated_file(tmp_path / "gen.npz")
    whole, _, _ = loaders(path, 0.7, 64, seed=3)
    parts = [loaders(path, 0.7, 32, seed=3, rank=r, world_size=2)[0] for r in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1])

    def rows(x):
        return sorted(r.tobytes() for r in x.flatten(1).numpy())

    for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts, strict=True):
        assert rows(torch.cat([x0, x1])) == rows(x)
        assert sorted(torch.cat([y0, y1]).tolist()) == sorted(y.tolist())


def test_a_loader_restored_mid_epoch_serves_the_same_batches(tmp_path):
    path = generated_file(tmp_path / "gen.npz")
    first, _, _ = loaders(path, 0.7, 64, augment="crop", seed=5)
    list(first)
    it = iter(first)
    for _ in range(7):
        next(it)
    state = first.state_dict()
    rest = list(it)
    second, _, _ = loaders(path, 0.7, 64, augment="crop", seed=5)
    second.load_state_dict(state)
    again = list(second)
    assert len(again) == len(rest) == len(first) - 7
    for (a, ya), (b, yb) in zip(rest, again, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    other, _, _ = loaders(generated_file(tmp_path / "more.npz", n=600), 0.7, 64, augment="crop", seed=5)
    with pytest.raises(Exception, match="same --aux-data"):
        other.load_state_dict(state)


def _bad_files(tmp):
    good = generated_file(tmp / "good.npz")
    (tmp / "text.npz").write_text("not an archive\n")
    cut = tmp / "cut.npz"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    obj = np.empty(N, dtype=object)
    obj[:] = [[1]] * N
    return {
        "missing": (tmp / "nowhere.npz", "does not exist"),
        "folder": (tmp, "is a folder"),
        "not npz": (tmp / "text.npz", "is not a .npz file"),
        "cut short": (cut, "not a .npz file"),
        "no label": (generated_file(tmp / "nolabel.npz", label=None), "has no array 'label'"),
        "no image": (generated_file(tmp / "noimage.npz", image=None), "has no array 'image'"),
        "cifar-shaped": (
            generated_file(tmp / "rgb.npz", image=np.zeros((N, 32, 32, 3), np.uint8)),
            "need uint8 N x 8 x 8 x 1",
        ),
        "channels first": (
            generated_file(tmp / "chw.npz", image=np.zeros((N, 1, 8, 8), np.uint8)),
            "need uint8 N x 8 x 8 x 1",
        ),
        "float images": (
            generated_file(tmp / "float.npz", image=np.zeros((N, 8, 8, 1), np.float32)),
            "need uint8",
        ),
        "float labels": (generated_file(tmp / "flab.npz", label=np.zeros(N, np.float32)), "not one integer"),
        "label 10": (generated_file(tmp / "ten.npz", label=np.full(N, 10)), "label 10 is not a class"),
        "label -1": (generated_file(tmp / "neg.npz", label=np.full(N, -1)), "label -1 is not a class"),
        "fewer labels": (
            generated_file(tmp / "few.npz", label=np.zeros(N - 1, np.int64)),
            "500 images but 499",
        ),
        "too few images": (generated_file(tmp / "small.npz", n=40), "fewer than the 44 generated images"),
        "pickle": (generated_file(tmp / "obj.npz", label=obj), "Python objects"),
    }


def test_every_bad_file_is_one_sentence_before_anything_is_written(capsys, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    for name, (path, words) in _bad_files(files).items():
        out = tmp_path / f"run-{name.replace(' ', '-')}"
        err = one_line_error(
            capsys, "train", "--preset", "demo", "--aux-data", str(path), "--epochs", "1", "--device", "cpu",
            "--no-progress", "--out", str(out),
        )  # fmt: skip
        assert words in err and "--aux-data" in err, (name, err)
        assert not out.exists(), name


def test_a_compressed_member_is_read_and_checked_too(tmp_path):
    path = generated_file(tmp_path / "c.npz", compressed=True, label=np.full(N, 12))
    with pytest.raises(Exception, match="label 12 is not a class"):
        read_generated(path, image_shape=(8, 8, 1), num_classes=10, batch_size=64, fraction=0.7)
    with zipfile.ZipFile(path) as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--aux-fraction", "0.5"], "--aux-fraction sets the share of generated images"),
        (["--aux-data", "g.npz", "--dataset", "svhn"], "not of svhn"),
        (["--aux-data", "g.npz", "--policy", "autoaugment"], "leave --policy out"),
        (["--aux-data", "g.npz", "--random-erasing", "0.5"], "leave --random-erasing out"),
        (["--aux-data", "g.npz", "--normalization", "zca"], "ZCA"),
        (["--aux-data", "g.npz", "--aux-fraction", "0.01"], "is 0 generated images"),
        (["--aux-data", "g.npz", "--aux-fraction", "1"], "aux_fraction"),
    ],
)
def test_what_cannot_take_generated_images_is_refused_in_one_sentence(capsys, argv, words):
    err = one_line_error(capsys, "train", "--preset", "demo", *argv, "--print-config")
    assert words in err, err


def test_kill_9_then_resume_with_generated_data_gives_bitwise_identical_weights(tmp_path):
    from conftest import assert_resume_is_bitwise

    path = generated_file(tmp_path / "gen.npz")
    args = [
        "train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "2", "--batch-size", "32",
        "--milestones", "2", "--augment", "crop", "--aux-data", str(path), "--aux-fraction", "0.5",
        "--checkpoint-every", "1steps", "--no-progress", "--device", "cpu",
    ]  # fmt: skip
    target = random.Random(7).randint(30, 60)  # of 2 x 45 steps: mid-epoch, in the first or second
    assert_resume_is_bitwise(tmp_path, args, target)


def test_an_epoch_counts_the_held_out_images_as_theirs_does(tmp_path):
    """With --adv-holdout an epoch is ceil(the training split before the split / B) batches: their
    dataset_size is CIFAR-10's 50,000 although 1,024 are held out (98 batches of 512, not 96)."""
    path = generated_file(tmp_path / "gen.npz")
    train, _, _ = loaders(path, batch_size=64)
    assert len(train) == -(-1437 // 64) == 23  # the digits' training images
    train, _, _, held = loaders(path, batch_size=64, holdout=200)
    assert len(held.y) == 200 and train.num_samples == 1237
    assert len(train) == 23 and sum(1 for _ in train) == 23  # not ceil(1237 / 64) = 20
