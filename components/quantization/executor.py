"""Quantization's executor: `Do()` unpacks the artifacts and calls `quantize_and_compare`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.quantization import measure
from components.quantization import spec as keys

# Registers the sequence family's custom layers, which the Trainer's model.keras names.
from models import quantization, sequence_encoders  # noqa: F401
from models.export import class_names_of, export_lean_serving_model
from models.features import FeatureSpec
from pipeline.config import QUANTIZATION_METHODS, QuantizationConfig
from pipeline.training import KERAS_MODEL_DIR

_DEFAULTS = QuantizationConfig()

# The int8 SavedModel: per-channel int8 Dense and Conv2D kernels
# (models.quantization.quantize_weights).
METHOD_DESCRIPTIONS = {
    "int8_weights": "post-training per-channel int8 Dense, Conv1D/Conv2D (batch "
    "normalization folded in), attention and LSTM/GRU kernels and per-row int8 embedding "
    "tables, float32 activations"
}
_PRUNING_BATCH_SIZE = 32
_LATENCY_BATCHES = (1, 256)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The component's parameters, typed; defaults from `pipeline.config.QuantizationConfig`."""

    spec: FeatureSpec
    metric: str = "accuracy"
    method: str = _DEFAULTS.method
    max_metric_drop: float = _DEFAULTS.max_metric_drop
    representative_samples: int = _DEFAULTS.representative_samples
    serve: str = _DEFAULTS.serve
    on_guard_failure: str = _DEFAULTS.on_guard_failure
    pruning_sparsity: float = 0.0
    pruning_epochs: int = _DEFAULTS.pruning.epochs
    latency_runs: int = _DEFAULTS.latency_runs


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where the inputs are and where the outputs go (artifact URIs)."""

    trainer_model: str
    transform_graph: str
    transformed_train: str
    transformed_eval: str
    raw_eval: str
    served_model: str
    int8_model: str
    tflite_model: str
    report: str


def load_float_model(trainer_model: str) -> keras.Model:
    """The Trainer's plain Keras model (transformed features in, no TFT layer)."""
    path = os.path.join(trainer_model, KERAS_MODEL_DIR, "model.keras")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"the Trainer's Keras model is missing: {path} (pipeline.training.run_fn writes it)"
        )
    return keras.models.load_model(path)


def _copy_tree(source: str, target: str) -> None:
    for root, _, files in tf.io.gfile.walk(source):
        relative = os.path.relpath(root, source)
        tf.io.gfile.makedirs(os.path.join(target, relative))
        for name in files:
            tf.io.gfile.copy(
                os.path.join(root, name), os.path.join(target, relative, name), overwrite=True
            )


def _model_to_quantize(
    model: keras.Model, train_pattern: str, feature_spec: dict, settings: Settings
) -> keras.Model:
    """The model, or its pruned copy; only pruning reads the whole training split."""
    if not settings.pruning_sparsity:
        return model
    train = measure.parse_features(measure.read_records(train_pattern), feature_spec)
    label = settings.spec.label_xf
    features = {k: train[k] for k in model.input_names}
    dataset = tf.data.Dataset.from_tensor_slices((features, train[label])).shuffle(
        len(train[label]), seed=0
    )
    return quantization.prune(
        model,
        dataset.batch(_PRUNING_BATCH_SIZE),
        settings.pruning_sparsity,
        settings.pruning_epochs,
    )


def _write_tflite(
    model: keras.Model,
    to_quantize: keras.Model,
    calibration: dict[str, np.ndarray],
    settings: Settings,
    target: str,
):
    """Writes model_float.tflite and model.tflite (int8, calibrated on `calibration`).

    Returns:
      (file paths by model name, the TFLite inputs).
    """
    inputs = quantization.tflite_inputs(model)
    representative = quantization.representative_dataset(
        calibration, inputs, settings.representative_samples
    )
    tf.io.gfile.makedirs(target)
    paths = {
        "float_tflite": os.path.join(target, keys.TFLITE_FLOAT_FILE),
        "int8_tflite": os.path.join(target, keys.TFLITE_FILE),
    }
    for name, flatbuffer in (
        ("float_tflite", quantization.to_tflite(model)),
        ("int8_tflite", quantization.to_tflite(to_quantize, representative)),
    ):
        with tf.io.gfile.GFile(paths[name], "wb") as f:
            f.write(flatbuffer)
    return paths, inputs


