"""``optim.replica_batch``: the batch as google-research/sam trains it on several accelerators, in one process.

The reference is their ``train_step`` (sam_jax/training_utils/flax_training.py) written out by hand for k
devices: each takes its slice of the batch, its own BN statistics (a running state per device, evolving on its
own), its own gradient and, with SAM, its own ascent (``sync_perturbations`` off), the same dropout key for both
passes; the step takes the mean of the k gradients (``jax.lax.pmean``), then clipping and SGD; their evaluation
averages the devices' running statistics (``eval_step``: ``jax.lax.pmean(state, 'batch')``).
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import one_line_error
from test_train_optim_modern import (
    CPU,
    _assert_close,
    _batches,
    _cfg,
    _decays,
    _loss_grads,
    _Net,
    _norm,
    _ours,
    _sgd_nesterov,
)
from wrn.errors import ConfigError
from wrn.train.build import build_trainables
from wrn.train.objectives.base import Batch
from wrn.train.replicas import slices


def _device_gradient(net, params, state, x, y, decays, rho):
    """One device's gradient at ``params`` (its BN running ``state`` moved in place by the first pass): SAM's
    from its own ascent when ``rho`` > 0, with one dropout mask for both passes (the RNG rewound)."""
    rng = torch.get_rng_state()
    g = _loss_grads(net, params, state, x, y, decays)
    if not rho:
        return g
    at = {k: params[k] + rho * g[k] / _norm(g.values()) for k in params}
    torch.set_rng_state(rng)
    return _loss_grads(net, at, {k: v.clone() for k, v in state.items()}, x, y, decays)


def _their_steps(model, cfg, batches, seeds, *, devices: int, rho: float, shared_ascent: bool = False):
    """Their train_step on ``devices`` devices; returns the weights and the mean of the devices' BN states.
    ``shared_ascent``: one ascent from the mean gradient (their ``sync_perturbations``), for contrast."""
    net = copy.deepcopy(model).train()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    first = {k: v.detach().clone() for k, v in net.named_buffers()}
    states = [{k: v.clone() for k, v in first.items()} for _ in range(devices)]
    decays, momentum = _decays(cfg, params), {}
    for (x, y), seed in zip(batches, seeds, strict=True):
        torch.manual_seed(seed)
        parts = list(zip(x.chunk(devices), y.chunk(devices), states, strict=True))
        if shared_ascent:
            gs = [_loss_grads(net, params, dict(s), px, py, decays) for px, py, s in parts]
            g = {k: sum(gi[k] for gi in gs) / devices for k in params}
            at = {k: params[k] + rho * g[k] / _norm(g.values()) for k in params}
            grads = [_loss_grads(net, at, s, px, py, decays) for px, py, s in parts]
        else:
            grads = [_device_gradient(net, params, s, px, py, decays, rho) for px, py, s in parts]
        mean = {k: sum(gi[k] for gi in grads) / devices for k in params}  # pmean
        _sgd_nesterov(params, momentum, mean, cfg.optim.lr, cfg.optim.momentum)
    floats = [k for k, v in first.items() if v.is_floating_point()]
    buffers = {k: sum(s[k].double() for s in states) / devices for k in floats}  # their eval's pmean
    return params, buffers


def _batches16(n: int):
    """Batches of 16: slices of 4 and 8 (BN over 2 images is ill-conditioned: float rounding grows there)."""
    halves = _batches(2 * n, 3)
    return [
        (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
        for a, b in zip(halves[::2], halves[1::2], strict=True)
    ]


@pytest.mark.parametrize("rho", [0.05, 0.0], ids=["sam", "sgd"])
@pytest.mark.parametrize("size", [4, 8])
def test_slices_equal_their_train_step_on_that_many_devices(rho, size):
    cfg = _cfg(**{"optim.sam_rho": rho, "optim.replica_batch": size})
    torch.manual_seed(0)
    model = _Net(dropout=0.5)
    start = copy.deepcopy(model)
    batches, seeds = _batches16(3), [11, 12, 13]
    want, want_buffers = _their_steps(start, cfg, batches, seeds, devices=16 // size, rho=rho)
    step = _ours(model, cfg, batches, seeds)
    assert step.replica_batch == size
    _assert_close(dict(model.named_parameters()), want)
    buffers = dict(model.named_buffers())
    _assert_close({k: v for k, v in buffers.items() if v.is_floating_point()}, want_buffers)
    assert int(buffers["bn.num_batches_tracked"]) == 3  # one BN update per step, not one per slice
    whole, _ = _their_steps(start, cfg, batches, seeds, devices=1, rho=rho)
    assert max((whole[k] - want[k]).abs().max().item() for k in want) > 1e-4  # not the whole batch's step


def test_each_slice_takes_its_own_ascent_not_a_shared_one():
    cfg = _cfg(**{"optim.sam_rho": 0.5, "optim.replica_batch": 4})
    torch.manual_seed(0)
    model = _Net()
    start = copy.deepcopy(model)
    batches, seeds = _batches(2), [0, 1]
    _ours(model, cfg, batches, seeds)
    shared, _ = _their_steps(start, cfg, batches, seeds, devices=2, rho=0.5, shared_ascent=True)
    ours = dict(model.named_parameters())
    assert max((shared[k] - ours[k]).abs().max().item() for k in shared) > 1e-5


@pytest.mark.parametrize("rho", [0.05, 0.0], ids=["sam", "sgd"])
def test_slices_of_the_whole_batch_are_the_step_without_them_bit_for_bit(rho):
    torch.manual_seed(0)
    model = _Net(dropout=0.5)
    twin = copy.deepcopy(model)
    batches, seeds = _batches(3), [4, 5, 6]
    _ours(model, _cfg(**{"optim.sam_rho": rho}), batches, seeds)
    _ours(twin, _cfg(**{"optim.sam_rho": rho, "optim.replica_batch": 8}), batches, seeds)
    for (k, v), w in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_the_step_reports_the_mean_loss_and_every_images_logits():
    torch.manual_seed(0)
    model = _Net()
    step = build_trainables(_cfg(**{"optim.replica_batch": 2, "optim.lr": 1e-12}), model, CPU).step
    (x, y), = _batches(1)  # fmt: skip
    reference = copy.deepcopy(model).train()
    logits = torch.cat([reference(part) for part in x.split(2)])
    loss = torch.stack(
        [torch.nn.functional.cross_entropy(o, t) for o, t in zip(logits.split(2), y.split(2), strict=True)]
    )
    got_loss, got_logits = step(x, y)
    assert torch.allclose(got_logits, logits, atol=1e-6) and torch.allclose(got_loss, loss.mean(), atol=1e-6)


def test_a_batch_is_cut_along_its_first_dimension():
    batch = Batch(torch.arange(12).view(6, 2), torch.arange(6) * 10, torch.arange(6))
    parts = slices(batch, 2)
    assert [p.labels.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert torch.equal(parts[1].images, torch.tensor([[4, 5], [6, 7]])) and parts[2].targets.tolist() == [
        40,
        50,
    ]


def test_a_slice_that_does_not_divide_the_batch_is_one_sentence(capsys):
    err = one_line_error(capsys, "train", "--preset", "demo", "--replica-batch", "48", "--print-config")
    assert "--replica-batch 48 does not divide the batch of 64 into equal slices" in err
    with pytest.raises(ConfigError, match="does not divide each of the 4 processes' 16 images"):
        from wrn.train import distributed as D

        build_trainables(_cfg(**{"optim.replica_batch": 32}), _Net(), CPU, D.DistInfo(rank=0, world_size=4))


REPLICA_DDP_DRIVER = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_train_optim_modern import _Net, _cfg
from test_train_replicas import _batches16
from wrn.train import distributed as D
from wrn.train.build import build_trainables

info = D.setup("cpu")
torch.manual_seed(0)
model = _Net()
cfg = _cfg(**{"optim.sam_rho": float(sys.argv[3]), "optim.replica_batch": 4, "optim.batch_size": 16})
step = build_trainables(cfg, model, torch.device("cpu"), info).step
for x, y in _batches16(2):
    step(x[info.rank * 8:(info.rank + 1) * 8], y[info.rank * 8:(info.rank + 1) * 8])
torch.save(dict(model.named_parameters()), f"{sys.argv[1]}/rank{info.rank}.pt")
del step  # (its DDP wrapper goes before the group)
D.finish(info)
"""


@pytest.mark.parametrize("rho", [0.05, 0.0], ids=["sam", "sgd"])
def test_slices_under_ddp_are_their_devices_across_the_processes(rho, tmp_path):
    """Two processes of 8 images, slices of 4: their train_step on 4 devices (no dropout: each process has a
    dropout stream of its own)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "driver.py"
    script.write_text(REPLICA_DDP_DRIVER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*torchrun, str(script), str(tmp_path), str(Path(__file__).parent), str(rho)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    cfg = _cfg(**{"optim.sam_rho": rho, "optim.replica_batch": 4, "optim.batch_size": 16})
    torch.manual_seed(0)
    want, _ = _their_steps(_Net(), cfg, _batches16(2), [0, 0], devices=4, rho=rho)
    _assert_close(rank0, want)
