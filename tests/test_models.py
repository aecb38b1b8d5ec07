"""Model building and the exported serving signatures (save, load, call)."""

from pathlib import Path

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from models import export, registry
from models.export import (
    class_names_of,
    export_lean_serving_model,
    export_serving_model,
    vocab_sizes_of,
)
from models.features import FeatureSpec
from models.mlp import build_model
from models.search_space import hyperparameters
from tests.tftlib import ROWS, SPEC, analyze_and_transform, serialize

TINY = {
    "units": 4,
    "layers": 1,
    "dropout": 0.0,
    "l2": 1e-6,
    "learning_rate": 0.01,
    "optimizer": "adam",
    "lr_schedule": "constant",
    "lr_decay_rate": 0.9,
}
# What the cnn family reads besides TINY's.
TINY_CNN = {
    "conv_blocks": 1,
    "convs_per_block": 2,
    "filters": 2,
    "kernel_size": 3,
    "batch_norm": False,
    "pooling": "global_average",
    "augment_flip": True,
    "augment_translate": 0.1,
    "augment_zoom": 0.1,
}


@pytest.fixture(scope="module")
def tft_output(tmp_path_factory):
    return analyze_and_transform(tmp_path_factory.mktemp("tft"))


def _batch(rows):
    features = {
        "bill_length_mm_xf": np.array([r["bill_length_mm_xf"] for r in rows], np.float32),
        "flipper_length_mm_xf": np.array([r["flipper_length_mm_xf"] for r in rows], np.float32),
        "island_xf": np.array([r["island_xf"] for r in rows], np.int64),
    }
    return features, np.array([r["species_xf"] for r in rows], np.int64)


def test_classifier_outputs_probabilities_per_class(tft_output):
    rows, output = tft_output
    model = build_model(TINY, SPEC, vocab_sizes_of(output, SPEC), num_classes=3)
    features, _ = _batch(rows)
    scores = model(features).numpy()
    assert scores.shape == (len(rows), 3)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_regressor_outputs_one_value():
    spec = FeatureSpec(("a",), ("c",), "y", "regression")
    model = build_model(TINY | {"layers": 2}, spec, {"c": 3})
    out = model({"a_xf": np.zeros(5, np.float32), "c_xf": np.array([0, 1, 2, 0, 1])})
    assert out.shape == (5, 1)


def test_unknown_optimizer_and_missing_classes_are_refused(tft_output):
    _, output = tft_output
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        build_model(TINY | {"optimizer": "adagrad"}, SPEC, vocab_sizes_of(output, SPEC), 3)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        build_model(TINY, SPEC, vocab_sizes_of(output, SPEC), None)


@pytest.mark.parametrize("export_model", [export_serving_model, export_lean_serving_model])
def test_exported_signatures_apply_tft_and_agree(tft_output, tmp_path, export_model):
    rows, output = tft_output
    model = build_model(TINY, SPEC, vocab_sizes_of(output, SPEC), num_classes=3)
    features, labels = _batch(rows)
    model.fit(features, labels, epochs=2, verbose=0)
    classes = class_names_of(output, SPEC)
    export_dir = export_model(model, output, SPEC, str(tmp_path / "model"), classes)

    loaded = tf.saved_model.load(export_dir)
    assert {"serving_default", "serving_raw", "transform_features"} <= set(loaded.signatures)
    examples = tf.constant(
        [serialize({k: v for k, v in r.items() if k != "species"}) for r in ROWS]
    )
    by_example = loaded.signatures["serving_default"](examples=examples)
    assert by_example["scores"].shape == (len(ROWS), 3)
    assert [c.decode() for c in by_example["classes"].numpy()[0]] == classes
    # Same answers as the in-memory model on the TFT-transformed rows: no skew.
    np.testing.assert_allclose(
        by_example["scores"].numpy(), model(features).numpy(), rtol=1e-5, atol=1e-6
    )

    raw = loaded.signatures["serving_raw"](
        bill_length_mm=tf.constant(
            [r["bill_length_mm"][0] if r["bill_length_mm"] else np.nan for r in ROWS], tf.float32
        ),
        flipper_length_mm=tf.constant([float(r["flipper_length_mm"][0]) for r in ROWS], tf.float32),
        island=tf.constant([r["island"][0] if r["island"] else b"" for r in ROWS]),
    )
    np.testing.assert_allclose(
        raw["scores"].numpy(), by_example["scores"].numpy(), rtol=1e-5, atol=1e-6
    )

    transformed = loaded.signatures["transform_features"](
        examples=tf.constant([serialize(r) for r in ROWS])
    )
    np.testing.assert_array_equal(transformed["species_xf"].numpy(), labels)
    # The vocabulary tables are initialised after load: ids as the in-memory TFT gave them.
    np.testing.assert_array_equal(transformed["island_xf"].numpy(), features["island_xf"])

    classified = loaded.signatures["classification"](inputs=examples)
    np.testing.assert_array_equal(classified["scores"].numpy(), by_example["scores"].numpy())
    _assert_tf_serving_classify_contract(export_dir)


