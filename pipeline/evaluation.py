"""What the Evaluator computes beyond the overall metrics, and how its results are read.

The TFMA side (`slicing_specs`, `curve_metrics_spec`, `fairness_metrics_spec`,
`regression_extras`) goes into `pipeline.pipeline.eval_config`; the reading side
(`slice_rows`, `check_gates`, `fairness`, `curves`, `residuals`, `baseline_diff`) is
shared by the run summary (pipeline/summary.py) and the slice gate before the Pusher
(components/slice_gate), so the gate and the summary name the same slices.

Gates are checked after the Evaluator, not with TFMA's per-slice thresholds: TFMA can
bound a metric on each listed slice but cannot skip slices with too few examples nor
bound the gap between the best and worst slice (its cross-slice comparisons have no
thresholds in the validator of TFMA 0.52).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_model_analysis.proto import config_pb2 as tfma

from pipeline.config import PipelineConfig, SliceGateConfig

# The summary's metric name (`evaluation.metrics`) for each name a config may use.
METRIC_KEYS = {
    "accuracy": "sparse_categorical_accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1_score",
    "auc": "auc",
    "auc_pr": "auc_precision_recall",
    "log_loss": "sparse_categorical_crossentropy",
    "mae": "mean_absolute_error",
    "mse": "mean_squared_error",
    "rmse": "root_mean_squared_error",
    "r2": "r2_score",
}
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "mse", "rmse"})
FAIRNESS_MODULE = "fairness_indicators.fairness_indicators_metrics"
FAIRNESS_PREFIX = "fairness_indicators_metrics/"
RESIDUALS_MODULE = "pipeline.residuals"
# Points per ROC / PR curve: enough for a smooth figure, small enough for summary.json.
CURVE_THRESHOLDS = 100
CALIBRATION_BUCKETS = 10


def slice_features(config: PipelineConfig) -> tuple[str, ...]:
    """The features whose values are slices: the configured ones, or by default every
    categorical feature with at most `max_slice_values` values in the curated schema
    (every categorical feature when the schema is inferred each run, or not local)."""
    evaluation = config.evaluation
    if evaluation.slice_features is not None:
        return evaluation.slice_features
    domains = schema_domains(config.schema_file)
    if not domains:
        return config.categorical_features
    return tuple(
        f
        for f in config.categorical_features
        if f in domains and len(domains[f]) <= evaluation.max_slice_values
    )


def without_many_valued_slices(
    config: PipelineConfig, many_valued: Sequence[str]
) -> tuple[PipelineConfig, str | None]:
    """The config with the default slices fixed to leave out `many_valued` features (more
    values than evaluation.max_slice_values in the data), when the default counts every
    categorical feature (no curated schema): a slice per name of a hundred thousand names
    is hours of TFMA and a report no one reads. Returns (config, a note for the user, or
    None when nothing changed)."""
    evaluation = config.evaluation
    if evaluation.slice_features is not None or schema_domains(config.schema_file):
        return config, None
    left_out = [f for f in config.categorical_features if f in many_valued]
    if not left_out:
        return config, None
    kept = tuple(f for f in config.categorical_features if f not in many_valued)
    note = (
        f"not sliced by default: {', '.join(left_out)} (more than"
        f" {evaluation.max_slice_values} values, evaluation.slices.max_values); list a feature"
        " under evaluation.slices.features to slice on it anyway"
    )
    evaluation = dataclasses.replace(evaluation, slice_features=kept)
    return dataclasses.replace(config, evaluation=evaluation), note


def schema_domains(schema_file: str | None) -> dict[str, tuple[str, ...]]:
    """The values of each feature with a string domain in a local schema .pbtxt; {} without
    one, or for a cluster URI (gs://), which a compile on a workstation cannot read."""
    if not schema_file or not Path(schema_file).is_file():
        return {}
    from google.protobuf import text_format

    schema = text_format.Parse(Path(schema_file).read_text(), schema_pb2.Schema())
    domains = {d.name: tuple(d.value) for d in schema.string_domain}
    values = {}
    for feature in schema.feature:
        if feature.HasField("string_domain"):
            values[feature.name] = tuple(feature.string_domain.value)
        elif feature.domain in domains:
            values[feature.name] = domains[feature.domain]
    return values


def slicing_specs(config: PipelineConfig) -> list[tfma.SlicingSpec]:
    """Overall, then one slice per value of each slice feature (and of the fairness
    feature, if it is not one of them)."""
    features = list(slice_features(config))
    fairness = config.evaluation.fairness.feature
    if fairness and fairness not in features:
        features.append(fairness)
    return [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[f]) for f in features]


