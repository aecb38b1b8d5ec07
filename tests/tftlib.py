"""Test helper: a real TF Transform output made from a handful of in-memory rows.

Penguin rows by default; `image_rows` makes rows with generated PNG images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from models.features import FeatureSpec
from models.preprocessing import preprocessing_fn

SPEC = FeatureSpec(
    numeric=("bill_length_mm", "flipper_length_mm"),
    categorical=("island",),
    label="species",
    task="classification",
)

# A cnn small enough to build and train a batch in a test.
TINY_CNN_HPARAMS = {
    "conv_blocks": 1,
    "convs_per_block": 2,
    "filters": 4,
    "kernel_size": 3,
    "batch_norm": True,
    "pooling": "global_average",
    "units": 8,
    "layers": 1,
    "dropout": 0.0,
    "l2": 1e-6,
    "learning_rate": 0.01,
    "optimizer": "adam",
    "augment_flip": True,
    "augment_translate": 0.2,
    "augment_zoom": 0.2,
}

RAW_FEATURE_SPEC = {
    "bill_length_mm": tf.io.VarLenFeature(tf.float32),
    "flipper_length_mm": tf.io.VarLenFeature(tf.int64),
    "island": tf.io.VarLenFeature(tf.string),
    "species": tf.io.VarLenFeature(tf.string),
}

# Three well-separated species; one row misses its bill length, one its island.
ROWS = [
    {
        "bill_length_mm": [39.0],
        "flipper_length_mm": [180],
        "island": [b"Torgersen"],
        "species": [b"Adelie"],
    },
    {
        "bill_length_mm": [40.0],
        "flipper_length_mm": [185],
        "island": [b"Torgersen"],
        "species": [b"Adelie"],
    },
    {
        "bill_length_mm": [],
        "flipper_length_mm": [190],
        "island": [b"Dream"],
        "species": [b"Adelie"],
    },
    {
        "bill_length_mm": [49.0],
        "flipper_length_mm": [195],
        "island": [b"Dream"],
        "species": [b"Chinstrap"],
    },
    {"bill_length_mm": [50.0], "flipper_length_mm": [198], "island": [], "species": [b"Chinstrap"]},
    {
        "bill_length_mm": [47.0],
        "flipper_length_mm": [220],
        "island": [b"Biscoe"],
        "species": [b"Gentoo"],
    },
    {
        "bill_length_mm": [48.0],
        "flipper_length_mm": [225],
        "island": [b"Biscoe"],
        "species": [b"Gentoo"],
    },
    {
        "bill_length_mm": [46.0],
        "flipper_length_mm": [215],
        "island": [b"Biscoe"],
        "species": [b"Gentoo"],
    },
]


def analyze_and_transform(
    output_dir: str | Path,
    rows=ROWS,
    spec: FeatureSpec = SPEC,
    raw_feature_spec: dict | None = None,
    options: dict | None = None,
):
    """Runs TFT on `rows` with the project's preprocessing_fn.

    Args:
      output_dir: where the transform graph and the raw schema are written.
      rows: feature name -> list of values (empty for a missing value).
      spec: the features and task.
      raw_feature_spec: the raw schema as a feature spec (RAW_FEATURE_SPEC by default);
        a FixedLenFeature of shape [] takes a row's single value.
      options: custom_config's "preprocessing" (text vocabulary size, series
        normalisation), if the features need it.

    Returns:
      (transformed rows, TFTransformOutput written under output_dir).
    """
    raw_feature_spec = RAW_FEATURE_SPEC if raw_feature_spec is None else raw_feature_spec
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(raw_feature_spec)
    )
    dataset = ([_instance(row, raw_feature_spec) for row in rows], metadata)
    config = {"features": spec.to_dict(), **({"preprocessing": options} if options else {})}
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=output_dir)):
        (transformed, _), transform_fn = dataset | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config)
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(output_dir))
    # TFX's Transform also records the raw schema; the serving signatures read it.
    metadata_io.write_metadata(
        metadata, str(Path(output_dir) / tft.TFTransformOutput.RAW_METADATA_DIR)
    )
    return transformed, tft.TFTransformOutput(str(output_dir))


def _instance(row: dict, raw_feature_spec: dict) -> dict:
    """A row as TFT's instance dicts hold it: scalars for FixedLenFeatures of shape []."""

    def scalar(key: str) -> bool:
        feature = raw_feature_spec.get(key)
        return isinstance(feature, tf.io.FixedLenFeature) and not feature.shape

    return {k: v[0] if scalar(k) else v for k, v in row.items()}


def png(pixels: np.ndarray) -> bytes:
    """A uint8 [height, width, channels] array as PNG file bytes."""
    return tf.io.encode_png(pixels).numpy()


def image_rows(
    count: int, shape: tuple[int, int, int], classes=(b"coat", b"shirt"), seed: int = 0
) -> tuple[list[dict], np.ndarray]:
    """Rows with a random PNG image ("image") and a class name ("label").

    Returns:
      (rows, their uint8 pixels [count, height, width, channels]).
    """
    pixels = np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)
    rows = [{"image": [png(p)], "label": [classes[i % len(classes)]]} for i, p in enumerate(pixels)]
    return rows, pixels


def serialize(row: dict) -> bytes:
    """A raw row as a serialized tf.Example (empty lists become absent features)."""
    features = {}
    for key, values in row.items():
        if not values:
            continue
        if isinstance(values[0], bytes):
            features[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif isinstance(values[0], int):
            features[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            features[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
