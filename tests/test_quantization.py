"""Quantization: the int8 model, the TFLite models, the guard and the report.

A tiny classification problem is built in the test: TF Transform analyzes it with
Beam, a small MLP trains for a few seconds, and the Trainer's artifact layout
(Format-Serving, Format-Keras) is written by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
import tf_keras as keras
from tensorflow.core.protobuf import trackable_object_graph_pb2
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
from tfx.types import artifact_utils, standard_artifacts

from components.quantization import executor, measure
from components.quantization import spec as keys
from components.quantization.spec import QuantizationReport
from models import quantization
from models.export import class_names_of, export_serving_model, vocab_sizes_of
from models.features import FeatureSpec, transformed_name, vocabulary_name
from models.mlp import build_model
from models.preprocessing import preprocessing_fn
from pipeline.training import KERAS_MODEL_DIR

SPEC = FeatureSpec(
    numeric=("length", "mass"), categorical=("colour",), label="kind", task="classification"
)
RAW_SPEC = {
    "length": tf.io.FixedLenFeature([1], tf.float32),
    "mass": tf.io.FixedLenFeature([1], tf.float32),
    "colour": tf.io.FixedLenFeature([1], tf.string),
    "kind": tf.io.FixedLenFeature([1], tf.string),
}
HPARAMS = {
    "units": 32,
    "layers": 2,
    "dropout": 0.0,
    "l2": 1e-6,
    "learning_rate": 0.02,
    "optimizer": "adam",
}


def _rows(count: int, rng: np.random.Generator) -> list[dict]:
    colours = np.array(["red", "green", "blue"])
    rows = []
    for _ in range(count):
        length, mass = rng.normal(40, 5), rng.normal(4000, 500)
        colour = colours[rng.integers(3)]
        kind = "a" if length < 38 else "b" if colour != "blue" else "c"
        rows.append({"length": length, "mass": mass, "colour": colour, "kind": kind})
    return rows


def _example(row: dict) -> bytes:
    def feature(value):
        if isinstance(value, (str, np.str_)):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(value).encode()]))
        if isinstance(value, (int, np.integer)):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))

    return tf.train.Example(
        features=tf.train.Features(feature={k: feature(v) for k, v in row.items()})
    ).SerializeToString()


def _write_split(uri: str, split: str, records: list[bytes]) -> None:
    directory = os.path.join(uri, f"Split-{split}")
    os.makedirs(directory)
    with tf.io.TFRecordWriter(os.path.join(directory, "data.gz"), options="GZIP") as writer:
        for record in records:
            writer.write(record)


def _analyze(rows: list[dict], transform_dir: str, temp_dir: str) -> tft.TFTransformOutput:
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_SPEC))
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
        data = p | beam.Create([{k: [v] for k, v in row.items()} for row in rows])
        transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, {"features": SPEC.to_dict()})
        )
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    # TFX's Transform also writes the raw schema, which the serving signatures parse with.
    metadata_io.write_metadata(
        metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR)
    )
    return tft.TFTransformOutput(transform_dir)


def _transform(output: tft.TFTransformOutput, records: list[bytes]) -> dict[str, np.ndarray]:
    raw = tf.io.parse_example(tf.constant(records), RAW_SPEC)
    return {k: v.numpy() for k, v in output.transform_features_layer()(raw).items()}


def _transformed_records(features: dict[str, np.ndarray]) -> list[bytes]:
    count = len(next(iter(features.values())))
    return [_example({k: v[i] for k, v in features.items()}) for i in range(count)]


def _train_like_the_trainer(
    hparams: dict, output: tft.TFTransformOutput, train: dict, epochs: int, trainer_dir: Path
) -> None:
    """Trains an MLP on transformed features and writes the Trainer's artifact layout."""
    model = build_model(
        hparams, SPEC, vocab_sizes_of(output, SPEC), len(class_names_of(output, SPEC))
    )
    inputs = {k: train[k] for k in model.input_names}
    model.fit(inputs, train[SPEC.label_xf], epochs=epochs, batch_size=32, verbose=0)
    os.makedirs(trainer_dir / KERAS_MODEL_DIR)
    model.save(str(trainer_dir / KERAS_MODEL_DIR / "model.keras"))
    export_serving_model(
        model, output, SPEC, str(trainer_dir / "Format-Serving"), class_names_of(output, SPEC)
    )


