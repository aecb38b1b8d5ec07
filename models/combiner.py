"""The combiner: encoded features concatenated, then fully connected layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras as keras


def concat_combiner(parts: Sequence[tf.Tensor], hparams: Mapping[str, Any]) -> tf.Tensor:
    """Concatenates the encoders' outputs and applies `layers` ReLU Dense layers.

    Args:
      parts: one [batch, n] tensor per encoded feature.
      hparams: `units`, `layers`, `dropout` (after each Dense), `l2` (on their kernels).

    Returns:
      The combined [batch, units] tensor (the concatenation when `layers` is 0).
    """
    x = keras.layers.Concatenate()(list(parts)) if len(parts) > 1 else parts[0]
    regularizer = keras.regularizers.l2(hparams["l2"])
    for i in range(int(hparams["layers"])):
        x = keras.layers.Dense(
            int(hparams["units"]),
            activation="relu",
            kernel_regularizer=regularizer,
            name=f"dense_{i}",
        )(x)
        x = keras.layers.Dropout(hparams["dropout"])(x)
    return x
