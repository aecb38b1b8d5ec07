"""Size, accuracy and CPU latency of the float and int8 models of one pipeline run.

    scripts/in-env python bench/quantization.py [--output-root output] [--runs 200]

Reads the Quantization outputs of the pipeline's latest run, the one named in
`<output-root>/<pipeline>/summary.json` (run the pipeline first), and measures, in this one
process, the float SavedModel (Trainer), the int8 SavedModel, and the float and int8 TFLite
models on the same eval split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from components.quantization import executor, measure
from pipeline.config import load_config
from pipeline.local_runner import summary_path
from pipeline.pipeline import feature_spec
from pipeline.summary import RunRecord

_MODELS = ("float", "int8", "float_tflite", "int8_tflite")


def _paths(record: RunRecord) -> executor.Paths:
    inputs = record.inputs.get("Quantization", {})
    if not inputs:
        sys.exit(
            f"run {record.run.name if record.run else '?'} has no Quantization in ML Metadata:"
            " run the pipeline first (make run)"
        )
    uri = {key: artifacts[-1] for key, artifacts in inputs.items()}
    outputs = {
        key: record.output("Quantization", key).uri for key in ("int8_model", "tflite_model")
    }
    transformed, raw = uri["transformed_examples"], uri["examples"]
    return executor.Paths(
        trainer_model=uri["model"].uri,
        transform_graph=uri["transform_graph"].uri,
        transformed_train=os.path.join(transformed.uri, "Split-train"),
        transformed_eval=os.path.join(transformed.uri, "Split-eval"),
        raw_eval=os.path.join(raw.uri, "Split-eval"),
        served_model="",
        int8_model=outputs["int8_model"],
        tflite_model=outputs["tflite_model"],
        report="",
    )


def measure_all(paths: executor.Paths, settings: executor.Settings) -> dict[str, dict]:
    """Measures the four models as the Quantization component does, without writing anything."""
    import tensorflow_transform as tft

    from models.quantization import tflite_inputs

    spec = tft.TFTransformOutput(paths.transform_graph).transformed_feature_spec()
    evaluation = measure.parse_features(
        measure.read_records(os.path.join(paths.transformed_eval, "*")), spec
    )
    raw_eval = measure.read_records(os.path.join(paths.raw_eval, "*"))
    output_key = "scores" if settings.spec.is_classification else "outputs"
    float_dir = os.path.join(paths.trainer_model, "Format-Serving")
    models = {}
    models["float"], labels = executor.saved_model_entry(float_dir, raw_eval, settings, output_key)
    int8_dir = os.path.join(paths.int8_model, "Format-Serving")
    models["int8"], _ = executor.saved_model_entry(int8_dir, raw_eval, settings, output_key, labels)
    inputs = tflite_inputs(executor.load_float_model(paths.trainer_model))
    for name, file in (("float_tflite", "model_float.tflite"), ("int8_tflite", "model.tflite")):
        path = os.path.join(paths.tflite_model, file)
        models[name] = executor.tflite_entry(path, inputs, evaluation, settings)
    return models


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/penguins.yaml")
    parser.add_argument("--output-root", default=None)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per latency (median)")
    args = parser.parse_args(argv)
    config = load_config(args.config, output_root=args.output_root)
    metadata = os.path.join(config.output_root, "metadata", config.pipeline_name, "metadata.sqlite")
    record = RunRecord(_sqlite(metadata), config.pipeline_name, _latest_run_id(config))
    spec = feature_spec(config)
    settings = executor.Settings(spec=spec, metric=config.evaluation.metric, latency_runs=args.runs)
    models = measure_all(_paths(record), settings)
    metric = settings.metric
    print(
        f"{'model':<14}{'size (B)':>12}{'variables (B)':>15}{'weights (B)':>13}"
        f"{metric:>10}{'b1 (ms)':>10}{'b256 (ms)':>11}"
    )
    for name in _MODELS:
        m = models[name]
        variables = m.get("variables_bytes", "-")
        # Weights of a SavedModel are its variables' values; of a TFLite file, its tensor data.
        breakdown = m.get("variables_breakdown") or m.get("size_breakdown") or {}
        weights = breakdown.get("weights", breakdown.get("tensor_data", "-"))
        print(
            f"{name:<14}{m['size_bytes']:>12,d}{variables:>15}{weights:>13}"
            f"{m['metrics'][metric]:>10.4f}{m['latency_ms']['batch_1']:>10.4f}{m['latency_ms']['batch_256']:>11.4f}"
        )
    speedup = (
        models["float"]["latency_ms"]["batch_1"] / models["int8_tflite"]["latency_ms"]["batch_1"]
    )
    print(f"int8 TFLite batch-1 speed-up over the float SavedModel: {speedup:.1f}x (goal >= 2x)")
    variables = models["int8"]["variables_bytes"] / models["float"]["variables_bytes"]
    tflite = models["int8_tflite"]["size_bytes"] / models["float_tflite"]["size_bytes"]
    print(f"int8 / float SavedModel variables: {variables:.2f}x (goal <= 0.35x)")
    print(f"int8 / float TFLite file: {tflite:.2f}x (goal <= 0.3x)")


def _latest_run_id(config) -> str:
    path = summary_path(config)
    if not os.path.isfile(path):
        sys.exit(f"no run summary at {path}: run the pipeline first (make run)")
    with open(path) as f:
        return json.load(f)["run_id"]


def _sqlite(path: str):
    from tfx import v1 as tfx

    if not os.path.isfile(path):
        sys.exit(f"no ML Metadata at {path}: run the pipeline first (make run)")
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(path)


if __name__ == "__main__":
    main()
