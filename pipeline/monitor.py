"""`monitor`: is what the served model sees still what it was trained on?

Serving data (logged requests, or a folder of data) gets TFDV statistics, compared with the
statistics of the served model's training data, found through ML Metadata lineage
(pipeline/monitor_lineage.py), by TFDV's drift comparators from the config: L-infinity
distance for categorical features, Jensen-Shannon divergence for numeric ones, and for the
label the predictions' distribution against the training labels (label shift). Image, text
and sequence features are compared through statistics derived from each value
(pipeline/monitor_derived.py: an image's size and brightness, a text's tokens, a series'
mean and spread) by the same comparators, so drift.json and the report read the same.

Writes `<outputs.root>/monitoring/<model>/<UTC time>/drift.json`, `report.html` and
`figures/<feature>.png`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from pipeline import monitor_derived
from pipeline.config import PipelineConfig, request_log_dir
from pipeline.data import DataError
from pipeline.errors import ConfigError
from pipeline.monitor_inputs import ServingData, read_examples, read_request_logs
from pipeline.monitor_lineage import (
    TrainingLineage,
    grpc_connection,
    served_version,
    training_lineage,
)

# The exit status of `monitor` when drift is found (0: none; 1: bad input; 2: bad config).
DRIFT_EXIT_CODE = 3
DRIFT_FILE = "drift.json"
REPORT_FILE = "report.html"
# Per compared feature, its training-vs-serving figure (PNG), for the pipeline's report.
FIGURES_DIR = "figures"
_MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L_infinity",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "jensen_shannon_divergence",
}
# Anomaly reasons that are the comparators' drift, reported per feature instead.
_DRIFT_REASONS = {
    anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH,
    anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH,
}


@dataclasses.dataclass(frozen=True)
class MonitorResult:
    """One monitor run: the drift record written and where, and the served model's lineage."""

    drift: dict[str, Any]
    directory: str
    lineage: TrainingLineage

    @property
    def drifted(self) -> bool:
        return bool(self.drift["drifted_features"])


def monitor(
    config: PipelineConfig,
    *,
    logs: str | None = None,
    examples: str | None = None,
    cluster: bool = False,
) -> MonitorResult:
    """Compares serving data with the served model's training data; writes drift.json and
    the report.

    Args:
      config: the pipeline's config (features, thresholds, output root).
      logs: a folder (or file prefix) of request logs, local or gs://; the default is where
        `make serve` logs them (with `cluster`, `kubeflow.request_logs`).
      examples: a CSV/TFRecord file or folder of data instead of logs.
      cluster: follow the model the cluster pipeline pushed (`kubeflow.serving_root`)
        through the cluster's ML Metadata (`kubeflow.metadata`) instead of the local run's.

    Returns:
      The result, with the drift record.

    Raises:
      ConfigError: `cluster` without the kubeflow keys it needs.
      DataError: the serving data or the lineage cannot be read; nothing is written.
    """
    from pipeline import monitor_report

    metadata, serving_dir, default_logs = _sources(config, cluster)
    lineage = training_lineage(metadata, serving_dir, served_version(serving_dir))
    data = (
        read_examples(examples, config)
        if examples
        else read_request_logs(logs or default_logs, config)
    )
    training, serving, anomalies = _tabular_comparison(config, lineage, data)
    derived = _derived_comparison(config, lineage, data)
    if derived is not None:
        training, serving = _merged(training, derived[0]), _merged(serving, derived[1])
        anomalies.MergeFrom(derived[2])
    drift = drift_record(config, lineage, data, anomalies)
    directory = Path(config.output_root) / "monitoring" / config.model_name / _timestamp()
    _write(directory, drift, monitor_report.figures(drift, training, serving))
    return MonitorResult(drift, str(directory), lineage)