@pytest.fixture(scope="module")
def pipeline_inputs(tmp_path_factory) -> executor.Paths:
    """A trained model, its Transform output and examples, laid out like TFX artifacts."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("quantization")
    rng = np.random.default_rng(0)
    train_rows, eval_rows = _rows(400, rng), _rows(120, rng)
    transform_dir = str(root / "transform")
    output = _analyze(train_rows, transform_dir, str(root / "tft_tmp"))
    raw_train, raw_eval = [_example(r) for r in train_rows], [_example(r) for r in eval_rows]
    train, evaluation = _transform(output, raw_train), _transform(output, raw_eval)
    for split, records in (("train", raw_train), ("eval", raw_eval)):
        _write_split(str(root / "examples"), split, records)
    for split, features in (("train", train), ("eval", evaluation)):
        _write_split(str(root / "transformed"), split, _transformed_records(features))

    trainer_dir = root / "trainer"
    _train_like_the_trainer(HPARAMS, output, train, epochs=40, trainer_dir=trainer_dir)
    return executor.Paths(
        trainer_model=str(trainer_dir),
        transform_graph=transform_dir,
        transformed_train=str(root / "transformed" / "Split-train"),
        transformed_eval=str(root / "transformed" / "Split-eval"),
        raw_eval=str(root / "examples" / "Split-eval"),
        served_model="",
        int8_model="",
        tflite_model="",
        report="",
    )


def _artifact(kind, uri: str, splits: list[str] = ()):
    artifact = kind()
    artifact.uri = uri
    if splits:
        artifact.split_names = artifact_utils.encode_split_names(list(splits))
    return artifact


def _root(path: str, levels: int = 1) -> str:
    for _ in range(levels):
        path = os.path.dirname(path)
    return path


@pytest.fixture(scope="module")
def executed(pipeline_inputs: executor.Paths, tmp_path_factory):
    """Runs the executor's Do() once; returns (output artifacts, report)."""
    out = tmp_path_factory.mktemp("outputs")
    inputs = {
        keys.MODEL_KEY: [_artifact(standard_artifacts.Model, pipeline_inputs.trainer_model)],
        keys.TRANSFORM_GRAPH_KEY: [
            _artifact(standard_artifacts.TransformGraph, pipeline_inputs.transform_graph)
        ],
        keys.TRANSFORMED_EXAMPLES_KEY: [
            _artifact(
                standard_artifacts.Examples,
                _root(pipeline_inputs.transformed_eval),
                ["train", "eval"],
            )
        ],
        keys.EXAMPLES_KEY: [
            _artifact(
                standard_artifacts.Examples, _root(pipeline_inputs.raw_eval), ["train", "eval"]
            )
        ],
    }
    outputs = {
        keys.SERVED_MODEL_KEY: [_artifact(standard_artifacts.Model, str(out / "served"))],
        keys.INT8_MODEL_KEY: [_artifact(standard_artifacts.Model, str(out / "int8"))],
        keys.TFLITE_MODEL_KEY: [_artifact(standard_artifacts.Model, str(out / "tflite"))],
        keys.REPORT_KEY: [_artifact(QuantizationReport, str(out / "report"))],
    }
    properties = {
        keys.FEATURES_KEY: json.dumps(SPEC.to_dict()),
        keys.METHOD_KEY: "int8_weights",
        keys.METRIC_KEY: "accuracy",
        keys.MAX_METRIC_DROP_KEY: 0.05,
        keys.REPRESENTATIVE_SAMPLES_KEY: 100,
        keys.SERVE_KEY: "quantized",
        keys.ON_GUARD_FAILURE_KEY: "push_float",
        keys.PRUNING_SPARSITY_KEY: 0.0,
        keys.PRUNING_EPOCHS_KEY: 1,
        keys.LATENCY_RUNS_KEY: 3,
    }
    executor.Executor().Do(inputs, outputs, properties)
    report = json.loads((out / "report" / keys.REPORT_FILE).read_text())
    return outputs, report, out


