"""The run summary: read back from ML Metadata and the artifacts, printed and saved as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.training import TRAINING_RECORD

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "succeeded",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    # A record is read after its run stopped, so an execution still RUNNING was cut
    # short by a signal; the next run marks those of a killed run CANCELED.
    metadata_store_pb2.Execution.RUNNING: "interrupted",
    metadata_store_pb2.Execution.CANCELED: "interrupted",
}


class RunRecord:
    """The executions and artifacts of one run of a pipeline in ML Metadata.

    Args:
      connection_config: the pipeline's ML Metadata.
      pipeline_name: names the node contexts (`<pipeline>.<node id>`).
      run_id: the run's id, the name of its `pipeline_run` context. A record is
        only ever read for the run that this process started: another run of the
        same pipeline may have started (and finished) since.
    """

    def __init__(
        self,
        connection_config: metadata_store_pb2.ConnectionConfig,
        pipeline_name: str,
        run_id: str,
    ):
        self._store = metadata_store.MetadataStore(connection_config)
        self.run = self._store.get_context_by_type_and_name("pipeline_run", run_id)
        self.executions: dict[str, metadata_store_pb2.Execution] = {}
        self.outputs: dict[str, dict[str, list[metadata_store_pb2.Artifact]]] = {}
        self.inputs: dict[str, dict[str, list[metadata_store_pb2.Artifact]]] = {}
        if self.run is not None:
            self._load(pipeline_name)

    def _load(self, pipeline_name: str) -> None:
        # Each execution of this run belongs to one "node" context named <pipeline>.<node id>.
        node_type = self._store.get_context_type("node").id
        prefix = f"{pipeline_name}."
        for execution in self._store.get_executions_by_context(self.run.id):
            for context in self._store.get_contexts_by_execution(execution.id):
                if context.type_id == node_type:
                    self.executions[context.name.removeprefix(prefix)] = execution
        node_of = {e.id: n for n, e in self.executions.items()}
        events = self._store.get_events_by_execution_ids(list(node_of))
        artifacts = {
            a.id: a for a in self._store.get_artifacts_by_id({e.artifact_id for e in events})
        }
        by_type = {
            metadata_store_pb2.Event.OUTPUT: self.outputs,
            metadata_store_pb2.Event.INPUT: self.inputs,
        }
        for event in events:
            if event.type not in by_type:
                continue
            key = next((s.key for s in event.path.steps if s.HasField("key")), "")
            by_type[event.type].setdefault(node_of[event.execution_id], {}).setdefault(
                key, []
            ).append(artifacts[event.artifact_id])

    def status(self, node: str) -> str:
        execution = self.executions.get(node)
        return _STATES.get(execution.last_known_state, "unknown") if execution else "not_run"

    def output(self, node: str, key: str) -> metadata_store_pb2.Artifact | None:
        artifacts = self.outputs.get(node, {}).get(key, [])
        return artifacts[-1] if artifacts else None


def _custom(artifact: metadata_store_pb2.Artifact, key: str) -> Any:
    value = artifact.custom_properties.get(key)
    if value is None:
        return None
    return getattr(value, value.WhichOneof("value"))


def tuner_section(record: RunRecord) -> dict[str, Any] | None:
    """Algorithm, trial count, best hyperparameters and best score (val_loss)."""
    best = record.output("Tuner", "best_hyperparameters")
    results = record.output("Tuner", "tuner_results")
    if best is None or results is None:
        return None
    config = json.loads(
        tf.io.gfile.GFile(os.path.join(best.uri, "best_hyperparameters.txt")).read()
    )
    trials = json.loads(tf.io.gfile.GFile(os.path.join(results.uri, "tuner_results.json")).read())
    return {
        "algorithm": "keras_tuner.BayesianOptimization",
        "objective": "val_loss",
        "trials": len(trials),
        "best_hyperparameters": config["values"],
        "best_score": min(t["score"] for t in trials) if trials else None,
        "trial_scores": [t["score"] for t in sorted(trials, key=lambda t: int(t["trial_id"]))],
    }


def training_section(record: RunRecord) -> dict[str, Any] | None:
    """The Trainer's fit: epochs run, best epoch, training examples, seconds, examples/s."""
    run = record.output("Trainer", "model_run")
    if run is None:
        return None
    path = os.path.join(run.uri, TRAINING_RECORD)
    if not tf.io.gfile.exists(path):
        return None
    return json.loads(tf.io.gfile.GFile(path).read())


