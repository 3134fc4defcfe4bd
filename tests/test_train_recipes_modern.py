"""The recipes WRN-28-10 is trained with today, each an option that is off by default: Cutout (DeVries & Taylor
2017), mixup and CutMix (torchvision's v2 arithmetic), an average of the weights (EMA), label smoothing. Each against an independent computation, a run on
digits that trains with it, and a resume that is bitwise equal to a run never stopped."""

from __future__ import annotations

import json
import math
import os
import signal
import time
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import wrn.cli
from conftest import metrics, run_wrn, start_wrn
from wrn.errors import CheckpointError
from wrn.train import checkpoint as ckpt
from wrn.train.build import build_trainables
from wrn.train.compose import build_config
from wrn.train.cutout import Cutout
from wrn.train.ema import WeightEMA
from wrn.train.mixing import Mixing
from wrn.train.resolve import resolve
from wrn.train.run import resume, train
from wrn.train.step import TrainStep

TIME_KEYS = {"train_time", "test_time", "images_per_s"}


def _reference_cutout_mask(h: int, w: int, length: int, y: int, x: int) -> np.ndarray:
    """uoguelph-mlrg/Cutout's util/cutout.py for one hole, with its centre given instead of drawn by numpy."""
    mask = np.ones((h, w), np.float32)
    y1 = np.clip(y - length // 2, 0, h)
    y2 = np.clip(y + length // 2, 0, h)
    x1 = np.clip(x - length // 2, 0, w)
    x2 = np.clip(x + length // 2, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    return mask


@pytest.mark.parametrize("length,h,w", [(16, 32, 32), (8, 32, 32), (5, 12, 9)])
def test_cutout_holes_match_the_authors_code_over_many_seeds(length, h, w):
    n = 64
    sides, centres = set(), set()
    for seed in range(40):
        cutout = Cutout(length, torch.device("cpu"), seed)
        images = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1000 + seed))
        out = cutout(images)
        # the centres, read from the same stream: n rows, then n columns, uniform over the whole image
        stream = torch.Generator().manual_seed(seed)
        ys = torch.randint(h, (n,), generator=stream).tolist()
        xs = torch.randint(w, (n,), generator=stream).tolist()
        for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
            mask = torch.from_numpy(_reference_cutout_mask(h, w, length, y, x))
            assert torch.equal(out[i], images[i] * mask), (seed, i)
            hole = (mask == 0).nonzero()
            rows = min(y + length // 2, h) - max(y - length // 2, 0)
            cols = min(x + length // 2, w) - max(x - length // 2, 0)
            assert len(hole) == rows * cols
            sides.add((rows, cols))
            centres.add((y, x))
    full = 2 * (length // 2)  # an odd side covers one pixel less, as in their code
    assert (full, full) in sides  # an unclipped hole
    assert any(r < full for r, _ in sides) and any(c < full for _, c in sides)  # clipped at a border
    assert {y for y, _ in centres} == set(range(h)) and {x for _, x in centres} == set(range(w))


def _reference_sam_cutout(images: np.ndarray, length: int, cy: int, cx: int) -> np.ndarray:
    """google-research/sam's augmentation.cutout (sam_jax/datasets/augmentation.py) on an NHWC batch, with the
    centre given instead of drawn by tf.random.uniform: one mask, padded out of a block of zeros, for all."""
    _, h, w, c = images.shape
    lower_pad, upper_pad = max(0, cy - length // 2), max(0, h - cy - length // 2)
    left_pad, right_pad = max(0, cx - length // 2), max(0, w - cx - length // 2)
    shape = (h - (lower_pad + upper_pad), w - (left_pad + right_pad))
    mask = np.pad(
        np.zeros(shape, images.dtype), ((lower_pad, upper_pad), (left_pad, right_pad)), constant_values=1
    )
    mask = np.tile(mask[:, :, None], (1, 1, c))
    patch = np.ones_like(images) * 0.0  # their `replace`: 0, after normalisation
    return np.where(mask == 0, patch, images)


@pytest.mark.parametrize("length,h,w", [(16, 32, 32), (5, 12, 9), (16, 8, 8)])
def test_batch_cutout_matches_sams_code_one_place_for_the_whole_batch(length, h, w):
    centres = set()
    for seed in range(60):
        cutout = Cutout(length, torch.device("cpu"), seed, per="batch")
        images = torch.randn(6, 3, h, w, generator=torch.Generator().manual_seed(500 + seed))
        out = cutout(images)
        stream = torch.Generator().manual_seed(seed)  # two integers per batch: the row, then the column
        cy, cx = (
            torch.randint(h, (1,), generator=stream).item(),
            torch.randint(w, (1,), generator=stream).item(),
        )
        want = _reference_sam_cutout(images.permute(0, 2, 3, 1).numpy(), length, cy, cx)
        assert torch.equal(out, torch.from_numpy(want).permute(0, 3, 1, 2)), seed
        assert torch.equal(cutout.generator.get_state(), stream.get_state())
        holes = {tuple(m.nonzero().flatten().tolist()) for m in (out == 0).all(1).flatten(1)}
        assert len(holes) == 1  # every image's hole at the same place
        centres.add((cy, cx))
    assert len({y for y, _ in centres}) > h // 2 and len({x for _, x in centres}) > w // 2


def test_cutout_per_batch_needs_cutout_and_per_image_is_todays(capsys):
    from conftest import one_line_error

    err = one_line_error(capsys, "train", "--preset", "demo", "--cutout-per", "batch", "--print-config")
    assert err.endswith("--cutout-per batch places Cutout's holes, which are off; add --cutout L (e.g. 16)")
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    today, named = Cutout(6, torch.device("cpu"), 3), Cutout(6, torch.device("cpu"), 3, per="image")
    assert torch.equal(today(images), named(images))


def test_cutout_zeroes_every_channel_of_its_hole_and_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    cutout = Cutout(4, torch.device("cpu"), 3)
    images = torch.full((2, 3, 8, 8), -1.5)
    out = cutout(images)
    assert torch.equal(torch.get_rng_state(), before)
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2])
    assert 0 < zero[:, 0].sum(dim=(1, 2)).min() and zero[:, 0].sum(dim=(1, 2)).max() <= 16
    assert torch.equal(out[~zero], images[~zero])
    state = cutout.state_dict()
    again = cutout(images)
    cutout.load_state_dict(state)
    assert torch.equal(cutout(images), again)


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.bn = torch.nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x.flatten(1)))


def test_ema_follows_the_formula_step_by_step():
    torch.manual_seed(0)
    model = _Tiny()
    decay = 0.8
    ema = WeightEMA(model, decay)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    step = TrainStep(model, optimizer, torch.nn.CrossEntropyLoss(), device=torch.device("cpu"), ema=ema)
    expected = None
    for _ in range(5):
        step(torch.randn(8, 4), torch.randint(3, (8,)))
        now = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if expected is None:  # the first update copies the model
            expected = now
        else:
            for k, v in now.items():
                if v.is_floating_point():
                    expected[k] = (decay * expected[k].double() + (1 - decay) * v.double()).float()
                else:  # an integer buffer (BN's batch count): the same formula, truncated
                    expected[k] = (expected[k] * decay + v * (1 - decay)).to(v.dtype)
    averaged = ema.module.state_dict()
    assert averaged.keys() == expected.keys()
    for k in expected:
        assert torch.allclose(averaged[k].double(), expected[k].double(), rtol=0, atol=1e-6), k
    assert not torch.equal(averaged["fc.weight"], model.fc.weight.detach())  # the average lags behind
    assert int(ema.averaged.n_averaged) == 5


def test_label_smoothing_loss_equals_the_hand_computation():
    eps = 0.1
    cfg = resolve(
        build_config(
            "demo", overrides={"optim.label_smoothing": eps, "run.device": "cpu", "run.channels_last": False}
        )
    )
    torch.manual_seed(0)
    trainables = build_trainables(cfg, _Tiny(), torch.device("cpu"))
    images, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    loss, logits = trainables.step(images, labels)
    logp = logits.double().log_softmax(1).numpy()
    k = logp.shape[1]
    by_hand = [
        -(1 - eps) * row[y] - eps / k * row.sum() for row, y in zip(logp, labels.tolist(), strict=True)
    ]
    assert math.isclose(loss.item(), float(np.mean(by_hand)), rel_tol=1e-6)
    plain = -float(np.mean([row[y] for row, y in zip(logp, labels.tolist(), strict=True)]))
    assert not math.isclose(loss.item(), plain, rel_tol=1e-3)


def test_every_new_option_is_off_by_default():
    cfg = resolve(build_config("demo", overrides={"run.device": "cpu", "run.channels_last": False}))
    assert cfg.dataset.cutout == 0 and cfg.optim.ema_decay == 0
    step = build_trainables(cfg, _Tiny(), torch.device("cpu")).step
    assert step.cutout is None and step.ema is None


@pytest.mark.parametrize("flag,value", [("--cutout", "-1"), ("--ema", "1.0")])
def test_a_bad_value_is_one_sentence_and_exit_2(flag, value, tmp_path, capsys):
    code = wrn.cli.main(["train", "--preset", "demo", flag, value, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


class _Beta:
    """Stands in for torchvision's Beta distribution: gives the lam our mixer drew."""

    def __init__(self, lam):
        self.lam = lam

    def sample(self, shape):
        return torch.tensor([self.lam])


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_equals_torchvision_v2_on_the_same_draws(kind, monkeypatch):
    from torchvision.transforms import v2

    alpha, n, k, h, w = 0.7, 8, 5, 12, 10
    kinds = []
    for seed in range(30):
        mixing = Mixing(alpha if kind == "mixup" else 0.0, alpha if kind == "cutmix" else 0.0, k, seed)
        images = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))
        labels = torch.randint(k, (n,), generator=torch.Generator().manual_seed(100 + seed))
        ours, soft = mixing(images.clone(), labels)
        stream = np.random.default_rng(seed)  # the same draws, read again: lam, then the box's centre
        lam = float(stream.beta(alpha, alpha))  # _Beta gives it as float32, as torchvision's Beta does
        reference = (
            v2.MixUp(alpha=alpha, num_classes=k) if kind == "mixup" else v2.CutMix(alpha=alpha, num_classes=k)
        )
        reference._dist = _Beta(lam)
        if kind == "cutmix":
            centre = iter([int(stream.integers(w)), int(stream.integers(h))])
            monkeypatch.setattr(torch, "randint", lambda high, size, it=centre: torch.tensor([next(it)]))
        want_images, want_soft = reference(images.clone(), labels)
        monkeypatch.undo()
        assert torch.equal(ours, want_images), seed
        assert torch.equal(soft, want_soft), seed
        big = soft.max(1).indices
        assert torch.equal(mixing.dominant[soft.max(1).values > 0.5], big[soft.max(1).values > 0.5])
        kinds.append(not torch.equal(ours, images))
    assert sum(kinds) >= 25  # the images really were mixed


def test_both_on_take_mixup_or_cutmix_half_the_time_and_resume_the_stream():
    mixing = Mixing(1.0, 1.0, 3, seed=0)
    boxes = [mixing.draw(32, 32)[1] is not None for _ in range(2000)]
    assert 900 < sum(boxes) < 1100
    state = mixing.state_dict()
    ahead = [mixing.draw(32, 32) for _ in range(5)]
    mixing.load_state_dict(state)
    assert [mixing.draw(32, 32) for _ in range(5)] == ahead


def test_the_loss_is_taken_on_the_soft_labels():
    cfg = resolve(
        build_config(
            "demo", overrides={"dataset.mixup": 1.0, "run.device": "cpu", "run.channels_last": False}
        )
    )
    torch.manual_seed(0)
    model = _Tiny()
    model.config = {"num_classes": 3}
    step = build_trainables(cfg, model, torch.device("cpu")).step
    images, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    mixing = step.objective.mixing
    state = mixing.state_dict()
    loss, logits = step(images, labels)
    mixing.load_state_dict(state)
    _, soft = mixing(images, labels)
    by_hand = -(soft.double() * logits.double().log_softmax(1)).sum(1).mean()
    assert math.isclose(loss.item(), by_hand.item(), rel_tol=1e-6)
    assert torch.equal(step.counted, mixing.dominant)


def _small(**overrides):
    base = {
        "model.name": "wrn-10-1",
        "optim.batch_size": 256,
        "schedule.epochs": 3,
        "dataset.cutout": 4,
        "optim.ema_decay": 0.9,
        "run.progress": False,
    }
    return build_config("demo", overrides={**base, **overrides})


def test_digits_with_mixup_and_cutmix_trains(tmp_path, capsys):
    cfg = _small(**{"optim.batch_size": 128, "schedule.epochs": 6, "optim.ema_decay": 0.0, **ALL_ON})
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"cutout": 0})})
    train(cfg, tmp_path / "run", verbose=True)
    last = metrics(tmp_path / "run", timings=False)[-1]
    assert last["test_acc"] >= 85.0 and "ema_test_acc" not in last
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 6 and all(
        line.endswith("(train acc: of the mixed targets' larger part)") for line in lines
    )


