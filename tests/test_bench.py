"""``wrn bench``: well-formed figures, the baseline really taking its own path, Figure 4's files, the loader."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

from conftest import WRN_ENV as ENV
from conftest import forward_macs
from conftest import run_wrn as wrn_cli
from wrn.bench import figure4
from wrn.bench import train as bench_train
from wrn.bench.cifar_files import write_random_cifar10
from wrn.cli import main as wrn_main

TINY = "wrn-16-1"


class ScriptedClock:
    """Stands in for the bench's clock: time moves only when a network runs forward, by the scripted seconds.

    The step times the bench must report are then known before it runs, independently of its code.
    """

    def __init__(self, seconds: list[float]):
        self.now = 0.0
        self.script = list(seconds)

    def perf_counter(self) -> float:
        return self.now

    process_time = staticmethod(time.process_time)
    monotonic = staticmethod(time.monotonic)

    def advance(self, *_) -> None:
        self.now += self.script.pop(0)


def scripted_steps(monkeypatch, seconds: list[float]) -> ScriptedClock:
    """The bench's clock replaced by one that moves only when a network it builds runs forward, by
    ``seconds`` in turn."""
    import wrn.bench.common as common

    clock = ScriptedClock(seconds)
    monkeypatch.setattr(common, "time", clock)
    real_build = bench_train.build_model

    def build_model(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(clock.advance)
        return model

    monkeypatch.setattr(bench_train, "build_model", build_model)
    return clock


def check_side(side: dict, steps: list[float], expected: dict, flops: float) -> None:
    """``side`` against figures worked out by hand from the scripted step times ``steps`` (ms)."""
    assert side["step_ms"] == pytest.approx(steps, rel=1e-9)
    for key, value in expected.items():
        assert side[key] == pytest.approx(value, rel=1e-9), key
    assert side["steps"] == len(steps)
    assert side["tflops"] == pytest.approx(expected["images_per_s"] * flops / 1e12, rel=1e-9)
    assert isinstance(side["peak_memory_bytes"], int) and side["peak_memory_bytes"] > 0
    assert 0 < side["loss"] < 20  # a cross-entropy over 10 classes of a freshly initialised network


def test_bench_train_cli_prints_and_writes_the_figures_of_the_steps_it_timed(tmp_path, monkeypatch, capsys):

    # Forward passes, in order: ours 1 warm-up + 3 timed, then the baseline's 1 + 3 (seconds each).
    clock = scripted_steps(monkeypatch, [0.5, 0.030, 0.010, 0.020, 0.7, 0.040, 0.080, 0.050])
    out = tmp_path / "bench.json"
    rc = wrn_main([
        "bench", "train", "--model", TINY, "--batch-size", "8", "--steps", "3", "--warmup", "1",
        "--device", "cpu", "--num-samples", "64", "--baseline", "--baseline-workers", "1", "--json", str(out),
    ])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    assert clock.script == []  # every scripted forward pass happened, and no other
    result = json.loads(out.read_text())
    assert result["format"] == "wrn-bench-train" and result["version"] == 1
    m = result["machine"]
    assert m["device"] == "cpu" and m["cuda"] is None and m["torch"] == torch.__version__
    assert m["threads"] == torch.get_num_threads() and m["device_name"]
    s = result["settings"]
    # The defaults `wrn train` resolves on a CPU: fp32, channels_last, eager.
    assert (s["amp"], s["channels_last"], s["compile"]) == ("off", True, False)
    assert (s["batch_size"], s["steps"], s["warmup"], s["image_size"]) == (8, 3, 1, 32)
    flops = 6 * forward_macs(TINY)
    assert result["model"]["train_flops_per_image"] == flops
    assert result["model"]["params"] == sum(
        p.numel() for p in __import__("wrn").create_model(TINY).parameters()
    )
    # By hand: ours 30, 10, 20 ms -> median 20, 8 images / 0.020 s = 400/s; the baseline's median 50 -> 160/s.
    ours = {"ms": 20.0, "ms_min": 10.0, "ms_max": 30.0, "ms_mean": 20.0, "images_per_s": 400.0}
    base = {"ms": 50.0, "ms_min": 40.0, "ms_max": 80.0, "ms_mean": 170 / 3, "images_per_s": 160.0}
    check_side(result["ours"], [30.0, 10.0, 20.0], ours, flops)
    check_side(result["baseline"], [40.0, 80.0, 50.0], base, flops)
    assert result["speedup"] == pytest.approx(2.5, rel=1e-9)
    loader = result["baseline"]["loader"]
    assert loader["transforms"] == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert loader["batches"] == 4 and loader["images"] == 32  # warm-up + timed steps, all from the DataLoader

    # The printed table says the same figures.
    rows = {
        m.group(1): m.groups()[1:]
        for m in re.finditer(
            r"^(ours|baseline)\s+([\d.]+)\s+([\d.]+) - ([\d.]+)\s+([\d,.]+)\s+([\d.]+)", stdout, re.M
        )
    }
    assert rows["ours"][:4] == ("20.0", "10.0", "30.0", "400.0")
    assert rows["baseline"][:4] == ("50.0", "40.0", "80.0", "160.0")
    assert "torch " + torch.__version__ in stdout and "peak memory" in stdout
    # 3 timed steps, and spreads of 3x and 2x: both sides are called unreliable, with the reasons, and the
    # ratio of the two is withheld (the JSON keeps it)
    assert "ours / baseline: withheld: the timings of ours and baseline are unreliable (above)" in stdout
    assert "2.50x" not in stdout
    assert stdout.count("UNRELIABLE (") == 2
    assert "UNRELIABLE (ours): only 3 timed steps (give --steps 5 or more)" in stdout
    assert "its steps took 10.0 to 30.0 ms, 3.0x apart (more than 1.5x" in stdout
    assert "its steps took 40.0 to 80.0 ms, 2.0x apart" in stdout
    # Progress on stderr: which side, which phase, which step.
    for line in ("ours wrn-16-1: warm-up step 1/1", "ours wrn-16-1: timed step 1/3", "ours wrn-16-1: timed step 3/3",
                 "baseline wrn-16-1: timed step 3/3"):  # fmt: skip
        assert f"  {line}\n" in stderr, stderr


def test_the_ratio_of_steady_timings_is_printed(tmp_path, monkeypatch, capsys):

    # ours 1 warm-up + 5 steady timed steps of 20 ms, then the baseline's 1 + 5 of 50 ms: 2.5x the images/s
    clock = scripted_steps(monkeypatch, [0.5, *[0.020] * 5, 0.7, *[0.050] * 5])
    rc = wrn_main([
        "bench", "train", "--model", TINY, "--batch-size", "8", "--steps", "5", "--warmup", "1",
        "--device", "cpu", "--num-samples", "64", "--baseline", "--baseline-workers", "0",
    ])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert rc == 0 and clock.script == [], stderr
    assert "UNRELIABLE" not in stdout and "ours / baseline: 2.50x the images/s" in stdout


def test_steady_timings_are_not_called_unreliable():
    from wrn.bench.common import readable, unreliable

    assert unreliable(10.0, 15.0, 5) is None  # 1.5x is the limit, 5 steps the least
    assert "1.6x apart" in unreliable(10.0, 16.0, 20)
    assert unreliable(10.0, 11.0, 4) == "only 4 timed steps (give --steps 5 or more)"
    # Small figures keep their digits; large ones lose the decimals they do not need.
    assert [readable(v) for v in (0.04567, 0.3, 4.567, 45.67, 456.7, 45678.9)] == [
        "0.0457", "0.3", "4.57", "45.7", "457", "45,679",
    ]  # fmt: skip


def test_baseline_runs_the_plain_path_and_ours_the_loops(monkeypatch):
    """Count the calls: the baseline goes through PIL, the four transforms and a DataLoader, in fp32 NCHW
    without autocast; ours goes through DeviceLoader and TrainStep (here with bf16 and channels_last)."""
    import PIL.Image
    import torchvision.transforms as T

    import wrn.bench.train as bt
    from wrn.data import DeviceLoader
    from wrn.train.step import TrainStep

    calls: Counter = Counter()
    seen: dict[str, list] = {"ours": [], "baseline": []}

    def count(owner, name, label):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[label] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    count(PIL.Image, "fromarray", "pil")
    for cls in (T.RandomCrop, T.RandomHorizontalFlip, T.Normalize):
        count(cls, "forward", cls.__name__)
    count(T.ToTensor, "__call__", "ToTensor")
    count(torch.utils.data.DataLoader, "__iter__", "dataloader_epochs")
    count(DeviceLoader, "_batch", "device_batches")
    count(TrainStep, "__call__", "train_steps")

    original_build = bt.build_model

    def build_and_watch(name, num_classes, device, seed):
        model = original_build(name, num_classes, device, seed)
        side = "ours" if not seen["ours"] else "baseline"

        def hook(module, inputs):
            x = inputs[0]
            seen[side].append(
                (x.dtype, torch.is_autocast_enabled("cpu"), x.is_contiguous(), module.conv1.weight.dtype)
            )

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(bt, "build_model", build_and_watch)
    batch, warmup, steps = 4, 1, 2
    result = bt.run(
        TINY, batch_size=batch, steps=steps, warmup=warmup, device="cpu", amp="bf16", channels_last=True,
        baseline=True, baseline_workers=0, num_samples=32,
    )  # fmt: skip
    n = warmup + steps
    # Every image of every baseline batch went through PIL and the four host-side transforms, one by one.
    for label in ("pil", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"):
        assert calls[label] == n * batch, label
    assert calls["dataloader_epochs"] == 1
    # Ours: one DeviceLoader batch and one TrainStep per step; the baseline used neither.
    assert calls["device_batches"] == n and calls["train_steps"] == n
    assert len(seen["ours"]) == n and len(seen["baseline"]) == n
    assert all(
        s == (torch.float32, True, False, torch.float32) for s in seen["ours"]
    )  # autocast, channels_last
    assert all(s == (torch.float32, False, True, torch.float32) for s in seen["baseline"])  # fp32, NCHW
    assert result["settings"]["amp"] == "bf16" and result["settings"]["channels_last"] is True
    assert result["baseline"]["amp"] == "off" and result["baseline"]["channels_last"] is False
    assert result["baseline"]["loader"]["images"] == n * batch


def test_rounds_alternate_the_sides():
    order = []

    class Fake(bench_train.Runner):
        def __init__(self, name):
            super().__init__(None, None, torch.device("cpu"))
            self.name = name
            self._loss = torch.tensor(1.0)

        def warm(self, k):
            order.append((self.name, "warm", k))

        def timed(self, k, total=None):
            order.append((self.name, "timed", k))
            self.step_ms += [1.0] * k

    makers = [lambda: Fake("a"), lambda: Fake("b")]
    sides = bench_train.measure_sides(makers, warmup=2, steps=5, rounds=2)
    assert order == [
        ("a", "warm", 2), ("b", "warm", 2), ("a", "timed", 3), ("b", "timed", 3), ("a", "timed", 2), ("b", "timed", 2),
    ]  # fmt: skip
    assert [len(s["step_ms"]) for s in sides] == [5, 5]
    assert bench_train.chunks(5, 2) == [3, 2] and bench_train.chunks(2, 4) == [1, 1]


def test_figure4_cli_writes_json_and_png_in_the_agreed_format(tmp_path):
    models = "wrn-40-4,preact-resnet-164"  # the two smallest, given out of order
    r = wrn_cli(
        "bench", "figure4", "--models", models, "--batch-size", "2", "--steps", "1", "--warmup", "0",
        "--device", "cpu", "--num-samples", "8", "--out", str(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "figure4.json").read_text())
    assert set(result) == {"format", "version", "machine", "settings", "models", "ratios"}
    assert (result["format"], result["version"]) == ("wrn-bench-figure4", 1)
    assert set(result["machine"]) == {"device", "device_name", "torch", "cuda", "threads"}
    assert result["machine"]["device"] == "cpu" and result["machine"]["cuda"] is None
    s = result["settings"]
    assert {k: s[k] for k in ("batch_size", "steps", "warmup", "amp", "channels_last", "compile")} == {
        "batch_size": 2, "steps": 1, "warmup": 0, "amp": "off", "channels_last": True, "compile": False,
    }  # fmt: skip
    assert [e["name"] for e in result["models"]] == ["preact-resnet-164", "wrn-40-4"]  # the paper's order
    import wrn

    for e in result["models"]:
        assert set(e) == {"name", "paper_ms", "ms", "ms_min", "ms_max", "params", "images_per_s"}
        assert e["paper_ms"] == {"preact-resnet-164": 85.0, "wrn-40-4": 68.0}[e["name"]]
        assert math.isfinite(e["ms"]) and e["ms"] > 0 and e["ms_min"] == e["ms"] == e["ms_max"]  # one step
        assert e["images_per_s"] == pytest.approx(2 / (e["ms"] / 1000), rel=1e-12)
        assert e["params"] == sum(p.numel() for p in wrn.create_model(e["name"]).parameters())
    ms = {e["name"]: e["ms"] for e in result["models"]}
    assert result["ratios"] == [
        {"slow": "preact-resnet-1001", "fast": "wrn-40-4", "paper": 512 / 68, "ours": None},
        {"slow": "preact-resnet-1001", "fast": "wrn-28-10", "paper": 512 / 312, "ours": None},
        {"slow": "preact-resnet-164", "fast": "wrn-40-4", "paper": 85 / 68,
         "ours": pytest.approx(ms["preact-resnet-164"] / ms["wrn-40-4"], rel=1e-12)},
    ]  # fmt: skip
    png = (tmp_path / "figure4.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "preact-resnet-164 / wrn-40-4" in r.stdout and "7.53      -" in r.stdout
    # One timed step is no measurement: the figures say so, and the ratios made with them.
    assert r.stdout.count("UNRELIABLE: ") == 2
    assert (
        "UNRELIABLE: Every time is unreliable: too few timed steps per network (1; give --steps 5 or more)."
        in r.stdout
    )
    assert "UNRELIABLE: The ratios preact-resnet-164 / wrn-40-4 are unreliable with them." in r.stdout
    # Progress on stderr: which network (of how many), which step.
    assert "  preact-resnet-164 (1 of 2): timed step 1/1\n" in r.stderr
    assert "  wrn-40-4 (2 of 2): timed step 1/1\n" in r.stderr
    # The report can redraw the figure from the JSON alone.
    again = figure4.draw(result, tmp_path / "again.png")
    assert again.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reproduce_figure4_shows_the_benchmark_as_it_goes_and_says_when_it_is_unreliable(tmp_path):
    from wrn.reproduce.runner import run_bench

    said: list[str] = []
    options = ["--models", "wrn-40-4", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--device", "cpu",
               "--num-samples", "2"]  # fmt: skip
    summary = run_bench(tmp_path, options, say=said.append)
    assert [o.status for o in summary.outcomes] == ["done"]
    assert said[0].startswith("figure4: wrn bench figure4 --out ")
    # The benchmark's own lines, as they came: its progress, then its table.
    for line in ("wrn-40-4 (1 of 1): warm-up step 1/1", "wrn-40-4 (1 of 1): timed step 1/2",
                 "wrn-40-4 (1 of 1): timed step 2/2"):  # fmt: skip
        assert f"figure4: {line}" in said, said
    assert any(line.startswith("figure4: Figure 4: forward + backward + update") for line in said)
    few = "figure4: UNRELIABLE: Every time is unreliable: too few timed steps per network (2; give --steps 5 or more)."
    # the last lines say so (no ratio was measured: only one network ran); a busy machine adds the spread
    assert few in said and said[-1].startswith("figure4: UNRELIABLE: ")
    noisy = [line for line in said if line.startswith("figure4: UNRELIABLE") and line != few]
    assert all("were more than 1.5x apart" in line for line in noisy)
    log = (tmp_path / "logs" / "figure4.log").read_text()
    assert "wrn-40-4 (1 of 1): timed step 2/2" in log  # the log keeps everything too


def test_reproduce_figure4_passes_warmup_to_the_benchmark(tmp_path, capsys):
    out = tmp_path / "f4"
    assert (
        wrn_main(["reproduce", "figure4", "--steps", "3", "--warmup", "7", "--dry-run", "--out", str(out)])
        == 0
    )
    assert (
        capsys.readouterr().out
        == f"# figure4: would run: wrn bench figure4 --out {out / 'bench'} --steps 3 --warmup 7\n"
    )
    assert wrn_main(["reproduce", "figure4", "--warmup", "-1", "--out", str(out)]) == 2
    assert "--warmup -1 is negative" in capsys.readouterr().err
    assert not out.exists()


def test_figure4_ratios_with_every_model_and_bad_names():
    entries = [
        {"name": n, "ms": ms} for n, ms in zip(figure4.MODELS, (10.0, 80.0, 8.0, 20.0, 40.0), strict=True)
    ]
    assert [r["ours"] for r in figure4.ratios(entries)] == [10.0, 2.0, 1.25]
    assert figure4.parse_models(None) == list(figure4.MODELS)
    assert figure4.parse_models("wrn-28-10, preact-resnet-164") == ["preact-resnet-164", "wrn-28-10"]
    with pytest.raises(ValueError, match="not in Figure 4"):
        figure4.parse_models("wrn-16-4")


def test_bench_data_times_random_data_when_files_are_absent_and_the_files_when_present(tmp_path, capsys):
    absent = tmp_path / "none"
    out = tmp_path / "data.json"
    assert wrn_main(["bench", "data", "--data-dir", str(absent), "--device", "cpu", "--num-samples", "512",
                     "--epochs", "1", "--json", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "random uint8 images of cifar10's shape" in text and f"not under {absent}" in text
    result = json.loads(out.read_text())
    assert result["random_data"] is True and result["settings"]["num_samples"] == 512
    assert result["settings"]["augment"] == "flip-crop" and result["settings"]["normalization"] == "cifar10"
    assert (
        all(math.isfinite(v) and v > 0 for v in result["images_per_s"]) and len(result["images_per_s"]) == 1
    )

    write_random_cifar10(tmp_path / "data", train=300, test=10)
    with pytest.warns(UserWarning, match="md5 checks"):
        assert wrn_main(["bench", "data", "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--no-verify",
                         "--epochs", "1", "--batch-size", "100", "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert result["random_data"] is False and result["settings"]["num_samples"] == 300
    assert "the cifar10 files under" in capsys.readouterr().out


def test_random_cifar10_files_load_as_the_real_format(tmp_path):
    from wrn.data import load_arrays

    base = write_random_cifar10(tmp_path, train=23, test=7, seed=3)
    assert sorted(p.name for p in base.iterdir()) == [
        "batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="md5 checks"):
        x, y = load_arrays("cifar10", tmp_path, "train", verify=False)
    assert x.dtype == torch.uint8 and x.shape == (23, 3, 32, 32) and y.shape == (23,)
    assert int(y.min()) >= 0 and int(y.max()) <= 9 and len(torch.unique(x)) > 200
    with pytest.warns(UserWarning):
        xt, _ = load_arrays("cifar10", tmp_path, "test", verify=False)
    assert xt.shape == (7, 3, 32, 32)


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--amp", "fp16", "--device", "cpu"], "fp16 needs a CUDA GPU"),
        (["train", "--model", "vgg-16", "--device", "cpu"], "unknown model 'vgg-16'"),
        (["train", "--steps", "0", "--device", "cpu"], "--steps 0 is too few"),
        (
            ["train", "--compile", "--compile-mode", "fast", "--device", "cpu"],
            "--compile-mode 'fast' is not known",
        ),
        (["train", "--device", "tpu"], "--device 'tpu' is not known"),
        (
            ["train", "--model", TINY, "--batch-size", "8", "--num-samples", "4", "--device", "cpu"],
            "fewer than one batch",
        ),
        (["figure4", "--models", "wrn-16-4", "--device", "cpu"], "not in Figure 4"),
        (["data", "--dataset", "imagenet", "--device", "cpu"], "no device-resident loader"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, words, capsys):
    assert wrn_main(["bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and err.startswith("wrn bench: error: ") and "\n" not in err


def test_overhead_script_runs_and_prints_its_ratio(tmp_path):
    """Only that the benchmark script works end to end on a tiny run; its figure is measured, not tested."""
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "overhead.py")
    out = tmp_path / "overhead.json"
    r = subprocess.run(
        [sys.executable, script, "--model", TINY, "--batch-size", "16", "--images", "32", "--test-images", "16",
         "--device", "cpu", "--warmup", "1", "--json", str(out)],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    t = result["train"]
    assert t["checkpoint_writes"] == 2 and t["epoch_train_time_s"] > 0 and t["evaluation_s"] > 0
    recurring = t["epoch_train_time_s"] + t["checkpoint_writes_s"] + t["logging_s"]
    assert result["ratio"] == pytest.approx(recurring / result["bench_epoch_s"], rel=1e-12)
    assert t["step_calls"] == 2  # 32 images in batches of 16: the loop's TrainStep calls were counted
    outside = recurring - t["step_calls_s"]
    assert 0 < outside < recurring and result["overhead_in_epoch"] == pytest.approx(
        outside / t["step_calls_s"]
    )
    assert re.search(r"overhead ratio\s+wrn train epoch / bench train\s+= [\d.]+", r.stdout)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh runs it)")
def test_cuda_bench_steps_do_not_sync_with_the_host():
    """Within an epoch, the bench's steps (DeviceLoader batch + TrainStep, bf16, channels_last) queue work on
    the GPU without ever waiting for it: CUDA's sync debug mode turns any sync into an error."""
    from wrn.bench.common import prepare_device, random_images, resolve_settings

    settings = resolve_settings(TINY, device="cuda", batch_size=32)
    assert (settings.amp, settings.channels_last) == ("bf16", True)
    prepare_device(settings.device)
    x, y = random_images(320, 3, 32, 10)  # 10 batches per epoch
    runner = bench_train.ours_runner(TINY, settings, x, y, 32, 10)
    runner.warm(3)  # cuDNN autotuning; the epoch's plan is on the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        runner.warm(6)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(runner.loss)
