"""Semi-supervised training (``--labels``, ``--ssl fixmatch``): each piece against an independent computation
written out here from google-research/fixmatch (the labelled split of scripts/create_split.py, the unlabelled
loss of fixmatch.py's model(), the lr of every step, the EMA of the trainable variables), the loaders' streams,
and the options through the real command line."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict

import numpy as np
import pytest
import torch
import yaml

from conftest import metrics, one_line_error, run_wrn, start_wrn
from wrn.data import make_loaders
from wrn.data.semi_supervised import LabelledSplit, labelled_indices
from wrn.errors import ConfigError
from wrn.train.compose import build_config
from wrn.train.ema import WeightEMA
from wrn.train.objectives.semi_supervised import fixmatch_unlabelled_loss
from wrn.train.recipe import lr_at

# ------------------------------------------------------------------------------------- the labelled split


def create_split_reference(labels: np.ndarray, size: int, seed: int) -> list[int]:
    """scripts/create_split.py's main(), from its lines, on the list of the records' labels."""
    count = 0
    class_id = defaultdict(list)
    for i in labels:
        class_id[int(i)].append(count)
        count += 1
    nclass = len(class_id)
    train_stats = np.array([len(class_id[i]) for i in range(nclass)], np.float64)
    train_stats /= train_stats.max()
    class_id = [np.array(class_id[i], dtype=np.int64) for i in range(nclass)]
    state = np.random.get_state()
    try:
        if seed:
            np.random.seed(seed)
            for i in range(nclass):
                np.random.shuffle(class_id[i])
        npos = np.zeros(nclass, np.int64)
        label = []
        for _ in range(size):
            c = np.argmax(train_stats - npos / max(npos.max(), 1))
            label.append(class_id[c][npos[c]])
            npos[c] += 1
    finally:
        np.random.set_state(state)
    return sorted(frozenset([int(x) for x in label]))


@pytest.mark.parametrize("size, seed", [(40, 1), (250, 3), (4000, 5), (40, 0)])
def test_the_split_is_their_create_split_on_balanced_classes(size, seed):
    y = np.random.RandomState(7).permutation(np.repeat(np.arange(10), 5000))  # CIFAR-10's 10 x 5000
    ours = labelled_indices(y, size, seed)
    assert ours.tolist() == create_split_reference(y, size, seed)
    assert np.bincount(y[ours.numpy()], minlength=10).tolist() == [size // 10] * 10  # class-balanced


def test_the_split_follows_the_class_shares_where_they_differ():
    """SVHN's classes are not equal: their rule takes each class as its share of the training set says."""
    counts = [4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659]  # SVHN train's classes
    y = np.random.RandomState(0).permutation(np.repeat(np.arange(10), counts))
    for size, seed in ((40, 1), (250, 2), (1000, 4)):
        ours = labelled_indices(y, size, seed)
        assert ours.tolist() == create_split_reference(y, size, seed)
        assert len(ours) == size


def test_their_rule_takes_every_image_before_a_class_runs_out():
    """Each class is taken in proportion to its share: asking for all the images takes each exactly once,
    one more is one sentence."""
    for counts in ([5, 5, 2], [7, 1, 3], [4, 2, 1, 9]):
        y = np.random.RandomState(1).permutation(np.repeat(np.arange(len(counts)), counts))
        assert labelled_indices(y, len(y), 1).tolist() == list(range(len(y)))
        with pytest.raises(
            ConfigError, match=f"more labelled images than the {len(y)} training images of tiny"
        ):
            labelled_indices(y, len(y) + 1, 1, "tiny")


# ------------------------------------------------------------------------------------------ the loss