def test_digits_with_cutout_and_ema_trains_and_saves_the_average(tmp_path, capsys):
    cfg = _small(**{"optim.batch_size": 128, "schedule.epochs": 6})
    result = train(cfg, tmp_path / "run")
    records = metrics(tmp_path / "run", timings=False)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    last = records[-1]
    assert last["ema_test_acc"] >= 90.0 and last["test_acc"] >= 90.0
    assert math.isclose(last["ema_test_error"], 100.0 - last["ema_test_acc"])
    doc = json.loads((tmp_path / "run" / "model.json").read_text())
    assert doc["metadata"]["weights"] == "ema" and doc["metadata"]["ema_decay"] == 0.9
    assert doc["metadata"]["test_error"] == last["ema_test_error"]
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    state = ckpt.load(tmp_path / "run")
    averaged = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    assert saved.keys() == averaged.keys()
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    plain = result.model.state_dict()
    assert not torch.equal(saved["fc.weight"], plain["fc.weight"].cpu())  # the average, not the last weights
    assert set(state["ranks"][0]) == {"rng", "loader", "sums", "cutout", "objective"}
    assert state["ranks"][0]["objective"] == {}  # plain cross-entropy keeps no state
    assert wrn.cli.main(["train", "--resume", str(tmp_path / "run")]) == 0
    said = capsys.readouterr().out
    assert (
        f"is complete: 6 of 6 epochs trained (the EMA weights' test error {last['ema_test_error']:.2f}%)"
        in said
    )


