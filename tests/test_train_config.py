"""Training configs: presets, merging of preset / file / overrides, validation and resolution."""

from __future__ import annotations

import re

import pytest
import yaml

from wrn.errors import ConfigError
from wrn.train.compose import build_config, dump_yaml, list_presets
from wrn.train.config import TrainConfig, validate
from wrn.train.resolve import resolve

PAPER_CIFAR = {
    "wrn-40-4": 0.0,
    "wrn-16-8": 0.0,
    "wrn-28-10": 0.0,
    "wrn-28-10-dropout": 0.3,
    "wrn-16-4": 0.0,
    "wrn-16-4-dropout": 0.3,
    "wrn-52-1": 0.0,
    "wrn-52-1-dropout": 0.3,
    "wrn-40-10-dropout": 0.3,
    "wrn-40-4-zca": 0.0,
    "wrn-28-10-zca": 0.0,
}


def test_every_preset_validates_resolves_and_has_a_description():
    presets = list_presets()
    assert list(presets)[0] == "demo"
    assert len(presets) >= 40
    for name, description in presets.items():
        assert re.fullmatch(r"demo|(cifar10|cifar100|svhn|imagenet)-[a-z0-9.-]+", name), name
        assert description and "\n" not in description, name
        cfg = resolve(build_config(name), cuda_available=False)
        assert cfg.preset == name
        model_part = (
            name.split("-", 1)[1].removesuffix("-zca").removesuffix("-dropout") if name != "demo" else None
        )
        today = next((s for s in TODAYS_RECIPES if name.endswith(s)), None)
        fixmatch = re.search(r"-fixmatch-(\d+)$", name)
        if fixmatch:  # <dataset>-<FixMatch's own network>-<labels>: FixMatch on that many labels
            model_part = model_part.removesuffix(f"-{fixmatch[1]}")
            assert cfg.ssl.method == "fixmatch" and cfg.ssl.labels == int(fixmatch[1]), name
            assert (cfg.schedule.name, cfg.optim.ema_decay, cfg.optim.batch_size) == (
                "fixmatch",
                0.999,
                64,
            ), name
        else:
            assert cfg.ssl.method == "none" and cfg.ssl.labels is None, name
        if today:  # today's recipes: <dataset>-<model>-<recipe>, the recipe's own options on
            model_part = model_part.removesuffix(today)
            assert ("sam" in today) == (cfg.optim.sam_rho > 0), name
            assert ("cutout" in today or "autoaugment" in today) == (cfg.dataset.cutout > 0), name
            assert ("autoaugment" in today) == cfg.dataset.policy.startswith("autoaugment"), name
            method = {
                "-trades": "trades",
                "-trades-awp": "trades",
                "-at-awp": "pgd",
                "-pgd-at": "pgd",
                "-dm-at": "trades-gowal",
            }
            assert cfg.adv.method == method.get(today, "none") and (cfg.adv.awp > 0) == (
                today.endswith("-awp")
            ), name
            assert (cfg.dataset.aux_data is not None) == (today == "-dm-at"), name  # generated images
            # SAM's, AutoAugment's and DeepMind's own networks (docs/models.md)
            own = {"-dm-at": "-dm"}.get(
                today, "-sam" if "sam" in today else "-aa" if "autoaugment" in today else ""
            )
            model_part += own
        if model_part:
            assert cfg.model.name == model_part, name
            assert name.startswith(cfg.dataset.name + "-"), name
        assert (cfg.dataset.normalization == "zca") == name.endswith("-zca"), name
        if not today:  # the Cutout recipe keeps its code's dropout
            assert (cfg.model.dropout > 0) == name.endswith("-dropout"), name


# The suffixes of today's recipes (docs/training.md, "Modern recipes")
TODAYS_RECIPES = (
    "-sam-autoaugment",
    "-sam-cutout",
    "-sam",
    "-autoaugment",
    "-cutout",
    "-trades-awp",
    "-trades",
    "-at-awp",
    "-pgd-at",
    "-dm-at",
)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("suffix,dropout", list(PAPER_CIFAR.items()))
def test_cifar_presets_follow_the_paper(dataset, suffix, dropout):
    cfg = resolve(build_config(f"{dataset}-{suffix}"), cuda_available=False)
    assert cfg.dataset.name == dataset
    assert cfg.dataset.augment == "flip-crop"
    assert cfg.dataset.normalization == ("zca" if suffix.endswith("zca") else "cifar10")
    assert cfg.model.dropout == dropout
    o, s = cfg.optim, cfg.schedule
    assert (o.lr, o.momentum, o.nesterov, o.weight_decay, o.batch_size) == (0.1, 0.9, True, 5e-4, 128)
    assert (s.name, s.epochs, s.milestones, s.gamma, s.reset_momentum) == (
        "multistep",
        200,
        [60, 120, 160],
        0.2,
        True,
    )


