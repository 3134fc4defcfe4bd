"""Attacks on pixels in [0, 1] against independent references: PGD against Madry et al.'s update written out
here, TRADES' inner maximisation against its code's loop, and AutoAttack against the exact robust accuracy of
a linear classifier; then ``wrn eval --attack`` through the real command line."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import one_line_error, wrn_here
from wrn.attacks import PixelModel, pgd, trades_attack
from wrn.train.fields import fraction
from wrn.train.robust_eval import AttackSpec, robust_flags


class _SmallNet(torch.nn.Module):
    def __init__(self, channels=3, classes=10):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 16, classes)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


def _net_and_data(seed=0, n=12):
    torch.manual_seed(seed)
    net = _SmallNet().eval()
    x = torch.rand(n, 3, 8, 8)
    y = torch.randint(0, 10, (n,))
    return net, x, y


def _madry_pgd(model, x, y, start, eps, alpha, steps):
    """Madry et al. (2018), eq. 2: x^{t+1} = Proj_{x+S}(x^t + alpha sgn(grad_x L(theta, x^t, y))), S the L-inf
    ball, the image kept in [0, 1]; x^0 = x + start."""
    x_adv = (x + start).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.clone().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        x_adv = x_adv.detach() + alpha * x_adv.grad.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


@pytest.mark.parametrize("eps", [8 / 255, 0.1])
def test_pgd_is_madry_update_from_the_same_start(eps):
    net, x, y = _net_and_data()
    start = (torch.rand_like(x) * 2 - 1) * eps
    start = torch.max(torch.min(start, 1 - x), -x)  # a start inside the box, as both begin
    ours = pgd(net, x, y, eps=eps, step_size=eps / 4, steps=7, start=start)
    want = _madry_pgd(net, x, y, start, eps, eps / 4, 7)
    assert torch.allclose(ours, want, atol=1e-6)
    assert (ours - x).abs().max() <= eps + 1e-6 and ours.min() >= 0 and ours.max() <= 1
    assert F.cross_entropy(net(ours), y) > F.cross_entropy(net(x), y)  # it did ascend


def test_pgd_l2_stays_in_its_ball_and_restarts_keep_the_worst():
    net, x, y = _net_and_data(1)
    gen = torch.Generator().manual_seed(0)
    one = pgd(net, x, y, eps=0.5, step_size=0.1, steps=5, norm="l2", generator=gen)
    assert ((one - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    # restarts: per image, the restart of highest loss, so never a lower loss than the first restart's
    gen1, gen2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    single = pgd(net, x, y, eps=8 / 255, step_size=2 / 255, steps=3, generator=gen1)
    several = pgd(net, x, y, eps=8 / 255, step_size=2 / 255, steps=3, restarts=4, generator=gen2)
    loss = lambda z: F.cross_entropy(net(z), y, reduction="none")  # noqa: E731
    assert (loss(several) >= loss(single) - 1e-6).all()
    assert (loss(several) > loss(single) + 1e-6).any()


def test_trades_attack_is_their_loop():
    """yaodongyu/TRADES trades.py, the L-inf branch, written out: KLDivLoss(size_average=False) of the log
    softmax at x_adv against the softmax at x, sign step, min/max projection, clamp."""
    net, x, y = _net_and_data(2)
    noise = 0.001 * torch.randn(x.shape)
    eps, step, steps = 0.031, 0.007, 10
    x_adv = x.detach() + noise
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = torch.nn.KLDivLoss(reduction="sum")(
                F.log_softmax(net(x_adv), dim=1), F.softmax(net(x), dim=1)
            )
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    ours = trades_attack(net, x, eps=eps, step_size=step, steps=steps, start=x + noise)
    assert torch.allclose(ours, x_adv, atol=1e-6)


def test_fraction_reads_papers_radii():
    assert fraction("8/255") == pytest.approx(8 / 255)
    assert fraction(" 0.5 / 255 ") == pytest.approx(0.5 / 255)
    assert fraction("0.031") == "0.031"  # (a plain number is left to the field's type)
    assert fraction("8/0") == "8/0" and fraction(0.1) == 0.1


def _exact_linf_robust(weight, bias, x, y, eps):
    """A linear classifier's exact robust accuracy under L-inf eps in the box [0, 1]: the margin of class y over
    each other class j is linear in the perturbation, so its minimum over the box-clipped ball is taken at a
    vertex, coordinate by coordinate; an image is robust iff every such minimum stays positive."""
    flat = x.flatten(1).double()
    w, b = weight.double(), bias.double()
    lo, hi = torch.clamp(-flat, min=-eps), torch.clamp(1 - flat, max=eps)
    robust, margins = [], []
    for i in range(len(y)):
        d = w[y[i]] - w  # (classes, features)
        worst = torch.where(d > 0, d * lo[i], d * hi[i]).sum(1)
        m = d @ flat[i] + (b[y[i]] - b) + worst
        m[y[i]] = float("inf")
        robust.append(bool((m > 0).all()))
        margins.append(m.min().item())
    return torch.tensor(robust), torch.tensor(margins)


def test_autoattack_finds_the_exact_robust_accuracy_of_a_linear_classifier():
    pytest.importorskip("pyautoattack")
    torch.manual_seed(0)
    linear = torch.nn.Linear(3 * 4 * 4, 10)
    model = torch.nn.Sequential(torch.nn.Flatten(), linear).eval()
    x = torch.rand(400, 3, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
        y[:40] = (y[:40] + 1) % 10  # a tenth misclassified: neither attacked nor robust
    eps = 0.05
    exact, margins = _exact_linf_robust(linear.weight.detach(), linear.bias.detach(), x, y, eps)
    assert 0.2 < exact.float().mean() < 0.8  # a radius where the answer is neither trivial
    clear = (margins.abs() > 1e-4) | ~torch.isfinite(margins)  # no image on the knife's edge
    found = robust_flags(model, x, y, AttackSpec("autoattack", eps), batch_size=200)
    assert torch.equal(found[clear], exact[clear]) and not found[:40].any()
    # PGD (an upper bound on the robust accuracy as well) finds no point that is not robust
    pgd_found = robust_flags(model, x, y, AttackSpec("pgd", eps, steps=20))
    assert (pgd_found >= exact).all() or (pgd_found[clear] >= exact[clear]).all()


def test_pixel_model_differentiates_through_the_normalisation():
    net, x, y = _net_and_data(4)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    wrapped = PixelModel(net, mean, std).eval()
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(wrapped(x), net(normalised), atol=1e-6)
    adv = pgd(wrapped, x, y, eps=8 / 255, step_size=2 / 255, steps=2, start=torch.zeros_like(x))
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6  # the radius is on pixels, not on normalised values


# ------------------------------------------------------------------------------------------- the command line


def test_eval_attack_pgd_on_a_run_records_what_the_api_finds(run, tmp_path, capsys):
    import wrn
    from wrn.data import make_loaders

    out = tmp_path / "pgd.json"
    args = [
        "eval",
        str(run),
        "--attack",
        "pgd",
        "--eps",
        "32/255",
        "--steps",
        "5",
        "--n",
        "100",
        "--out",
        str(out),
    ]
    proc = wrn_here(capsys, *args)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["eps"] == "32/255" and record["threat_model"] == "Linf" and record["n_points"] == 100
    assert record["settings"]["steps"] == 5 and record["settings"]["step_size"] == pytest.approx(
        2.5 * 32 / 255 / 5
    )
    # the same figure from the API: the digits as pixels, the run's normalisation inside the forward
    model = wrn.load_model(run).eval()
    _, test, info = make_loaders(
        "digits", "unused", batch_size=100, normalization="pixels", device=torch.device("cpu")
    )
    x, y = next(iter(test))
    mean, std = 77.85 / 255, 95.85 / 255  # the digits' constants (wrn.data.registry)
    pixel = PixelModel(model, [mean], [std]).eval()
    flags = robust_flags(pixel, x, y, AttackSpec("pgd", 32 / 255, steps=5))
    with torch.no_grad():
        clean = (pixel(x).argmax(1) == y).double().mean().item() * 100
    assert (
        record["clean_acc"] == f"{clean:.2f}"
        and record["pgd_acc"] == f"{100 * flags.double().mean().item():.2f}"
    )
    assert float(record["pgd_acc"]) < float(record["clean_acc"])
    assert f"robust accuracy {record['pgd_acc']}%" in proc.stdout


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--attack", "pgd", "--eps", "-1"], "--eps -1.0 is not a radius"),
        (["--attack", "pgd", "--eps", "abc"], "--eps 'abc' is not a number"),
        (["--attack", "pgd"], "--attack needs the radius"),
        (["--eps", "8/255"], "--eps set an attack; add --attack"),
        (["--attack", "fgsm", "--eps", "8/255"], "--attack 'fgsm' is not an attack here"),
        (["--attack", "pgd", "--eps", "8/255", "--norm", "l3"], "--norm 'l3' is not a norm"),
        (["--attack", "pgd", "--eps", "8/255", "--steps", "0"], "--steps must be an integer from 1"),
        (["--attack", "pgd", "--eps", "8/255", "--n", "0"], "--n must be a positive number"),
        (["--attack", "pgd", "--eps", "8/255", "--n", "100000"], "--n 100000 asks for more images"),
        (["--attack", "autoattack", "--eps", "8/255", "--steps", "5"], "AutoAttack's standard version fixes"),
        (["--attack", "pgd", "--eps", "8/255", "--amp", "bf16"], "leave them out with --attack"),
    ],
)
def test_bad_attack_options_get_one_sentence(run, capsys, extra, words):
    line = one_line_error(capsys, "eval", str(run), *extra)
    assert words in line


def test_attack_record_in_a_read_only_run_is_refused_before_the_attack(copy, tmp_path, mounts, capsys):
    """The record goes into the run directory by default: one that cannot be written is named before hours of
    attack, and the run is left as it was."""
    from conftest import read_only, snapshot

    ro = read_only(tmp_path, mounts, copy)
    before = snapshot(ro)
    line = one_line_error(capsys, "eval", str(ro), "--attack", "pgd", "--eps", "8/255")
    assert "read-only file system" in line and "robust-pgd-linf-8_255.json" in line
    assert snapshot(ro) == before


def test_eval_attack_on_a_converted_robustbench_checkpoint(tmp_path, capsys):
    """A RobustBench-format checkpoint (a WRN with its CIFAR-10 normalisation inside) converted by `wrn
    convert robustness` is attacked on pixels as it is (its recorded normalisation is `pixels`): the CLI's
    figures equal the API's on the same images, with the model called directly on pixels."""
    import torch

    import wrn
    from test_models_convert_formats import _robustness_file
    from wrn.bench.cifar_files import write_random_cifar10
    from wrn.data import load_arrays

    state, _ = _robustness_file(3)
    torch.save(state, tmp_path / "at.pt")
    out = tmp_path / "converted"
    proc = wrn_here(
        capsys, "convert", "robustness", str(tmp_path / "at.pt"), str(out), "--dataset", "cifar10"
    )
    assert proc.returncode == 0, proc.stderr
    write_random_cifar10(tmp_path / "data", train=10, test=40, seed=1)
    args = ["eval", str(out), "--attack", "pgd", "--eps", "8/255", "--steps", "3", "--data-dir", str(tmp_path / "data"),
            "--no-verify", "--json", "--no-progress"]  # fmt: skip
    proc = wrn_here(capsys, *args)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    model = wrn.load_model(out).eval()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (md5 checks off)
        x, y = load_arrays("cifar10", tmp_path / "data", "test", verify=False)
    x = x.float() / 255
    flags = robust_flags(model, x, y, AttackSpec("pgd", 8 / 255, steps=3))
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).double().mean().item() * 100
    assert got["n"] == 40 and got["clean_acc"] == pytest.approx(clean)
    assert got["robust_acc"] == pytest.approx(100 * flags.double().mean().item())