def saved_model_entry(
    directory: str, records: list[bytes], settings: Settings, output_key: str, labels=None
):
    """Size, eval metrics and latency of a serving SavedModel; also returns the labels used."""
    runner = measure.SavedModelRunner(directory, output_key)
    labels = runner.labels(records, settings.spec.label_xf) if labels is None else labels
    entry = {
        "format": "saved_model",
        "path": directory,
        "size_bytes": measure.directory_bytes(directory),
        "variables_bytes": measure.directory_bytes(os.path.join(directory, "variables")),
        "variables_breakdown": measure.checkpoint_bytes(directory),
        "metrics": _metrics(settings.spec, labels, runner.predict(records)),
        "latency_ms": {
            f"batch_{n}": measure.median_latency_ms(
                runner.timer(measure.repeat_to(records, n)), settings.latency_runs
            )
            for n in _LATENCY_BATCHES
        },
    }
    return entry, labels


def tflite_entry(
    path: str, inputs, features: dict[str, np.ndarray], settings: Settings
) -> dict[str, Any]:
    """Size and its parts, eval metrics (transformed eval split) and latency of a TFLite model."""
    runner = measure.TFLiteRunner(path, inputs)
    model_features = {i.name: features[i.name] for i in inputs}
    batches = {
        n: {k: np.asarray(measure.repeat_to(list(v), n)) for k, v in model_features.items()}
        for n in _LATENCY_BATCHES
    }
    breakdown, tensor_data_by_type = measure.tflite_bytes(path)
    return {
        "format": "tflite",
        "path": path,
        "size_bytes": tf.io.gfile.stat(path).length,
        "size_breakdown": breakdown,
        "tensor_data_by_type": tensor_data_by_type,
        "float_ops": measure.tflite_float_ops(path),
        "metrics": _metrics(
            settings.spec, features[settings.spec.label_xf], runner.predict(model_features)
        ),
        "latency_ms": {
            f"batch_{n}": measure.median_latency_ms(runner.timer(batch), settings.latency_runs)
            for n, batch in batches.items()
        },
    }