def warm_start_section(record: RunRecord) -> dict[str, Any] | None:
    """Where the Trainer started: {"from": the blessed model's uri or None, "reason"}, and
    with a warm start the layers that took its weights and those that could not."""
    training = training_section(record)
    return training.get("warm_start") if training else None


def _metric_name(name: str, sub_key: str) -> str:
    """`f1_score` for the macro average, `f1_score/classId:0` for one class.

    TFMA names a macro average after its aggregation options: "macro_average: true\n_f1_score".
    """
    if "macro_average" in name:
        return name.split("\n_", 1)[-1]
    return f"{name}/{sub_key}" if sub_key else name


# TFMA's MultiClassConfusionMatrixPlot, as load_eval_result gives it: protobuf JSON, where
# fields at their default (class id 0, threshold 0.0) are left out.
_CONFUSION_PLOT = "multiClassConfusionMatrixAtThresholds"
# TFMA's predicted class id when the top score is not above the threshold.
_NO_PREDICTION = -1
CONFUSION_LAYOUT = "matrix[i][j]: eval examples of true class i predicted as class j (top score)"


def _candidate_result(evaluation_uri: str):
    """TFMA's result for the candidate model.

    Once there is a blessed model the evaluation holds the baseline's metrics and
    plots too, and TFMA reads plots back only for a named model.
    """
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.writers import eval_config_writer

    eval_config = eval_config_writer.load_eval_run(evaluation_uri)[0]
    [candidate] = [spec.name for spec in eval_config.model_specs if not spec.is_baseline]
    return tfma.load_eval_result(evaluation_uri, model_name=candidate)


def _metric_values(result) -> dict[str, float]:
    values: dict[str, float] = {}
    for slice_key, metrics in result.slicing_metrics:
        if slice_key:
            continue
        for by_sub_key in metrics.values():
            for sub_key, by_name in by_sub_key.items():
                for name, value in by_name.items():
                    if "doubleValue" in value:
                        values[_metric_name(name, sub_key)] = float(value["doubleValue"])
    return values


def _confusion_plot(result) -> dict[str, Any] | None:
    """The overall slice's multi-class confusion matrix plot, as TFMA's JSON form (None
    for regression)."""
    for slice_key, plots in result.plots:
        if slice_key or not plots:
            continue
        for by_sub_key in plots.values():
            for plot in by_sub_key.values():
                if _CONFUSION_PLOT in plot:
                    return plot[_CONFUSION_PLOT]
    return None


