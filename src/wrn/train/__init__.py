"""Training: the paper's recipes as presets, a resumable training loop, evaluation.

>>> from wrn.train import build_config, train
>>> cfg = build_config("demo", overrides={"schedule.epochs": 5})
>>> result = train(cfg, "runs/demo")     # config.yaml, metrics.jsonl, checkpoint.pt, model.safetensors, ...
>>> result.last["test_acc"]
"""

from wrn.train.config import TrainConfig, build_config, list_presets, load_preset
from wrn.train.evaluate import evaluate, evaluate_dir
from wrn.train.loop import Interrupted, NonFiniteLoss, TrainResult, train

__all__ = [
    "Interrupted",
    "NonFiniteLoss",
    "TrainConfig",
    "TrainResult",
    "build_config",
    "evaluate",
    "evaluate_dir",
    "list_presets",
    "load_preset",
    "train",
]
