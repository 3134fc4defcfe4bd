"""The CIFAR-100 twins of the robust presets: AT-AWP as csdongxian/AWP's ``AT_AWP/train_cifar100.py`` trains it
(rotation, the best epoch chosen on the test set under PGD-20: ``--adv-holdout-rule awp``), TRADES-AWP
(``trades_AWP/train_trades_cifar.py --data CIFAR100``) and DM-Improves-AT's README command on ``cifar100s``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import printed_config, wrn_here


def _their_attack_pgd(model, X, y, epsilon, alpha, attack_iters, gen):
    """AT_AWP/train_cifar100.py lines 55-110, ``attack_pgd`` with one restart, l_inf, no early stop and no mixup
    (the model takes pixels: their ``normalize`` is inside it here); the start drawn from ``gen``."""
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(X)
    delta = torch.zeros_like(X)
    delta.uniform_(-epsilon, epsilon, generator=gen)
    delta = torch.max(torch.min(delta, 1 - X), 0 - X)
    delta.requires_grad = True
    for _ in range(attack_iters):
        output = model(X + delta)
        loss = F.cross_entropy(output, y)
        loss.backward()
        grad = delta.grad.detach()
        d = torch.clamp(delta + alpha * torch.sign(grad), min=-epsilon, max=epsilon)
        d = torch.max(torch.min(d, 1 - X), 0 - X)
        delta.data = d
        delta.grad.zero_()
    all_loss = F.cross_entropy(model(X + delta), y, reduction="none")
    max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
    return max_delta


def test_the_awp_rule_attacks_the_test_images_as_their_test_loop_and_keeps_the_first_best():
    """Lines 325-338: ``model.eval()``, ``attack_pgd(..., args.attack_iters_test=20, args.restarts=1)`` on
    each test batch, the robust accuracy of ``model(normalize(clamp(X + delta, 0, 1)))``; 364: a new best only
    when strictly higher."""
    import wrn
    from wrn.seeds import stream_seed
    from wrn.train.compose import build_config
    from wrn.train.distributed import DistInfo
    from wrn.train.holdout import HoldoutSelection
    from wrn.train.resolve import resolve

    torch.manual_seed(0)
    model = wrn.create_model("wrn-10-1", num_classes=10).eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        x = torch.rand(8, 3, 32, 32, generator=g)
        with torch.no_grad():  # labelled as the network sees them: the attack has something to take
            batches.append((x, model(x).argmax(1)))
    cfg = resolve(
        build_config(None, None, {"model.name": "wrn-10-1", "dataset.name": "cifar10", "dataset.normalization":
                                  "pixels", "adv.method": "pgd", "adv.eps": "1/255", "adv.step_size": "0.25/255",
                                  "adv.steps": 3, "adv.holdout": 16, "adv.holdout_rule": "awp",
                                  "run.device": "cpu", "run.seed": 4}),
        cuda_available=False,
    )  # fmt: skip
    selection = HoldoutSelection(batches, cfg, torch.device("cpu"), DistInfo())
    assert selection.steps == 20  # --attack-iters-test, whatever the training attack's steps
    model.train()  # (the selection puts it in eval mode, then back)
    found = selection.evaluate(model, epoch=2)
    assert model.training
    model.eval()
    gen = torch.Generator().manual_seed(stream_seed(4, "holdout", 2, 0))
    correct = clean = 0
    for x, y in batches:
        delta = _their_attack_pgd(model, x, y, 1 / 255, 0.25 / 255, 20, gen)
        with torch.no_grad():
            correct += int((model(torch.clamp(x + delta, 0, 1)).argmax(1) == y).sum())
            clean += int((model(x).argmax(1) == y).sum())
    assert (found["holdout_acc"], found["holdout_robust_acc"]) == (100 * clean / 16, 100 * correct / 16)
    assert clean == 16 and 0 < correct < 16
    assert selection.improved({"holdout_robust_acc": 30.0}, 1)
    assert not selection.improved({"holdout_robust_acc": 30.0}, 2) and selection.best_epoch == 1  # ">"
    assert "TEST" in selection.describe()["selected_by"] and selection.images() == "the first 16 test images"


def test_the_awp_rule_holds_nothing_out_and_takes_the_first_test_images():
    from wrn.data import make_loaders

    train, test, _, held = make_loaders("digits", None, batch_size=64, eval_batch_size=50, holdout=120,
                                        holdout_rule="awp")  # fmt: skip
    plain = make_loaders("digits", None, batch_size=64, eval_batch_size=50)[0]
    assert train.num_samples == plain.num_samples == 1437  # every training image still trains
    first = [(x, y) for x, y in test]
    images, labels = torch.cat([x for x, _ in first])[:120], torch.cat([y for _, y in first])[:120]
    assert torch.equal(torch.cat([x for x, _ in held]), images)
    assert torch.equal(torch.cat([y for _, y in held]), labels)
    with pytest.raises(Exception, match="at most 360"):
        make_loaders("digits", None, batch_size=64, holdout=361, holdout_rule="awp")


# AT_AWP/train_cifar100.py (csdongxian/AWP at a7acf5d) with --model WideResNet, as --print-config shows it:
# docs/training.md's AT-AWP table gives each with its line.
AT_AWP = {
    "model": {"name": "wrn-34-10", "init": "xternalz", "dropout": 0.0},  # 203-204
    "dataset": {"name": "cifar100", "augment": "flip-crop", "crop_padding": "zeros", "rotate": 15.0,
                "normalization": "cifar100"},  # 167-172, 21-28
    "optim": {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "decay_norm_and_bias": True,
              "batch_size": 128},  # 113-139, 209-223
    "schedule": {"name": "multistep", "epochs": 200, "milestones": [101, 151], "gamma": 0.1},  # 235-241, 269
    "adv": {"method": "pgd", "eps": 8 / 255, "steps": 10, "step_size": 2 / 255, "awp": 0.01, "awp_warmup": 0,
            "holdout": 10000, "holdout_rule": "awp"},  # 113-139, 224, 318-372
}  # fmt: skip


def test_the_at_awp_preset_is_their_cifar100_script(capsys):
    printed = printed_config(capsys, "cifar100-wrn-34-10-at-awp")
    for section, values in AT_AWP.items():
        for key, value in values.items():
            got = printed[section][key]
            assert got == (pytest.approx(value) if isinstance(value, float) else value), (section, key)
    assert "60.38" in printed["description"] and "test set" in printed["description"]


@pytest.mark.parametrize(
    "twin, of, differences",
    [
        ("cifar100-wrn-34-10-trades-awp", "cifar10-wrn-34-10-trades-awp", {("dataset", "name"): "cifar100"}),
        ("cifar100-wrn-28-10-dm-at", "cifar10-wrn-28-10-dm-at",
         {("dataset", "name"): "cifar100", ("dataset", "rotate"): 15.0,
          ("dataset", "aux_data"): "edm_data/cifar100/1m.npz"}),
    ],
)  # fmt: skip
def test_the_other_twins_differ_from_their_cifar10_presets_only_where_the_code_does(
    capsys, twin, of, differences
):
    a, b = printed_config(capsys, of), printed_config(capsys, twin)
    changed = {
        (section, key): b[section][key]
        for section in a
        if isinstance(a[section], dict)
        for key in a[section]
        if a[section][key] != b[section][key]
    }
    assert changed == differences


def test_the_at_awp_preset_trains_scaled_down_on_the_digits(capsys, tmp_path):
    """End to end on the digits (WRN-10-1, 2 epochs): rotated batches, AWP, and the best epoch picked on the
    first 100 test images, kept in RUN/best/ and named in model.json as chosen on the test set."""
    from conftest import metrics

    out = tmp_path / "run"
    proc = wrn_here(capsys, "train", "--preset", "cifar100-wrn-34-10-at-awp", "--dataset", "digits",
                    "--augment", "flip-crop", "--model", "wrn-10-1", "--epochs", "2", "--adv-steps", "2",
                    "--adv-holdout", "100", "--device", "cpu", "--no-progress", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "AWP gamma 0.01" in proc.stdout and "best epoch on the first 100 test images" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("model "))
    assert "rotation up to 15 degrees" in header
    assert "best epoch kept by robust accuracy on the first 100 test images" in header
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["dataset"]["rotate"] == 15.0 and cfg["adv"]["holdout_rule"] == "awp"
    records = metrics(out)
    assert len(records) == 2 and all("holdout_robust_acc" in r for r in records)
    best = json.loads((out / "model.json").read_text())["metadata"]["best"]
    assert best["path"] == "best" and "TEST" in best["selected_by"] and (out / "best" / "model.json").exists()
