"""int8 quantization of convolutional models.

Batch normalization folding and int8 convolutions on small CNNs with random weights,
then the Quantization executor on a CNN trained for a few seconds on generated PNG
images (a bright square whose position is the class): the int8 SavedModel's image
signatures, the fully-integer TFLite model with an image input, the guard's metrics
and the size targets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.quantization import executor, measure
from components.quantization import spec as keys
from models import cnn, quantization
from models.export import class_names_of, export_serving_model, vocab_sizes_of
from models.features import FeatureSpec
from pipeline.training import KERAS_MODEL_DIR
from tests.tftlib import TINY_CNN_HPARAMS, analyze_and_transform, png, serialize

SHAPE = (16, 16, 1)
CLASSES = (b"left", b"middle", b"right")
SPEC = FeatureSpec((), (), "label", "classification", image=("image",), image_shape=SHAPE)
RAW_SPEC = {"image": tf.io.VarLenFeature(tf.string), "label": tf.io.VarLenFeature(tf.string)}
# Flattening an 8x8x16 map into 128 units: ~130k Dense weights, ~2.5k conv weights.
# No augmentation: a flip would swap the left and right classes.
WEIGHT_DOMINATED = TINY_CNN_HPARAMS | {
    "augment_flip": False,
    "augment_translate": 0.0,
    "augment_zoom": 0.0,
    "filters": 16,
    "pooling": "flatten",
    "units": 128,
    "dropout": 0.1,
    "learning_rate": 0.003,
}
TRAIN, EVAL = 150, 60


def _randomize_batch_norms(model: keras.Model, rng: np.random.Generator) -> None:
    """Moving statistics, gamma and beta far from an identity, so that folding matters."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, n),
                    rng.normal(size=n),
                    rng.normal(size=n),
                    rng.uniform(0.2, 3.0, n),
                ]
            )


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = []
    for layer in model.layers:
        layers += _all_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return layers


def _tiny_cnn(rng: np.random.Generator) -> keras.Model:
    spec = FeatureSpec(
        ("weight",), (), "label", "classification", image=("image",), image_shape=SHAPE
    )
    hparams = TINY_CNN_HPARAMS | {"conv_blocks": 2, "pooling": "flatten", "dropout": 0.3}
    model = cnn.build_model(hparams, spec, {}, num_classes=3)
    _randomize_batch_norms(model, rng)
    return model


def _features(rng: np.random.Generator, count: int = 6) -> dict[str, np.ndarray]:
    return {
        "image_xf": rng.random((count, *SHAPE)).astype(np.float32),
        "weight_xf": rng.normal(size=count).astype(np.float32),
    }


def test_inference_model_folds_batch_norm_exactly_and_drops_training_only_layers():
    rng = np.random.default_rng(0)
    model = _tiny_cnn(rng)
    features = _features(rng)

    folded = quantization.inference_model(model)

    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in kinds and "Dropout" not in kinds
    assert not any(kind.startswith("Random") for kind in kinds)
    assert kinds.count("Conv2D") == 4 and kinds.count("ReLU") == 4
    convs = [layer for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.use_bias for layer in convs)
    # Inlined layers keep their encoder's name as a prefix (Keras numbers the rest by
    # how many layers this process made before, so the full name is not fixed).
    assert all(layer.name.startswith("image_encoder_conv2d") for layer in convs)
    np.testing.assert_allclose(
        folded(features, training=False).numpy(),
        model(features, training=False).numpy(),
        atol=1e-4,
    )


class _RandomShift(keras.layers.Layer):
    """A shift augmentation the layer list knows nothing of: identity at inference."""

    def call(self, inputs, training=None):
        if training:
            return tf.roll(inputs, shift=1, axis=1)
        return inputs