def curve_metrics_spec(class_ids: Sequence[int]) -> tfma.MetricsSpec:
    """ROC/PR points and calibration, one-vs-rest per class. (Not TFMA's micro average:
    its plot would share the overall sub key with the multi-class confusion matrix, and
    `load_eval_result` keeps only one plot per sub key; `curves` sums the classes.)"""
    return tfma.MetricsSpec(
        metrics=[
            tfma.MetricConfig(
                class_name="ConfusionMatrixPlot",
                config=json.dumps({"num_thresholds": CURVE_THRESHOLDS}),
            ),
            tfma.MetricConfig(
                class_name="CalibrationPlot",
                config=json.dumps({"num_buckets": CALIBRATION_BUCKETS}),
            ),
        ],
        binarize=tfma.BinarizationOptions(class_ids={"values": list(class_ids)}),
    )


def fairness_metrics_spec(config: PipelineConfig, class_ids: Sequence[int]) -> tfma.MetricsSpec:
    """Fairness Indicators (fairness-indicators' TFMA metric) at the configured decision
    thresholds, one-vs-rest per class."""
    thresholds = list(config.evaluation.fairness.thresholds)
    return tfma.MetricsSpec(
        metrics=[
            tfma.MetricConfig(
                class_name="FairnessIndicators",
                module=FAIRNESS_MODULE,
                config=json.dumps({"thresholds": thresholds}),
            )
        ],
        binarize=tfma.BinarizationOptions(class_ids={"values": list(class_ids)}),
    )


def regression_extras() -> list[tfma.MetricConfig]:
    """R² and the residual histogram (pipeline/residuals.py)."""
    return [tfma.MetricConfig(class_name="ResidualHistogram", module=RESIDUALS_MODULE)]


# --- Reading TFMA's results --------------------------------------------------------------


def metric_name(name: str, sub_key: str) -> str:
    """`f1_score` for the macro average, `f1_score/classId:0` for one class.

    TFMA names a macro average after its aggregation options: "macro_average: true\\n_f1_score".
    """
    if "macro_average" in name:
        return name.split("\n_", 1)[-1]
    return f"{name}/{sub_key}" if sub_key else name


def scalar_metrics(metrics: Mapping[str, Any], nan_as_none: bool = True) -> dict[str, float | None]:
    """One slice's metrics of `tfma.load_eval_result` as {name: value} (doubles only).

    A NaN (e.g. precision of a class a slice never predicts) is None with `nan_as_none`,
    so that per-slice rows are plain JSON; the overall metrics keep NaN as before.
    """
    values: dict[str, float | None] = {}
    for by_sub_key in metrics.values():
        for sub_key, by_name in by_sub_key.items():
            for name, value in by_name.items():
                if isinstance(value, Mapping) and "doubleValue" in value:
                    number = float(value["doubleValue"])
                    missing = nan_as_none and math.isnan(number)
                    values[metric_name(name, sub_key)] = None if missing else number
    return values


def array_metrics(metrics: Mapping[str, Any]) -> dict[str, list[float]]:
    """One slice's array metrics (e.g. the residual histogram) as {name: values}."""
    values = {}
    for by_sub_key in metrics.values():
        for sub_key, by_name in by_sub_key.items():
            for name, value in by_name.items():
                if isinstance(value, Mapping) and "arrayValue" in value:
                    array = value["arrayValue"]
                    values[metric_name(name, sub_key)] = [
                        float(v) for v in array.get("float64Values", array.get("float32Values", []))
                    ]
    return values


