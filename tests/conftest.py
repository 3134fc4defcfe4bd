"""Shared test settings: slow checks run in full only with WRN_SLOW=1 (CI runs their short versions)."""

import os

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("WRN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long check: run with WRN_SLOW=1 (a short version runs by default)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