@pytest.mark.parametrize("model", ["wrn-16-4", "wrn-16-8"])
def test_svhn_presets(model):
    cfg = build_config(f"svhn-{model}-dropout")
    assert cfg.model.dropout == 0.4
    assert (cfg.dataset.augment, cfg.dataset.normalization) == ("none", "svhn")
    assert cfg.optim.lr == 0.01
    assert (cfg.schedule.epochs, cfg.schedule.milestones, cfg.schedule.gamma) == (160, [80, 120], 0.1)
    assert build_config(f"svhn-{model}").model.dropout is None


def test_imagenet_preset_is_the_fb_resnet_recipe():
    cfg = build_config("imagenet-wrn-50-2")
    assert cfg.model.name == "wrn-50-2"
    assert (cfg.optim.batch_size, cfg.optim.weight_decay, cfg.optim.lr) == (256, 1e-4, 0.1)
    assert (cfg.schedule.epochs, cfg.schedule.milestones, cfg.schedule.gamma) == (90, [31, 61], 0.1)
    assert (cfg.dataset.augment, cfg.dataset.normalization, cfg.dataset.image_size) == (
        "imagenet",
        "imagenet",
        224,
    )


def test_demo_preset_is_offline_and_does_not_flip_digits():
    cfg = build_config("demo")
    assert cfg.dataset.name == "digits"
    assert cfg.dataset.augment in ("none", "crop")
    assert cfg.optim.nesterov and cfg.optim.momentum == 0.9 and cfg.schedule.name == "multistep"


def test_file_overrides_preset_and_command_line_overrides_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim:\n  lr: 0.05\n  batch_size: 64\nmodel:\n  dropout: 0.2\n")
    cfg = build_config("cifar10-wrn-28-10", path, {"optim.batch_size": 32, "schedule.epochs": 3})
    assert cfg.model.name == "wrn-28-10"  # from the preset
    assert cfg.optim.lr == 0.05 and cfg.model.dropout == 0.2  # from the file
    assert cfg.optim.batch_size == 32 and cfg.schedule.epochs == 3  # from the command line
    assert cfg.schedule.milestones == [2, 3]  # 59, 119, 159 of 200 epochs before the drops -> 1, 2, 2 of 3


# The recipes' drops: CIFAR 60, 120, 160 of 200; SVHN 80, 120 of 160; ImageNet 31, 61 of 90. A drop at m
# leaves m - 1 epochs before it, and those scale: m' = round((m - 1) * E / E0) + 1, past the run left out.
SCALED = {
    "cifar10-wrn-28-10": {2: [2], 6: [3, 5, 6], 10: [4, 7, 9], 30: [10, 19, 25], 200: [60, 120, 160]},
    "svhn-wrn-16-4": {2: [2], 6: [4, 5], 10: [6, 8], 30: [16, 23], 200: [100, 150]},
    "imagenet-wrn-50-2": {2: [2], 6: [3, 5], 10: [4, 8], 30: [11, 21], 200: [68, 134]},
}


@pytest.mark.parametrize("preset", sorted(SCALED))
@pytest.mark.parametrize("epochs", [2, 6, 10, 30, 200])
def test_epochs_move_the_recipe_s_drops_keeping_the_epochs_before_each(preset, epochs):
    cfg = build_config(preset, overrides={"schedule.epochs": epochs})
    assert cfg.schedule.milestones == SCALED[preset][epochs]
    assert cfg.schedule.milestones_from == "recipe"
    e0 = build_config(preset).schedule.epochs
    for m, moved in zip(build_config(preset).schedule.milestones, cfg.schedule.milestones, strict=False):
        # the share of the run before the drop is the recipe's, within half an epoch
        assert abs((moved - 1) - (m - 1) * epochs / e0) <= 0.5


