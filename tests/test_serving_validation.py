"""Warmup files, validate_model and the InfraValidation executor on tiny models and examples."""

from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf
from serving_testlib import example, save_model
from tfx.types import artifact_utils, standard_artifacts

from components.infra_validation import InfraValidation, spec
from components.infra_validation.executor import Executor
from serving.validation import validate_model
from serving.warmup import read_warmup_requests, warmup_path, write_warmup_requests


def test_warmup_file_round_trips_as_prediction_logs(tmp_path):
    model = save_model(str(tmp_path / "model"))
    examples = [example(1.0, "red"), example(2.0, "blue")]
    path = write_warmup_requests(model, examples, "penguins", num_requests=3)
    assert path == os.path.join(model, "assets.extra", "tf_serving_warmup_requests")
    logs = read_warmup_requests(model)
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    sent = [tf.make_ndarray(log.predict_log.request.inputs["examples"]).tolist() for log in logs]
    assert sent == [[examples[0]], [examples[1]], [examples[0]]]
    assert logs[0].predict_log.request.model_spec.name == "penguins"
    assert read_warmup_requests(str(tmp_path)) == []


def test_warmup_needs_a_signature_taking_examples(tmp_path):
    model = save_model(str(tmp_path / "model"))
    with pytest.raises(ValueError, match="does not take serialized examples"):
        write_warmup_requests(model, [example(1.0, "red")], "m", signature_name="serving_raw")
    with pytest.raises(ValueError, match="no examples"):
        write_warmup_requests(model, [], "m")


def test_validate_model_without_a_saved_model_fails_without_raising(tmp_path):
    result = validate_model(str(tmp_path), "m")
    assert not result.passed
    assert "saved_model.pb" in result.reason


def _artifacts(tmp_path, records: list[bytes]):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    save_model(os.path.join(model.uri, "Format-Serving"), scale=2.0)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    os.makedirs(os.path.join(examples.uri, "Split-eval"))
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(
        os.path.join(examples.uri, "Split-eval", "data.gz"), options
    ) as writer:
        for record in records:
            writer.write(record)
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri)
    return {spec.MODEL_KEY: [model], spec.EXAMPLES_KEY: [examples]}, {spec.BLESSING_KEY: [blessing]}


def _run(tmp_path, records):
    inputs, outputs = _artifacts(tmp_path, records)
    properties = {
        spec.MODEL_NAME_KEY: "penguins",
        spec.NUM_WARMUP_REQUESTS_KEY: 4,
        spec.SPLIT_KEY: "eval",
        spec.TIMEOUT_KEY: 60,
    }
    Executor().Do(inputs, outputs, properties)
    blessing = outputs[spec.BLESSING_KEY][0]
    result = json.loads((tmp_path / "blessing" / spec.RESULT_FILE).read_text())
    return blessing, result


def test_executor_blesses_a_good_model_and_keeps_it_with_warmup(tmp_path):
    blessing, result = _run(tmp_path, [example(float(i), "red") for i in range(6)])
    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_int_custom_property("has_model") == 1
    assert result["passed"] is True and result["requests_sent"] == 4
    assert result["model_name"] == "penguins" and result["load_seconds"] > 0
    stamped = tmp_path / "blessing" / "stamped_model"
    assert len(read_warmup_requests(str(stamped))) == 4
    assert warmup_path(str(stamped)).startswith(str(stamped))
    assert (tmp_path / "blessing" / "INFRA_BLESSED").exists()


def test_executor_does_not_bless_a_model_that_fails_its_warmup(tmp_path):
    blessing, result = _run(tmp_path, [b"not a tf.Example"])
    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_int_custom_property("has_model") == 0
    assert result["passed"] is False
    assert "warmup request 0" in result["reason"]
    assert not (tmp_path / "blessing" / "stamped_model").exists()
    assert (tmp_path / "blessing" / "INFRA_NOT_BLESSED").exists()


def test_component_wiring():
    from tfx import types

    model = types.Channel(type=standard_artifacts.Model)
    examples = types.Channel(type=standard_artifacts.Examples)
    component = InfraValidation(model=model, examples=examples, model_name="penguins")
    assert component.outputs[spec.BLESSING_KEY].type == standard_artifacts.InfraBlessing
    assert component.exec_properties[spec.SPLIT_KEY] == "eval"
    assert component.exec_properties[spec.MODEL_NAME_KEY] == "penguins"
