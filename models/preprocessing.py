"""TF Transform preprocessing: the same graph runs in training and inside the served model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _after(check: tf.Operation, x: tf.Tensor) -> tf.Tensor:
    """`x`, computed only once `check` has passed."""
    with tf.control_dependencies([check]):
        return tf.identity(x)


def _image(x: tf.Tensor | tf.SparseTensor, key: str, shape: Sequence[int]) -> tf.Tensor:
    """Decodes encoded image files to float32 [batch, height, width, channels] in [0, 1].

    Only decoding and scaling: augmentation belongs to training (models/encoders.py),
    since this graph is also materialised by Transform and runs at serving.
    """
    height, width, channels = shape

    def decode(encoded: tf.Tensor) -> tf.Tensor:
        present = tf.debugging.assert_greater(
            tf.strings.length(encoded), 0, message=f"image feature {key}: an example has none"
        )
        image = tf.io.decode_image(
            _after(present, encoded), channels=channels, expand_animations=False
        )
        sized = tf.debugging.assert_equal(
            tf.shape(image)[:2],
            tf.constant([height, width]),
            message=f"image feature {key}: an image is not {height}x{width} "
            "(FeatureSpec.image_shape); resize the images or set image_shape to their size",
        )
        image = _after(sized, image)
        # A static shape once the check passed, not tf.ensure_shape: inside a
        # tf.function (TensorFlow 2.21) EnsureShape failed ahead of the check despite
        # the control dependency, with an error naming neither feature nor image_shape.
        image.set_shape([height, width, channels])
        return image

    images = tf.map_fn(
        decode,
        _to_dense(x, ""),
        fn_output_signature=tf.TensorSpec([height, width, channels], tf.uint8),
    )
    return tf.cast(images, tf.float32) / 255.0


def preprocessing_fn(
    inputs: Mapping[str, tf.Tensor | tf.SparseTensor], custom_config: Mapping[str, Any]
) -> dict[str, tf.Tensor]:
    """Transforms raw features into model inputs.

    Args:
      inputs: raw features as parsed with the schema; optional ones are SparseTensors.
      custom_config: `{"features": FeatureSpec.to_dict()}`.

    Returns:
      Numeric features as float z-scores and categorical ones as int64 ids, each of
      shape [batch]; images as float32 [batch, height, width, channels] in [0, 1]; the
      label as an int64 class id (classification) or a float (regression), [batch].
      All keyed by `transformed_name`.
    """
    spec = FeatureSpec.from_dict(custom_config["features"])
    outputs = {transformed_name(k): _numeric(inputs[k]) for k in spec.numeric}
    for key in spec.categorical:
        outputs[transformed_name(key)] = _categorical(inputs[key], key)
    for key in spec.image:
        outputs[transformed_name(key)] = _image(inputs[key], key, spec.image_shape)
    if spec.label in inputs:
        label = inputs[spec.label]
        if spec.is_classification:
            outputs[spec.label_xf] = tft.compute_and_apply_vocabulary(
                _to_dense(label, ""), vocab_filename=LABEL_VOCABULARY
            )
        else:
            outputs[spec.label_xf] = tf.cast(_to_dense(label, 0), tf.float32)
    return outputs
