"""Model building and the exported serving signatures (save, load, call)."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from models import export
from models.export import (
    class_names_of,
    export_lean_serving_model,
    export_serving_model,
    vocab_sizes_of,
)
from models.features import FeatureSpec
from models.mlp import build_model
from tests.tftlib import ROWS, SPEC, analyze_and_transform, serialize

TINY = {
    "units": 4,
    "layers": 1,
    "dropout": 0.0,
    "l2": 1e-6,
    "learning_rate": 0.01,
    "optimizer": "adam",
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