def test_artifacts_exist(executed):
    _, _, out = executed
    assert (out / "int8" / "Format-Serving" / "saved_model.pb").is_file()
    assert (out / "served" / "Format-Serving" / "saved_model.pb").is_file()
    assert (out / "tflite" / keys.TFLITE_FILE).is_file()
    assert (out / "tflite" / keys.TFLITE_FLOAT_FILE).is_file()


def test_int8_saved_model_serves_serialized_examples(executed, pipeline_inputs):
    _, _, out = executed
    loaded = tf.saved_model.load(str(out / "int8" / "Format-Serving"))
    records = measure.read_records(os.path.join(pipeline_inputs.raw_eval, "*"))[:5]
    result = loaded.signatures["serving_default"](examples=tf.constant(records))
    assert result["scores"].shape == (5, 3)
    assert result["scores"].dtype == tf.float32
    np.testing.assert_allclose(result["scores"].numpy().sum(axis=1), 1.0, atol=1e-5)
    assert result["classes"].dtype == tf.string
    # Packed: one int8 variable with every kernel, one float32 with every scale and bias.
    dense = [layer for layer in _float_model(pipeline_inputs).layers if layer.weights]
    int8, floats = sorted(loaded.variables, key=lambda v: v.dtype != tf.int8)
    assert len(loaded.variables) == 2 and (int8.dtype, floats.dtype) == (tf.int8, tf.float32)
    assert int8.shape == [sum(layer.kernel.shape.num_elements() for layer in dense)]
    assert floats.shape == [2 * sum(layer.units for layer in dense)]


def test_int8_saved_model_transforms_and_serves_raw_features(executed, pipeline_inputs):
    _, _, out = executed
    loaded = tf.saved_model.load(str(out / "int8" / "Format-Serving"))
    output = tft.TFTransformOutput(pipeline_inputs.transform_graph)
    rows = [
        {"length": 35.0, "mass": 3900.0, "colour": "blue", "kind": "a"},
        {"length": 45.0, "mass": 4100.0, "colour": "red", "kind": "b"},
        {"length": 45.0, "mass": 4100.0, "colour": "mauve", "kind": "b"},
    ]
    records = [_example(row) for row in rows]
    transformed = loaded.signatures["transform_features"](examples=tf.constant(records))
    # The vocabulary tables are initialised from their assets on load: known colours get
    # their vocabulary index, an unknown one the OOV id (the vocabulary size).
    vocabulary = [v.decode() for v in output.vocabulary_by_name(vocabulary_name("colour"))]
    expected = [vocabulary.index("blue"), vocabulary.index("red"), len(vocabulary)]
    colour_ids = transformed[transformed_name("colour")]
    np.testing.assert_array_equal(np.reshape(colour_ids, [-1]), expected)
    in_memory = _transform(output, records)
    for name, values in in_memory.items():
        np.testing.assert_allclose(np.reshape(transformed[name], [-1]), np.reshape(values, [-1]))
    raw = loaded.signatures["serving_raw"](
        length=tf.constant([r["length"] for r in rows], tf.float32),
        mass=tf.constant([r["mass"] for r in rows], tf.float32),
        colour=tf.constant([r["colour"] for r in rows]),
    )
    examples = loaded.signatures["serving_default"](
        examples=tf.constant([_example({k: r[k] for k in SPEC.features}) for r in rows])
    )
    np.testing.assert_allclose(raw["scores"], examples["scores"], rtol=1e-6)