def _metrics(spec: FeatureSpec, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    if spec.is_classification:
        return measure.classification_metrics(labels.astype(np.int64), outputs)
    return measure.regression_metrics(labels.astype(np.float64), outputs)


def _judge(models: dict[str, dict], settings: Settings) -> None:
    """Adds each model's drop of the primary metric against the float SavedModel, and the verdict."""
    reference = models["float"]["metrics"][settings.metric]
    for entry in models.values():
        drop = measure.metric_drop(settings.metric, reference, entry["metrics"][settings.metric])
        entry["metric_drop"] = drop
        entry["passed_guard"] = bool(drop <= settings.max_metric_drop)


def _served(blessed: bool, settings: Settings) -> tuple[str, str]:
    """Which model goes to Evaluator and Pusher ("int8", "float" or "none"), and why."""
    if settings.serve == "float":
        return "float", "the config asks to serve the float model (quantization.serve: float)"
    if blessed:
        return "int8", "the int8 model passed the accuracy guard"
    if settings.on_guard_failure == "push_nothing":
        return "none", "the int8 model failed the accuracy guard; on_guard_failure is push_nothing"
    return "float", "the int8 model failed the accuracy guard; serving the float model instead"


def quantize_and_compare(paths: Paths, settings: Settings) -> dict[str, Any]:
    """Quantizes the Trainer's model, measures float and quantized models, picks the one to serve.

    Writes the int8 SavedModel (`<int8_model>/Format-Serving`), `model.tflite` (int8) and
    `model_float.tflite`, `<served_model>/Format-Serving` (int8 or float) and
    `<report>/report.json`.

    Args:
      paths: input and output locations.
      settings: the quantization settings.

    Returns:
      The report (also written as report.json).

    Raises:
      models.quantization.ConversionError: TFLite could not convert the model.
      GuardFailedError: the int8 model failed the guard with on_guard_failure
        push_nothing; stopping here keeps Evaluator and Pusher from running.
      ValueError: unknown method or metric.
    """
    if settings.method not in QUANTIZATION_METHODS:
        raise ValueError(
            f"unknown quantization method {settings.method!r}; known: {list(QUANTIZATION_METHODS)}"
        )
    transform_output = tft.TFTransformOutput(paths.transform_graph)
    feature_spec = transform_output.transformed_feature_spec()
    train_pattern = os.path.join(paths.transformed_train, "*")
    # Calibration needs a sample, not the split: 60k images would be ~200 MB of floats.
    calibration = measure.parse_features(
        measure.sample_records(train_pattern, settings.representative_samples), feature_spec
    )
    # Accuracy and the guard on a sample of a large eval split, read in one bounded pass.
    evaluation = measure.parse_features(
        measure.sample_records(os.path.join(paths.transformed_eval, "*"), measure.EVAL_SAMPLE),
        feature_spec,
    )
    raw_eval = measure.sample_records(os.path.join(paths.raw_eval, "*"), measure.EVAL_SAMPLE)

    model = load_float_model(paths.trainer_model)
    to_quantize = _model_to_quantize(model, train_pattern, feature_spec, settings)
    int8_model = quantization.quantize_weights(to_quantize)
    int8_dir = os.path.join(paths.int8_model, keys.SERVING_MODEL_DIR)
    class_names = class_names_of(transform_output, settings.spec)
    export_lean_serving_model(int8_model, transform_output, settings.spec, int8_dir, class_names)
    tflite_paths, inputs = _write_tflite(
        model, to_quantize, calibration, settings, paths.tflite_model
    )

    output_key = "scores" if settings.spec.is_classification else "outputs"
    float_dir = os.path.join(paths.trainer_model, keys.SERVING_MODEL_DIR)
    models: dict[str, dict] = {}
    models["float"], labels = saved_model_entry(float_dir, raw_eval, settings, output_key)
    models["int8"], _ = saved_model_entry(int8_dir, raw_eval, settings, output_key, labels)
    for name, path in tflite_paths.items():
        models[name] = tflite_entry(path, inputs, evaluation, settings)
    _judge(models, settings)

    blessed = models["int8"]["passed_guard"]
    served, reason = _served(blessed, settings)
    report = _report(models, settings, blessed, served, reason, int8_model, inputs)
    tf.io.gfile.makedirs(paths.report)
    report_path = os.path.join(paths.report, keys.REPORT_FILE)
    with tf.io.gfile.GFile(report_path, "w") as f:
        json.dump(report, f, indent=2)
    if served == "none":
        int8 = models["int8"]
        raise GuardFailedError(
            f"the int8 model's {settings.metric} dropped by {int8['metric_drop']:.4f} "
            f"(allowed: {settings.max_metric_drop}) and quantization.on_guard_failure is "
            f"push_nothing, so nothing is pushed; report: {report_path}"
        )
    source = int8_dir if served == "int8" else float_dir
    _copy_tree(source, os.path.join(paths.served_model, keys.SERVING_MODEL_DIR))
    # The float Keras model too: the next Trainer warm-starts from a blessed served model.
    _copy_tree(
        os.path.join(paths.trainer_model, KERAS_MODEL_DIR),
        os.path.join(paths.served_model, KERAS_MODEL_DIR),
    )
    return report


class GuardFailedError(RuntimeError):
    """The int8 model failed the accuracy guard and the config says to push nothing."""


def _report(
    models, settings: Settings, blessed: bool, served: str, reason: str, int8_model, inputs
) -> dict[str, Any]:
    def ratio(a: str, b: str, key: str) -> float:
        return models[a][key] / models[b][key]

    def tflite_weights(name: str) -> int:
        # The counterpart of a SavedModel's weights: the int8 kernels' scales are there too.
        breakdown = models[name]["size_breakdown"]
        return breakdown["tensor_data"] + breakdown["quantization_parameters"]

    return {
        "method": settings.method,
        "method_description": METHOD_DESCRIPTIONS[settings.method],
        "metric": settings.metric,
        "max_metric_drop": settings.max_metric_drop,
        "representative_samples": settings.representative_samples,
        "pruning": {
            "enabled": bool(settings.pruning_sparsity),
            "target_sparsity": settings.pruning_sparsity,
            "kernel_sparsity": quantization.kernel_sparsity(int8_model),
        },
        "models": models,
        "size_ratios": {
            "int8_variables_vs_float": ratio("int8", "float", "variables_bytes"),
            "int8_weights_vs_float": models["int8"]["variables_breakdown"]["weights"]
            / models["float"]["variables_breakdown"]["weights"],
            "int8_saved_model_vs_float": ratio("int8", "float", "size_bytes"),
            "int8_tflite_vs_float_tflite": ratio("int8_tflite", "float_tflite", "size_bytes"),
            "int8_tflite_weights_vs_float_tflite": tflite_weights("int8_tflite")
            / tflite_weights("float_tflite"),
        },
        "tflite_inputs": [
            {
                "name": i.name,
                "dtype": i.dtype.name,
                "categorical": i.categorical,
                "shape": list(i.shape),
            }
            for i in inputs
        ],
        "blessed": blessed,
        "served": served,
        "reason": reason,
    }


def _split_uri(artifacts: list, split: str) -> str:
    # Transform writes one transformed Examples per input span (data.spans); the newest
    # span's, created last, stands for the data.
    return artifact_utils.get_split_uri([max(artifacts, key=lambda a: a.id)], split)


class Executor(base_executor.BaseExecutor):
    """Unpacks the artifacts, calls `quantize_and_compare`, records the verdict on the outputs."""

    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        paths = Paths(
            trainer_model=artifact_utils.get_single_uri(input_dict[keys.MODEL_KEY]),
            transform_graph=artifact_utils.get_single_uri(input_dict[keys.TRANSFORM_GRAPH_KEY]),
            transformed_train=_split_uri(input_dict[keys.TRANSFORMED_EXAMPLES_KEY], "train"),
            transformed_eval=_split_uri(input_dict[keys.TRANSFORMED_EXAMPLES_KEY], "eval"),
            raw_eval=_split_uri(input_dict[keys.EXAMPLES_KEY], "eval"),
            served_model=artifact_utils.get_single_uri(output_dict[keys.SERVED_MODEL_KEY]),
            int8_model=artifact_utils.get_single_uri(output_dict[keys.INT8_MODEL_KEY]),
            tflite_model=artifact_utils.get_single_uri(output_dict[keys.TFLITE_MODEL_KEY]),
            report=artifact_utils.get_single_uri(output_dict[keys.REPORT_KEY]),
        )
        settings = Settings(
            spec=FeatureSpec.from_dict(json.loads(exec_properties[keys.FEATURES_KEY])),
            method=exec_properties[keys.METHOD_KEY],
            metric=exec_properties[keys.METRIC_KEY],
            max_metric_drop=float(exec_properties[keys.MAX_METRIC_DROP_KEY]),
            representative_samples=int(exec_properties[keys.REPRESENTATIVE_SAMPLES_KEY]),
            serve=exec_properties[keys.SERVE_KEY],
            on_guard_failure=exec_properties[keys.ON_GUARD_FAILURE_KEY],
            pruning_sparsity=float(exec_properties[keys.PRUNING_SPARSITY_KEY]),
            pruning_epochs=int(exec_properties[keys.PRUNING_EPOCHS_KEY]),
            latency_runs=int(exec_properties[keys.LATENCY_RUNS_KEY]),
        )
        report = quantize_and_compare(paths, settings)
        for key in (keys.SERVED_MODEL_KEY, keys.REPORT_KEY):
            artifact = artifact_utils.get_single_instance(output_dict[key])
            artifact.set_string_custom_property(keys.SERVED_PROPERTY, report["served"])
            artifact.set_int_custom_property(keys.BLESSED_PROPERTY, int(report["blessed"]))
