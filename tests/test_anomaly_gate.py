"""AnomalyGate: Do() on real anomaly protos, and its wiring."""

import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import standard_artifacts
from tfx.types.artifact_utils import encode_split_names

from components.anomaly_gate import AnomalyGate
from components.anomaly_gate.executor import ANOMALIES_FILE, DataAnomaliesError, Executor, check
from components.anomaly_gate.spec import ANOMALIES_KEY, RESULT_KEY, SPLITS_KEY


def _anomalies(**features) -> anomalies_pb2.Anomalies:
    proto = anomalies_pb2.Anomalies()
    for name, (short, description) in features.items():
        info = proto.anomaly_info[name]
        info.short_description = short
        info.reason.add(short_description=short, description=description)
    return proto


def _artifact(tmp_path, by_split):
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path / "anomalies")
    artifact.split_names = encode_split_names(list(by_split))
    for split, proto in by_split.items():
        os.makedirs(os.path.join(artifact.uri, f"Split-{split}"))
        with open(os.path.join(artifact.uri, f"Split-{split}", ANOMALIES_FILE), "wb") as f:
            f.write(proto.SerializeToString())
    return artifact


def _run(tmp_path, by_split, splits=""):
    result = standard_artifacts.ExampleAnomalies()
    result.uri = str(tmp_path / "result")
    Executor().Do(
        {ANOMALIES_KEY: [_artifact(tmp_path, by_split)]},
        {RESULT_KEY: [result]},
        {SPLITS_KEY: splits},
    )
    return result


def test_clean_data_passes_and_is_passed_on(tmp_path):
    result = _run(tmp_path, {"train": _anomalies(), "eval": _anomalies()})
    assert os.path.exists(os.path.join(result.uri, "Split-eval", ANOMALIES_FILE))


def test_anomalies_stop_the_run_naming_split_feature_and_reason(tmp_path):
    bad = _anomalies(
        species=(
            "Unexpected string values",
            "Examples contain values missing from the schema: Emperor.",
        )
    )
    with pytest.raises(DataAnomaliesError) as err:
        _run(tmp_path, {"train": _anomalies(), "eval": bad})
    assert "[eval] feature 'species': Unexpected string values" in str(err.value)
    assert "Emperor" in str(err.value)
    assert "[train]" not in str(err.value)


def test_only_the_chosen_splits_are_checked(tmp_path):
    bad = _anomalies(sex=("Missing values", "Some examples have fewer values than expected."))
    _run(tmp_path, {"train": _anomalies(), "eval": bad}, splits="train")


def test_dataset_level_anomaly_is_reported():
    proto = anomalies_pb2.Anomalies()
    proto.dataset_anomaly_info.short_description = "Low num examples"
    proto.dataset_anomaly_info.description = "The dataset has 3 examples."
    with pytest.raises(DataAnomaliesError, match="dataset: Low num examples"):
        check({"train": proto})


def test_component_wiring():
    from tfx.types import channel

    anomalies = channel.Channel(type=standard_artifacts.ExampleAnomalies)
    gate = AnomalyGate(anomalies=anomalies, splits=["train", "eval"])
    assert gate.exec_properties[SPLITS_KEY] == "train,eval"
    assert gate.outputs[RESULT_KEY].type == standard_artifacts.ExampleAnomalies
