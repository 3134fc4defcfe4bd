"""Every field of the training config, with every choice it has, through the four ways a value arrives: its
``--flag``, ``--set KEY=VALUE``, a ``--config`` file and a grid's ``--set`` (``wrn reproduce --dry-run``),
each through the real command line. Each value must be read as the field's type says: a choice stays a word
(``--amp off``, ``amp: off`` in a file), ``null`` is None only where the field allows it, numbers, lists
and booleans as their types."""

from __future__ import annotations

import typing

import pytest
import yaml

from conftest import wrn_here
from wrn.train.options import BY_KEY, OPTIONS, command_keys, keys

# A value for each field that is neither a choice nor a boolean: the text given, and what it must become.
# A field added to the config without a sample here fails test_every_field_has_values.
SAMPLES = {
    "description": ("a run of mine", "a run of mine"),
    "model.name": ("wrn-10-1", "wrn-10-1"),
    "model.dropout": ("0.3", 0.3),
    "model.bn_momentum": ("0.01", 0.01),
    "model.bn_momentum_first": ("1.0", 1.0),
    "model.init_from": ("runs/mine", "runs/mine"),
    "dataset.root": ("somewhere", "somewhere"),
    "dataset.train_split": ("train", "train"),
    "dataset.image_size": ("32", 32),
    "dataset.workers": ("0", 0),
    "dataset.cutout": ("4", 4),
    "dataset.mixup": ("0.5", 0.5),
    "dataset.cutmix": ("1.0", 1.0),
    "dataset.randaugment_n": ("3", 3),
    "dataset.randaugment_m": ("5", 5),
    "dataset.random_erasing": ("0.25", 0.25),
    "dataset.aux_data": ("generated/1m.npz", "generated/1m.npz"),
    "dataset.aux_fraction": ("0.5", 0.5),
    "dataset.rotate": ("15", 15.0),
    "optim.lr": ("0.05", 0.05),
    "optim.momentum": ("0.8", 0.8),
    "optim.weight_decay": ("1e-3", 0.001),  # YAML 1.1 would read this as a string in a file
    "optim.batch_size": ("32", 32),
    "optim.eval_batch_size": ("100", 100),
    "optim.label_smoothing": ("0.1", 0.1),
    "optim.ema_decay": ("0.99", 0.99),
    "optim.sam_rho": ("0.05", 0.05),
    "optim.replica_batch": ("32", 32),
    "optim.grad_clip": ("5", 5.0),
    "schedule.epochs": ("6", 6),
    "schedule.milestones": ("3,5", [3, 5]),
    "schedule.gamma": ("0.5", 0.5),
    "schedule.warmup_epochs": ("1.5", 1.5),
    "objective.focal.gamma": ("1.5", 1.5),
    "adv.eps": ("8/255", 8 / 255),  # a radius as papers write it
    "adv.steps": ("7", 7),
    "adv.step_size": ("0.007", 0.007),
    "adv.trades_beta": ("3", 3.0),
    "adv.holdout": ("100", 100),
    "adv.awp": ("0.005", 0.005),
    "adv.awp_warmup": ("2", 2),
    "ssl.labels": ("100", 100),
    "ssl.fold": ("3", 3),
    "ssl.epoch_steps": ("5", 5),
    "ssl.mu": ("3", 3),
    "ssl.threshold": ("0.9", 0.9),
    "ssl.lambda_u": ("2", 2.0),
    "run.seed": ("7", 7),
    "run.device": ("cpu", "cpu"),
    "run.checkpoint_every_minutes": ("5.5", 5.5),
    "run.checkpoint_every_steps": ("100", 100),
    "run.log_every_steps": ("10", 10),
}
# Values that are valid only beside others.
COMPANIONS = {
    ("run.eval_models", "ema"): {"optim.ema_decay": "0.99"},
    ("run.eval_models", "model"): {"optim.ema_decay": "0.99"},
    ("optim.ema_warmup", True): {"optim.ema_decay": "0.99"},
    ("optim.ema_warmup_rule", "gowal"): {"optim.ema_decay": "0.99", "optim.ema_warmup": "true"},
    ("optim.decay_bias", True): {"optim.decay_norm_and_bias": "false"},
    ("objective.focal.gamma", 1.5): {"objective.name": "focal"},
    ("adv.eps", 8 / 255): {"adv.method": "pgd"},
    ("adv.steps", 7): {"adv.method": "pgd"},
    ("adv.step_size", 0.007): {"adv.method": "pgd"},
    ("adv.trades_beta", 3.0): {"adv.method": "trades"},
    ("adv.holdout", 100): {"adv.method": "pgd"},
    ("adv.holdout_rule", "dm"): {"adv.method": "pgd", "adv.holdout": "100"},
    ("adv.holdout_rule", "awp"): {"adv.method": "pgd", "adv.holdout": "100"},
    ("adv.awp", 0.005): {"adv.method": "pgd"},
    ("adv.awp_warmup", 2): {"adv.method": "trades", "adv.awp": "0.005"},
    ("run.checkpoint_every_steps", 100): {"run.checkpoint_every_minutes": "null"},
    ("optim.ema_buffers", "copy"): {"optim.ema_decay": "0.99"},
    ("ssl.method", "fixmatch"): {"ssl.labels": "100"},
    ("ssl.fold", 3): {"ssl.labels": "100"},
    ("ssl.epoch_steps", 5): {"ssl.labels": "100"},
    **{(f"ssl.{key}", value): {"ssl.method": "fixmatch", "ssl.labels": "100"}
       for key, value in (("mu", 3), ("threshold", 0.9), ("lambda_u", 2.0), ("strong_on", "workers"))},
    ("ssl.strong_policy", "randaugment"): {"ssl.method": "fixmatch", "ssl.labels": "100", "ssl.strong_on": "workers"},
    ("dataset.cutout_per", "batch"): {"dataset.cutout": "4"},
    ("dataset.crop_padding", "mean"): {"dataset.augment": "flip-crop"},
    ("dataset.randaugment_n", 3): {"dataset.policy": "randaugment"},
    ("dataset.aux_fraction", 0.5): {"dataset.aux_data": "generated/1m.npz"},
    ("dataset.randaugment_m", 5): {"dataset.policy": "randaugment"},
    **{("run.compile_mode", m): {"run.compile": "true"} for m in ("reduce-overhead", "max-autotune",
                                                                   "max-autotune-no-cudagraphs")},
}  # fmt: skip
BOOLEAN_WORDS = {"true": True, "false": False, "on": True, "off": False, "yes": True, "no": False}
SKIPPED = ("preset",)  # --preset, a run's starting point, not a value (test_train_config covers it)