def test_the_unlabelled_loss_and_mask_by_hand():
    g = torch.Generator().manual_seed(0)
    weak = torch.randn(12, 5, generator=g) * 3
    strong = torch.randn(12, 5, generator=g)
    loss, mask = fixmatch_unlabelled_loss(weak, strong, 0.8)
    total, kept = 0.0, []
    for w, s in zip(weak.tolist(), strong.tolist(), strict=True):
        p = [math.exp(v) for v in w]
        p = [v / sum(p) for v in p]
        keep = max(p) >= 0.8
        kept.append(float(keep))
        if keep:
            target = p.index(max(p))
            total += -(s[target] - math.log(sum(math.exp(v) for v in s)))
    assert mask.tolist() == kept and 0 < sum(kept) < 12  # some kept, some not
    assert loss.item() == pytest.approx(total / 12, rel=1e-6)  # averaged over all 12, kept or not


def test_the_pseudo_label_takes_no_gradient():
    weak = torch.tensor([[5.0, 0.0], [0.0, 4.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    loss, _ = fixmatch_unlabelled_loss(weak, strong, 0.95)
    loss.backward()
    assert weak.grad is None or not weak.grad.any()
    assert strong.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------- the schedule


def test_the_lr_of_every_step_is_theirs():
    """fixmatch.py: lr * cos(clip(step / (train_kimg << 10), 0, 1) * 7 pi / (2 * 8)), step in images."""
    cfg = build_config("cifar10-wrn-28-2-fixmatch-250", None, {"schedule.epochs": 3, "ssl.epoch_steps": 5})
    batch, total = 64, 3 * 5
    for epoch in (1, 2, 3):
        for step in range(5):
            k = ((epoch - 1) * 5 + step) * batch  # their global step counts images
            theirs = 0.03 * math.cos(min(max(k / (total * batch), 0), 1) * (7 * math.pi) / (2 * 8))
            assert lr_at(cfg.schedule, cfg.optim.lr, epoch, step, 5) == pytest.approx(theirs, rel=1e-12)


# ------------------------------------------------------------------------------------------- the EMA


def test_the_ema_with_copied_buffers_averages_the_weights_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = WeightEMA(model, 0.9, buffers="copy")
    by_hand = None
    for i in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (i + 1))
        model.train()(torch.randn(8, 3))  # moves the BN statistics
        ema.update()
        now = [p.detach().clone() for p in model.parameters()]
        by_hand = now if by_hand is None else [0.9 * a + 0.1 * w for a, w in zip(by_hand, now, strict=True)]
        for a, b in zip(ema.module.parameters(), by_hand, strict=True):
            torch.testing.assert_close(a, b)
        for a, b in zip(ema.module.buffers(), model.buffers(), strict=True):
            assert torch.equal(a, b)  # the model's statistics, as they are


# ----------------------------------------------------------------------------------------- the loaders


def _digits_loaders(**split):
    return make_loaders("digits", None, batch_size=16, seed=3, workers=0, split=LabelledSplit(**split))


def test_the_labelled_loader_is_a_stream_of_permutations_in_epochs_of_steps():
    train, _, _ = _digits_loaders(labels=20, fold=2, epoch_steps=4)
    assert len(train) == 4
    seen = [labels for _ in range(3) for _, labels in train]
    assert len(seen) == 12 and all(len(b) == 16 for b in seen)
    first = torch.cat(seen)[:20]
    assert (
        first.bincount(minlength=10).tolist() == [2] * 10
    )  # each permutation holds every labelled image once


@pytest.mark.parametrize("on", ["workers", "device"])
def test_the_unlabelled_loader_gives_weak_and_strong_views_of_every_image_and_resumes(on):
    kwargs = {"labels": 20, "fold": 1, "epoch_steps": 4, "unlabelled_batch": 48, "strong_on": on}
    train, _, _, unlabelled = _digits_loaders(**kwargs)
    assert len(unlabelled) == 1437 // 48
    batches = list(unlabelled)
    weak, strong = batches[0]
    assert weak.shape == strong.shape == (48, 1, 8, 8) and not torch.equal(weak, strong)
    assert (strong == 0).any()  # emptied pixels (Cutout's box at least): 0 after normalisation
    _, _, _, second = _digits_loaders(**kwargs)
    it = iter(second)
    for _ in range(5):
        next(it)
    state = second.state_dict()
    _, _, _, third = _digits_loaders(**kwargs)
    third.load_state_dict(state)
    for (w1, s1), (w2, s2) in zip(batches[5:], third, strict=True):
        assert torch.equal(w1, w2) and torch.equal(s1, s2)


def test_the_strong_views_on_the_device_are_the_per_image_code_with_the_batch_draws(scripted):
    """The device path's strong view of each image is FixMatchRA's per-image code (fixmatch_augment's
    apply_policy) run with the same draws, on the same flipped and cropped image."""
    from conftest import ra_reference
    from wrn.data.fixmatch_batched import draw_params
    from wrn.data.semi_supervised import StrongView

    x = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    x[:, :, :8] = 3  # flat dark rows: values their wrap truncates
    view = StrongView("fixmatch-ra", 32, on="device")
    ours, emptied = view.batch(x, torch.Generator().manual_seed(5))
    params = draw_params(24, 32, 32, generator=torch.Generator().manual_seed(5))
    want, want_emptied = ra_reference(scripted, x, params, 16)
    for i in range(24):
        assert torch.equal(ours[i], want[i]) and torch.equal(emptied[i], want_emptied[i]), i
    assert int(params.coins.sum()) > 10


# ------------------------------------------------------------------------------------------ the options


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--ssl", "fixmatch"], "add --labels N"),
        (["--labels", "45"], "not a multiple of digits's 10 classes"),
        (["--ssl", "fixmatch", "--labels", "20", "--mu", "0"], "ssl.mu = 0 is invalid"),
        (["--mu", "3"], "--mu sets semi-supervised training, which is off"),
        (["--fold", "3"], "--fold sets the labelled split, which is off"),
        (["--labels", "20", "--adv", "pgd"], "choose one"),
        (["--ssl", "fixmatch", "--labels", "20", "--mixup", "1"], "leave --mixup / --cutmix out"),
        (["--ema-buffers", "copy"], "add --ema DECAY"),
        (["--schedule", "fixmatch", "--milestones", "3"], "the fixmatch schedule has none"),
    ],
)
def test_bad_semi_supervised_options_are_one_sentence(capsys, argv, says):
    line = one_line_error(
        capsys, "train", "--dataset", "digits", "--model", "wrn-10-1", "--print-config", *argv
    )
    assert says in line


