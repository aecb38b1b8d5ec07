"""The task head on the combiner's output, and the compiled model around it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras as keras

from models.features import FeatureSpec

_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


def optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The named optimizer.

    Raises:
      ValueError: an unknown name.
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(_OPTIMIZERS)}")
    return _OPTIMIZERS[name](learning_rate=learning_rate)


def compiled_model(
    inputs: Mapping[str, tf.Tensor],
    combined: tf.Tensor,
    hparams: Mapping[str, Any],
    spec: FeatureSpec,
    num_classes: int | None,
) -> keras.Model:
    """Puts the task head on `combined` and compiles the model.

    Classification: a softmax layer "scores" [batch, num_classes], sparse categorical
    cross-entropy, accuracy. Regression: a linear layer "outputs" [batch, 1], mean
    squared error, mean absolute error.

    Args:
      inputs: the model's keras.Inputs by transformed feature name.
      combined: the combiner's output.
      hparams: `optimizer`, `learning_rate`.
      spec: the task.
      num_classes: number of classes, for classification.

    Raises:
      ValueError: classification with fewer than two classes, or an unknown optimizer.
    """
    if spec.is_classification:
        if not num_classes or num_classes < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(combined)
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        outputs = keras.layers.Dense(1, name="outputs")(combined)
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
    model = keras.Model(inputs=dict(inputs), outputs=outputs)
    model.compile(
        optimizer=optimizer(hparams["optimizer"], hparams["learning_rate"]),
        loss=loss,
        metrics=metrics,
    )
    return model
