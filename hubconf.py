"""torch.hub entry points: ``torch.hub.load(REPO_DIR, "create_model", "wrn-28-10", source="local")``.

Every registered name is also an entry point with '-' and '.' turned into '_', e.g. ``wrn_28_10``,
``imagenet_wrn_18_1_5``. Models come freshly initialised; ``pretrained=True`` (or ``"IMAGENET1K_V1"``,
``"IMAGENET1K_V2"``) loads torchvision's ImageNet weights of ``wrn_50_2``, ``wrn_101_2`` and the ResNets
through torchvision's weights API. The CIFAR networks have no published weights: load your own with
``wrn.load_model``, ``wrn.load_official`` or ``wrn convert``.
"""

import os
import sys

dependencies = ["torch", "torchvision", "safetensors"]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from wrn.models import create_model, list_models, load_model, load_official  # noqa: E402,F401


def _entry(name):
    def build(pretrained=False, **kwargs):
        return create_model(name, pretrained=pretrained, **kwargs)

    build.__name__ = name.replace("-", "_").replace(".", "_")
    build.__doc__ = f"{name} (see wrn.create_model for the keyword arguments)."
    return build


for _name in list_models():
    globals()[_name.replace("-", "_").replace(".", "_")] = _entry(_name)