def test_more_labels_per_class_than_exist_is_one_sentence(tmp_path, capsys):
    line = one_line_error(
        capsys, "train", "--dataset", "digits", "--model", "wrn-10-1", "--labels", "1500", "--epochs", "1",
        "--out", str(tmp_path / "run"), "--device", "cpu",
    )  # fmt: skip
    assert "--labels 1500 asks for more labelled images than the 1437 training images of digits" in line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- on the digits, end to end

DIGITS = ["--dataset", "digits", "--labels", "20", "--batch-size", "16", "--lr", "0.03", "--schedule", "fixmatch",
          "--augment", "crop", "--normalization", "digits", "--device", "cpu", "--no-progress", "--workers", "0"]  # fmt: skip


def _last(run) -> dict:
    return metrics(run, timings=False)[-1]


@pytest.mark.parametrize(
    "slow", [pytest.param(False, id="short"), pytest.param(True, id="docs", marks=pytest.mark.slow)]
)
def test_fixmatch_beats_supervised_training_on_the_same_20_labels(tmp_path, slow):
    """2 labels per class of the digits: FixMatch on the unlabelled rest against the supervised baseline on the
    same labelled images, the same steps. Short: WRN-16-2, 400 steps, mu 4 (33.1% vs 13.6% error). WRN_SLOW=1:
    docs/semi-supervised.md's runs, 2000 steps, mu 7, EMA 0.99 (28.2% vs 3.3%, the median of the last 20)."""
    if slow:
        args = [*DIGITS, "--model", "wrn-16-2", "--epochs", "40", "--epoch-steps", "50", "--ema", "0.99",
                "--ema-buffers", "copy", "--no-decay-norm-and-bias"]  # fmt: skip
        semi = ["--ssl", "fixmatch", "--mu", "7"]
    else:
        args = [*DIGITS, "--model", "wrn-16-2", "--epochs", "16", "--epoch-steps", "25"]
        semi = ["--ssl", "fixmatch", "--mu", "4"]
    procs = {
        name: start_wrn("train", *args, *extra, "--out", str(tmp_path / name))
        for name, extra in (("supervised", []), ("fixmatch", semi))
    }
    outputs = {}
    for name, proc in procs.items():
        outputs[name], err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, err
    assert (
        "labelled: 20 images (fold 1)" in outputs["fixmatch"]
        and "fixmatch on every training image" in (outputs["fixmatch"])
    )
    assert "supervised on them alone" in outputs["supervised"]
    sup, fm = _last(tmp_path / "supervised"), _last(tmp_path / "fixmatch")
    key = "median20_test_error" if slow else "test_error"
    assert sup[key] > 20 and fm[key] < sup[key] - (20 if slow else 10), (sup[key], fm[key])
    assert fm["median20_test_error"] == pytest.approx(
        100
        - statistics.median(
            [r.get("ema_test_acc", r["test_acc"]) for r in metrics(tmp_path / "fixmatch")][-20:]
        )
    )
    config = yaml.safe_load((tmp_path / "fixmatch" / "config.yaml").read_text())
    assert config["ssl"]["labels"] == 20 and config["ssl"]["method"] == "fixmatch"


