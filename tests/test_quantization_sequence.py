"""int8 quantization of the sequence family: embeddings, attention, LSTM/GRU, Conv1D.

Each encoder on tiny random models (int8 close to float, padding still changes
nothing, TFLite converts and runs), then the Quantization executor on a small
text-and-series model trained for a few seconds: the int8 SavedModel on raw strings and
raw series, the guard's metrics and the size of an embedding-heavy model's variables.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.quantization import executor, measure
from models import int8_sequence, quantization, registry
from models.export import class_names_of, export_serving_model, vocab_sizes_of
from models.features import FeatureSpec
from models.sequence_encoders import MaskedMeanPooling, build_encoder
from pipeline.training import KERAS_MODEL_DIR
from tests.test_sequence_models import TINY, VARIANTS
from tests.tftlib import analyze_and_transform, serialize

VOCAB = 40
MAX_TOKENS, LENGTH = 12, 10
MODEL_SPEC = FeatureSpec(
    (), (), "label", "classification",
    text=("review",), max_tokens=MAX_TOKENS, sequence=("trace",), sequence_length=LENGTH,
)  # fmt: skip
# What each variant's int8 model holds instead of its float layers.
INT8_LAYERS = {
    "transformer": {"Int8Embedding", "Int8TransformerBlock", "Int8Dense"},
    "lstm": {"Int8Embedding", "Int8Recurrent", "Int8Dense"},
    "gru-bidirectional": {"Int8Embedding", "Int8Recurrent", "Int8Dense"},
    "conv1d": {"Int8Embedding", "Int8Conv1D", "Int8Dense"},
    "conv1d-residual": {"Int8Embedding", "Int8Conv1D", "Int8Dense"},
    "conv1d-max": {"Int8Embedding", "Int8Conv1D", "Int8Dense"},
    "transformer-max": {"Int8Embedding", "Int8TransformerBlock", "Int8Dense"},
    # No blocks: the mean of the token embeddings (BBC News' default).
    "bag-of-embeddings": {"Int8Embedding", "Int8Dense"},
}
FLOAT_LAYERS = {
    "Embedding", "TransformerBlock", "LSTM", "GRU", "Bidirectional", "Conv1D", "Dense",
    "BatchNormalization", "Dropout",
}  # fmt: skip


def _padded(rows, length):
    return np.array([list(r) + [0] * (length - len(r)) for r in rows], np.int64)


def _randomize_batch_norms(model: keras.Model, rng: np.random.Generator) -> None:
    """Moving statistics far from the initial ones, so that folding them matters."""
    layers = [sub for layer in model.layers for sub in getattr(layer, "layers", [layer])]
    for layer in layers:
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


def _features(rng: np.random.Generator, count: int = 16) -> dict[str, np.ndarray]:
    lengths = rng.integers(1, MAX_TOKENS + 1, count)
    rows = [rng.integers(1, VOCAB, k) for k in lengths]
    return {
        "review_xf": _padded(rows, MAX_TOKENS),
        "trace_xf": rng.normal(size=(count, LENGTH)).astype(np.float32),
    }


def _model(variant: str, rng: np.random.Generator) -> keras.Model:
    hparams = TINY | VARIANTS[variant] | {"embedding_dim": 16, "ff_dim": 16, "rnn_units": 8}
    model = registry.builder("sequence")(hparams, MODEL_SPEC, {"review": VOCAB}, num_classes=3)
    _randomize_batch_norms(model, rng)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_model_stores_int8_and_stays_close_to_float(variant):
    rng = np.random.default_rng(0)
    model = _model(variant, rng)
    features = _features(rng)

    int8 = quantization.quantize_weights(model)

    kinds = {type(layer).__name__ for layer in int8.layers}
    assert INT8_LAYERS[variant] <= kinds and not kinds & FLOAT_LAYERS
    dtypes = sorted(v.dtype.name for v in int8.variables)
    # Only the packed int8 and float32 variables; the transformer keeps its position
    # embeddings and layer normalizations in float.
    assert dtypes.count("int8") == 1
    if not variant.startswith("transformer"):
        assert dtypes == ["float32", "int8"]
    float_scores = model(features, training=False).numpy()
    int8_scores = int8(features).numpy()
    np.testing.assert_allclose(int8_scores, float_scores, atol=0.02)
    assert not np.array_equal(int8_scores, float_scores)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_does_not_change_an_int8_text_encoding(variant):
    rng = np.random.default_rng(1)
    hparams = TINY | VARIANTS[variant]
    encoder = build_encoder(hparams, max_length=16, vocab_size=VOCAB, name="e")
    _randomize_batch_norms(encoder, rng)
    int8 = quantization.quantize_weights(encoder)
    rows = [[5, 3, 7, 2, 9, 11], [4, 8], [13, 1, 1, 6, 2]]

    unpadded = int8(_padded(rows, 6)).numpy()

    for length in (8, 16):
        np.testing.assert_allclose(int8(_padded(rows, length)).numpy(), unpadded, atol=1e-5)
    float_encoding = encoder(_padded(rows, 16), training=False).numpy()
    scale = np.abs(float_encoding).max()
    np.testing.assert_allclose(unpadded, float_encoding, atol=0.03 * scale)
    other = int8(_padded([[5, 3, 7, 2, 9, 12], *rows[1:]], 6)).numpy()
    assert np.abs(other[0] - unpadded[0]).max() > 1e-4


def test_embedding_is_int8_per_row_so_a_small_row_keeps_its_precision():
    table = np.random.default_rng(2).normal(size=(6, 8)).astype(np.float32)
    table[3] *= 1e-3  # a rare token, barely trained
    inputs = keras.Input(shape=(4,), dtype="int64")
    model = keras.Model(inputs, keras.layers.Embedding(6, 8, name="embedding")(inputs))
    model.get_layer("embedding").set_weights([table])

    int8 = quantization.quantize_weights(model)

    layer = int8.get_layer("embedding")
    assert isinstance(layer, int8_sequence.Int8Embedding)
    expected, scale = quantization.quantize_rows(table)
    np.testing.assert_array_equal(layer.packed.kernel(layer.slot), expected)
    np.testing.assert_array_equal(layer.packed.scale(layer.slot), scale)
    looked_up = int8(np.array([[3, 0, 5, 3]])).numpy()[0]
    np.testing.assert_allclose(looked_up[0], table[3], rtol=0, atol=np.abs(table[3]).max() / 127)
    np.testing.assert_allclose(looked_up[2], table[5], rtol=0, atol=np.abs(table[5]).max() / 127)


def test_unsupported_recurrent_configuration_is_refused_with_its_name():
    inputs = keras.Input(shape=(5, 3))
    outputs = keras.layers.GRU(4, reset_after=False, name="old_gru")(inputs)
    with pytest.raises(ValueError, match="'old_gru'.*reset_after False"):
        quantization.quantize_weights(keras.Model(inputs, outputs))


@pytest.mark.parametrize(
    "variant", ["transformer", "lstm", "gru-bidirectional", "conv1d", "bag-of-embeddings"]
)
def test_tflite_converts_and_runs_with_token_ids_and_a_float_series(variant, tmp_path):
    rng = np.random.default_rng(3)
    model = _model(variant, rng)
    features = _features(rng, count=24)
    inputs = quantization.tflite_inputs(model)
    assert [(i.name, i.dtype) for i in inputs] == [
        ("review_xf", tf.int64),
        ("trace_xf", tf.float32),
    ]
    representative = quantization.representative_dataset(features, inputs, 24)

    path = tmp_path / "model.tflite"
    path.write_bytes(quantization.to_tflite(model, representative))

    interpreter = tf.lite.Interpreter(model_path=str(path))
    by_name = {d["name"]: d for d in interpreter.get_input_details()}
    assert by_name["serving_default_review_xf:0"]["dtype"] == np.int64
    float_ops = measure.tflite_float_ops(str(path))
    if variant == "transformer":
        # Attention and layer normalization: int8 weights, float activations.
        assert not quantization.integer_activations(model)
        assert by_name["serving_default_trace_xf:0"]["dtype"] == np.float32
    else:
        # What stays float: casting the padding mask to numbers, the pooling's
        # division, a recurrent layer's select of the state on the mask; every matmul,
        # convolution and gate is int8.
        assert by_name["serving_default_trace_xf:0"]["dtype"] == np.int8
        assert "FULLY_CONNECTED" not in float_ops and "CONV_2D" not in float_ops
    # Random weights calibrate too unevenly for a bound on the error that would hold;
    # the executor's test below measures a trained model's accuracy.
    outputs = measure.TFLiteRunner(str(path), inputs).predict(features, batch=5)
    assert outputs.shape == (24, 3) and np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=0.05)
    ops, names = _ops_and_names(path)
    # Only the inputs and outputs keep their names (the converter's fused-op names are
    # 2-3% of a small int8 file).
    assert sorted(n for n in names if n) == sorted(
        [f"serving_default_{i.name}:0" for i in inputs] + ["StatefulPartitionedCall:0"]
    )
    if variant == "conv1d":
        # The bias of each (batch-normalized) convolution of both encoders is fused
        # into its CONV_2D, not added by an ADD op of its own.
        assert ops.count("CONV_2D") == 2 * TINY["conv_blocks"] and "ADD" not in ops


def test_int8_tflite_mean_of_token_embeddings_matches_the_float_mean(tmp_path):
    # A bag of embeddings' pooling, fully integer: the masked sum stays int8 at its own
    # scale and the division runs in float (FLOOR_DIV), for short and long texts alike.
    rng = np.random.default_rng(4)
    vocab, length, dim = 50, 64, 8
    ids = keras.Input(shape=(length,), dtype="int64", name="text_xf")
    embedded = keras.layers.Embedding(vocab, dim, mask_zero=True, name="embedding")(ids)
    model = keras.Model(ids, MaskedMeanPooling()(embedded))
    model.get_layer("embedding").set_weights([rng.uniform(-1, 1, (vocab, dim))])
    lengths = np.concatenate([rng.integers(1, 8, 20), rng.integers(40, length + 1, 20)])
    features = {"text_xf": _padded([rng.integers(1, vocab, k) for k in lengths], length)}
    inputs = quantization.tflite_inputs(model)
    representative = quantization.representative_dataset(features, inputs, 40)
    path = tmp_path / "mean.tflite"
    path.write_bytes(quantization.to_tflite(model, representative))

    means = measure.TFLiteRunner(str(path), inputs).predict(features, batch=40)

    expected = model(features["text_xf"]).numpy()
    assert measure.tflite_float_ops(str(path)).get("FLOOR_DIV") == 1
    # The means span about [-1, 1]; the int8 sum's step (calibrated on the long texts)
    # divided by a short text's few tokens bounds the error.
    np.testing.assert_allclose(means, expected, atol=0.1)
    assert np.abs(means - expected).mean() < 0.02


def _ops_and_names(path: Path) -> tuple[list[str], list[str]]:
    """The builtin ops of a TFLite file and the names of its tensors ("" when unnamed)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    (graph,) = model.subgraphs
    ops = [op_names[model.operatorCodes[op.opcodeIndex].builtinCode] for op in graph.operators]
    return ops, [(t.name or b"").decode() for t in graph.tensors]


