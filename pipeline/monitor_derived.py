"""Drift of image, text and sequence features, through statistics derived from each value.

TFDV's comparators compare one distribution per feature: a numeric histogram or the shares
of categorical values. A raw image, text or series has no such distribution, so each value
becomes a few numbers (or, for texts, its tokens) that say what the model would notice if
serving changed, and those are compared like any tabular feature, by the same comparators
and thresholds, into the same drift.json entries (named `<feature>.<statistic>`):

- image (encoded bytes): height, width, channels, brightness (mean pixel value in [0, 1]),
  contrast (standard deviation of the pixel values in [0, 1]);
- text: tokens per text, the share of its tokens out of the model's vocabulary (the
  vocabulary Transform computed for the served model, found through lineage) and
  `top_tokens`, the text's tokens among the vocabulary's most frequent (L-infinity over
  their shares: a shift in topics moves the shares of "election", "film" or "match");
- sequence (a float list): length, mean, standard deviation and range (max - min) of each
  series.

Tokens are split by the same `tokenize` as the model's Transform (models/preprocessing.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf.message import DecodeError
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.config import MonitoringConfig
from pipeline.errors import DataError

# The statistics derived from each feature type, in drift.json's order; a name here is a
# categorical statistic (compared by L-infinity), the others are numeric (Jensen-Shannon).
IMAGE_STATISTICS = ("height", "width", "channels", "brightness", "contrast")
TEXT_STATISTICS = ("tokens", "oov_share", "top_tokens")
SEQUENCE_STATISTICS = ("length", "mean", "std", "range")
CATEGORICAL_STATISTICS = ("top_tokens",)
# Vocabulary entries (most frequent first) whose shares `top_tokens` compares.
TOP_TOKENS = 200
# Training examples per split whose statistics are derived (a strided sample beyond).
MAX_REFERENCE_ROWS = 20_000
_BATCH = 256


def derived_names(
    image: Sequence[str], text: Sequence[str], sequence: Sequence[str]
) -> dict[str, str]:
    """Every derived statistic's name (`<feature>.<statistic>`) -> its feature type."""
    names = {}
    for kind, features, statistics in (
        ("image", image, IMAGE_STATISTICS),
        ("text", text, TEXT_STATISTICS),
        ("sequence", sequence, SEQUENCE_STATISTICS),
    ):
        for feature in features:
            names.update({f"{feature}.{s}": kind for s in statistics})
    return names


def is_categorical(name: str) -> bool:
    """Whether a derived statistic is compared as a categorical one (L-infinity)."""
    return name.rsplit(".", 1)[-1] in CATEGORICAL_STATISTICS


def derived_frame(
    raw: Mapping[str, Sequence[Any]],
    kinds: Mapping[str, str],
    vocabularies: Mapping[str, Sequence[bytes]],
) -> pd.DataFrame:
    """One row per example, a column per derived statistic of each raw feature.

    Args:
      raw: feature -> its values, one per example: encoded image bytes, text (str or
        UTF-8 bytes), or a series (a sequence of floats); None where an example has none.
      kinds: feature -> "image", "text" or "sequence".
      vocabularies: text feature -> the model's vocabulary, most frequent token first.

    Returns:
      The frame TFDV reads: NaN (numeric) or None (tokens) where an example has no value.

    Raises:
      ValueError: an image that cannot be decoded (the message says which example).
    """
    columns: dict[str, Any] = {}
    for feature, values in raw.items():
        kind = kinds[feature]
        if kind == "image":
            stats = image_statistics(values, feature)
        elif kind == "text":
            stats = text_statistics(values, vocabularies[feature])
        else:
            stats = sequence_statistics(values)
        columns.update({f"{feature}.{name}": column for name, column in stats.items()})
    return pd.DataFrame(columns)


