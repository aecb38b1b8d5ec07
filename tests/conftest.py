"""Shared fixtures: deterministic seeds for every test, and the repository root."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _seed():
    """Seeds Python, NumPy, TensorFlow and Keras' own seed generator before each test.

    Keras' generator (which seeds unseeded initializers once any code has called
    `keras.utils.set_random_seed`, as the Tuner and some tests do) is reset too: otherwise a
    model's initial weights depend on which test files ran before in the same worker.
    """
    import tensorflow as tf
    import tf_keras as keras

    random.seed(0)
    np.random.seed(0)
    tf.random.set_seed(0)
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