def _values(option) -> list[tuple[str, typing.Any]]:
    """(text, typed value) for every choice of a field."""
    if option.choices:
        out = [(c, c) for c in option.choices]
    elif option.kind == "bool":
        out = list(BOOLEAN_WORDS.items())
    else:
        out = [SAMPLES[option.key]]
    if option.nullable:
        out += [("null", None), ("~", None)]
    return out


FIELDS = [o for o in OPTIONS if not o.key.startswith("provenance.") and o.key not in SKIPPED]
CASES = [(o.key, text, want) for o in FIELDS for text, want in _values(o)]


def _get(data: dict, key: str):
    for part in key.split("."):
        data = data[part]
    return data


def _companions(key, want) -> dict[str, str]:
    return next((v for (k, w), v in COMPANIONS.items() if k == key and w == want), {})


def _file(path, layers: dict[str, str]) -> str:
    """A config file extending the demo with ``layers`` (dotted key -> the value's text, written unquoted as a
    user would: ``amp: off``)."""
    tree: dict = {}
    for key, text in layers.items():
        node = tree
        *sections, name = key.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = f"[{text}]" if BY_KEY[key].kind == "list" else text

    def lines(node: dict, depth: int) -> list[str]:
        out = []
        for name, value in node.items():
            if isinstance(value, dict):
                out += [f"{'  ' * depth}{name}:", *lines(value, depth + 1)]
            else:
                out.append(f"{'  ' * depth}{name}: {value}")
        return out

    path.write_text("\n".join(["extends: demo", *lines(tree, 0)]) + "\n")
    return str(path)


def _reference(overrides: dict[str, typing.Any]) -> tuple[int, typing.Any]:
    """The API's answer for the typed values (no text read): (0, the resolved config) or (2, the error)."""
    from wrn.errors import ConfigError
    from wrn.train.compose import build_config
    from wrn.train.resolve import resolve

    try:
        return 0, resolve(build_config("demo", overrides=overrides)).to_dict()
    except ConfigError as exc:
        return 2, f"wrn train: error: {exc}\n"


def _printed(proc) -> dict:
    """The config that --print-config (or a grid's --dry-run, its one run) printed."""
    text = proc.stdout
    if text.startswith("#"):  # the grid: "# experiment ...", "# run: command", the YAML, "# N runs ..."
        text = text.split("\n# ", 2)[1].split("\n", 1)[1]
    return yaml.safe_load(text)


def _check(proc, key, reference) -> None:
    """``proc`` (``wrn train --print-config``) printed what the API gives for the typed value, or refused
    it with the API's sentence (a CUDA device on this CPU-only machine)."""
    code, expected = reference
    assert proc.returncode == code, proc.stderr
    if code:
        assert proc.stderr == expected
        return
    got, want = _get(_printed(proc), key), _get(expected, key)
    assert got == want and type(got) is type(want), (key, got, want)


