"""TF Transform preprocessing: the same graph runs in training and inside the served model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from models.features import (
    LABEL_VOCABULARY,
    OOV_BUCKETS,
    FeatureSpec,
    transformed_name,
    vocabulary_name,
)


def _to_dense(x: tf.Tensor | tf.SparseTensor, default: Any) -> tf.Tensor:
    """Turns an optional feature (a SparseTensor of shape [batch, 1]) into a [batch] tensor."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]),
            default_value=default,
        )
    return tf.reshape(x, [-1])


def _numeric(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """Imputes missing values with the training mean, then scales to z-scores."""
    if isinstance(x, tf.SparseTensor):
        x = tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32), x.dense_shape)
        present = x.values
    else:
        x = tf.cast(x, tf.float32)
        present = x
    mean = tft.mean(present)
    dense = _to_dense(x, float("nan"))
    imputed = tf.where(tf.math.is_nan(dense), tf.fill(tf.shape(dense), mean), dense)
    return tft.scale_to_z_score(imputed)


def _categorical(x: tf.Tensor | tf.SparseTensor, key: str) -> tf.Tensor:
    """Maps strings to vocabulary ids; missing and unseen values share the OOV bucket."""
    dense = _to_dense(x, "")
    return tft.compute_and_apply_vocabulary(
        dense, num_oov_buckets=OOV_BUCKETS, vocab_filename=vocabulary_name(key)
    )


def preprocessing_fn(
    inputs: Mapping[str, tf.Tensor | tf.SparseTensor], custom_config: Mapping[str, Any]
) -> dict[str, tf.Tensor]:
    """Transforms raw features into model inputs.

    Args:
      inputs: raw features as parsed with the schema; optional ones are SparseTensors.
      custom_config: `{"features": FeatureSpec.to_dict()}`.

    Returns:
      Numeric features as float z-scores, categorical ones as int64 ids, and the label
      as an int64 class id (classification) or a float (regression), each of shape
      [batch] and keyed by `transformed_name`.
    """
    spec = FeatureSpec.from_dict(custom_config["features"])
    outputs = {transformed_name(k): _numeric(inputs[k]) for k in spec.numeric}
    for key in spec.categorical:
        outputs[transformed_name(key)] = _categorical(inputs[key], key)
    if spec.label in inputs:
        label = inputs[spec.label]
        if spec.is_classification:
            outputs[spec.label_xf] = tft.compute_and_apply_vocabulary(
                _to_dense(label, ""), vocab_filename=LABEL_VOCABULARY
            )
        else:
            outputs[spec.label_xf] = tf.cast(_to_dense(label, 0), tf.float32)
    return outputs
