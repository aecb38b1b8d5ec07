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


def test_an_embedded_categorical_feature_is_attributed_through_its_embedding():
    """A large vocabulary is embedded (models/encoders.py): IG runs on the embedding row,
    from the zero vector, and the rebuilt model predicts what the trained one does."""
    hparams = {**TINY, "categorical_embedding_min_vocabulary": 2, "categorical_embedding_dim": 3}
    embedded = build_model(hparams, SPEC, {"island": VOCAB}, num_classes=3)
    model, segments = attributions.differentiable_model(embedded, SPEC)
    assert [(s.feature, s.kind, s.size) for s in segments][-1] == ("island", "categorical", 3)
    explainer = attributions.Explainer(model, segments, classification=True)
    features = _features(12, seed=2)
    expected = embedded({k: features[k] for k in embedded.input_names}, training=False)
    np.testing.assert_allclose(
        explainer.predict(explainer.flatten(features), {}), expected.numpy(), atol=1e-6
    )
    explained = attributions.explain(explainer, features, steps=50)
    change = np.abs(explained.outputs - explained.baseline_outputs)
    assert np.all(explained.completeness_errors() <= 0.02 * change + 2e-3)
    assert {s["feature"] for s in attributions.global_importance(explainer, explained)} == {
        "bill",
        "flipper",
        "island",
    }


def test_a_linear_model_on_an_embedding_gets_weights_times_the_row():
    spec = FeatureSpec((), ("c",), "y", "regression")
    ids = keras.Input(shape=(), name="c_xf", dtype="int64")
    embedding = keras.layers.Embedding(3, 2)
    dense = keras.layers.Dense(1)
    model = keras.Model({"c_xf": ids}, dense(embedding(ids)))
    embedding.set_weights([np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]], np.float32)])
    dense.set_weights([np.array([[2.0], [-1.0]], np.float32), np.array([0.0], np.float32)])
    explainer = attributions.Explainer(
        *attributions.differentiable_model(model, spec), classification=False
    )
    explained = attributions.explain(explainer, {"c_xf": np.array([1], np.int64)}, steps=10)
    assert explainer.per_feature(explained.attributions[0]) == pytest.approx({"c": 7.0})


def test_a_categorical_input_without_an_encoding_layer_is_refused():
    spec = FeatureSpec((), ("c",), "y", "regression")
    ids = keras.Input(shape=(), name="c_xf", dtype="int64")
    cast = keras.layers.Reshape((1,))(keras.layers.Activation("linear")(ids))
    model = keras.Model({"c_xf": ids}, keras.layers.Dense(1)(cast))
    with pytest.raises(ValueError, match=r"\['c_xf'\] do not feed a CategoryEncoding or Embedding"):
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


# Text: IG on the embedding layer's output, for every text encoder of models/.
TEXT_SPEC = FeatureSpec(("n",), (), "y", "classification", text=("review",), max_tokens=8)
TEXT_VOCAB = 12


# One of each encoder family: attention, recurrent, convolutional, a bag of embeddings.
TEXT_ENCODERS = {
    "transformer": {"encoder": "transformer"},
    "gru": {"encoder": "gru"},
    "conv1d": {"encoder": "conv1d", "conv_blocks": 1},
    "bag-of-embeddings": {"encoder": "conv1d", "conv_blocks": 0},
}


def _text_model(variant):
    from models import registry
    from tests.test_sequence_models import TINY

    hparams = TINY | TEXT_ENCODERS[variant]
    return registry.builder("sequence")(hparams, TEXT_SPEC, {"review": TEXT_VOCAB}, num_classes=3)


def _text_features():
    ids = np.array(
        [[3, 4, 5, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 11], [9, 0, 0, 0, 0, 0, 0, 0]], np.int64
    )
    return {"n_xf": np.array([0.5, -1.0, 2.0], np.float32), "review_xf": ids}