def test_every_field_has_values():
    missing = [o.key for o in FIELDS if not o.choices and o.kind != "bool" and o.key not in SAMPLES]
    assert missing == [], f"give these fields a sample value in SAMPLES: {missing}"
    assert len(CASES) > 100  # every choice of every field: the cases below are the table's own


@pytest.mark.parametrize(("key", "text", "want"), CASES, ids=[f"{k}={t}" for k, t, _ in CASES])
def test_a_value_reads_the_same_through_every_path(capsys, tmp_path, key, text, want):
    from wrn.train.options import parse_text

    option, extra = BY_KEY[key], _companions(key, want)
    reference = _reference({key: want, **{k: parse_text(k, v) for k, v in extra.items()}})
    base = ["train", "--preset", "demo", "--print-config"]
    sets = [a for k, v in extra.items() for a in ("--set", f"{k}={v}")]
    # 1. its flag (booleans: --flag / --no-flag; a boolean's flag cannot say None)
    if option.flag is not None and not (option.kind == "bool" and want is None):
        if option.kind == "bool":
            argv = [option.flag if want else "--no-" + option.flag[2:]]
        else:
            argv = [option.flag, text]
        _check(wrn_here(capsys, *base, *argv, *sets), key, reference)
    # 2. --set KEY=VALUE
    _check(wrn_here(capsys, *base, "--set", f"{key}={text}", *sets), key, reference)
    # 3. a config file, the value written unquoted
    config = _file(tmp_path / "mine.yaml", {key: text, **extra})
    _check(wrn_here(capsys, "train", "--config", config, "--print-config"), key, reference)
    # 4. a grid's overrides: the run's config as the plan writes it (not resolved: the value as read)
    if key == "run.seed":
        return  # a grid's seeds come from --runs (test_reproduce)
    proc = wrn_here(
        capsys, "reproduce", "table5", "--rows", "cifar10-wrn-28-10", "--runs", "1", "--dry-run",
        "--out", str(tmp_path / "grid"), "--set", f"{key}={text}", *sets,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = _get(_printed(proc), key)
    assert got == want and type(got) is type(want), (key, got, want)


def test_a_choice_is_never_read_as_a_boolean(capsys, tmp_path):
    """The words YAML 1.1 reads as booleans stay the choices they are: --amp off, --eval-amp off."""
    for key, argv in (
        ("amp", ["--amp", "off"]),
        ("eval_amp", ["--eval-amp", "off"]),
        ("amp", ["--set", "run.amp=off"]),
    ):
        proc = wrn_here(capsys, "train", "--preset", "demo", "--print-config", *argv)
        assert proc.returncode == 0, proc.stderr
        assert yaml.safe_load(proc.stdout)["run"][key] == "off"
    path = tmp_path / "c.yaml"
    path.write_text("extends: demo\nrun:\n  amp: off\n  eval_amp: off\n")
    run = yaml.safe_load(wrn_here(capsys, "train", "--config", str(path), "--print-config").stdout)["run"]
    assert (run["amp"], run["eval_amp"]) == ("off", "off")


def test_null_is_refused_where_a_field_has_no_none(capsys):
    proc = wrn_here(capsys, "train", "--preset", "demo", "--print-config", "--set", "optim.lr=null")
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "wrn train: error: optim.lr = 'null' is invalid: input should be a valid number, unable to parse string as a number\n"
    )


def test_the_lists_of_the_command_line_are_the_markers():
    """What --resume may change, what a grid takes and what bench takes: read from the fields' markers."""
    from wrn.cli.reproduce import TRAIN_OPTIONS

    assert set(keys("on_resume")) == {
        "schedule.epochs", "run.checkpoint_every_minutes", "run.checkpoint_every_steps", "run.progress",
    }  # fmt: skip
    assert TRAIN_OPTIONS == {
        "dataset": "dataset.name", "data_dir": "dataset.root", "image_size": "dataset.image_size",
        "epochs": "schedule.epochs",
    }  # fmt: skip
    assert set(command_keys("bench")) == {
        "optim.label_smoothing", "optim.ema_decay", "optim.ema_warmup", "optim.sam_rho", "optim.grad_clip",
        "optim.decay_norm_and_bias", "optim.decay_bias", "optim.replica_batch", "adv.method", "adv.eps", "adv.steps",
        "adv.step_size", "adv.trades_beta", "adv.awp", "optim.ema_buffers", "ssl.method", "ssl.mu",
        "ssl.threshold", "ssl.lambda_u", "ssl.strong_policy", "ssl.strong_on",
    }  # fmt: skip
    assert set(keys("volatile")) == {
        "run.checkpoint_every_minutes", "run.checkpoint_every_steps", "run.progress",
        *(o.key for o in OPTIONS if o.key.startswith("provenance.")),
    }  # fmt: skip