def test_tflite_model_is_fully_int8(executed, pipeline_inputs):
    _, report, out = executed
    interpreter = tf.lite.Interpreter(model_path=str(out / "tflite" / keys.TFLITE_FILE))
    interpreter.allocate_tensors()
    assert {d["dtype"] for d in interpreter.get_input_details()} == {np.int8}
    (output,) = interpreter.get_output_details()
    assert output["dtype"] == np.int8 and output["quantization"][0] > 0
    runner = measure.TFLiteRunner(
        str(out / "tflite" / keys.TFLITE_FILE),
        quantization.tflite_inputs(_float_model(pipeline_inputs)),
    )
    spec = tft.TFTransformOutput(pipeline_inputs.transform_graph).transformed_feature_spec()
    features = measure.parse_features(
        measure.read_records(os.path.join(pipeline_inputs.transformed_eval, "*")), spec
    )
    scores = runner.predict(features)
    accuracy = float(np.mean(np.argmax(scores, axis=1) == features[SPEC.label_xf]))
    assert accuracy == pytest.approx(report["models"]["int8_tflite"]["metrics"]["accuracy"])
    assert accuracy > 0.8


def _float_model(paths: executor.Paths) -> keras.Model:
    return keras.models.load_model(
        os.path.join(paths.trainer_model, KERAS_MODEL_DIR, "model.keras")
    )


def test_report_is_consistent_with_files(executed, pipeline_inputs):
    outputs, report, out = executed
    models = report["models"]
    assert set(models) == {"float", "int8", "float_tflite", "int8_tflite"}
    int8_dir = out / "int8" / "Format-Serving"
    assert models["int8"]["size_bytes"] == measure.directory_bytes(str(int8_dir))
    assert models["int8"]["variables_bytes"] == measure.directory_bytes(str(int8_dir / "variables"))
    assert models["int8_tflite"]["size_bytes"] == (out / "tflite" / keys.TFLITE_FILE).stat().st_size
    assert (
        models["float_tflite"]["size_bytes"]
        == (out / "tflite" / keys.TFLITE_FLOAT_FILE).stat().st_size
    )
    assert report["size_ratios"]["int8_tflite_vs_float_tflite"] == pytest.approx(
        models["int8_tflite"]["size_bytes"] / models["float_tflite"]["size_bytes"]
    )
    for name in ("float_tflite", "int8_tflite"):
        breakdown = models[name]["size_breakdown"]
        assert sum(breakdown.values()) == models[name]["size_bytes"]
        assert sum(models[name]["tensor_data_by_type"].values()) == breakdown["tensor_data"]
        assert breakdown["structure"] > 0
    float_data = models["float_tflite"]["tensor_data_by_type"]
    int8_data = models["int8_tflite"]["tensor_data_by_type"]
    # Float kernels and biases are float32; int8 ones are int8 kernels and int32 biases,
    # with a scale and zero point per channel.
    assert float_data["float32"] > 0.9 * models["float_tflite"]["size_breakdown"]["tensor_data"]
    assert "float32" not in int8_data and int8_data["int8"] > 0 and int8_data["int32"] > 0
    assert models["float_tflite"]["size_breakdown"]["quantization_parameters"] == 0
    assert models["int8_tflite"]["size_breakdown"]["quantization_parameters"] > 0
    tflite_weights = {
        k: models[k]["size_breakdown"]["tensor_data"]
        + models[k]["size_breakdown"]["quantization_parameters"]
        for k in ("float_tflite", "int8_tflite")
    }
    assert report["size_ratios"]["int8_tflite_weights_vs_float_tflite"] == pytest.approx(
        tflite_weights["int8_tflite"] / tflite_weights["float_tflite"]
    )
    assert models["int8"]["variables_bytes"] < models["float"]["variables_bytes"]
    weights = {k: models[k]["variables_breakdown"]["weights"] for k in ("float", "int8")}
    # int8 kernels plus a float32 scale and bias per unit: 32-unit layers on 7 inputs.
    assert weights["int8"] / weights["float"] == pytest.approx(
        report["size_ratios"]["int8_weights_vs_float"]
    )
    assert weights["int8"] / weights["float"] < 0.45
    for entry in models.values():
        assert entry["metrics"]["example_count"] == 120
        assert entry["latency_ms"]["batch_1"] > 0 and entry["latency_ms"]["batch_256"] > 0
    drop = models["float"]["metrics"]["accuracy"] - models["int8"]["metrics"]["accuracy"]
    assert models["int8"]["metric_drop"] == pytest.approx(drop)
    assert report["blessed"] is True and report["served"] == "int8"
    served = artifact_utils.get_single_instance(outputs[keys.SERVED_MODEL_KEY])
    assert served.get_string_custom_property(keys.SERVED_PROPERTY) == "int8"
    served_pb = out / "served" / "Format-Serving" / "saved_model.pb"
    assert served_pb.read_bytes() == (int8_dir / "saved_model.pb").read_bytes()