def _write(directory: Path, drift: dict[str, Any], pngs: dict[str, bytes]) -> None:
    """drift.json, the figures (each named in its feature's entry) and the report."""
    from pipeline import monitor_report

    (directory / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        path = directory / FIGURES_DIR / f"{name}.png"
        path.write_bytes(png)
        drift["features"][name]["figure"] = str(path)
    (directory / DRIFT_FILE).write_text(json.dumps(drift, indent=2) + "\n")
    (directory / REPORT_FILE).write_text(monitor_report.render(drift, pngs))


def _sources(config: PipelineConfig, cluster: bool) -> tuple[Any, str, str]:
    """(ML Metadata, the model's serving folder, the default request logs): the local
    runner's, or with `cluster` the cluster's from the config's `kubeflow:` section."""
    if not cluster:
        from pipeline import local_runner

        return (
            local_runner.metadata_path(config),
            local_runner.serving_dir(config),
            str(request_log_dir(config)),
        )
    kubeflow = config.cluster.kubeflow
    if kubeflow.metadata is None:
        raise ConfigError(
            config.source_file,
            "kubeflow.metadata",
            "monitor --cluster reads the cluster's ML Metadata: set {host, port} of its gRPC"
            " service (Kubeflow Pipelines: metadata-grpc-service.kubeflow, 8080)",
        )
    if not kubeflow.serving_root:
        raise ConfigError(
            config.source_file, "kubeflow.serving_root", "monitor --cluster needs the serving root"
        )
    serving_dir = f"{kubeflow.serving_root.rstrip('/')}/{config.model_name}"
    metadata = grpc_connection(kubeflow.metadata.host, kubeflow.metadata.port)
    return metadata, serving_dir, kubeflow.request_logs or str(request_log_dir(config))


def _timestamp() -> str:
    # Microseconds keep two runs in one second apart.
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


_Comparison = tuple[
    statistics_pb2.DatasetFeatureStatisticsList,
    statistics_pb2.DatasetFeatureStatisticsList,
    anomalies_pb2.Anomalies,
]


def _tabular_comparison(
    config: PipelineConfig, lineage: TrainingLineage, data: ServingData
) -> _Comparison:
    """Training vs serving statistics of the numeric and categorical features and the label
    (StatisticsGen's own for training), and TFDV's anomalies with the drift measurements."""
    training = _training_statistics(lineage)
    if data.frame.columns.empty:
        # An image/text/sequence model's data without labels: only derived statistics.
        return training, statistics_pb2.DatasetFeatureStatisticsList(), anomalies_pb2.Anomalies()
    schema = _comparing_schema(lineage, config, data)
    serving = tfdv.generate_statistics_from_dataframe(_typed_as(data.frame, schema))
    return (
        training,
        serving,
        tfdv.validate_statistics(serving, schema, previous_statistics=training),
    )


def _derived_comparison(
    config: PipelineConfig, lineage: TrainingLineage, data: ServingData
) -> _Comparison | None:
    """The derived statistics of the image, text and sequence features compared: those of the
    served model's training examples against those of the serving data (None: no such
    features)."""
    kinds = {
        **{f: "image" for f in config.image_features},
        **{f: "text" for f in config.text_features},
        **{f: "sequence" for f in config.sequence_features},
    }
    if not kinds:
        return None
    vocabularies = {f: _vocabulary(lineage, f) for f in config.text_features}
    reference = monitor_derived.reference_frame(lineage.examples_uri, kinds, vocabularies)
    try:
        served = monitor_derived.derived_frame(data.raw, kinds, vocabularies)
    except ValueError as err:
        raise DataError(f"{data.source}: {err}") from err
    return monitor_derived.compare(reference, served, config.monitoring)


def _vocabulary(lineage: TrainingLineage, feature: str) -> list[bytes]:
    """The vocabulary Transform computed for a text feature of the served model."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from models.features import vocabulary_name

    if not lineage.transform_graph_uri:
        raise DataError(
            f"model {lineage.version}: its Trainer read no Transform output, so the vocabulary"
            f" of text feature {feature!r} is unknown"
        )
    path = tft.TFTransformOutput(lineage.transform_graph_uri).vocabulary_file_by_name(
        vocabulary_name(feature)
    )
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read().splitlines()


def _merged(
    first: statistics_pb2.DatasetFeatureStatisticsList,
    second: statistics_pb2.DatasetFeatureStatisticsList,
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """One dataset's statistics with the features of both (for the report)."""
    merged = statistics_pb2.DatasetFeatureStatisticsList()
    merged.CopyFrom(first)
    if not merged.datasets:
        merged.datasets.add()
    for dataset in second.datasets[:1]:
        merged.datasets[0].features.extend(dataset.features)
    return merged


def _training_statistics(lineage: TrainingLineage) -> statistics_pb2.DatasetFeatureStatisticsList:
    path = os.path.join(lineage.statistics_uri, "Split-train", "FeatureStats.pb")
    if not tf.io.gfile.exists(path):
        raise DataError(f"{path}: the training statistics of model {lineage.version} are gone")
    return tfdv.load_stats_binary(path)


def _comparing_schema(
    lineage: TrainingLineage, config: PipelineConfig, data: ServingData
) -> schema_pb2.Schema:
    """The training schema narrowed to the monitored features, each with its comparator."""
    schema = tfdv.load_schema_text(os.path.join(lineage.schema_uri, "schema.pbtxt"))
    return comparing_schema(schema, config, set(data.frame.columns))


def comparing_schema(
    schema: schema_pb2.Schema, config: PipelineConfig, monitored: set[str]
) -> schema_pb2.Schema:
    """A copy of `schema` narrowed to `monitored`, each feature with its drift comparator:
    L-infinity for categorical features and the label (monitoring.prediction_threshold),
    Jensen-Shannon divergence for numeric ones, at the config's thresholds. Also what
    pipeline/spans.py compares two spans with."""
    compared = schema_pb2.Schema()
    compared.CopyFrom(schema)
    kept = [f for f in compared.feature if f.name in monitored]
    del compared.feature[:]
    compared.feature.extend(kept)
    # Compared as they are: the label's presence rule is for training data.
    del compared.default_environment[:]
    for feature in compared.feature:
        del feature.not_in_environment[:]
        del feature.in_environment[:]
        categorical = feature.type == schema_pb2.BYTES
        threshold = (
            config.monitoring.prediction_threshold
            if feature.name == config.label
            else config.monitoring.threshold(feature.name, categorical)
        )
        comparator = feature.drift_comparator
        if categorical:
            comparator.infinity_norm.threshold = threshold
        else:
            comparator.jensen_shannon_divergence.threshold = threshold
    return compared


def _typed_as(frame: pd.DataFrame, schema: schema_pb2.Schema) -> pd.DataFrame:
    """`frame` with the schema's INT features as integers: the serving signature takes every
    number as float32, the training data had integers, and TFDV compares types too."""
    frame = frame.copy()
    for feature in schema.feature:
        if feature.type == schema_pb2.INT and feature.name in frame:
            # An integer label's predicted classes arrive as their names ("3").
            numbers = pd.to_numeric(frame[feature.name], errors="coerce")
            frame[feature.name] = pd.array(numbers.round(), dtype="Int64")
    return frame


def drift_record(
    config: PipelineConfig,
    lineage: TrainingLineage,
    data: ServingData,
    anomalies: anomalies_pb2.Anomalies,
) -> dict[str, Any]:
    """drift.json: per feature the statistic, its value, the threshold and whether it drifted;
    the label's entry is the predictions' (or labels') shift; other schema anomalies listed."""
    features = drift_features(anomalies, lambda name: _role(name, config, data))
    other = {
        name: [r.short_description for r in info.reason if r.type not in _DRIFT_REASONS]
        for name, info in anomalies.anomaly_info.items()
    }
    return {
        "model": config.model_name,
        "served_version": lineage.version,
        "training": {
            "pipeline_run": lineage.pipeline_run,
            "examples": lineage.examples_uri,
            "statistics": lineage.statistics_uri,
            "schema": lineage.schema_uri,
        },
        "serving": {
            "source": data.source,
            "files": data.files,
            "rows": len(data.frame),
            # Logged requests per version that answered them (as strings: JSON keys).
            "requests_by_version": {str(v): n for v, n in data.versions.items()},
        },
        "features": dict(sorted(features.items())),
        "drifted_features": sorted(n for n, f in features.items() if f["drifted"]),
        "anomalies": {name: reasons for name, reasons in sorted(other.items()) if reasons},
    }


def drift_features(
    anomalies: anomalies_pb2.Anomalies, role: Callable[[str], str]
) -> dict[str, dict[str, Any]]:
    """TFDV's drift measurements, per feature by name: statistic, value, threshold, drifted,
    and the feature's `role(name)`."""
    features = {}
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            features[name] = {
                "statistic": _MEASURES.get(measurement.type, str(measurement.type)),
                "value": round(measurement.value, 6),
                "threshold": measurement.threshold,
                "drifted": measurement.value > measurement.threshold,
                "role": role(name),
            }
    return dict(sorted(features.items()))


def _role(name: str, config: PipelineConfig, data: ServingData) -> str:
    derived = monitor_derived.derived_names(
        config.image_features, config.text_features, config.sequence_features
    )
    if name in derived:
        return f"{derived[name]} statistic"
    if name != config.label:
        return "feature"
    return "prediction" if data.label_kind == "predictions" else "label"