def test_given_milestones_are_kept_on_every_path(tmp_path, capsys):
    from wrn.cli import main
    from wrn.train.compose import with_epochs

    # the command line: --milestones with --epochs
    assert (
        main(["train", "--preset", "demo", "--milestones", "5,10", "--epochs", "20", "--print-config"]) == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)["schedule"]
    assert (printed["milestones"], printed["milestones_from"]) == ([5, 10], "given")
    # Python: a config with given milestones, then another length
    cfg = with_epochs(build_config("demo", overrides={"schedule.milestones": [5, 10]}), 20)
    assert (cfg.schedule.milestones, cfg.schedule.milestones_from) == ([5, 10], "given")
    # Python: the recipe's milestones move
    cfg = with_epochs(build_config("cifar10-wrn-28-10"), 6)
    assert (cfg.schedule.milestones, cfg.schedule.milestones_from) == ([3, 5, 6], "recipe")
    # a file's own milestones are given; a file's epochs alone move the preset's
    path = tmp_path / "short.yaml"
    path.write_text("extends: cifar10-wrn-16-4\nschedule:\n  epochs: 20\n")
    assert build_config(config_file=path).schedule.milestones == [7, 13, 17]
    path.write_text("extends: cifar10-wrn-16-4\nschedule:\n  epochs: 20\n  milestones: [10, 15]\n")
    assert build_config(config_file=path).schedule.milestones == [10, 15]
    assert build_config(config_file=path, overrides={"schedule.epochs": 40}).schedule.milestones == [10, 15]
    # a run's own config.yaml, reused: what it records decides
    recorded = build_config("cifar10-wrn-28-10", overrides={"schedule.epochs": 10}).to_dict()
    path.write_text(yaml.safe_dump(recorded))
    assert build_config(config_file=path).schedule.milestones == [4, 7, 9]
    assert build_config(config_file=path, overrides={"schedule.epochs": 6}).schedule.milestones == [3, 5, 6]


def test_only_given_milestones_are_warned_about():
    from wrn.train.resolve import config_warnings

    scaled = build_config("cifar10-wrn-28-10", overrides={"schedule.epochs": 2})
    assert scaled.schedule.milestones == [2] and config_warnings(scaled) == []
    given = build_config("demo", overrides={"schedule.epochs": 4, "schedule.milestones": [2, 4]})
    assert config_warnings(given) == [
        "lr milestone 4 at or past the last epoch (4): that drop changes at most the last epoch; give "
        "--milestones inside the run, or leave them out and --epochs scales the recipe's"
    ]


def test_a_file_may_extend_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: cifar100-wrn-16-8\nschedule:\n  epochs: 10\n")
    cfg = build_config(config_file=path)
    assert (cfg.dataset.name, cfg.model.name, cfg.schedule.epochs) == ("cifar100", "wrn-16-8", 10)


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("schedule.epochs", 0, "schedule.epochs"),
        ("optim.lr", 0, "optim.lr"),
        ("optim.lr", -0.1, "optim.lr"),
        ("optim.batch_size", 0, "optim.batch_size"),
        ("model.dropout", 1.0, "model.dropout"),
        ("model.dropout", -0.1, "model.dropout"),
        ("dataset.name", "mnist", "dataset.name"),
        ("dataset.augment", "flip", "dataset.augment"),
        ("run.amp", "fp8", "run.amp"),
        ("run.device", "gpu", "run.device"),
        ("schedule.milestones", [120, 60], "milestones"),
        ("optim.nesterov", "sometimes", "optim.nesterov"),
        ("optim.colour", 1, "unknown config key 'optim.colour'"),
    ],
)
def test_bad_values_raise_one_clear_config_error(key, value, words):
    with pytest.raises(ConfigError) as info:
        build_config("demo", overrides={key: value})
    message = str(info.value)
    assert words in message
    assert "\n" not in message


def test_unknown_preset_and_missing_file():
    with pytest.raises(ConfigError, match="unknown preset 'cifar10-wrn-99-1'.*wrn presets"):
        build_config("cifar10-wrn-99-1")
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(config_file="/nonexistent/x.yaml")


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(config_file=path)


def test_resolve_fills_machine_and_data_defaults():
    cpu = resolve(validate({"dataset": {"name": "svhn"}}), cuda_available=False)
    assert (cpu.run.device, cpu.run.amp, cpu.run.channels_last) == ("cpu", "off", True)
    assert (cpu.dataset.augment, cpu.dataset.normalization) == ("none", "svhn")
    gpu = resolve(validate({"dataset": {"name": "cifar100"}}), cuda_available=True)
    assert (gpu.run.device, gpu.run.amp, gpu.run.channels_last) == ("cuda", "bf16", True)
    assert gpu.dataset.normalization == "cifar10"  # the authors' constants for CIFAR-100 too