def slice_rows(
    slicing_metrics: Iterable[tuple[Any, Mapping[str, Any]]],
    features: Sequence[str],
    expected: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """The per-slice rows of `evaluation.slices`, sorted by feature and value.

    Args:
      slicing_metrics: `tfma.load_eval_result(...).slicing_metrics`: (slice key, metrics).
      features: the slice features; other slices (e.g. crosses) are left out.
      expected: values each feature may take (e.g. a schema domain); those with no eval
        example are listed with example_count 0 and a note instead of missing silently.

    Returns:
      [{"feature", "value", "example_count", "metrics"}], without fairness metrics.
    """
    rows = []
    for slice_key, metrics in slicing_metrics:
        if len(slice_key) != 1 or slice_key[0][0] not in features:
            continue
        feature, value = slice_key[0]
        values = {
            k: v for k, v in scalar_metrics(metrics).items() if not k.startswith(FAIRNESS_PREFIX)
        }
        rows.append(
            {
                "feature": feature,
                "value": _text(value),
                "example_count": int(values.get("example_count", 0)),
                "metrics": values,
            }
        )
    seen = {(r["feature"], r["value"]) for r in rows}
    for feature, values in (expected or {}).items():
        rows.extend(
            {
                "feature": feature,
                "value": value,
                "example_count": 0,
                "metrics": {},
                "note": "no eval examples with this value",
            }
            for value in values
            if feature in features and (feature, value) not in seen
        )
    return sorted(rows, key=lambda r: (r["feature"], r["value"]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def slice_name(row: Mapping[str, Any]) -> str:
    return f"{row['feature']}={row['value']}"


def check_gates(
    rows: Sequence[Mapping[str, Any]], gates: Sequence[SliceGateConfig]
) -> dict[str, Any]:
    """Checks the slice gates on the slice rows.

    Args:
      rows: `slice_rows` output.
      gates: the config's gates.

    Returns:
      {"passed": all passed, "checks": [{"gate", "metric", "threshold", "min_examples",
      "value", "slice", "passed"}]}: `slice` is the worst slice (min_slice_metric) or
      "<worst> vs <best>" (max_slice_gap); None when no slice had enough examples
      (the gate then passes: there is nothing to judge, and the check says so).
    """
    checks = [_check(rows, gate) for gate in gates]
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def _check(rows: Sequence[Mapping[str, Any]], gate: SliceGateConfig) -> dict[str, Any]:
    key = METRIC_KEYS[gate.metric]
    lower_is_better = gate.metric in LOWER_IS_BETTER
    counted = [
        r
        for r in rows
        if r["example_count"] >= gate.min_examples and r["metrics"].get(key) is not None
    ]
    check = {
        "gate": gate.gate,
        "metric": gate.metric,
        "threshold": gate.threshold,
        "min_examples": gate.min_examples,
        "value": None,
        "slice": None,
        "passed": True,
    }
    if not counted:
        check["note"] = f"no slice has {gate.min_examples} or more eval examples"
        return check
    ranked = sorted(counted, key=lambda r: r["metrics"][key], reverse=lower_is_better)
    worst, best = ranked[0], ranked[-1]
    if gate.gate == "min_slice_metric":
        value = worst["metrics"][key]
        passed = value <= gate.threshold if lower_is_better else value >= gate.threshold
        check.update(value=value, slice=slice_name(worst), passed=passed)
    else:
        value = abs(best["metrics"][key] - worst["metrics"][key])
        check.update(
            value=value,
            slice=f"{slice_name(worst)} vs {slice_name(best)}",
            passed=value <= gate.threshold,
        )
    return check


def fairness(
    slicing_metrics: Iterable[tuple[Any, Mapping[str, Any]]],
    feature: str,
    thresholds: Sequence[float],
    labels: Sequence[str],
) -> dict[str, Any]:
    """`evaluation.fairness`: Fairness Indicators per value of `feature` (and overall).

    Each class is a one-vs-rest binary task (the class's score against the threshold);
    a slice's `metrics` are at the first threshold, averaged over the classes where
    defined, `per_class` holds each class's, and `by_threshold` every threshold's
    averages when there are several.
    """
    rows = []
    for slice_key, metrics in slicing_metrics:
        if slice_key and (len(slice_key) != 1 or slice_key[0][0] != feature):
            continue
        values = scalar_metrics(metrics)
        per_class = {
            label: _fairness_at(values, f"/classId:{i}", thresholds)
            for i, label in enumerate(labels)
        }
        by_threshold = {
            _threshold_key(t): _class_mean([per_class[c][_threshold_key(t)] for c in labels])
            for t in thresholds
        }
        row = {
            "value": _text(slice_key[0][1]) if slice_key else "(overall)",
            "example_count": int(values.get("example_count") or 0),
            "metrics": by_threshold[_threshold_key(thresholds[0])],
            "per_class": {c: per_class[c][_threshold_key(thresholds[0])] for c in labels},
        }
        if len(thresholds) > 1:
            row["by_threshold"] = by_threshold
        rows.append(row)
    return {
        "feature": feature,
        "thresholds": list(thresholds),
        "decision": "one-vs-rest per class: a class is predicted when its score >= threshold;"
        " metrics average the classes where they are defined",
        "slices": sorted(rows, key=lambda r: (r["value"] != "(overall)", r["value"])),
    }


def _threshold_key(threshold: float) -> str:
    return f"{threshold:g}"


def _fairness_at(
    values: Mapping[str, float | None], suffix: str, thresholds: Sequence[float]
) -> dict[str, dict[str, float | None]]:
    """{threshold: {rate name: value}} of one class."""
    result: dict[str, dict[str, float | None]] = {_threshold_key(t): {} for t in thresholds}
    for key, value in values.items():
        if not (key.startswith(FAIRNESS_PREFIX) and key.endswith(suffix)):
            continue
        name, _, threshold = key[len(FAIRNESS_PREFIX) : -len(suffix)].partition("@")
        # With a baseline TFMA adds `<rate>@<threshold>_diff`: the candidate's own rates only.
        if threshold.endswith("_diff"):
            continue
        if threshold and _threshold_key(float(threshold)) in result:
            result[_threshold_key(float(threshold))][name] = value
    return result


def _class_mean(per_class: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    names = sorted({n for rates in per_class for n in rates})
    means = {}
    for name in names:
        defined = [r[name] for r in per_class if r.get(name) is not None]
        means[name] = sum(defined) / len(defined) if defined else None
    return means


def curves(plots: Mapping[str, Mapping[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """`evaluation.curves` from the overall slice's one-vs-rest plots per class.

    Args:
      plots: {sub key: {plot name: TFMA JSON}} of the overall slice; `classId:<i>` holds
        `confusionMatrixAtThresholds` and `calibrationHistogramBuckets` of class i.
      labels: class names in class-id order.

    Returns:
      {"averaging", "roc": {"fpr", "tpr", "thresholds"}, "pr": {"recall", "precision"},
      "calibration": {"predicted", "observed", "count"}, "per_class": {class: the same
      three}}. The top level is the micro average: the classes' counts summed at each
      threshold (and per calibration bucket), every example's score for every class being
      one binary prediction. Empty calibration buckets are left out.
    """
    per_class = {label: plots.get(f"classId:{i}", {}) for i, label in enumerate(labels)}
    matrices = [
        p.get("confusionMatrixAtThresholds", {}).get("matrices", []) for p in per_class.values()
    ]
    buckets = [
        p.get("calibrationHistogramBuckets", {}).get("buckets", []) for p in per_class.values()
    ]
    return {
        "averaging": "micro: one-vs-rest per class, the classes' counts summed (per_class: each)",
        **_curves(_summed(matrices), _summed(buckets)),
        "per_class": {
            label: _curves(m, b) for label, m, b in zip(labels, matrices, buckets, strict=True)
        },
    }


# Count fields of TFMA's confusion matrices and calibration buckets (JSON leaves out zeros).
_COUNTS = frozenset(
    {
        "truePositives",
        "falsePositives",
        "trueNegatives",
        "falseNegatives",
        "numWeightedExamples",
        "totalWeightedLabel",
        "totalWeightedRefinedPrediction",
    }
)
_BOUNDS = ("threshold", "lowerThresholdInclusive", "upperThresholdExclusive")


def _summed(rows_per_class: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Counts added up row by row over the classes (rows at the same thresholds/buckets),
    with the row's threshold or bucket bounds; rates are left out."""
    summed = []
    for rows in zip(*rows_per_class, strict=True):
        row: dict[str, Any] = {name: sum(r.get(name, 0.0) for r in rows) for name in _COUNTS}
        row.update({name: rows[0][name] for name in _BOUNDS if name in rows[0]})
        summed.append(row)
    return summed


def _curves(
    matrices: Sequence[Mapping[str, Any]], buckets: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    roc: dict[str, list[float]] = {"fpr": [], "tpr": [], "thresholds": []}
    pr: dict[str, list[float]] = {"recall": [], "precision": []}
    for m in matrices:
        tp, fp = m.get("truePositives", 0.0), m.get("falsePositives", 0.0)
        tn, fn = m.get("trueNegatives", 0.0), m.get("falseNegatives", 0.0)
        roc["fpr"].append(fp / (fp + tn) if fp + tn else 0.0)
        roc["tpr"].append(tp / (tp + fn) if tp + fn else 0.0)
        roc["thresholds"].append(float(m.get("threshold", 0.0)))
        if tp + fp:
            pr["recall"].append(tp / (tp + fn) if tp + fn else 0.0)
            pr["precision"].append(tp / (tp + fp))
    calibration: dict[str, list[float]] = {"predicted": [], "observed": [], "count": []}
    for bucket in buckets:
        n = bucket.get("numWeightedExamples", 0.0)
        if n:
            calibration["predicted"].append(bucket.get("totalWeightedRefinedPrediction", 0.0) / n)
            calibration["observed"].append(bucket.get("totalWeightedLabel", 0.0) / n)
            calibration["count"].append(n)
    return {"roc": roc, "pr": pr, "calibration": calibration}


def residuals(arrays: Mapping[str, Sequence[float]]) -> dict[str, Any] | None:
    """`evaluation.residuals` (label - prediction) from the overall slice's arrays."""
    from pipeline.residuals import COUNTS_NAME, EDGES_NAME

    if EDGES_NAME not in arrays:
        return None
    return {
        "of": "label - prediction",
        "edges": list(arrays[EDGES_NAME]),
        "counts": [int(c) for c in arrays.get(COUNTS_NAME, [])],
    }


def baseline_diff(
    candidate: Mapping[str, float | None], baseline: Mapping[str, float | None]
) -> dict[str, dict[str, float | None]]:
    """`evaluation.baseline`: each metric both models have, and candidate - baseline."""
    return {
        name: {
            "candidate": value,
            "baseline": baseline[name],
            "diff": None if value is None or baseline[name] is None else value - baseline[name],
        }
        for name, value in sorted(candidate.items())
        if name in baseline
    }
