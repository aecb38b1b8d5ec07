"""The cnn family and the serving signatures of a model with an image feature."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import cnn
from models.export import (
    class_names_of,
    export_lean_serving_model,
    export_serving_model,
    vocab_sizes_of,
)
from models.features import FeatureSpec
from tests.tftlib import TINY_CNN_HPARAMS, analyze_and_transform, image_rows, png, serialize

TINY = TINY_CNN_HPARAMS
NO_AUGMENTATION = {"augment_flip": False, "augment_translate": 0.0, "augment_zoom": 0.0}

SHAPE = (8, 8, 1)
CLASSES = (b"bag", b"coat", b"shirt")
# An image and a numeric feature: both encoders, the combiner and every raw input kind.
SPEC = FeatureSpec(("weight",), (), "label", "classification", image=("image",), image_shape=SHAPE)
IMAGE_SCHEMAS = {
    "varlen": tf.io.VarLenFeature(tf.string),
    "fixed_scalar": tf.io.FixedLenFeature([], tf.string),
    "fixed_one": tf.io.FixedLenFeature([1], tf.string),
}


def _images(count, shape):
    return np.random.default_rng(1).random((count, *shape)).astype(np.float32)


@pytest.mark.parametrize("pooling", ["global_average", "flatten"])
def test_cnn_on_images_alone_gives_class_probabilities_and_trains(pooling):
    spec = FeatureSpec((), (), "label", "classification", image=("image",), image_shape=(28, 28, 1))
    model = cnn.build_model(TINY | {"conv_blocks": 2, "pooling": pooling}, spec, {}, num_classes=10)
    assert model.input_names == ["image_xf"]
    features = {"image_xf": _images(4, (28, 28, 1))}
    scores = model(features, training=False).numpy()
    assert scores.shape == (4, 10)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    loss, accuracy = model.train_on_batch(features, np.array([0, 1, 2, 3]))
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0


def test_cnn_combines_an_image_with_tabular_features():
    spec = FeatureSpec(
        ("weight",), ("colour",), "price", "regression", image=("photo",), image_shape=(8, 8, 3)
    )
    model = cnn.build_model(TINY | {"conv_blocks": 2, "layers": 2}, spec, {"colour": 4})
    assert sorted(model.input_names) == ["colour_xf", "photo_xf", "weight_xf"]
    features = {
        "photo_xf": _images(5, (8, 8, 3)),
        "weight_xf": np.linspace(-1, 1, 5).astype(np.float32),
        "colour_xf": np.array([0, 1, 2, 3, 0]),
    }
    out = model(features, training=False)
    assert out.shape == (5, 1)
    assert out.dtype == tf.float32
    # The second block doubles the first's 4 filters: 8 image features for the combiner.
    assert model.get_layer("photo_encoder").output_shape == (None, 8)


def test_cnn_reloads_from_the_keras_file_the_trainer_writes(tmp_path):
    spec = FeatureSpec(
        (), ("colour",), "label", "classification", image=("image",), image_shape=SHAPE
    )
    model = cnn.build_model(TINY, spec, {"colour": 3}, num_classes=3)
    features = {"image_xf": _images(3, SHAPE), "colour_xf": np.array([0, 1, 2])}
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        reloaded(features, training=False).numpy(), model(features, training=False).numpy()
    )


def test_cnn_refuses_a_spec_without_images():
    with pytest.raises(ValueError, match="cnn family needs an image feature"):
        cnn.build_model(TINY, FeatureSpec(("a",), (), "y", "regression"), {})


def test_augmentation_runs_in_training_only():
    spec = FeatureSpec((), (), "label", "classification", image=("image",), image_shape=(16, 16, 1))
    # Without batch normalisation, whose batch statistics would also change the output.
    hparams = TINY | {"batch_norm": False}
    images = {"image_xf": _images(4, (16, 16, 1))}
    model = cnn.build_model(hparams, spec, {}, num_classes=3)
    inference = model(images, training=False).numpy()
    np.testing.assert_array_equal(model(images, training=False).numpy(), inference)
    trained = model(images, training=True).numpy()
    assert trained.shape == inference.shape
    assert not np.allclose(trained, inference, atol=1e-6)

    encoder = model.get_layer("image_encoder")
    augment = encoder.layers[:3]
    assert [type(layer).__name__ for layer in augment] == [
        "RandomFlip",
        "RandomTranslation",
        "RandomZoom",
    ]
    augmented = images["image_xf"]
    for layer in augment:
        augmented = layer(augmented, training=True)
    assert augmented.shape == images["image_xf"].shape
    assert not np.allclose(augmented, images["image_xf"])


def test_without_augmentation_training_and_inference_agree():
    """The difference above is the augmentation's: with none, dropout 0 and no batch
    normalisation, training=True computes what inference does."""
    spec = FeatureSpec((), (), "label", "classification", image=("image",), image_shape=(16, 16, 1))
    model = cnn.build_model(TINY | NO_AUGMENTATION | {"batch_norm": False}, spec, {}, 3)
    assert not any(
        layer.name.startswith("random") for layer in model.get_layer("image_encoder").layers
    )
    images = {"image_xf": _images(4, (16, 16, 1))}
    np.testing.assert_allclose(
        model(images, training=True).numpy(), model(images, training=False).numpy(), rtol=1e-6
    )


def _analyze(schema: str, output_dir):
    """TFT on six rows (an image, a weight, a label), the image declared as `schema`."""
    rows, pixels = image_rows(6, SHAPE, CLASSES)
    for i, row in enumerate(rows):
        row["weight"] = [float(i)]
    raw_spec = {
        "image": IMAGE_SCHEMAS[schema],
        "weight": tf.io.VarLenFeature(tf.float32),
        "label": tf.io.VarLenFeature(tf.string),
    }
    transformed, output = analyze_and_transform(output_dir, rows, SPEC, raw_spec)
    features = {
        "image_xf": np.stack([r["image_xf"] for r in transformed]),
        "weight_xf": np.array([r["weight_xf"] for r in transformed], np.float32),
    }
    labels = np.array([r["label_xf"] for r in transformed], np.int64)
    return rows, pixels, features, labels, output


@pytest.fixture(scope="module")
def image_tft(tmp_path_factory):
    """`image_tft(schema)`: `_analyze`'s result, computed once per schema in this module."""
    done = {}

    def analyzed(schema: str):
        if schema not in done:
            done[schema] = _analyze(schema, tmp_path_factory.mktemp(schema))
        return done[schema]

    return analyzed


