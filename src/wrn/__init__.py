"""wrn: Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016) for PyTorch.

>>> import wrn
>>> model = wrn.create_model("wrn-28-10", num_classes=100, dropout=0.3)
>>> wrn.save_model(model, "out/")          # model.safetensors + model.json
>>> same = wrn.load_model("out/")
"""

from wrn.models import (
    WideResNet,
    build_model,
    count_parameters,
    create_model,
    list_models,
    load_model,
    load_official,
    save_model,
)

__version__ = "0.1.0"

__all__ = [
    "WideResNet",
    "__version__",
    "build_model",
    "count_parameters",
    "create_model",
    "list_models",
    "load_model",
    "load_official",
    "save_model",
]