# ---- The executor on a text-and-series model trained for a few seconds. ----

SPEC = FeatureSpec(
    (), (), "label", "classification",
    text=("text",), max_tokens=16, sequence=("trace",), sequence_length=8,
)  # fmt: skip
RAW_SPEC = {
    "text": tf.io.VarLenFeature(tf.string),
    "trace": tf.io.VarLenFeature(tf.float32),
    "label": tf.io.VarLenFeature(tf.string),
}
WORDS = [f"w{i}" for i in range(3000)]
TRAIN, EVAL = 240, 60
# Embedding-heavy: ~1.5k words x 96 dims, against ~40k other weights.
HPARAMS = TINY | {
    "encoder": "transformer",
    "embedding_dim": 96,
    "num_heads": 2,
    "ff_dim": 32,
    "units": 16,
    "learning_rate": 0.005,
}


def _rows(count: int, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    """Texts of random words where the class is which keyword occurs, and a noise series."""
    labels = rng.integers(2, size=count)
    rows = []
    for label in labels:
        words = list(rng.choice(WORDS, rng.integers(4, 11)))
        for _ in range(2):
            words.insert(int(rng.integers(len(words))), ("alpha", "beta")[label])
        rows.append(
            {
                "text": [" ".join(words).encode()],
                "trace": [float(v) for v in rng.normal(size=8)],
                "label": [(b"no", b"yes")[label]],
            }
        )
    return rows, labels


def _transformed_record(row: dict) -> bytes:
    return serialize(
        {
            "text_xf": [int(v) for v in row["text_xf"]],
            "trace_xf": [float(v) for v in row["trace_xf"]],
            "label_xf": [int(row["label_xf"])],
        }
    )


def _write_split(uri: Path, split: str, records: list[bytes]) -> str:
    directory = uri / f"Split-{split}"
    directory.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(directory / "data.gz"), options="GZIP") as writer:
        for record in records:
            writer.write(record)
    return str(directory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("sequence_quantization")
    rows, _ = _rows(TRAIN + EVAL, np.random.default_rng(0))
    (root / "transform").mkdir()
    transformed, output = analyze_and_transform(
        root / "transform", rows, SPEC, RAW_SPEC, options={"vocabulary_size": 5000}
    )
    features = {
        "text_xf": np.array([r["text_xf"] for r in transformed], np.int64),
        "trace_xf": np.array([r["trace_xf"] for r in transformed], np.float32),
    }
    labels = np.array([r["label_xf"] for r in transformed], np.int64)
    classes = class_names_of(output, SPEC)
    model = registry.builder("sequence")(
        HPARAMS, SPEC, vocab_sizes_of(output, SPEC), num_classes=len(classes)
    )
    train = {k: v[:TRAIN] for k, v in features.items()}
    model.fit(train, labels[:TRAIN], epochs=8, batch_size=16, verbose=0)
    trainer = root / "trainer"
    (trainer / KERAS_MODEL_DIR).mkdir(parents=True)
    model.save(str(trainer / KERAS_MODEL_DIR / "model.keras"))
    export_serving_model(model, output, SPEC, str(trainer / "Format-Serving"), classes)
    records = [_transformed_record(r) for r in transformed]
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


def test_int8_saved_model_serves_raw_text_and_series(trained, report):
    paths, rows, labels = trained
    loaded = tf.saved_model.load(os.path.join(paths.int8_model, "Format-Serving"))
    assert sorted(v.dtype.name for v in loaded.variables).count("int8") == 1
    examples = tf.constant([serialize({k: r[k] for k in ("text", "trace")}) for r in rows])
    by_example = loaded.signatures["serving_default"](examples=examples)["scores"].numpy()
    raw = loaded.signatures["serving_raw"](
        text=tf.constant([r["text"][0] for r in rows]),
        trace=tf.constant([r["trace"] for r in rows], tf.float32),
    )["scores"].numpy()
    np.testing.assert_allclose(raw, by_example, rtol=1e-5, atol=1e-6)
    float_model = tf.saved_model.load(os.path.join(paths.trainer_model, "Format-Serving"))
    float_scores = float_model.signatures["serving_default"](examples=examples)["scores"]
    np.testing.assert_allclose(by_example, float_scores, atol=0.05)
    accuracy = np.mean(by_example.argmax(axis=1) == labels)
    assert accuracy == pytest.approx(report["models"]["int8"]["metrics"]["accuracy"])


def test_guard_measures_text_and_series_models_and_blesses_the_int8_one(report):
    models = report["models"]
    assert models["float"]["metrics"]["accuracy"] >= 0.9
    for name in ("int8", "float_tflite", "int8_tflite"):
        assert models[name]["metrics"]["example_count"] == EVAL
        assert models[name]["metric_drop"] <= 2 / EVAL, name
    assert report["blessed"] is True and report["served"] == "int8"
    assert [(i["name"], i["dtype"]) for i in report["tflite_inputs"]] == [
        ("text_xf", "int64"),
        ("trace_xf", "float32"),
    ]
    assert models["int8_tflite"]["tensor_data_by_type"]["int8"] > 100_000


def test_embedding_heavy_model_keeps_its_variables_under_a_third(report):
    models, ratios = report["models"], report["size_ratios"]
    assert models["float"]["variables_breakdown"]["weights"] > 4 * 100_000
    assert ratios["int8_variables_vs_float"] <= 0.30
    assert ratios["int8_tflite_weights_vs_float_tflite"] <= 0.30
