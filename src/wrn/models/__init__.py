"""Every network of the paper: CIFAR/SVHN WRNs, the thin pre-activation ResNets, the ImageNet WRNs.

The detection backbone lives in :mod:`wrn.models.detection` (imported on demand: it loads torchvision's
detection package)."""

from __future__ import annotations

from wrn._lazy import lazy_attributes

# public name -> the module that defines it (loaded on first use)
_WHERE = {
    "BasicBlock": "wrn.models.imagenet",
    "Bottleneck": "wrn.models.imagenet",
    "FeatureInfo": "wrn.models.features",
    "FeatureNet": "wrn.models.features",
    "ImageNetResNet": "wrn.models.imagenet",
    "PreActBottleneck": "wrn.models.cifar",
    "PreActResNet": "wrn.models.cifar",
    "WideBlock": "wrn.models.cifar",
    "WideResNet": "wrn.models.cifar",
    "build_model": "wrn.models.registry",
    "count_macs": "wrn.models.complexity",
    "count_parameters": "wrn.models.complexity",
    "create_model": "wrn.models.registry",
    "list_models": "wrn.models.registry",
    "load_model": "wrn.models.io",
    "load_official": "wrn.models.official",
    "load_xternalz": "wrn.models.xternalz",
    "model_info": "wrn.models.registry",
    "model_table": "wrn.models.complexity",
    "save_model": "wrn.models.io",
    "unwrap": "wrn.models.io",
}

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "FeatureInfo",
    "FeatureNet",
    "ImageNetResNet",
    "PreActBottleneck",
    "PreActResNet",
    "WideBlock",
    "WideResNet",
    "build_model",
    "count_macs",
    "count_parameters",
    "create_model",
    "list_models",
    "load_model",
    "load_official",
    "load_xternalz",
    "model_info",
    "model_table",
    "save_model",
    "unwrap",
]

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, globals())