@pytest.mark.parametrize("variant", list(TEXT_ENCODERS))
def test_text_attributions_on_the_embeddings_are_complete_for_each_encoder(variant):
    model = _text_model(variant)
    explainer = attributions.Explainer(
        *attributions.differentiable_model(model, TEXT_SPEC), classification=True
    )
    assert {(s.feature, s.kind, s.shape) for s in explainer.segments} == {
        ("n", "numeric", ()),
        ("review", "text", (8, 8)),
    }
    features = _text_features()
    explained = attributions.explain(explainer, features, steps=128)
    # The rebuilt model (embedding output as an input, ids held for the mask) is the model.
    expected = model(features, training=False).numpy()
    assert explained.targets == list(expected.argmax(axis=1))
    np.testing.assert_allclose(explained.outputs, expected.max(axis=1), atol=1e-6)
    change = np.abs(explained.outputs - explained.baseline_outputs)
    assert np.all(explained.completeness_errors() <= 0.02 * change + 1e-3), (
        explained.completeness_errors(),
        change,
    )
    # Padding is masked, so it gets no attribution; the text's total is its tokens' sum.
    scores = explainer.token_scores(explained.attributions[0], "review")
    assert np.all(scores[3:] == 0.0) and np.any(scores[:3] != 0.0)
    per_feature = explainer.per_feature(explained.attributions[0])
    assert per_feature["review"] == pytest.approx(float(scores.sum()), abs=1e-6)


def test_a_text_input_without_an_embedding_encoder_is_refused():
    import tensorflow as tf

    spec = FeatureSpec((), (), "y", "regression", text=("t",), max_tokens=4)
    ids = keras.Input(shape=(4,), name="t_xf", dtype="int64")
    floats = keras.layers.Lambda(lambda x: tf.cast(x, "float32"))(ids)
    model = keras.Model({"t_xf": ids}, keras.layers.Dense(1)(floats))
    with pytest.raises(ValueError, match=r"text inputs \['t_xf'\] do not feed an encoder model"):
        attributions.differentiable_model(model, spec)


def test_token_ids_read_back_as_vocabulary_words_with_oov_shown_as_such():
    from components.explanations import text

    vocabulary = [text.PADDING, "shares", "rose", text.OOV]
    tokens = text.example_tokens(
        np.array([0.5, -2.0, 0.25, 0.0]), np.array([1, 3, 2, 0]), vocabulary
    )
    assert tokens == [
        {"token": "shares", "score": 0.5},
        {"token": "[OOV]", "score": -2.0},
        {"token": "rose", "score": 0.25},
    ]
    assert [t["token"] for t in text.top(tokens, 2)] == ["[OOV]", "shares"]


def test_the_word_that_decides_a_trained_text_model_is_its_top_token():
    """Class 1 exactly when a text holds the word 'good' (id 2): after training, IG puts
    'good' first in every class-1 text, and the per-class summary names it."""
    from components.explanations import text
    from models import registry
    from tests.test_sequence_models import TINY, VARIANTS

    spec = FeatureSpec((), (), "y", "classification", text=("review",), max_tokens=6)
    hparams = TINY | VARIANTS["bag-of-embeddings"] | {"learning_rate": 0.05}
    model = registry.builder("sequence")(hparams, spec, {"review": 10}, num_classes=2)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 10, size=(256, 6))
    ids[:, 4:] = 0
    labels = rng.integers(0, 2, size=256)
    ids[labels == 1, rng.integers(0, 4)] = 2
    model.fit({"review_xf": ids}, labels, epochs=15, batch_size=32, verbose=0)
    explainer = attributions.Explainer(
        *attributions.differentiable_model(model, spec), classification=True
    )
    features = {"review_xf": ids[:12], "y_xf": labels[:12]}
    explained = attributions.explain(explainer, features, steps=32)
    vocabulary = {"review": [text.PADDING, "a", "good", *"cdefghi"[:6], text.OOV]}
    [section] = text.text_section(
        explainer, explained, features, spec, vocabulary, ["bad", "good"], listed=12
    )
    assert section["feature"] == "review"
    for example, label in zip(section["examples"], labels[:12], strict=True):
        assert example["label"] == ["bad", "good"][label]
        if example["predicted"] == "good":
            assert example["tokens"][0]["token"] == "good"
    assert section["top_tokens"]["good"][0]["token"] == "good"