def image_statistics(images: Sequence[bytes | None], feature: str) -> dict[str, Any]:
    """Per image: height, width, channels, brightness and contrast (pixels scaled to [0, 1]).

    Raises:
      ValueError: bytes that are no image TensorFlow decodes (PNG, JPEG, GIF, BMP).
    """
    import tensorflow as tf

    present = [i for i, image in enumerate(images) if image]
    rows = np.full((len(images), len(IMAGE_STATISTICS)), np.nan, np.float32)
    encoded = tf.constant([images[i] for i in present], tf.string, shape=[len(present)])
    dataset = tf.data.Dataset.from_tensor_slices(encoded).map(
        _image_row, num_parallel_calls=tf.data.AUTOTUNE
    )
    start = 0
    try:
        for batch in dataset.batch(_BATCH).as_numpy_iterator():
            rows[present[start : start + len(batch)]] = batch
            start += len(batch)
    except tf.errors.InvalidArgumentError as err:
        bad = _first_undecodable(images, present[start : start + _BATCH])
        raise ValueError(
            f"feature {feature!r}: the image of example {bad} cannot be decoded"
            f" ({err.message.splitlines()[0]})"
        ) from err
    return dict(zip(IMAGE_STATISTICS, rows.T, strict=True))


def _first_undecodable(images: Sequence[bytes | None], indices: Sequence[int]) -> int:
    import tensorflow as tf

    for index in indices:
        try:
            tf.io.decode_image(images[index], expand_animations=False)
        except tf.errors.InvalidArgumentError:
            return index
    return indices[0]


def _image_row(encoded):
    import tensorflow as tf

    image = tf.io.decode_image(encoded, expand_animations=False)
    shape = tf.cast(tf.shape(image), tf.float32)
    pixels = tf.cast(image, tf.float32) / 255.0
    return tf.stack(
        [shape[0], shape[1], shape[2], tf.reduce_mean(pixels), tf.math.reduce_std(pixels)]
    )


def text_statistics(
    texts: Sequence[str | bytes | None], vocabulary: Sequence[bytes]
) -> dict[str, Any]:
    """Per text: tokens, share of them out of `vocabulary`, and its tokens among the
    vocabulary's first TOP_TOKENS (a list of strings; None for a missing text)."""
    import tensorflow as tf

    from models.preprocessing import tokenize

    known = _membership(vocabulary)
    top = _membership(vocabulary[:TOP_TOKENS])
    counts, oov, tops = [], [], []
    for batch in _batches(texts):
        tokens = tokenize(tf.constant(batch, tf.string))
        lengths = tokens.row_lengths().numpy()
        out = tokens.with_flat_values(1 - known.lookup(tokens.flat_values))
        oov_counts = tf.reduce_sum(out, axis=1).numpy()
        counts.append(lengths)
        oov.append(np.where(lengths > 0, oov_counts / np.maximum(lengths, 1), np.nan))
        kept = tf.ragged.boolean_mask(
            tokens, tokens.with_flat_values(top.lookup(tokens.flat_values) > 0)
        )
        tops += [[t.decode() for t in row] for row in kept.to_list()]
    missing = np.array([t is None for t in texts], dtype=bool)
    tokens_per_text = np.concatenate(counts).astype(np.float32) if counts else np.zeros(0)
    tokens_per_text[missing] = np.nan
    return {
        "tokens": tokens_per_text,
        "oov_share": np.concatenate(oov).astype(np.float32) if oov else np.zeros(0),
        "top_tokens": [None if m else row for m, row in zip(missing, tops, strict=True)],
    }


def _membership(tokens: Sequence[bytes]):
    """A table: token -> 1 if it is one of `tokens`, else 0."""
    import tensorflow as tf

    keys = tf.constant(list(tokens) or [b""], tf.string)
    values = tf.ones_like(keys, tf.int64) if tokens else tf.zeros_like(keys, tf.int64)
    initializer = tf.lookup.KeyValueTensorInitializer(keys, values)
    return tf.lookup.StaticHashTable(initializer, default_value=0)


def _batches(texts: Sequence[str | bytes | None]) -> Iterator[list[bytes]]:
    for start in range(0, len(texts), _BATCH):
        yield [
            t.encode() if isinstance(t, str) else (t or b"") for t in texts[start : start + _BATCH]
        ]


