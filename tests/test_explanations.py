"""Integrated gradients (components/explanations): completeness, the one-hot rebuild, and
PAIR's saliency library against IG's closed form on a linear model."""

import numpy as np
import pytest
import tf_keras as keras

from components.explanations import attributions
from models.features import FeatureSpec
from models.mlp import build_model

SPEC = FeatureSpec(("bill", "flipper"), ("island",), "species", "classification")
TINY = {
    "units": 8,
    "layers": 2,
    "dropout": 0.0,
    "l2": 1e-6,
    "learning_rate": 0.01,
    "optimizer": "adam",
    "lr_schedule": "constant",
}
VOCAB = 4


def _features(n, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "bill_xf": rng.normal(size=n).astype(np.float32),
        "flipper_xf": rng.normal(size=n).astype(np.float32),
        "island_xf": rng.integers(0, VOCAB, size=n).astype(np.int64),
    }


@pytest.fixture(scope="module")
def classifier():
    return build_model(TINY, SPEC, {"island": VOCAB}, num_classes=3)


def test_the_one_hot_rebuild_keeps_the_models_outputs(classifier):
    model, segments = attributions.differentiable_model(classifier, SPEC)
    assert [(s.feature, s.kind, s.size) for s in segments] == [
        ("bill", "numeric", 1),
        ("flipper", "numeric", 1),
        ("island", "categorical", VOCAB),
    ]
    explainer = attributions.Explainer(model, segments, classification=True)
    features = _features(16)
    expected = classifier({k: features[k] for k in classifier.input_names}, training=False)
    np.testing.assert_allclose(
        explainer.predict(explainer.flatten(features), {}), expected.numpy(), atol=1e-6
    )


def test_attributions_sum_to_the_change_of_the_explained_output(classifier):
    explainer = attributions.Explainer(
        *attributions.differentiable_model(classifier, SPEC), classification=True
    )
    explained = attributions.explain(explainer, _features(12, seed=1), steps=50)
    change = np.abs(explained.outputs - explained.baseline_outputs)
    assert explained.attributions.shape == (12, 2 + VOCAB)
    # A Riemann sum over 50 points: within 2% of the change (plus a small floor).
    assert np.all(explained.completeness_errors() <= 0.02 * change + 2e-3), (
        explained.completeness_errors(),
        change,
    )
    scores = attributions.global_importance(explainer, explained)
    assert {s["feature"] for s in scores} == {"bill", "flipper", "island"}
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)


def test_saliency_gives_igs_closed_form_on_a_linear_model():
    """For f(x) = w·x + b, IG from 0 is exactly w * x per input: the library integrates
    what we think it does, over our flat layout."""
    spec = FeatureSpec(("a", "b"), ("c",), "y", "regression")
    inputs = {
        "a_xf": keras.Input(shape=(), name="a_xf"),
        "b_xf": keras.Input(shape=(), name="b_xf"),
        "c_xf": keras.Input(shape=(), name="c_xf", dtype="int64"),
    }
    parts = [keras.layers.Reshape((1,))(inputs["a_xf"]), keras.layers.Reshape((1,))(inputs["b_xf"])]
    parts.append(keras.layers.CategoryEncoding(3, output_mode="one_hot")(inputs["c_xf"]))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.Concatenate()(parts)))
    weights = np.array([[2.0], [-3.0], [0.5], [1.5], [-1.0]], np.float32)
    dense.set_weights([weights, np.array([0.25], np.float32)])
    explainer = attributions.Explainer(
        *attributions.differentiable_model(model, spec), classification=False
    )
    features = {
        "a_xf": np.array([1.5], np.float32),
        "b_xf": np.array([-0.5], np.float32),
        "c_xf": np.array([2], np.int64),
    }
    explained = attributions.explain(explainer, features, steps=10)
    per_feature = explainer.per_feature(explained.attributions[0])
    assert per_feature == pytest.approx({"a": 3.0, "b": 1.5, "c": -1.0}, rel=1e-5)


def test_a_categorical_input_without_a_one_hot_layer_is_refused():
    spec = FeatureSpec((), ("c",), "y", "regression")
    ids = keras.Input(shape=(), name="c_xf", dtype="int64")
    embedded = keras.layers.Embedding(3, 2)(ids)
    model = keras.Model({"c_xf": ids}, keras.layers.Dense(1)(embedded))
    with pytest.raises(ValueError, match=r"\['c_xf'\] do not feed a CategoryEncoding"):
        attributions.differentiable_model(model, spec)


def test_an_image_models_pixels_are_attributed_and_complete():
    from models import cnn
    from tests.tftlib import TINY_CNN_HPARAMS

    spec = FeatureSpec((), (), "label", "classification", image=("img",), image_shape=(8, 8, 1))
    model = cnn.build_model(TINY_CNN_HPARAMS, spec, {}, num_classes=2)
    explainer = attributions.Explainer(
        *attributions.differentiable_model(model, spec), classification=True
    )
    assert [(s.feature, s.kind, s.shape) for s in explainer.segments] == [
        ("img", "image", (8, 8, 1))
    ]
    images = np.random.default_rng(2).random((3, 8, 8, 1)).astype(np.float32)
    explained = attributions.explain(explainer, {"img_xf": images}, steps=50)
    change = np.abs(explained.outputs - explained.baseline_outputs)
    assert np.all(explained.completeness_errors() <= 0.02 * change + 2e-3)
    assert explainer.image_map(explained.attributions[0], "img").shape == (8, 8)


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        ("39.1", "float32", 39.1),
        ("NA", "float32", None),
        ("", "int64", None),
        ("3750", "int64", 3750),
        ("Biscoe", "string", "Biscoe"),
        ([1, "2.5"], "float32", [1.0, 2.5]),
    ],
)
def test_raw_values_take_the_schemas_type(value, dtype, expected):
    import tensorflow as tf

    from components.explanations import bundle

    assert bundle._raw_value("f", value, tf.as_dtype(dtype)) == expected


@pytest.mark.parametrize(
    ("value", "dtype", "message"),
    [
        ("abc", "float32", "feature 'f': expected a number, got 'abc'"),
        ("37.5", "int64", "feature 'f': the schema says integer, got '37.5'"),
    ],
)
def test_a_raw_value_of_the_wrong_kind_names_the_feature(value, dtype, message):
    import tensorflow as tf

    from components.explanations import bundle

    with pytest.raises(ValueError, match=message):
        bundle._raw_value("f", value, tf.as_dtype(dtype))