def _assert_tf_serving_classify_contract(export_dir):
    """What TF Serving's Classify checks of a signature before it runs it."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    classify = signatures["classification"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert {k: v.dtype for k, v in classify.inputs.items()} == {"inputs": types_pb2.DT_STRING}
    assert {k: v.dtype for k, v in classify.outputs.items()} == {
        "classes": types_pb2.DT_STRING,
        "scores": types_pb2.DT_FLOAT,
    }
    # Everything else stays a Predict signature.
    assert signatures["serving_default"].method_name == "tensorflow/serving/predict"


def test_lean_export_names_the_tft_version_when_its_resources_are_not_found():
    with pytest.raises(AttributeError, match=r"tensorflow_transform \S+: .*_saved_model_loader"):
        export._transform_resources(keras.layers.Layer())


def test_exported_model_reloads_as_tf_keras(tft_output, tmp_path):
    """TFMA and BulkInferrer load the model with tf_keras; a Keras 3 export fails there."""
    rows, output = tft_output
    model = build_model(TINY, SPEC, vocab_sizes_of(output, SPEC), num_classes=3)
    export_dir = export_serving_model(
        model, output, SPEC, str(tmp_path / "model"), class_names_of(output, SPEC)
    )
    reloaded = keras.models.load_model(export_dir)
    features, _ = _batch(rows)
    np.testing.assert_allclose(reloaded(features).numpy(), model(features).numpy(), rtol=1e-5)


def test_feature_spec_round_trips_images_and_reads_dicts_from_before_them():
    spec = FeatureSpec(
        ("a",), ("c",), "y", "classification", image=("img",), image_shape=(28, 28, 1)
    )
    assert spec.features == ("a", "c", "img")
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    old = {"numeric": ["a"], "categorical": ["c"], "label": "y", "task": "classification"}
    assert FeatureSpec.from_dict(old) == FeatureSpec(("a",), ("c",), "y", "classification")


@pytest.mark.parametrize("shape", [(), (28, 28), (28, 28, 2), (28, 0, 1)])
def test_image_features_need_an_image_shape(shape):
    with pytest.raises(ValueError, match=r"image features \['img'\] need image_shape"):
        FeatureSpec((), (), "y", "classification", image=("img",), image_shape=shape)


def test_mlp_refuses_image_features():
    spec = FeatureSpec(("a",), (), "y", "regression", image=("img",), image_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="use model family cnn"):
        build_model(TINY, spec, {})


MLP_SPACE = {
    "units": {"min": 8, "max": 64, "step": 8},
    "layers": {"min": 1, "max": 3, "step": 1},
    "learning_rate": {"min": 0.001, "max": 0.03, "sampling": "log"},
    "dropout": {"min": 0.0, "max": 0.3, "sampling": "linear"},
    "l2": {"min": 1e-4, "max": 1e-4, "sampling": "log"},
    "optimizer": ["adam", "rmsprop"],
    "lr_schedule": ["constant", "cosine"],
    "lr_decay_rate": {"min": 0.9, "max": 0.9, "sampling": "linear"},
    # Fixed scalars from the config's model.embeddings.
    "categorical_embedding_min_vocabulary": 64,
    "categorical_embedding_dim": 0,
}


def test_mlp_search_space_is_declared_as_before():
    expected = keras_tuner.HyperParameters()
    expected.Int("units", 8, 64, step=8)
    expected.Int("layers", 1, 3, step=1)
    expected.Float("learning_rate", 0.001, 0.03, sampling="log")
    expected.Float("dropout", 0.0, 0.3, sampling="linear")
    expected.Fixed("l2", 1e-4)
    expected.Choice("optimizer", ["adam", "rmsprop"])
    expected.Choice("lr_schedule", ["constant", "cosine"])
    expected.Fixed("lr_decay_rate", 0.9)
    expected.Fixed("categorical_embedding_min_vocabulary", 64)
    expected.Fixed("categorical_embedding_dim", 0)
    assert hyperparameters(MLP_SPACE).get_config() == expected.get_config()


def test_cnn_search_space_has_choices_of_ints_and_booleans_and_fixed_scalars():
    space = {
        "conv_blocks": {"min": 2, "max": 2, "step": 1},
        "convs_per_block": {"min": 1, "max": 2, "step": 1},
        "filters": {"min": 16, "max": 32, "step": 16},
        "kernel_size": [3, 5],
        "batch_norm": [True, False],
        "pooling": ["flatten", "global_average"],
        "units": {"min": 64, "max": 128, "step": 64},
        "layers": {"min": 1, "max": 1, "step": 1},
        "dropout": {"min": 0.1, "max": 0.3, "sampling": "linear"},
        "l2": {"min": 1e-6, "max": 1e-4, "sampling": "log"},
        "learning_rate": {"min": 0.001, "max": 0.001, "sampling": "log"},
        "optimizer": ["adam"],
        "lr_schedule": ["constant", "cosine", "exponential"],
        "lr_decay_rate": {"min": 0.8, "max": 0.95, "sampling": "linear"},
        "augment_flip": True,
        "augment_translate": 0.1,
        "augment_zoom": 0.0,
    }
    hp = hyperparameters(space)
    assert list(hp.values) == list(space) == list(registry.SEARCH_KEYS["cnn"])
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds["kernel_size"] == "Choice" and hp.get("kernel_size") == 3
    assert hp.space[3].values == [3, 5]
    # A Choice would store the booleans as 0/1; a Boolean keeps them booleans.
    assert kinds["batch_norm"] == "Boolean" and hp.get("batch_norm") is True
    assert kinds["learning_rate"] == "Fixed" and hp.get("learning_rate") == 0.001
    # An integer range of one value is fixed too.
    assert kinds["conv_blocks"] == "Fixed" and hp.get("conv_blocks") == 2
    assert kinds["pooling"] == "Choice" and hp.get("pooling") == "flatten"
    assert {k: kinds[k] for k in ("augment_flip", "augment_translate", "augment_zoom")} == {
        "augment_flip": "Fixed",
        "augment_translate": "Fixed",
        "augment_zoom": "Fixed",
    }
    assert (hp.get("augment_flip"), hp.get("augment_translate")) == (True, 0.1)
    assert hyperparameters({"batch_norm": [False]}).values == {"batch_norm": False}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"min": 1, "max": 4}, "'units': a range has keys min, max and step"),
        ([], "'units': an empty list"),
        (None, "'units': expected a range dict, a list or a scalar"),
    ],
)
def test_search_space_names_the_key_of_a_bad_value(value, message):
    with pytest.raises(ValueError, match=message):
        hyperparameters({"units": value})


COLOURS = {"hue": ("shape", ["circle", "square"]), "side": ("shape", ["square"])}


def test_conditional_keys_are_scoped_to_the_parent_values_that_read_them():
    space = {
        "shape": ["circle", "square", "line"],
        "hue": [1, 2],
        "side": {"min": 1, "max": 4, "step": 1},
    }
    hp = hyperparameters(space, COLOURS)
    conditions = {p.name: [(c.name, c.values) for c in p.conditions] for p in hp.space}
    assert conditions == {
        "shape": [],
        "hue": [("shape", ["circle", "square"])],
        "side": [("shape", ["square"])],
    }
    # Defaults: shape is "circle", so side is inactive and has no value.
    assert hp.values == {"shape": "circle", "hue": 1}
    hp.values["shape"] = "square"
    assert hp.is_active("side") and hp.is_active("hue")
    # In any order (custom_config reaches the Tuner as JSON with sorted keys).
    shuffled = hyperparameters(dict(sorted(space.items())), COLOURS)
    assert [p.name for p in shuffled.space] == ["shape", "hue", "side"]
    assert shuffled.get_config()["space"] == hp.get_config()["space"]


def test_conditional_keys_drop_out_or_are_plain_for_the_parent_choices_listed():
    space = {"shape": ["circle"], "hue": [1, 2], "side": {"min": 1, "max": 4, "step": 1}}
    hp = hyperparameters(space, COLOURS)
    # Every listed shape reads hue: no scope; no listed shape reads side: left out.
    assert [(p.name, p.conditions) for p in hp.space] == [("shape", []), ("hue", [])]
    assert hyperparameters({"shape": "square", "side": 2}, COLOURS).values == {
        "shape": "square",
        "side": 2,
    }


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"side": 2}, "'side': it is read only for some values of 'shape', which the search"),
        ({"shape": {"min": 1, "max": 2, "step": 1}, "side": 2}, "parent 'shape' must be a list"),
    ],
)
def test_a_condition_needs_its_parent_as_a_choice(space, message):
    with pytest.raises(ValueError, match=message):
        hyperparameters(space, COLOURS)


def test_each_family_builds_from_exactly_its_search_keys():
    """The pipeline hands the tuner only SEARCH_KEYS[family]: build_model needs no other."""
    mlp_hparams = hyperparameters(MLP_SPACE).values
    assert list(mlp_hparams) == list(registry.SEARCH_KEYS["mlp"])
    spec = FeatureSpec(("a",), (), "y", "regression")
    registry.builder("mlp")(mlp_hparams, spec, {})
    cnn_hparams = {k: v for k, v in (TINY | TINY_CNN).items() if k in registry.SEARCH_KEYS["cnn"]}
    assert set(cnn_hparams) == set(registry.SEARCH_KEYS["cnn"])
    image_spec = FeatureSpec((), (), "y", "regression", image=("img",), image_shape=(8, 8, 1))
    registry.builder("cnn")(cnn_hparams, image_spec, {})


def test_a_decaying_schedule_needs_the_length_of_the_run_and_saves_with_the_model(tmp_path):
    spec = FeatureSpec(("a",), (), "y", "regression")
    with pytest.raises(ValueError, match="lr_schedule 'cosine' decays over the training run"):
        build_model(TINY | {"lr_schedule": "cosine"}, spec, {})
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        build_model(TINY | {"lr_schedule": "step"}, spec, {}, steps_per_epoch=3, epochs=2)
    model = build_model(TINY | {"lr_schedule": "cosine"}, spec, {}, steps_per_epoch=3, epochs=2)
    model.fit({"a_xf": np.arange(6, dtype=np.float32)}, np.ones(6), batch_size=2, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    rate = reloaded.optimizer.get_config()["learning_rate"]
    assert rate["class_name"] == "CosineDecay"
    assert (rate["config"]["initial_learning_rate"], rate["config"]["decay_steps"]) == (0.01, 6)