def test_fp16_and_cuda_need_a_gpu():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve(validate({"run": {"amp": "fp16", "device": "cpu"}}), cuda_available=False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve(validate({"run": {"device": "cuda"}}), cuda_available=False)


def test_saved_yaml_round_trips_to_the_same_config():
    cfg = resolve(build_config("cifar10-wrn-28-10-dropout"), cuda_available=False)
    again = TrainConfig.model_validate(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert resolve(again, cuda_available=False) == cfg


def test_a_preset_key_in_a_file_acts_as_extends(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("preset: demo\noptim:\n  lr: 0.05\n")
    cfg = build_config(config_file=path)
    assert (cfg.preset, cfg.model.name, cfg.dataset.name, cfg.optim.lr) == (
        "demo",
        "wrn-16-4",
        "digits",
        0.05,
    )
    path.write_text("preset: demo\nextends: cifar10-wrn-16-4\n")
    with pytest.raises(ConfigError, match="two different recipes"):
        build_config(config_file=path)


def test_preset_and_a_file_extending_another_preset_are_refused(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("extends: demo\n")
    with pytest.raises(ConfigError, match="--preset cifar10-wrn-16-4 and the config file's 'extends: demo'"):
        build_config("cifar10-wrn-16-4", path)
    assert build_config("demo", path).preset == "demo"  # the same recipe twice is fine
    assert build_config(config_file=path).preset == "demo"


def test_unknown_preset_suggests_the_closest_names():
    with pytest.raises(ConfigError, match="did you mean cifar10-wrn-16-4"):
        build_config("cifar10-wrn-16-44")


@pytest.mark.parametrize(
    "args,words",
    [
        (["--seed", str(10**20)], "run.seed"),
        (["--lr", "inf"], "optim.lr"),
        (["--weight-decay", ".inf"], "optim.weight_decay"),
        (["--lr", "nan"], "optim.lr"),
        (["--epochs", str(10**12)], "schedule.epochs"),
        (["--milestones", f"5,{10**12}"], "milestones"),
    ],
)
def test_values_that_would_crash_later_are_refused_at_once(args, words, capsys):
    from wrn.cli import main

    assert main(["train", "--preset", "demo", *args, "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]


def test_a_binary_or_doubled_config_file_is_one_sentence(tmp_path, capsys):
    from wrn.cli import main

    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["train", "--config", str(binary), "--print-config"]) == 2
    assert "is not a text file" in capsys.readouterr().err
    doubled = tmp_path / "twice.yaml"
    doubled.write_text("extends: demo\nextends: cifar10-wrn-28-10\nschedule:\n  epochs: 3\n")
    assert main(["train", "--config", str(doubled), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "'extends' is given twice (line 2)" in err and "keep one of them" in err


def test_out_names_what_is_wrong_with_the_path(tmp_path, capsys):
    from wrn.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", "--preset", "demo", "--out", str(afile)]) == 2
    assert f"--out {afile} is a file, not a directory" in capsys.readouterr().err
    assert main(["train", "--preset", "demo", "--out", str(afile / "sub")]) == 2
    err = capsys.readouterr().err
    assert f"its parent {afile} is a file" in err and "Traceback" not in err


def test_adding_an_option_is_one_marker_beside_its_field(capsys):
    """--nesterov exists because optim.nesterov has option("--nesterov"): flag, help, --resume and --set."""
    from wrn.cli import main
    from wrn.train.options import BY_KEY

    assert BY_KEY["optim.nesterov"].flag == "--nesterov"
    assert main(["train", "--preset", "demo", "--no-nesterov", "--momentum", "0.5", "--print-config"]) == 0
    optim = yaml.safe_load(capsys.readouterr().out)["optim"]
    assert optim["nesterov"] is False and optim["momentum"] == 0.5
    assert main(["train", "--preset", "demo", "--no-nesterov", "--set", "optim.nesterov=true"]) == 2
    assert "both set optim.nesterov" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert (
        "--nesterov, --no-nesterov\n                        Nesterov momentum (the paper's)"
        in capsys.readouterr().out
    )


def test_the_init_option_offers_the_models_inits_and_reaches_the_network(tmp_path):
    """model.init's choices are wrn.models.cifar.INITS; unset, a network keeps its own (the paper's for the
    paper's WRNs, AutoAugment's for SAM's and AutoAugment's), set, it is the network's, and model.json says so."""
    import typing

    import torch

    import wrn
    from wrn.data.registry import dataset_info
    from wrn.models.cifar import INITS
    from wrn.train.build import build_model

    field = TrainConfig.model_fields["model"].annotation.model_fields["init"]
    assert set(typing.get_args(typing.get_args(field.annotation)[0])) == set(INITS)
    digits = dataset_info("digits")
    for name, init, want in (("wrn-10-1", None, "paper"), ("wrn-10-1-sam", None, "autoaugment"),
                             ("wrn-10-1-aa", None, "autoaugment"), ("wrn-10-1-sam", "paper", "paper"),
                             ("wrn-10-1", "pytorch", "pytorch")):  # fmt: skip
        cfg = build_config("demo", overrides={"model.name": name, "model.init": init})
        assert resolve(cfg, cuda_available=False).model.init == init  # resolve fills in no default
        torch.manual_seed(0)
        model = build_model(cfg, digits)
        torch.manual_seed(0)
        same = wrn.create_model(name, num_classes=10, in_channels=1, init=want)
        assert model.config["init"] == want and all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True)
        ), (name, init)
