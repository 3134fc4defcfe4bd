"""torch.hub entry points: ``torch.hub.load(REPO_DIR, "create_model", "wrn-28-10", source="local")``.

Every registered name is also an entry point with '-' and '.' turned into '_', e.g. ``wrn_28_10``,
``imagenet_wrn_18_1_5``. Models come freshly initialised (no pretrained weights are published); load your own
with ``wrn.load_model`` or ``wrn.load_official``.
"""

import os
import sys

dependencies = ["torch", "torchvision", "safetensors"]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from wrn.models import create_model, list_models, load_model, load_official  # noqa: E402,F401


def _entry(name):
    def build(pretrained=False, **kwargs):
        if pretrained:
            from wrn.errors import ConfigError

            raise ConfigError(
                f"no pretrained weights of {name} are published yet; call it with pretrained=False (the "
                "default) and options such as num_classes=100, dropout=0.3, in_channels=1, or load your own "
                "weights with wrn.load_model(DIR)"
            )
        return create_model(name, **kwargs)

    build.__name__ = name.replace("-", "_").replace(".", "_")
    build.__doc__ = f"{name} (see wrn.create_model for the keyword arguments)."
    return build


for _name in list_models():
    globals()[_name.replace("-", "_").replace(".", "_")] = _entry(_name)
