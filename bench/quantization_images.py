"""`bench.quantization --train`: a cnn trained here on an image config's data, then quantized.

Everything the Quantization component reads is made the way the pipeline makes it, only
smaller and without ML Metadata: the staged tf.Examples (`pipeline.images.stage_images`),
a TF Transform graph from the project's `preprocessing_fn`, the transformed splits, and
the Trainer's layout (the Keras file and the serving SavedModel). Then the component's
own `quantize_and_compare` measures the four models.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator

import numpy as np

from components.quantization import executor, measure
from pipeline.config import PipelineConfig
from pipeline.training import KERAS_MODEL_DIR

# Within the config's search space (configs/fashion_mnist.yaml): two blocks of 32 and 64
# filters, flattened into 128 units, as the tuner tends to pick.
CNN_HPARAMS = {
    "conv_blocks": 2,
    "convs_per_block": 2,
    "filters": 32,
    "kernel_size": 3,
    "batch_norm": True,
    "pooling": "flatten",
    "units": 128,
    "layers": 1,
    "dropout": 0.2,
    "l2": 1e-5,
    "learning_rate": 0.001,
    "optimizer": "adam",
}
_BATCH_SIZE = 64
_TRANSFORM_BATCH = 500
# Enough for every class in the label vocabulary, few enough for a quick Beam analysis.
_ANALYZE_EXAMPLES = 2000


def train_and_quantize(
    config: PipelineConfig, settings: executor.Settings, train_images: int, epochs: int
) -> dict[str, dict]:
    """Stages, transforms, trains and quantizes; returns the report's four models.

    Args:
      config: an image config (one image feature, no tabular ones, classification).
      settings: the Quantization settings to measure with.
      train_images: training images to stage and train on (a class-stratified sample).
      epochs: training epochs.
    """
    spec = settings.spec
    if len(spec.image) != 1 or spec.numeric or spec.categorical or not spec.is_classification:
        sys.exit(
            f"{config.source_file}: --train takes one image feature, no other features and "
            "a classification task"
        )
    root = os.path.join(config.output_root, "bench", f"quantization-{config.pipeline_name}")
    staged = _stage(config, os.path.join(root, "data"), train_images)
    work = os.path.join(root, "run")
    shutil.rmtree(work, ignore_errors=True)
    paths = _lay_out(config, staged, work, epochs)
    return executor.quantize_and_compare(paths, settings)["models"]


def _stage(config: PipelineConfig, directory: str, train_images: int) -> str:
    from pipeline.images import stage_images

    started = time.perf_counter()
    staging = stage_images(
        config.data.source,
        directory,
        feature=config.image_features[0],
        label=config.label,
        shape=config.image_shape,
        max_examples={"train": train_images},
    )
    print(f"staged {staging.rows} in {time.perf_counter() - started:.0f} s", flush=True)
    return directory


def _raw_spec(config: PipelineConfig) -> dict:
    import tensorflow as tf

    return {
        config.image_features[0]: tf.io.VarLenFeature(tf.string),
        config.label: tf.io.VarLenFeature(tf.string),
    }


def _analyze(config: PipelineConfig, records: list[bytes], transform_dir: str):
    """Writes the TF Transform graph (and the raw schema, as Transform does) for `records`."""
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from models.preprocessing import preprocessing_fn
    from pipeline.pipeline import feature_spec

    raw_spec = _raw_spec(config)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_spec))
    parsed = tf.io.parse_example(tf.constant(records), raw_spec)
    rows = [{k: [parsed[k].values[i].numpy()] for k in raw_spec} for i in range(len(records))]
    custom_config = {"features": feature_spec(config).to_dict()}
    with (
        beam.Pipeline() as pipeline,
        tft_beam.Context(temp_dir=os.path.join(transform_dir, "tmp"), force_tf_compat_v1=False),
    ):
        data = pipeline | beam.Create(rows)
        transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, custom_config)
        )
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    metadata_io.write_metadata(
        metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR)
    )
    return tft.TFTransformOutput(transform_dir)


def _transform(config: PipelineConfig, output, records: list[bytes]) -> dict[str, np.ndarray]:
    """The transformed features of `records`, run through the TFT graph in batches."""
    import tensorflow as tf

    layer = output.transform_features_layer()
    raw_spec = _raw_spec(config)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(records), _TRANSFORM_BATCH):
        batch = tf.constant(records[start : start + _TRANSFORM_BATCH])
        for name, values in layer(tf.io.parse_example(batch, raw_spec)).items():
            parts.setdefault(name, []).append(values.numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def _examples(features: dict[str, np.ndarray]) -> Iterator[bytes]:
    import tensorflow as tf

    def feature(value: np.ndarray) -> tf.train.Feature:
        if np.issubdtype(value.dtype, np.integer):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=np.reshape(value, [-1])))
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.reshape(value, [-1])))

    count = len(next(iter(features.values())))
    for i in range(count):
        example = {name: feature(values[i]) for name, values in features.items()}
        yield tf.train.Example(features=tf.train.Features(feature=example)).SerializeToString()


def _write_split(directory: str, records: Iterator[bytes]) -> str:
    import tensorflow as tf

    os.makedirs(directory)
    with tf.io.TFRecordWriter(os.path.join(directory, "data.gz"), options="GZIP") as writer:
        for record in records:
            writer.write(record)
    return directory


def _lay_out(config: PipelineConfig, staged: str, work: str, epochs: int) -> executor.Paths:
    """Transform and Trainer outputs under `work`, as the pipeline's artifacts hold them."""
    import tf_keras as keras

    from models import cnn
    from models.export import class_names_of, export_serving_model
    from pipeline.pipeline import feature_spec

    spec = feature_spec(config)
    raw_train = measure.read_records(os.path.join(staged, "train", "*"))
    raw_eval_dir = os.path.join(staged, "eval")
    raw_eval = measure.read_records(os.path.join(raw_eval_dir, "*"))
    transform_dir = os.path.join(work, "transform")
    output = _analyze(config, raw_train[:_ANALYZE_EXAMPLES], transform_dir)
    train = _transform(config, output, raw_train)
    evaluation = _transform(config, output, raw_eval)
    transformed = os.path.join(work, "transformed")
    _write_split(os.path.join(transformed, "Split-train"), _examples(train))
    _write_split(os.path.join(transformed, "Split-eval"), _examples(evaluation))

    keras.utils.set_random_seed(0)
    augmentation = config.model.augmentation
    hparams = CNN_HPARAMS | {
        "augment_flip": augmentation.flip,
        "augment_translate": augmentation.translate,
        "augment_zoom": augmentation.zoom,
    }
    classes = class_names_of(output, spec)
    model = cnn.build_model(hparams, spec, {}, num_classes=len(classes))
    image = spec.image[0]
    started = time.perf_counter()
    model.fit(
        {f"{image}_xf": train[f"{image}_xf"]},
        train[spec.label_xf],
        epochs=epochs,
        batch_size=_BATCH_SIZE,
        verbose=2,
    )
    print(f"trained {epochs} epochs in {time.perf_counter() - started:.0f} s", flush=True)
    trainer = os.path.join(work, "trainer")
    os.makedirs(os.path.join(trainer, KERAS_MODEL_DIR))
    model.save(os.path.join(trainer, KERAS_MODEL_DIR, "model.keras"))
    export_serving_model(model, output, spec, os.path.join(trainer, "Format-Serving"), classes)
    return executor.Paths(
        trainer_model=trainer,
        transform_graph=transform_dir,
        transformed_train=os.path.join(transformed, "Split-train"),
        transformed_eval=os.path.join(transformed, "Split-eval"),
        raw_eval=raw_eval_dir,
        served_model=os.path.join(work, "served"),
        int8_model=os.path.join(work, "int8"),
        tflite_model=os.path.join(work, "tflite"),
        report=os.path.join(work, "report"),
    )
