"""AnomalyGate's executor: read the anomalies of each split and fail on any."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.anomaly_gate.spec import ANOMALIES_KEY, RESULT_KEY, SPLITS_KEY

ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
    """The data does not match the schema; the message lists every anomaly."""


def describe(anomalies: anomalies_pb2.Anomalies) -> list[str]:
    """One line per anomalous feature (or dataset-level anomaly)."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(r.description or r.short_description for r in info.reason)
        lines.append(f"feature {feature!r}: {info.short_description} ({reasons})")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        lines.append(f"dataset: {info.short_description} ({info.description})")
    return lines


def check(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> None:
    """Raises DataAnomaliesError listing the anomalies of every split that has any."""
    problems = [
        f"[{split}] {line}"
        for split, a in sorted(anomalies_by_split.items())
        for line in describe(a)
    ]
    if problems:
        raise DataAnomaliesError(
            "ExampleValidator found anomalies in the input data:\n  " + "\n  ".join(problems)
        )


def read_anomalies(uri: str, split: str) -> anomalies_pb2.Anomalies:
    """Reads ExampleValidator's anomalies for one split."""
    path = os.path.join(uri, f"Split-{split}", ANOMALIES_FILE)
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
    return anomalies


class Executor(base_executor.BaseExecutor):
    """Unpacks the artifacts and calls `check`."""

    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        anomalies = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
        splits = [s for s in exec_properties.get(SPLITS_KEY, "").split(",") if s]
        splits = splits or artifact_utils.decode_split_names(anomalies.split_names)
        check({split: read_anomalies(anomalies.uri, split) for split in splits})
        result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
        result.split_names = anomalies.split_names
        for split in splits:
            target = os.path.join(result.uri, f"Split-{split}")
            tf.io.gfile.makedirs(target)
            source = os.path.join(anomalies.uri, f"Split-{split}", ANOMALIES_FILE)
            tf.io.gfile.copy(source, os.path.join(target, ANOMALIES_FILE), overwrite=True)
