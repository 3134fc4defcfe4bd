"""Training: the paper's recipes as presets, a resumable training loop, evaluation.

>>> from wrn.train import build_config, train
>>> cfg = build_config("demo", overrides={"schedule.epochs": 5})
>>> result = train(cfg, "runs/demo")     # config.yaml, metrics.jsonl, checkpoint.pt, model.safetensors, ...
>>> result.last["test_acc"]
"""

from __future__ import annotations

from wrn._lazy import lazy_attributes

# public name -> the module that defines it (loaded on first use)
_WHERE = {
    "Interrupted": "wrn.errors",
    "NonFiniteLoss": "wrn.errors",
    "TrainConfig": "wrn.train.config",
    "TrainResult": "wrn.train.run",
    "build_config": "wrn.train.compose",
    "evaluate": "wrn.train.evaluate",
    "evaluate_dir": "wrn.train.evaluate",
    "list_presets": "wrn.train.compose",
    "resume": "wrn.train.run",
    "train": "wrn.train.run",
}

__all__ = [
    "Interrupted",
    "NonFiniteLoss",
    "TrainConfig",
    "TrainResult",
    "build_config",
    "evaluate",
    "evaluate_dir",
    "list_presets",
    "resume",
    "train",
]

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, globals())
