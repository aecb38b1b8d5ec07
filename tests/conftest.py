"""Shared fixtures: deterministic seeds for every test, and the repository root."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _seed():
    """Seeds Python, NumPy and TensorFlow before each test."""
    import tensorflow as tf

    random.seed(0)
    np.random.seed(0)
    tf.random.set_seed(0)
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