def sequence_statistics(series: Sequence[Sequence[float] | None]) -> dict[str, Any]:
    """Per series: length, mean, standard deviation and range of its values (NaN-free)."""
    rows = np.full((len(series), 4), np.nan, np.float32)
    for i, values in enumerate(series):
        if values is None or len(values) == 0:
            continue
        array = np.asarray(values, np.float64)
        rows[i] = (len(array), array.mean(), array.std(), array.max() - array.min())
    return dict(zip(SEQUENCE_STATISTICS, rows.T, strict=True))


def reference_frame(
    examples_uri: str,
    kinds: Mapping[str, str],
    vocabularies: Mapping[str, Sequence[bytes]],
) -> pd.DataFrame:
    """The derived statistics of the served model's training data: ExampleGen's train and
    eval splits (at most MAX_REFERENCE_ROWS each, evenly spaced).

    The out-of-vocabulary share is taken from the eval split only: Transform computed the
    vocabulary on the train split, whose texts are therefore almost all in it, so against
    them any new text, even one of the same distribution, would look drifted.

    Raises:
      DataError: a split has no examples, or a record is not a tf.Example.
    """
    frames = []
    for split in ("train", "eval"):
        raw = _split_values(os.path.join(examples_uri, f"Split-{split}"), kinds)
        frame = derived_frame(raw, kinds, vocabularies)
        if split == "train":
            for column in frame.columns:
                if column.endswith(".oov_share"):
                    frame[column] = np.float32(np.nan)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _split_values(split_dir: str, kinds: Mapping[str, str]) -> dict[str, list[Any]]:
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(split_dir, "*")))
    if not files:
        raise DataError(f"{split_dir}: no examples of the served model's training data")
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    step = max(1, -(-len(records) // MAX_REFERENCE_ROWS))
    raw: dict[str, list[Any]] = {feature: [] for feature in kinds}
    for number, record in enumerate(records[::step]):
        try:
            example = tf.train.Example.FromString(record)
        except DecodeError as err:
            raise DataError(f"{split_dir}: record {number * step} is not a tf.Example") from err
        for feature, values in raw.items():
            values.append(feature_value(example.features.feature.get(feature), kinds[feature]))
    return raw


def feature_value(feature: Any, kind: str) -> Any:
    """A tf.Example feature's raw value for its type: bytes (image), str (text), a list of
    floats (sequence), or None when the example has none."""
    if feature is None:
        return None
    if kind == "sequence":
        return list(feature.float_list.value) or None
    values = feature.bytes_list.value
    if not values:
        return None
    return values[0] if kind == "image" else values[0].decode("utf-8", "replace")


def compare(reference: pd.DataFrame, served: pd.DataFrame, monitoring: MonitoringConfig):
    """TFDV statistics of both frames of derived statistics and the drift comparators' result.

    Args:
      reference: the training data's derived statistics (`reference_frame`).
      served: the serving data's (`derived_frame`).
      monitoring: the thresholds.

    Returns:
      (training statistics, serving statistics, anomalies with the drift measurements).
    """
    import tensorflow_data_validation as tfdv

    schema = comparing_schema(reference, monitoring)
    training = tfdv.generate_statistics_from_dataframe(reference)
    serving = tfdv.generate_statistics_from_dataframe(served)
    return (
        training,
        serving,
        tfdv.validate_statistics(serving, schema, previous_statistics=training),
    )


def comparing_schema(frame: pd.DataFrame, monitoring: MonitoringConfig) -> schema_pb2.Schema:
    """A schema of the derived statistics (the frame's columns), each with its comparator:
    Jensen-Shannon divergence for the numbers, L-infinity distance for the top tokens."""
    schema = schema_pb2.Schema()
    for name in frame.columns:
        feature = schema.feature.add(name=name)
        if is_categorical(name):
            feature.type = schema_pb2.BYTES
            threshold = monitoring.thresholds.get(name, monitoring.token_threshold)
            feature.drift_comparator.infinity_norm.threshold = threshold
        else:
            feature.type = schema_pb2.FLOAT
            threshold = monitoring.threshold(name, categorical=False)
            feature.drift_comparator.jensen_shannon_divergence.threshold = threshold
    return schema
