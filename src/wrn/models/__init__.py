"""Every network of the paper: CIFAR/SVHN WRNs, the thin pre-activation ResNets, the ImageNet WRNs.

The detection backbone lives in :mod:`wrn.models.detection` (imported on demand: it loads torchvision's
detection package)."""

from wrn.models.cifar import PreActBottleneck, PreActResNet, WideBlock, WideResNet
from wrn.models.complexity import count_macs, count_parameters, model_table
from wrn.models.features import FeatureInfo, FeatureNet
from wrn.models.imagenet import BasicBlock, Bottleneck, ImageNetResNet
from wrn.models.io import load_model, save_model, unwrap
from wrn.models.official import load_official
from wrn.models.registry import build_model, create_model, list_models, model_info
from wrn.models.xternalz import load_xternalz

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
