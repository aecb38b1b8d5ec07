"""The tuner's search space as keras_tuner HyperParameters, built from a plain dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras_tuner


def hyperparameters(space: Mapping[str, Any]) -> keras_tuner.HyperParameters:
    """Declares the search space.

    Args:
      space: `{"units": {"min", "max", "step"}, "layers": {...}, "learning_rate":
        {"min", "max", "sampling"}, "dropout": {...}, "l2": {...}, "optimizer": [names]}`.

    Returns:
      HyperParameters holding one entry per key.
    """
    hp = keras_tuner.HyperParameters()
    for key in ("units", "layers"):
        r = space[key]
        hp.Int(key, r["min"], r["max"], step=r["step"])
    for key in ("learning_rate", "dropout", "l2"):
        r = space[key]
        if r["min"] == r["max"]:
            hp.Fixed(key, r["min"])
        else:
            hp.Float(key, r["min"], r["max"], sampling=r["sampling"])
    hp.Choice("optimizer", list(space["optimizer"]))
    return hp