def test_saved_models_keep_no_training_state_and_int8_no_keras_metadata(executed):
    _, report, out = executed
    breakdown = {k: report["models"][k]["variables_breakdown"] for k in ("float", "int8")}
    assert breakdown["float"]["optimizer"] == 0 and breakdown["int8"]["optimizer"] == 0
    # The lean export tracks the variables, the transform graph's resources and the
    # signatures: no Keras layers, and not the TFT layer as a Keras object either.
    assert breakdown["int8"]["object_graph"] < 0.4 * breakdown["float"]["object_graph"]
    assert not (out / "int8" / "Format-Serving" / "keras_metadata.pb").exists()
    names = _object_graph_names(out / "int8" / "Format-Serving")
    assert "transform" in names and "variables" in names
    assert not names & {"keras_api", "tft_layer", "layer_with_weights-0"}


def _object_graph_names(export_dir: Path) -> set[str]:
    """The local names of every edge in a SavedModel's checkpoint object graph."""
    reader = tf.train.load_checkpoint(str(export_dir / "variables" / "variables"))
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {child.local_name for node in graph.nodes for child in node.children}


def test_failed_guard_serves_the_float_model(pipeline_inputs, tmp_path):
    paths = _outputs_under(pipeline_inputs, tmp_path)
    # A negative allowed drop: the int8 model would have to beat the float one by a whole unit.
    settings = executor.Settings(
        spec=SPEC, max_metric_drop=-1.0, representative_samples=20, latency_runs=1
    )
    report = executor.quantize_and_compare(paths, settings)
    assert report["blessed"] is False and report["served"] == "float"
    assert report["models"]["int8"]["passed_guard"] is False
    float_pb = Path(pipeline_inputs.trainer_model, "Format-Serving", "saved_model.pb")
    served_pb = Path(paths.served_model, "Format-Serving", "saved_model.pb")
    assert served_pb.read_bytes() == float_pb.read_bytes()


def test_failed_guard_with_push_nothing_stops_before_the_push(pipeline_inputs, tmp_path):
    paths = _outputs_under(pipeline_inputs, tmp_path)
    settings = executor.Settings(
        spec=SPEC,
        max_metric_drop=-1.0,
        on_guard_failure="push_nothing",
        representative_samples=20,
        latency_runs=1,
    )
    with pytest.raises(executor.GuardFailedError, match="push_nothing, so nothing is pushed"):
        executor.quantize_and_compare(paths, settings)
    report = json.loads(Path(paths.report, keys.REPORT_FILE).read_text())
    assert report["served"] == "none" and report["blessed"] is False
    assert not Path(paths.served_model, "Format-Serving").exists()


def _outputs_under(paths: executor.Paths, root) -> executor.Paths:
    return executor.Paths(
        **{
            **vars(paths),
            "served_model": str(root / "served"),
            "int8_model": str(root / "int8"),
            "tflite_model": str(root / "tflite"),
            "report": str(root / "report"),
        }
    )


