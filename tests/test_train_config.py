"""Training configs: presets, merging of preset / file / overrides, validation and resolution."""

from __future__ import annotations

import re

import pytest
import yaml

from wrn.errors import ConfigError
from wrn.train.config import TrainConfig, build_config, dump_yaml, list_presets, resolve, validate

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
        if model_part:
            assert cfg.model.name == model_part, name
            assert name.startswith(cfg.dataset.name + "-"), name
        assert (cfg.dataset.normalization == "zca") == name.endswith("-zca"), name
        assert (cfg.model.dropout > 0) == name.endswith("-dropout"), name


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
    assert cfg.schedule.milestones == [2]  # 0.3, 0.6, 0.8 of 3 epochs, merged, never before epoch 2


@pytest.mark.parametrize(
    ("preset", "overrides", "milestones"),
    [
        ("cifar10-wrn-28-10", {"schedule.epochs": 10}, [3, 6, 8]),  # 0.3, 0.6, 0.8 of the run
        ("cifar10-wrn-28-10", {"schedule.epochs": 50}, [15, 30, 40]),
        ("cifar10-wrn-28-10", {"schedule.epochs": 200}, [60, 120, 160]),
        ("svhn-wrn-16-4", {"schedule.epochs": 16}, [8, 12]),  # SVHN: 0.5, 0.75
        ("imagenet-wrn-50-2", {"schedule.epochs": 9}, [3, 6]),  # ImageNet: 31/90, 61/90
        (
            "cifar10-wrn-28-10",
            {"schedule.epochs": 10, "schedule.milestones": [5, 8]},
            [5, 8],
        ),  # kept as given
        ("cifar10-wrn-28-10", {"schedule.milestones": [50, 100]}, [50, 100]),
        ("demo", {}, [15, 22, 27]),
    ],
)
def test_epochs_without_milestones_scale_the_recipe_s_drops(preset, overrides, milestones):
    cfg = build_config(preset, overrides=overrides)
    assert cfg.schedule.milestones == milestones


def test_a_file_s_epochs_scale_the_preset_s_milestones_and_its_own_are_kept(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("extends: cifar10-wrn-16-4\nschedule:\n  epochs: 20\n")
    assert build_config(config_file=path).schedule.milestones == [6, 12, 16]
    path.write_text("extends: cifar10-wrn-16-4\nschedule:\n  epochs: 20\n  milestones: [10, 15]\n")
    assert build_config(config_file=path).schedule.milestones == [10, 15]
    # the file's own milestones were written for its 20 epochs; --epochs 40 moves them along
    assert build_config(config_file=path, overrides={"schedule.epochs": 40}).schedule.milestones == [20, 30]


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
