"""Shared fixtures: seeded RNG, digits data, and trained ONNX models cached per test session.

Model builders live in ``tests/models.py`` (``import models`` or ``from tests import models``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
for p in (str(TESTS), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from snncompile.data import Dataset, digits  # noqa: E402

import models  # noqa: E402

# the machines running the tests are small and shared
torch.set_num_threads(2)

DIGITS_CNN = ROOT / "examples" / "digits_cnn.onnx"
#: Lava installs on Python 3.10 only (pip install '.[loihi]'); elsewhere its tests skip
HAVE_LAVA = importlib.util.find_spec("lava") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_LAVA:
        return
    skip = pytest.mark.skip(reason="Lava is not installed (Python 3.10: pip install '.[loihi]')")
    for item in items:
        if "lava" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def digits_train() -> Dataset:
    return digits("train")


@pytest.fixture(scope="session")
def digits_test() -> Dataset:
    return digits("test")


@pytest.fixture(scope="session")
def digits_cnn_onnx() -> Path:
    """The bundled example model (ANN test accuracy 0.9907 on digits("test"))."""
    return DIGITS_CNN


@pytest.fixture(scope="session")
def resnet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models.resnet_block`` trained on digits (seeded), exported at opset 17."""
    model = models.trained(models.resnet_block, epochs=10)
    path = models.export(model, tmp_path_factory.mktemp("resnet") / "resnet.onnx")
    return path


@pytest.fixture(scope="session")
def vgg_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models.vgg_maxpool`` trained on digits (seeded), exported at opset 17."""
    model = models.trained(models.vgg_maxpool, epochs=12)
    return models.export(model, tmp_path_factory.mktemp("vgg") / "vgg.onnx")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/*.ir from the current code")