def test_inference_model_finds_pass_through_layers_by_behaviour_not_by_class():
    inputs = keras.Input(shape=SHAPE, name="image_xf")
    x = _RandomShift()(inputs)
    x = keras.layers.GaussianNoise(0.5)(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="valid", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("tanh")(x)
    x = keras.layers.SpatialDropout2D(0.5)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="scores")(x))
    rng = np.random.default_rng(1)
    _randomize_batch_norms(model, rng)

    folded = quantization.inference_model(model)

    assert [type(layer).__name__ for layer in folded.layers] == [
        "InputLayer",
        "Conv2D",
        "Activation",
        "GlobalAveragePooling2D",
        "Dense",
    ]
    images = rng.random((4, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(folded(images), model(images, training=False), atol=1e-4)
    # The shift does act in training, so dropping it is a judgement on inference only.
    assert not np.allclose(model.layers[1](images, training=True), images)


def test_int8_convolutions_are_per_channel_and_close_to_float():
    rng = np.random.default_rng(2)
    model = _tiny_cnn(rng)
    features = _features(rng, count=16)
    folded = quantization.inference_model(model)

    int8 = quantization.quantize_weights(model)

    convs = [layer for layer in int8.layers if isinstance(layer, quantization.Int8Conv2D)]
    assert len(convs) == 4
    for layer in convs:
        kernel, bias = folded.get_layer(layer.name).get_weights()
        flat = kernel.reshape(-1, kernel.shape[-1])
        expected, scale = quantization.quantize_kernel(flat)
        np.testing.assert_array_equal(layer.kernel_int8, expected)
        np.testing.assert_array_equal(layer.kernel_scale, scale)
        np.testing.assert_array_equal(layer.bias, bias)
        np.testing.assert_allclose(expected * scale, flat, atol=scale.max() / 2 + 1e-7)
    # Only the two packed variables: no float kernel and no normalization is left.
    assert sorted(v.dtype.name for v in int8.variables) == ["float32", "int8"]
    float_scores = model(features, training=False).numpy()
    int8_scores = int8(features).numpy()
    np.testing.assert_allclose(int8_scores, float_scores, atol=0.02)
    assert not np.array_equal(int8_scores, float_scores)
    np.testing.assert_array_equal(int8_scores.argmax(axis=1), float_scores.argmax(axis=1))


def test_a_grouped_convolution_is_refused_with_its_name():
    inputs = keras.Input(shape=(8, 8, 4), name="image_xf")
    x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    with pytest.raises(ValueError, match="'grouped'.*groups 1"):
        quantization.quantize_weights(model)


def _images(count: int, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    """Rows of noisy PNGs with a bright 4x4 square at the class's column, and the labels."""
    labels = rng.integers(len(CLASSES), size=count)
    pixels = rng.integers(0, 60, (count, *SHAPE), dtype=np.uint8)
    for image, label in zip(pixels, labels, strict=True):
        top, left = rng.integers(2, 10), 2 + 5 * int(label) + rng.integers(0, 2)
        image[top : top + 4, left : left + 4] = 230
    rows = [{"image": [png(p)], "label": [CLASSES[k]]} for p, k in zip(pixels, labels, strict=True)]
    return rows, labels


def _transformed_example(row: dict) -> bytes:
    features = {
        "image_xf": tf.train.Feature(
            float_list=tf.train.FloatList(value=np.reshape(row["image_xf"], [-1]))
        ),
        "label_xf": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["label_xf"])])),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _write_split(uri: Path, split: str, records: list[bytes]) -> str:
    directory = uri / f"Split-{split}"
    directory.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(directory / "data.gz"), options="GZIP") as writer:
        for record in records:
            writer.write(record)
    return str(directory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A weight-dominated CNN trained like the Trainer, its Transform output and splits."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("cnn_quantization")
    rows, _ = _images(TRAIN + EVAL, np.random.default_rng(0))
    (root / "transform").mkdir()
    transformed, output = analyze_and_transform(root / "transform", rows, SPEC, RAW_SPEC)
    images = np.stack([r["image_xf"] for r in transformed]).astype(np.float32)
    labels = np.array([r["label_xf"] for r in transformed], np.int64)
    model = cnn.build_model(
        WEIGHT_DOMINATED, SPEC, vocab_sizes_of(output, SPEC), len(class_names_of(output, SPEC))
    )
    model.fit({"image_xf": images[:TRAIN]}, labels[:TRAIN], epochs=8, batch_size=16, verbose=0)
    trainer = root / "trainer"
    (trainer / KERAS_MODEL_DIR).mkdir(parents=True)
    model.save(str(trainer / KERAS_MODEL_DIR / "model.keras"))
    classes = class_names_of(output, SPEC)
    export_serving_model(model, output, SPEC, str(trainer / "Format-Serving"), classes)
    records = [_transformed_example(r) for r in transformed]
    paths = executor.Paths(
        trainer_model=str(trainer),
        transform_graph=str(root / "transform"),
        transformed_train=_write_split(root / "transformed", "train", records[:TRAIN]),
        transformed_eval=_write_split(root / "transformed", "eval", records[TRAIN:]),
        raw_eval=_write_split(root / "examples", "eval", [serialize(r) for r in rows[TRAIN:]]),
        served_model=str(root / "served"),
        int8_model=str(root / "int8"),
        tflite_model=str(root / "tflite"),
        report=str(root / "report"),
    )
    return paths, rows[TRAIN:], labels[TRAIN:]


@pytest.fixture(scope="module")
def report(trained):
    paths, _, _ = trained
    settings = executor.Settings(
        spec=SPEC, max_metric_drop=0.05, representative_samples=50, latency_runs=1
    )
    return executor.quantize_and_compare(paths, settings)


def test_int8_saved_model_serves_png_bytes_on_both_signatures(trained, report):
    paths, rows, labels = trained
    loaded = tf.saved_model.load(os.path.join(paths.int8_model, "Format-Serving"))
    assert sorted(v.dtype.name for v in loaded.variables) == ["float32", "int8"]
    examples = tf.constant([serialize({"image": r["image"]}) for r in rows])
    by_example = loaded.signatures["serving_default"](examples=examples)
    raw = loaded.signatures["serving_raw"](image=tf.constant([r["image"][0] for r in rows]))
    assert by_example["scores"].shape == (EVAL, 3)
    assert sorted(by_example["classes"].numpy()[0].tolist()) == sorted(CLASSES)
    np.testing.assert_allclose(raw["scores"], by_example["scores"], rtol=1e-5, atol=1e-6)
    float_model = tf.saved_model.load(os.path.join(paths.trainer_model, "Format-Serving"))
    float_scores = float_model.signatures["serving_default"](examples=examples)["scores"]
    np.testing.assert_allclose(by_example["scores"], float_scores, atol=0.05)
    accuracy = np.mean(np.argmax(by_example["scores"], axis=1) == labels)
    assert accuracy == pytest.approx(report["models"]["int8"]["metrics"]["accuracy"])
    assert accuracy >= 0.9


def test_tflite_model_is_fully_int8_with_an_image_input(trained, report):
    paths, _, _ = trained
    path = os.path.join(paths.tflite_model, keys.TFLITE_FILE)
    interpreter = tf.lite.Interpreter(model_path=path)
    (image,) = interpreter.get_input_details()
    (scores,) = interpreter.get_output_details()
    assert image["dtype"] == np.int8 and list(image["shape_signature"]) == [-1, *SHAPE]
    assert image["quantization"][0] > 0
    assert scores["dtype"] == np.int8
    assert "float32" not in report["models"]["int8_tflite"]["tensor_data_by_type"]
    assert report["tflite_inputs"] == [
        {"name": "image_xf", "dtype": "float32", "categorical": False, "shape": list(SHAPE)}
    ]
    evaluation = measure.parse_features(
        measure.read_records(os.path.join(paths.transformed_eval, "*")),
        {
            "image_xf": tf.io.FixedLenFeature(SHAPE, tf.float32),
            "label_xf": tf.io.FixedLenFeature([], tf.int64),
        },
    )
    assert evaluation["image_xf"].shape == (EVAL, *SHAPE)
    runner = measure.TFLiteRunner(
        path, [quantization.TFLiteInput("image_xf", tf.float32, False, SHAPE)]
    )
    # Batches of 7 leave a ragged last batch: the runner resizes for it.
    outputs = runner.predict({"image_xf": evaluation["image_xf"]}, batch=7)
    accuracy = float(np.mean(np.argmax(outputs, axis=1) == evaluation["label_xf"]))
    assert accuracy == pytest.approx(report["models"]["int8_tflite"]["metrics"]["accuracy"])
    assert report["models"]["float"]["metrics"]["accuracy"] - accuracy <= 2 / EVAL


def test_guard_measures_every_model_on_the_whole_eval_split_in_batches(trained, report):
    paths, _, _ = trained
    models = report["models"]
    for entry in models.values():
        assert entry["metrics"]["example_count"] == EVAL
        assert entry["latency_ms"]["batch_1"] > 0 and entry["latency_ms"]["batch_256"] > 0
    assert models["float"]["metrics"]["accuracy"] >= 0.9
    assert models["int8"]["metric_drop"] <= 1 / EVAL
    assert report["blessed"] is True and report["served"] == "int8"
    records = measure.read_records(os.path.join(paths.raw_eval, "*"))
    runner = measure.SavedModelRunner(os.path.join(paths.int8_model, "Format-Serving"), "scores")
    np.testing.assert_allclose(
        runner.predict(records, batch=7), runner.predict(records), rtol=1e-5, atol=1e-6
    )


def test_weight_dominated_cnn_reaches_the_size_targets(report):
    models, ratios = report["models"], report["size_ratios"]
    assert models["float"]["variables_breakdown"]["weights"] > 4 * 100_000
    assert ratios["int8_variables_vs_float"] <= 0.30
    assert ratios["int8_tflite_vs_float_tflite"] <= 0.30


def test_calibration_sample_is_drawn_from_the_whole_split(tmp_path):
    records = [f"record-{i}".encode() for i in range(50)]
    directory = _write_split(tmp_path, "train", records)
    sample = measure.sample_records(os.path.join(directory, "*"), 10)
    assert len(sample) == len(set(sample)) == 10 and set(sample) <= set(records)
    # Not the first ten: a split written in class order would calibrate on one class.
    assert sample != records[:10] and max(records.index(r) for r in sample) >= 25
    assert sorted(measure.sample_records(os.path.join(directory, "*"), 100)) == sorted(records)


def test_a_sample_spans_read_batches_and_two_aligned_splits_give_the_same_positions(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(measure, "_SAMPLE_READ_BATCH", 16)  # 100 records: 7 read batches
    raw = [f"raw-{i}".encode() for i in range(100)]
    transformed = [f"transformed-{i}".encode() for i in range(100)]
    raw_sample = measure.sample_records(os.path.join(_write_split(tmp_path, "raw", raw), "*"), 30)
    transformed_sample = measure.sample_records(
        os.path.join(_write_split(tmp_path, "transformed", transformed), "*"), 30
    )
    positions = [raw.index(r) for r in raw_sample]
    assert positions == sorted(set(positions)) and len(positions) == 30  # in file order
    assert positions == [transformed.index(r) for r in transformed_sample]
    assert max(positions) >= 80  # the last read batches compete too
    assert measure.sample_records(os.path.join(tmp_path, "Split-raw", "*"), 0) == []
