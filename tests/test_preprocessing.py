"""preprocessing_fn through real TF Transform on a tiny in-memory dataset."""

import numpy as np
import pytest
import tensorflow as tf

from models.features import LABEL_VOCABULARY, FeatureSpec, vocabulary_name
from tests.tftlib import ROWS, analyze_and_transform, image_rows


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    return analyze_and_transform(tmp_path_factory.mktemp("tft"))


def test_numeric_features_are_imputed_with_the_mean_and_scaled(transformed):
    rows, _ = transformed
    values = np.array([r["bill_length_mm_xf"] for r in rows], dtype=np.float64)
    assert values.shape == (len(ROWS),)
    assert np.all(np.isfinite(values))
    # The row without a bill length gets the mean of the others, i.e. z-score 0.
    assert values[2] == pytest.approx(0.0, abs=1e-5)
    assert values.mean() == pytest.approx(0.0, abs=1e-5)
    assert values.std() == pytest.approx(1.0, abs=1e-3)


def test_integer_columns_become_float_z_scores(transformed):
    rows, output = transformed
    assert output.transformed_feature_spec()["flipper_length_mm_xf"].dtype == tf.float32
    flipper = np.array([r["flipper_length_mm_xf"] for r in rows])
    assert np.argmax(flipper) == 6


def test_categorical_features_map_to_vocabulary_ids_with_an_oov_bucket(transformed):
    rows, output = transformed
    vocabulary = [v.decode() for v in output.vocabulary_by_name(vocabulary_name("island"))]
    ids = [int(r["island_xf"]) for r in rows]
    assert sorted(vocabulary) == ["Biscoe", "Dream", "Torgersen"]
    assert ids[0] == vocabulary.index("Torgersen")
    # The missing island falls into the OOV bucket, after the vocabulary.
    assert ids[4] == len(vocabulary)


def test_label_is_encoded_as_class_ids(transformed):
    rows, output = transformed
    classes = [v.decode() for v in output.vocabulary_by_name(LABEL_VOCABULARY)]
    assert sorted(classes) == ["Adelie", "Chinstrap", "Gentoo"]
    ids = [int(r["species_xf"]) for r in rows]
    assert [classes[i] for i in ids] == [r["species"][0].decode() for r in ROWS]


IMAGE_SHAPE = (8, 8, 1)
IMAGE_SPEC = FeatureSpec(
    (), (), "label", "classification", image=("image",), image_shape=IMAGE_SHAPE
)


@pytest.fixture(scope="module")
def transformed_images(tmp_path_factory):
    rows, pixels = image_rows(5, IMAGE_SHAPE)
    # Optional (VarLen) as TFX infers it: TFT hands the image to preprocessing_fn sparse.
    raw_spec = {"image": tf.io.VarLenFeature(tf.string), "label": tf.io.VarLenFeature(tf.string)}
    transformed, output = analyze_and_transform(
        tmp_path_factory.mktemp("tft_images"), rows, IMAGE_SPEC, raw_spec
    )
    return transformed, output, pixels


def test_images_are_decoded_to_floats_in_the_unit_interval(transformed_images):
    rows, output, pixels = transformed_images
    assert output.transformed_feature_spec()["image_xf"] == tf.io.FixedLenFeature(
        list(IMAGE_SHAPE), tf.float32
    )
    images = np.stack([r["image_xf"] for r in rows])
    assert images.shape == (len(pixels), *IMAGE_SHAPE)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_allclose(images, pixels.astype(np.float32) / 255.0, rtol=1e-6)


def test_image_labels_are_class_ids(transformed_images):
    rows, output, _ = transformed_images
    classes = [v.decode() for v in output.vocabulary_by_name(LABEL_VOCABULARY)]
    assert sorted(classes) == ["coat", "shirt"]
    assert [classes[int(r["label_xf"])] for r in rows] == ["coat", "shirt"] * 2 + ["coat"]