def test_a_fixmatch_preset_trains_its_own_network(tmp_path):
    """The preset's network (leaky ReLU, BN momentum 0.001 fixed by its name), its init and EMA with copied
    statistics, on the digits for 3 steps."""
    run = tmp_path / "run"
    proc = run_wrn(
        "train", "--preset", "cifar10-wrn-28-2-fixmatch-40", "--dataset", "digits", "--epochs", "1",
        "--epoch-steps", "3", "--batch-size", "8", "--mu", "2", "--workers", "0", "--device", "cpu",
        "--no-progress", "--out", run,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    model = json.loads((run / "model.json").read_text())
    assert model["config"]["name"] == "wrn-28-2-fixmatch" and model["metadata"]["weights"] == "ema"
    assert "median20_test_error" in model["metadata"]


# ------------------------------------------------------------------------------------------- the benchmarks


def test_bench_train_times_a_fixmatch_step_beside_the_plain_one(tmp_path, capsys):
    from conftest import wrn_here

    record = tmp_path / "bench.json"
    args = ["bench", "train", "--model", "wrn-10-1", "--device", "cpu", "--batch-size", "8", "--steps", "2",
            "--warmup", "1", "--num-samples", "64", "--ssl", "fixmatch", "--mu", "3", "--vs-plain", "--rounds", "2",
            "--json", str(record)]  # fmt: skip
    proc = wrn_here(capsys, *args)
    assert proc.returncode == 0, proc.stderr
    assert "ssl.method=fixmatch ssl.mu=3" in proc.stdout
    result = json.loads(record.read_text())
    assert result["settings"]["unlabelled_batch"] == 24
    assert len(result["ours"]["step_ms"]) == len(result["plain"]["step_ms"]) == 2
    assert result["cost_vs_plain"] == pytest.approx(result["ours"]["ms"] / result["plain"]["ms"])


def test_bench_data_times_the_strong_views(tmp_path, capsys):
    from conftest import wrn_here

    record = tmp_path / "data.json"
    args = ["bench", "data", "--dataset", "cifar10", "--data-dir", str(tmp_path / "absent"), "--device", "cpu",
            "--num-samples", "128", "--batch-size", "64", "--epochs", "1", "--workers", "0", "--strong-policy",
            "all", "--json", str(record)]  # fmt: skip
    proc = wrn_here(capsys, *args)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    rows = json.loads(record.read_text())["per_image"]
    assert [r["stage"] for r in rows] == [
        "none",
        "strong view: fixmatch-ra + Cutout on the device (weak and strong views)",
        "strong view: fixmatch-ra + Cutout in the workers (weak and strong views)",
        "strong view: randaugment + Cutout in the workers (weak and strong views)",
    ]
    assert all(r["us_per_image"] > 0 for r in rows[1:]) and "strong view: fixmatch-ra" in out
