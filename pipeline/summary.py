"""The run summary: read back from ML Metadata and the artifacts, printed and saved as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline import evaluation, spans, text_stats
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

    def producer_seconds(self, node: str) -> float | None:
        """For a cached node: how long the earlier execution that made its outputs ran
        (ML Metadata's create and last-update times), so a cached run still shows what each
        step costs. None for a node that ran in this run or has no outputs."""
        execution = self.executions.get(node)
        artifacts = [a for by_key in self.outputs.get(node, {}).values() for a in by_key]
        if execution is None or self.status(node) != "cached" or not artifacts:
            return None
        events = self._store.get_events_by_artifact_ids([a.id for a in artifacts])
        producers = {
            e.execution_id
            for e in events
            if e.type == metadata_store_pb2.Event.OUTPUT and e.execution_id != execution.id
        }
        if not producers:
            return None
        [first, *_] = sorted(self._store.get_executions_by_id(producers), key=lambda e: e.id)
        return (first.last_update_time_since_epoch - first.create_time_since_epoch) / 1000.0

    def output(self, node: str, key: str) -> metadata_store_pb2.Artifact | None:
        artifacts = self.outputs.get(node, {}).get(key, [])
        return artifacts[-1] if artifacts else None


def _custom(artifact: metadata_store_pb2.Artifact, key: str) -> Any:
    value = artifact.custom_properties.get(key)
    if value is None:
        return None
    return getattr(value, value.WhichOneof("value"))


def tuner_section(
    record: RunRecord, objective: str = "loss", direction: str = "min"
) -> dict[str, Any] | None:
    """Algorithm, trial count, best hyperparameters and best score of the objective
    (config `tuner.objective` on the eval split, better `direction`: "min" or "max")."""
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
        "objective": f"val_{objective}",
        "trials": len(trials),
        "best_hyperparameters": config["values"],
        "best_score": (max if direction == "max" else min)(t["score"] for t in trials)
        if trials
        else None,
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


# The SliceGate's per-slice rows and gate checks (components/slice_gate/spec.py).
SLICES_FILE = "slices.json"


def warm_start_section(record: RunRecord) -> dict[str, Any] | None:
    """Where the Trainer started: {"from": the blessed model's uri or None, "reason"}, and
    with a warm start the layers that took its weights and those that could not."""
    training = training_section(record)
    return training.get("warm_start") if training else None


# TFMA's MultiClassConfusionMatrixPlot, as load_eval_result gives it: protobuf JSON, where
# fields at their default (class id 0, threshold 0.0) are left out.
_CONFUSION_PLOT = "multiClassConfusionMatrixAtThresholds"
# TFMA's predicted class id when the top score is not above the threshold.
_NO_PREDICTION = -1
CONFUSION_LAYOUT = "matrix[i][j]: eval examples of true class i predicted as class j (top score)"


def _model_result(evaluation_uri: str, baseline: bool):
    """TFMA's result for the candidate (or the baseline) model, None if there is none.

    Once there is a blessed model the evaluation holds the baseline's metrics and
    plots too, and TFMA reads plots back only for a named model.
    """
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.writers import eval_config_writer

    eval_config = eval_config_writer.load_eval_run(evaluation_uri)[0]
    names = [spec.name for spec in eval_config.model_specs if spec.is_baseline == baseline]
    return tfma.load_eval_result(evaluation_uri, model_name=names[0]) if names else None


def candidate_result(evaluation_uri: str):
    """TFMA's result for the candidate model."""
    return _model_result(evaluation_uri, baseline=False)


def _overall(result) -> dict[str, Any]:
    return next((metrics for key, metrics in result.slicing_metrics if not key), {})


def _metric_values(result) -> dict[str, float | None]:
    """The overall slice's metrics. Fairness Indicators are in their own section, and
    TFMA's `<metric>_diff` against the baseline in `baseline` (with both values)."""
    return {
        name: value
        for name, value in evaluation.scalar_metrics(_overall(result), nan_as_none=False).items()
        if not name.startswith(evaluation.FAIRNESS_PREFIX)
        and not name.split("/")[0].endswith("_diff")
    }


def _overall_plots(result) -> dict[str, Any]:
    """The overall slice's plots: {sub key: {plot name: TFMA JSON}}."""
    for slice_key, plots in result.plots:
        if not slice_key and plots:
            return next(iter(plots.values()))
    return {}


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
    """TFMA metrics on the eval split, whether the model was blessed (Evaluator and
    slice gates) and against what, per-slice metrics and gate checks, every metric next
    to the baseline's; for a classification also the confusion matrix, the metrics per
    class name, ROC/PR/calibration curves and Fairness Indicators; for a regression the
    residual histogram."""
    evaluated = record.output("Evaluator", "evaluation")
    blessing = record.output("SliceGate", "blessing") or record.output("Evaluator", "blessing")
    if evaluated is None or blessing is None:
        return None
    baseline = record.inputs.get("Evaluator", {}).get("baseline_model", [])
    result = candidate_result(evaluated.uri)
    section = {
        "metrics": _metric_values(result),
        "blessed": bool(_custom(blessing, "blessed")),
        "baseline_compared": bool(baseline),
        "baseline_model": baseline[0].uri if baseline else None,
    }
    baseline_result = _model_result(evaluated.uri, baseline=True) if baseline else None
    if baseline_result is not None:
        section["baseline"] = evaluation.baseline_diff(
            section["metrics"], _metric_values(baseline_result)
        )
    gated = _gated(blessing)
    if gated is not None:
        section.update(slices=gated["slices"], gates=gated["gates"])
    if _confusion_plot(result) is not None:
        fairness = gated["fairness"] if gated else {}
        section.update(_classification_sections(record, result, section, fairness))
    residuals = evaluation.residuals(evaluation.array_metrics(_overall(result)))
    if residuals is not None:
        section["residuals"] = residuals
    return section


def _gated(blessing: metadata_store_pb2.Artifact) -> dict[str, Any] | None:
    """The SliceGate's slices.json: slice rows, gate checks, the fairness settings (None
    when the blessing is the Evaluator's)."""
    path = os.path.join(blessing.uri, SLICES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    return json.loads(tf.io.gfile.GFile(path).read())


def _classification_sections(
    record: RunRecord, result, section: Mapping[str, Any], fairness: Mapping[str, Any]
) -> dict[str, Any]:
    matrix = confusion_matrix(_confusion_plot(result), _class_names(record))
    extra = {
        "confusion_matrix": matrix,
        "per_class": per_class(section["metrics"], matrix["labels"], matrix["matrix"]),
        "curves": evaluation.curves(_overall_plots(result), matrix["labels"]),
    }
    if fairness.get("feature"):
        extra["fairness"] = evaluation.fairness(
            result.slicing_metrics, fairness["feature"], fairness["thresholds"], matrix["labels"]
        )
    return extra


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


def text_section(
    record: RunRecord, features: Sequence[str], max_tokens: int
) -> dict[str, Any] | None:
    """Token statistics of the text features (`pipeline.text_stats`) once Transform has run."""
    transform_graph = record.output("Transform", "transform_graph")
    examples = record.inputs.get("Transform", {}).get("examples")
    if not features or transform_graph is None or not examples:
        return None
    import tensorflow_transform as tft

    transform_output = tft.TFTransformOutput(transform_graph.uri)
    return text_stats.token_statistics(examples[-1].uri, transform_output, features, max_tokens)


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


def _format_gates(gates: Mapping[str, Any]) -> list[str]:
    lines = []
    for check in gates.get("checks", []):
        verdict = "passed" if check["passed"] else "FAILED"
        where = (
            check.get("note", "no slice judged")
            if check["value"] is None
            else f"{check['value']:.4f} at {check['slice']}"
        )
        lines.append(
            f"  slice gate {check['gate']} {check['metric']} {check['threshold']}: {verdict}"
            f" ({where})"
        )
    return lines


def explanations_section(record: RunRecord) -> dict[str, Any] | None:
    """Integrated gradients of the model (components/explanations): method, examples,
    baseline, global importance per raw feature, heatmap files, text features' top tokens
    (per example and per predicted class), the artifact."""
    artifact = record.output("Explanations", "explanations")
    if artifact is None:
        return None
    path = os.path.join(artifact.uri, "explanations.json")
    if not tf.io.gfile.exists(path):
        return None
    explained = json.loads(tf.io.gfile.GFile(path).read())
    return {
        "method": explained["method"],
        "examples": explained["examples"],
        "baseline": explained["baseline"],
        "global": explained["global"],
        "artifact": artifact.uri,
        "steps": explained["steps"],
        "explained_output": explained["explained_output"],
        "completeness": explained["completeness"],
        "per_example": explained["per_example"],
        "heatmaps": [h["path"] for h in explained.get("heatmaps", [])],
        "text": explained.get("text", []),
        "seconds": explained.get("seconds"),
        **({"note": explained["note"]} if "note" in explained else {}),
    }


def model_card_section(record: RunRecord) -> dict[str, Any] | None:
    """Where the ModelCard component wrote the card (Markdown, HTML, its facts)."""
    artifact = record.output("ModelCard", "model_card")
    if artifact is None:
        return None
    paths = {
        kind: os.path.join(artifact.uri, f"model_card.{ext}")
        for kind, ext in (("markdown", "md"), ("html", "html"), ("facts", "json"))
    }
    return paths if tf.io.gfile.exists(paths["markdown"]) else None


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
    sections = {
        node: {
            "status": record.status(node),
            "seconds": round(seconds.get(node, 0.0), 2),
            "cached": record.status(node) == "cached",
        }
        for node in node_ids
    }
    for node, section in sections.items():
        produced = record.producer_seconds(node) if section["cached"] else None
        if produced is not None:
            section["produced_seconds"] = round(produced, 2)
    return sections


def statistics_section(record: RunRecord) -> dict[str, Any] | None:
    """StatisticsGen's per-feature statistics per split and ExampleValidator's anomalies."""
    from pipeline import report_data

    statistics = record.output("StatisticsGen", "statistics")
    if statistics is None:
        return None
    anomalies = record.output("ExampleValidator", "anomalies")
    return report_data.statistics(statistics.uri, anomalies.uri if anomalies else None)


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
        lines.extend(_format_gates(evaluation.get("gates") or {}))
    if summary.get("text"):
        lines.extend(text_stats.format_lines(summary["text"]))
    if summary.get("quantization"):
        lines.extend(_format_quantization(summary["quantization"]))
    explanations = summary.get("explanations")
    if explanations:
        top = ", ".join(f"{g['feature']} {g['score']:.3f}" for g in explanations["global"][:5])
        lines.append(f"  explanations (IG, {explanations['examples']} eval examples): {top}")
        for entry in explanations.get("text", []):
            for name, tokens in entry.get("top_tokens", {}).items():
                words = ", ".join(t["token"] for t in tokens[:5])
                lines.append(f"    top tokens of {entry['feature']} toward {name}: {words}")
    infra = summary.get("infra_validation")
    if infra:
        lines.append(
            f"  infra validation: {'passed' if infra['blessed'] else 'FAILED'} ({infra.get('reason', '')})"
        )
    if summary.get("spans"):
        lines.append(spans.format_line(summary["spans"]))
    pushed = summary.get("pushed")
    lines.append(
        f"  pushed: {pushed['model_dir']} (version {pushed['version']})"
        if pushed
        else "  pushed: nothing"
    )
    return "\n".join(lines)