def test_weight_dominated_model_reaches_the_size_targets(pipeline_inputs, tmp_path):
    """With ~300k weights the per-file overheads no longer dominate the sizes.

    Three 384-unit layers, trained briefly on the fixture's data and quantized by the
    executor: the int8 SavedModel's variables and the int8 TFLite file come near int8's
    0.25x of float32 (the rest: scales, biases, object graph, flatbuffer structure).
    (With 256 units the TFLite ratio is 0.296x: per-channel parameters weigh more.)
    """
    output = tft.TFTransformOutput(pipeline_inputs.transform_graph)
    train = measure.parse_features(
        measure.read_records(os.path.join(pipeline_inputs.transformed_train, "*")),
        output.transformed_feature_spec(),
    )
    trainer_dir = tmp_path / "trainer"
    _train_like_the_trainer(
        {**HPARAMS, "units": 384, "layers": 3}, output, train, epochs=2, trainer_dir=trainer_dir
    )
    paths = executor.Paths(
        **{**vars(_outputs_under(pipeline_inputs, tmp_path)), "trainer_model": str(trainer_dir)}
    )
    settings = executor.Settings(
        spec=SPEC, max_metric_drop=1.0, representative_samples=50, latency_runs=1
    )
    report = executor.quantize_and_compare(paths, settings)
    models, ratios = report["models"], report["size_ratios"]
    assert models["float"]["variables_breakdown"]["weights"] > 4 * 250_000
    assert ratios["int8_variables_vs_float"] <= 0.35
    assert ratios["int8_tflite_vs_float_tflite"] <= 0.3


def test_quantize_weights_packs_per_channel_int8_dense_weights():
    inputs = keras.Input(shape=(5,), name="x_xf")
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, use_bias=False, name="out")(hidden))
    rng = np.random.default_rng(0)
    hidden_kernel = rng.normal(size=(5, 4)).astype(np.float32)
    hidden_kernel[0] = 0.0
    model.get_layer("hidden").set_weights([hidden_kernel, rng.normal(size=4).astype(np.float32)])
    model.get_layer("out").set_weights([rng.normal(size=(4, 3)).astype(np.float32)])

    int8 = quantization.quantize_weights(model)

    assert [type(layer).__name__ for layer in int8.layers[1:]] == ["Int8Dense", "Int8Dense"]
    assert [(v.dtype, v.shape.as_list()) for v in int8.variables] == [
        (tf.int8, [5 * 4 + 4 * 3]),
        (tf.float32, [4 + 4 + 3]),
    ]
    dequantized = []
    for name in ("hidden", "out"):
        kernel, scale = quantization.quantize_kernel(model.get_layer(name).get_weights()[0])
        layer = int8.get_layer(name)
        np.testing.assert_array_equal(layer.kernel_int8, kernel)
        np.testing.assert_array_equal(layer.kernel_scale, scale)
        dequantized.append(kernel * scale)
    np.testing.assert_array_equal(int8.get_layer("hidden").bias, model.get_layer("hidden").bias)
    assert int8.get_layer("out").bias is None
    x = rng.normal(size=(8, 5)).astype(np.float32)
    hidden_out = np.maximum(x @ dequantized[0] + model.get_layer("hidden").bias.numpy(), 0)
    np.testing.assert_allclose(int8(x), hidden_out @ dequantized[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(int8(x), model(x), atol=0.05)
    # Only the zeroed row of the hidden kernel: 4 of the 32 kernel weights.
    assert quantization.kernel_sparsity(int8) == pytest.approx(4 / 32)


def test_quantize_kernel_is_per_channel_and_close():
    kernel = np.array([[0.5, -2.0], [-0.25, 1.0], [0.0, 0.0]], np.float32)
    quantized, scale = quantization.quantize_kernel(kernel)
    assert quantized.dtype == np.int8
    np.testing.assert_allclose(scale, [0.5 / 127, 2.0 / 127])
    np.testing.assert_allclose(quantized * scale, kernel, atol=scale.max() / 2)


def test_unconvertible_model_fails_with_the_converter_reason():
    inputs = keras.Input(shape=(), name="x_xf", dtype="float32")
    # Erfinv has no TFLite builtin kernel, and only builtins are allowed.
    outputs = keras.layers.Dense(2)(
        keras.layers.Lambda(lambda x: tf.math.erfinv(tf.reshape(x, [-1, 1]) * 0.1))(inputs)
    )
    model = keras.Model(inputs, outputs)
    with pytest.raises(quantization.ConversionError, match="(?i)erfinv|not supported|unsupported"):
        quantization.to_tflite(model)
