"""Size, accuracy and CPU latency of the float and int8 models of one pipeline run.

    scripts/in-env python -m bench.quantization [--config configs/penguins.yaml] [--runs 200]
    scripts/in-env python -m bench.quantization --config configs/fashion_mnist.yaml --train \
        [--train-images 12000] [--epochs 2] [--runs 30]

Without --train it reads the Quantization outputs of the pipeline's latest run, the one
named in `<output-root>/<pipeline>/summary.json` (run the pipeline first), and measures, in
this one process, the float SavedModel (Trainer), the int8 SavedModel, and the float and
int8 TFLite models on the same eval split.

With --train (an image config) it needs no pipeline run: it stages the config's images
(Fashion-MNIST: a class-stratified sample of the training images, and all 10,000 test
images as the eval split), runs the project's TF Transform preprocessing on them, trains
a cnn for a few epochs, lays the result out as the Trainer does, and runs the
Quantization component's own `quantize_and_compare` on it, under
`<output-root>/bench/quantization-<pipeline>/`.
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
    parser.add_argument(
        "--train", action="store_true", help="train a cnn on the config's images here (see above)"
    )
    parser.add_argument("--train-images", type=int, default=12000, help="with --train")
    parser.add_argument("--epochs", type=int, default=2, help="with --train")
    args = parser.parse_args(argv)
    config = load_config(args.config, output_root=args.output_root)
    spec = feature_spec(config)
    settings = executor.Settings(
        spec=spec,
        metric=config.evaluation.metric,
        max_metric_drop=config.quantization.max_metric_drop,
        representative_samples=config.quantization.representative_samples,
        latency_runs=args.runs,
    )
    if args.train:
        from bench import quantization_images

        models = quantization_images.train_and_quantize(
            config, settings, args.train_images, args.epochs
        )
    else:
        metadata = os.path.join(
            config.output_root, "metadata", config.pipeline_name, "metadata.sqlite"
        )
        record = RunRecord(_sqlite(metadata), config.pipeline_name, _latest_run_id(config))
        models = measure_all(_paths(record), settings)
    _print(models, settings.metric, images=bool(spec.image))


def _print(models: dict[str, dict], metric: str, images: bool) -> None:
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
            f"{m['metrics'][metric]:>10.4f}{m['latency_ms']['batch_1']:>10.4f}"
            f"{m['latency_ms']['batch_256']:>11.4f}"
        )
    count = models["float"]["metrics"]["example_count"]
    print(f"metrics on {count} eval examples")
    speedup = (
        models["float"]["latency_ms"]["batch_1"] / models["int8_tflite"]["latency_ms"]["batch_1"]
    )
    print(f"int8 TFLite batch-1 speed-up over the float SavedModel: {speedup:.1f}x (goal >= 2x)")
    # The goals: images, where weights dominate, 0.30x; penguins 0.35x.
    variables_goal = 0.30 if images else 0.35
    variables = models["int8"]["variables_bytes"] / models["float"]["variables_bytes"]
    tflite = models["int8_tflite"]["size_bytes"] / models["float_tflite"]["size_bytes"]
    print(f"int8 / float SavedModel variables: {variables:.2f}x (goal <= {variables_goal:.2f}x)")
    print(f"int8 / float TFLite file: {tflite:.2f}x (goal <= 0.30x)")
    if metric in measure.HIGHER_IS_BETTER:
        for name in ("int8", "int8_tflite"):
            drop = measure.metric_drop(
                metric, models["float"]["metrics"][metric], models[name]["metrics"][metric]
            )
            goal = " (goal <= 0.005)" if images else ""
            print(f"{metric} drop of {name} vs the float SavedModel: {drop:.4f}{goal}")


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
