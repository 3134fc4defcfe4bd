"""wrn: Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016) for PyTorch.

>>> import wrn
>>> model = wrn.create_model("wrn-28-10", num_classes=100, dropout=0.3)
>>> wrn.save_model(model, "out/")          # model.safetensors + model.json
>>> same = wrn.load_model("out/")

The names below are loaded on first use, so that ``import wrn`` (and ``wrn --help``) does not pay for
importing torch until a model is actually asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wrn._lazy import lazy_attributes

__version__ = "0.1.0"

# public name -> the module that defines it (loaded on first use)
_WHERE = {
    "WideResNet": "wrn.models",
    "build_model": "wrn.models",
    "count_parameters": "wrn.models",
    "create_model": "wrn.models",
    "list_models": "wrn.models",
    "load_model": "wrn.models",
    "load_official": "wrn.models",
    "load_xternalz": "wrn.models",
    "save_model": "wrn.models",
}

__all__ = [
    "WideResNet",
    "__version__",
    "build_model",
    "count_parameters",
    "create_model",
    "list_models",
    "load_model",
    "load_official",
    "load_xternalz",
    "save_model",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from wrn.models import (
        WideResNet,
        build_model,
        count_parameters,
        create_model,
        list_models,
        load_model,
        load_official,
        load_xternalz,
        save_model,
    )


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, globals())