# Every schema through the Keras export; the lean export shares its signatures.
@pytest.mark.parametrize(
    ("schema", "export_model"),
    [
        ("varlen", export_serving_model),
        ("varlen", export_lean_serving_model),
        ("fixed_scalar", export_serving_model),
        ("fixed_one", export_serving_model),
    ],
)
def test_image_signatures_take_encoded_bytes_and_agree_with_the_model(
    image_tft, tmp_path, schema, export_model
):
    rows, pixels, features, labels, output = image_tft(schema)
    model = cnn.build_model(TINY, SPEC, vocab_sizes_of(output, SPEC), num_classes=3)
    model.fit(features, labels, epochs=1, verbose=0)
    expected = model(features, training=False).numpy()
    classes = class_names_of(output, SPEC)
    export_dir = export_model(model, output, SPEC, str(tmp_path / "model"), classes)
    loaded = tf.saved_model.load(export_dir)

    examples = tf.constant([serialize({k: v for k, v in r.items() if k != "label"}) for r in rows])
    by_example = loaded.signatures["serving_default"](examples=examples)
    assert [c.decode() for c in by_example["classes"].numpy()[0]] == classes
    np.testing.assert_allclose(by_example["scores"].numpy(), expected, rtol=1e-5, atol=1e-6)

    # What TF Serving's REST API gives for {"image": {"b64": ...}}: the file's bytes.
    raw = loaded.signatures["serving_raw"](
        image=tf.constant([r["image"][0] for r in rows]),
        weight=tf.constant([r["weight"][0] for r in rows], tf.float32),
    )
    np.testing.assert_allclose(raw["scores"].numpy(), expected, rtol=1e-5, atol=1e-6)

    transformed = loaded.signatures["transform_features"](
        examples=tf.constant([serialize(r) for r in rows])
    )
    np.testing.assert_allclose(transformed["image_xf"].numpy(), pixels / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(transformed["label_xf"].numpy(), labels)

    classified = loaded.signatures["classification"](inputs=examples)
    np.testing.assert_allclose(classified["scores"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_an_image_of_another_size_or_none_is_refused_with_its_feature_named(image_tft, tmp_path):
    rows, _, _, _, output = image_tft("varlen")
    model = cnn.build_model(TINY, SPEC, vocab_sizes_of(output, SPEC), num_classes=3)
    loaded = tf.saved_model.load(
        export_serving_model(model, output, SPEC, str(tmp_path / "model"), list(CLASSES))
    )
    wrong = png(np.zeros((9, 8, 1), np.uint8))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="image feature image: an image is not 8x8"
    ):
        loaded.signatures["serving_raw"](
            image=tf.constant([rows[0]["image"][0], wrong]), weight=tf.constant([1.0, 2.0])
        )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="image feature image: an example has none"
    ):
        loaded.signatures["serving_raw"](image=tf.constant([b""]), weight=tf.constant([1.0]))
