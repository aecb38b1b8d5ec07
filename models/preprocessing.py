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


def _categorical(
    x: tf.Tensor | tf.SparseTensor, key: str, top_k: int | None = None, min_frequency: int = 1
) -> tf.Tensor:
    """Maps strings to vocabulary ids; missing and unseen values share the OOV bucket, as
    do values outside the `top_k` most frequent or seen fewer than `min_frequency` times
    (which bounds the vocabulary, and the model's tables, on high-cardinality columns)."""
    dense = _to_dense(x, "")
    return tft.compute_and_apply_vocabulary(
        dense,
        top_k=top_k,
        frequency_threshold=min_frequency if min_frequency > 1 else None,
        num_oov_buckets=OOV_BUCKETS,
        vocab_filename=vocabulary_name(key),
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


# Punctuation and symbols (Unicode classes P and S) become tokens of their own.
_PUNCTUATION = r"([\pP\pS])"
PER_SERIES = "per_series"
GLOBAL = "global"


def tokenize(text: tf.Tensor) -> tf.RaggedTensor:
    """Splits [batch] strings into words: lower-cased (Unicode), each punctuation mark or
    symbol a token of its own, split on whitespace. Returns ragged [batch, None] strings."""
    lowered = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.split(tf.strings.regex_replace(lowered, _PUNCTUATION, r" \1 "))


def _text(
    x: tf.Tensor | tf.SparseTensor, key: str, max_tokens: int, vocabulary_size: int
) -> tf.Tensor:
    """Token ids, int64 [batch, max_tokens]: 0 pads, 1.. are the vocabulary's words by
    frequency (at most `vocabulary_size`), then the OOV buckets. A longer text is cut to
    its first `max_tokens` tokens; a missing or empty text is all padding."""
    tokens = tokenize(_to_dense(x, ""))
    ids = tft.compute_and_apply_vocabulary(
        tokens,
        top_k=vocabulary_size,
        num_oov_buckets=OOV_BUCKETS,
        vocab_filename=vocabulary_name(key),
    )
    return (ids + 1).to_tensor(default_value=0, shape=[None, max_tokens])


def _series(x: tf.Tensor | tf.SparseTensor, key: str, length: int) -> tf.Tensor:
    """A series feature as float32 [batch, length], checked to hold `length` values."""
    if not isinstance(x, tf.SparseTensor):
        return tf.reshape(tf.cast(x, tf.float32), [-1, length])
    ragged = tf.RaggedTensor.from_sparse(x)
    sized = tf.debugging.assert_equal(
        ragged.row_lengths(),
        tf.constant(length, tf.int64),
        message=f"sequence feature {key}: a series does not have {length} values "
        "(FeatureSpec.sequence_length); every series must have that length",
    )
    values = tf.cast(
        _after(sized, ragged.to_tensor(float("nan"), shape=[None, length])), tf.float32
    )
    return values


def _sequence(
    x: tf.Tensor | tf.SparseTensor, key: str, length: int, normalization: str
) -> tf.Tensor:
    """A series as z-scores, float32 [batch, length].

    `per_series`: each series by its own mean and standard deviation (its shape counts,
    not its level or scale); `global`: by the mean and standard deviation of every value
    of the training data (TFT analyzers). A constant series becomes zeros; a NaN (which
    staging refuses, but a serving request may hold) becomes 0, the mean.
    """
    values = _series(x, key, length)
    present = tf.logical_not(tf.math.is_nan(values))
    zeroed = tf.where(present, values, 0.0)
    if normalization == PER_SERIES:
        count = tf.maximum(tf.reduce_sum(tf.cast(present, tf.float32), axis=1, keepdims=True), 1.0)
        mean = tf.reduce_sum(zeroed, axis=1, keepdims=True) / count
        squares = tf.where(present, tf.square(values - mean), 0.0)
        std = tf.sqrt(tf.reduce_sum(squares, axis=1, keepdims=True) / count)
    else:
        kept = tf.boolean_mask(values, present)
        mean = tft.mean(kept)
        std = tf.sqrt(tft.var(kept))
    return tf.where(present, tf.math.divide_no_nan(values - mean, std), 0.0)


def preprocessing_fn(
    inputs: Mapping[str, tf.Tensor | tf.SparseTensor], custom_config: Mapping[str, Any]
) -> dict[str, tf.Tensor]:
    """Transforms raw features into model inputs.

    Args:
      inputs: raw features as parsed with the schema; optional ones are SparseTensors.
      custom_config: `{"features": FeatureSpec.to_dict()}`, and for text or sequence
        features `"preprocessing": {"vocabulary_size": top_k, "sequence_normalization":
        "per_series" | "global"}`, and optionally `"categorical_top_k"` and
        `"categorical_min_frequency"` (pipeline.pipeline.preprocessing_options).

    Returns:
      Numeric features as float z-scores and categorical ones as int64 ids, each of
      shape [batch]; images as float32 [batch, height, width, channels] in [0, 1]; texts
      as int64 token ids [batch, max_tokens] (0 pads); series as float32 z-scores
      [batch, sequence_length]; the
      label as an int64 class id (classification) or a float (regression), [batch].
      All keyed by `transformed_name`.
    """
    spec = FeatureSpec.from_dict(custom_config["features"])
    outputs = {transformed_name(k): _numeric(inputs[k]) for k in spec.numeric}
    options = custom_config.get("preprocessing", {})
    for key in spec.categorical:
        outputs[transformed_name(key)] = _categorical(
            inputs[key],
            key,
            options.get("categorical_top_k"),
            options.get("categorical_min_frequency", 1),
        )
    for key in spec.image:
        outputs[transformed_name(key)] = _image(inputs[key], key, spec.image_shape)
    for key in spec.text:
        outputs[transformed_name(key)] = _text(
            inputs[key], key, spec.max_tokens, options["vocabulary_size"]
        )
    for key in spec.sequence:
        outputs[transformed_name(key)] = _sequence(
            inputs[key],
            key,
            spec.sequence_length,
            options.get("sequence_normalization", PER_SERIES),
        )
    if spec.label in inputs:
        label = inputs[spec.label]
        if spec.is_classification:
            outputs[spec.label_xf] = tft.compute_and_apply_vocabulary(
                _to_dense(label, ""), vocab_filename=LABEL_VOCABULARY
            )
        else:
            outputs[spec.label_xf] = tf.cast(_to_dense(label, 0), tf.float32)
    return outputs
