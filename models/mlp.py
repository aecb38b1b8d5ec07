"""A multilayer perceptron over tabular features (numeric z-scores and categorical ids)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tf_keras as keras

from models.features import FeatureSpec, transformed_name


def _inputs(spec: FeatureSpec, vocab_sizes: Mapping[str, int]) -> tuple[dict, list]:
    """Keras inputs for the transformed features, and the tensors to concatenate."""
    inputs, parts = {}, []
    for key in spec.numeric:
        name = transformed_name(key)
        inputs[name] = keras.Input(shape=(), name=name, dtype="float32")
        parts.append(keras.layers.Reshape((1,))(inputs[name]))
    for key in spec.categorical:
        name = transformed_name(key)
        inputs[name] = keras.Input(shape=(), name=name, dtype="int64")
        parts.append(
            keras.layers.CategoryEncoding(vocab_sizes[key], output_mode="one_hot")(inputs[name])
        )
    return inputs, parts


def _optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    optimizers = {
        "adam": keras.optimizers.Adam,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(optimizers)}")
    return optimizers[name](learning_rate=learning_rate)


def build_model(
    hparams: Mapping[str, Any],
    spec: FeatureSpec,
    vocab_sizes: Mapping[str, int],
    num_classes: int | None = None,
) -> keras.Model:
    """Builds and compiles the MLP.

    Args:
      hparams: `units`, `layers`, `dropout`, `l2`, `learning_rate`, `optimizer`.
      spec: the features and the task.
      vocab_sizes: ids per categorical feature, OOV buckets included.
      num_classes: number of classes, for classification.

    Returns:
      A compiled tf_keras model taking the transformed features, giving class
      probabilities [batch, num_classes] or a regression value [batch, 1].
    """
    inputs, parts = _inputs(spec, vocab_sizes)
    x = keras.layers.Concatenate()(parts) if len(parts) > 1 else parts[0]
    regularizer = keras.regularizers.l2(hparams["l2"])
    for i in range(int(hparams["layers"])):
        x = keras.layers.Dense(
            int(hparams["units"]),
            activation="relu",
            kernel_regularizer=regularizer,
            name=f"dense_{i}",
        )(x)
        x = keras.layers.Dropout(hparams["dropout"])(x)
    if spec.is_classification:
        if not num_classes or num_classes < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(x)
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        outputs = keras.layers.Dense(1, name="outputs")(x)
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(
        optimizer=_optimizer(hparams["optimizer"], hparams["learning_rate"]),
        loss=loss,
        metrics=metrics,
    )
    return model