def confusion_matrix(plot: Mapping[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """The confusion matrix of TFMA's MultiClassConfusionMatrixPlot, with class names.

    Args:
      plot: the plot's `multiClassConfusionMatrixAtThresholds`, in the protobuf JSON
        form of `tfma.load_eval_result`; the matrix at threshold 0.0 is read (the top
        score is the prediction whatever its value).
      labels: the class names in class-id order (the label vocabulary).

    Returns:
      {"layout": how to read it, "labels": the class names, "matrix": counts, rows
      true class, columns predicted class}, plus "no_prediction" (per true class) if
      any example's top score was 0.

    Raises:
      ValueError: no matrix at threshold 0.0, or a class id outside `labels`.
    """
    at_zero = [m for m in plot.get("matrices", []) if m.get("threshold", 0.0) == 0.0]
    if not at_zero:
        raise ValueError(f"TFMA's confusion matrix plot has no matrix at threshold 0.0: {plot}")
    n = len(labels)
    matrix = [[0] * n for _ in range(n)]
    no_prediction = [0] * n
    for entry in at_zero[0].get("entries", []):
        actual = int(entry.get("actualClassId", 0))
        predicted = int(entry.get("predictedClassId", 0))
        if not (0 <= actual < n and _NO_PREDICTION <= predicted < n):
            raise ValueError(
                f"confusion matrix entry {entry} names a class id outside the "
                f"{n} classes of the label vocabulary {list(labels)}"
            )
        count = round(entry.get("numWeightedExamples", 0.0))
        if predicted == _NO_PREDICTION:
            no_prediction[actual] += count
        else:
            matrix[actual][predicted] += count
    result = {"layout": CONFUSION_LAYOUT, "labels": list(labels), "matrix": matrix}
    if any(no_prediction):
        result["no_prediction"] = no_prediction
    return result


def per_class(
    metrics: Mapping[str, float], labels: Sequence[str], matrix: Sequence[Sequence[int]]
) -> dict[str, dict[str, float]]:
    """The `<metric>/classId:<i>` metrics by class name, with each class's eval examples.

    Returns:
      {class name: {"precision": ..., "recall": ..., "f1_score": ..., "auc": ...,
      "support": eval examples of the class (its confusion-matrix row sum)}}.
    """
    result = {name: {} for name in labels}
    for key, value in metrics.items():
        metric, _, class_id = key.partition("/classId:")
        if class_id:
            result[labels[int(class_id)]][metric] = value
    for name, row in zip(labels, matrix, strict=True):
        result[name]["support"] = sum(row)
    return result


def _class_names(record: RunRecord) -> list[str]:
    """The label vocabulary of this run's Transform: class names in class-id order."""
    import tensorflow_transform as tft

    from models.export import label_vocabulary

    transform_graph = record.output("Transform", "transform_graph")
    return label_vocabulary(tft.TFTransformOutput(transform_graph.uri))


def evaluation_section(record: RunRecord) -> dict[str, Any] | None:
    """TFMA metrics on the eval split, whether the model was blessed and against what;
    for a classification also the confusion matrix and the metrics per class name."""
    evaluation = record.output("Evaluator", "evaluation")
    blessing = record.output("Evaluator", "blessing")
    if evaluation is None or blessing is None:
        return None
    baseline = record.inputs.get("Evaluator", {}).get("baseline_model", [])
    result = _candidate_result(evaluation.uri)
    section = {
        "metrics": _metric_values(result),
        "blessed": bool(_custom(blessing, "blessed")),
        "baseline_compared": bool(baseline),
        "baseline_model": baseline[0].uri if baseline else None,
    }
    plot = _confusion_plot(result)
    if plot is not None:
        matrix = confusion_matrix(plot, _class_names(record))
        section["confusion_matrix"] = matrix
        section["per_class"] = per_class(section["metrics"], matrix["labels"], matrix["matrix"])
    return section


def pushed_section(record: RunRecord) -> dict[str, Any] | None:
    """Where Pusher put the model, or None when it did not push."""
    pushed = record.output("Pusher", "pushed_model")
    if pushed is None or not _custom(pushed, "pushed"):
        return None
    destination = _custom(pushed, "pushed_destination")
    return {"model_dir": destination, "version": str(_custom(pushed, "pushed_version"))}


def infra_validation_section(record: RunRecord) -> dict[str, Any] | None:
    """The model server check before push (see components/infra_validation)."""
    blessing = record.output("InfraValidation", "blessing")
    if blessing is None:
        return None
    path = os.path.join(blessing.uri, "validation.json")
    result = json.loads(tf.io.gfile.GFile(path).read()) if tf.io.gfile.exists(path) else {}
    return {"blessed": bool(_custom(blessing, "blessed")), **result}


def quantization_section(record: RunRecord) -> dict[str, Any] | None:
    """Float vs quantized models (size, eval metrics, latency, guard) and which one is served."""
    report = record.output("Quantization", "report")
    if report is None:
        return None
    result = json.loads(tf.io.gfile.GFile(os.path.join(report.uri, "report.json")).read())
    models = result.pop("models")
    int8_model = record.output("Quantization", "int8_model")
    tflite_model = record.output("Quantization", "tflite_model")
    return {
        **models,
        **result,
        "int8_saved_model": os.path.join(int8_model.uri, "Format-Serving") if int8_model else None,
        "tflite_dir": tflite_model.uri if tflite_model else None,
    }


def _format_quantization(quantization: Mapping[str, Any]) -> list[str]:
    metric, ratios = quantization["metric"], quantization["size_ratios"]
    lines = [f"  quantization: served {quantization['served']} ({quantization['reason']})"]
    for name in ("float", "int8", "float_tflite", "int8_tflite"):
        entry = quantization[name]
        latency = entry["latency_ms"]
        lines.append(
            f"    {name:<13}{entry['size_bytes']:>10,d} B  {metric} {entry['metrics'][metric]:.4f}"
            f"  latency b1 {latency['batch_1']:.3f} ms, b256 {latency['batch_256']:.3f} ms"
        )
    lines.append(
        f"    int8/float: SavedModel variables {ratios['int8_variables_vs_float']:.2f}x"
        f" (weights alone {ratios['int8_weights_vs_float']:.2f}x),"
        f" TFLite {ratios['int8_tflite_vs_float_tflite']:.2f}x"
        f" (tensor data and quantization parameters {ratios['int8_tflite_weights_vs_float_tflite']:.2f}x)"
    )
    return lines


def components_section(
    record: RunRecord, node_ids, seconds: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    return {
        node: {
            "status": record.status(node),
            "seconds": round(seconds.get(node, 0.0), 2),
            "cached": record.status(node) == "cached",
        }
        for node in node_ids
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A human-readable summary of a run."""
    lines = [
        f"Pipeline {summary['pipeline']} run {summary['run_id']}: {summary['status']} in {summary['seconds']:.1f}s"
    ]
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    if summary["components"]:
        lines.append(f"  {'component':<32}{'status':<12}{'seconds':>8}")
    for name, c in summary["components"].items():
        lines.append(f"  {name:<32}{c['status']:<12}{c['seconds']:>8.1f}")
    tuner = summary.get("tuner")
    if tuner:
        lines.append(
            f"  tuner: {tuner['algorithm']}, {tuner['trials']} trials, best {tuner['objective']} {tuner['best_score']:.4f}"
        )
        lines.append(f"  best hyperparameters: {json.dumps(tuner['best_hyperparameters'])}")
    training = summary.get("training")
    if training:
        lines.append(
            f"  trainer: {training['epochs']} epochs (best {training['best_epoch']}), "
            f"{training['train_examples']:,} training examples, {training['seconds']:.1f}s, "
            f"{training['examples_per_second']:,.0f} examples/s"
        )
    evaluation = summary.get("evaluation")
    if evaluation:
        shown = {k: round(v, 4) for k, v in sorted(evaluation["metrics"].items()) if "/" not in k}
        lines.append(f"  metrics (eval split): {json.dumps(shown)}")
        compared = "vs last blessed model" if evaluation["baseline_compared"] else "no baseline yet"
        lines.append(f"  blessed: {evaluation['blessed']} ({compared})")
    if summary.get("quantization"):
        lines.extend(_format_quantization(summary["quantization"]))
    infra = summary.get("infra_validation")
    if infra:
        lines.append(
            f"  infra validation: {'passed' if infra['blessed'] else 'FAILED'} ({infra.get('reason', '')})"
        )
    pushed = summary.get("pushed")
    lines.append(
        f"  pushed: {pushed['model_dir']} (version {pushed['version']})"
        if pushed
        else "  pushed: nothing"
    )
    return "\n".join(lines)