def test_a_cutout_hole_as_large_as_the_images_is_warned_about(tmp_path, capsys):
    """A recipe's 16 px on the 8x8 digits (a scaled-down grid of `wrn reproduce cutout`) leaves nothing to see."""
    args = ["train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "1", "--batch-size", "256"]
    for hole, warned in ((8, True), (4, False)):  # the boundary: a hole as large as the image
        run = tmp_path / f"hole-{hole}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert wrn.cli.main([*args, "--cutout", str(hole), "--no-progress", "--out", str(run)]) == 0
        said = [str(w.message) for w in caught if "--cutout" in str(w.message)]
        assert bool(said) == warned, said
        if warned:
            assert said == [
                f"--cutout {hole} is not smaller than the 8x8 images: each hole covers most or all of its image; "
                "give --cutout 2, the same share of the side (Cutout's 8 px is for 32x32 CIFAR)"
            ]


ALL_ON = {"dataset.mixup": 0.4, "dataset.cutmix": 1.0}  # mixup and CutMix, beside _small's Cutout and EMA


ALL_ON_ARGS = [
    "train", "--preset", "demo", "--model", "wrn-10-1", "--batch-size", "128", "--epochs", "3",
    "--cutout", "4", "--cutout-per", "batch", "--ema", "0.9", "--mixup", "0.4", "--cutmix", "1.0",
    "--label-smoothing", "0.1", "--sam", "0.05", "--replica-batch", "32", "--warmup-epochs", "1", "--grad-clip", "5", "--no-decay-norm-and-bias", "--ema-warmup",
    "--augment", "flip-crop", "--crop-padding", "zeros", "--policy", "autoaugment", "--random-erasing", "0.5",
    "--workers", "2", "--checkpoint-every", "1steps", "--no-progress",
]  # fmt: skip
# WRN_SLOW=1: a kill in epoch 1 and one in epoch 2; by default the one in epoch 2
KILL_STEPS = (7, 19) if os.environ.get("WRN_SLOW") == "1" else (19,)


def test_kill_9_twice_with_every_recipe_on_then_resume_is_bitwise(tmp_path):
    # in a process like the killed ones (the same threads: the same float sums)
    assert run_wrn(*ALL_ON_ARGS, "--out", tmp_path / "straight").returncode == 0
    killed = tmp_path / "killed"
    args = [*ALL_ON_ARGS, "--out", str(killed)]
    for target in KILL_STEPS:  # of 3 x 11 steps: in epoch 1, then in epoch 2
        proc = start_wrn(*args)
        deadline = time.monotonic() + 120
        while _checkpoint_step(killed) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        state = ckpt.load(killed)  # never torn, and with every recipe's state
        assert state["global_step"] >= target and "ema" in state
        assert int(state["ema"]["n_averaged"]) == state["global_step"]  # the EMA warm-up's count
        assert len(state["optimizer"]["param_groups"]) == 2  # no weight decay on the 1-d parameters
        assert "cutout" in state["ranks"][0] and "mixing" in state["ranks"][0]["objective"]
        loader = state["ranks"][0]["loader"]  # mid-epoch: the policy's workers killed with the run
        assert 0 < loader["position"] < 11
        args = ["train", "--resume", str(killed), "--no-progress"]
    proc = start_wrn(*args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert metrics(tmp_path / "straight", timings=False) == metrics(killed, timings=False)
    assert (tmp_path / "straight" / "model.safetensors").read_bytes() == (
        killed / "model.safetensors"
    ).read_bytes()
    a, b = ckpt.load(tmp_path / "straight")["model"], ckpt.load(killed)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the plain weights too


def _checkpoint_step(run_dir) -> int:
    try:
        return ckpt.load(run_dir)["global_step"]
    except CheckpointError:  # not written yet
        return -1


def test_a_checkpoint_without_the_ema_state_is_refused_in_one_sentence(tmp_path):
    train(_small(**{"schedule.epochs": 2, "optim.ema_decay": 0.0, "dataset.cutout": 0}), tmp_path / "run")
    state = ckpt.load(tmp_path / "run")
    state["config"]["optim"]["ema_decay"] = 0.9
    state["epoch"] = 1
    ckpt.atomic_save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="holds no ema state") as info:
        resume(tmp_path / "run")
    assert "\n" not in str(info.value)
