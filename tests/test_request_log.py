"""Request logging: sampled PredictionLog TFRecords from a real gRPC server on loopback."""

from __future__ import annotations

import os

import numpy as np
import portpicker
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from serving_testlib import save_version
from tensorflow_serving.apis import prediction_log_pb2

from serving import logging_requests
from serving.cli import _parser, _request_log
from serving.client import ServingClient
from serving.config import (
    RequestLogConfig,
    ServingConfigError,
    parse_models_config,
)
from serving.logging_requests import RequestLogger, log_files, read_prediction_logs
from serving.server import ModelServer, ServerOptions

_MODELS_CONFIG = """
model_config_list {{
  config {{
    name: "m"
    base_path: "{base}"
    model_platform: "tensorflow"
    logging_config {{
      log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }}
      sampling_config {{ sampling_rate: {rate} }}
    }}
  }}
}}
"""


def _config(base="/m", prefix="/logs/m", rate="1.0", kind=""):
    text = _MODELS_CONFIG.format(base=base, prefix=prefix, rate=rate, kind=kind)
    return parse_models_config(text, source="models.config")


def _records(prefix):
    return [r for path in log_files(prefix) for r in read_prediction_logs(path)]


def test_models_config_logging_config_is_read():
    (model,) = _config(rate="0.25")
    assert model.request_log == RequestLogConfig(filename_prefix="/logs/m", sampling_rate=0.25)


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"rate": "1.5"}, "sampling_config.sampling_rate", "in (0, 1]"),
        ({"rate": "0"}, "sampling_config.sampling_rate", "in (0, 1]"),
        ({"prefix": ""}, "log_collector_config.filename_prefix", "missing"),
        ({"kind": "pubsub"}, "log_collector_config.type", "'pubsub'"),
    ],
)
def test_bad_logging_config_names_file_and_key(change, key, problem):
    with pytest.raises(ServingConfigError) as caught:
        _config(**change)
    message = str(caught.value)
    assert message.startswith("models.config: config[m].logging_config.")
    assert key in message and problem in message


def test_flags_turn_logging_on_for_model_name():
    args = _parser().parse_args(
        ["serve", "--model-name", "m", "--model-base-path", "/m"]
        + ["--request-log-prefix", "/l/m", "--request-log-sampling-rate", "0.1"]
        + ["--request-log-max-bytes", "1000"]
    )
    assert _request_log(args, models_config=False) == RequestLogConfig("/l/m", 0.1, 1000)
    with pytest.raises(ServingConfigError, match="set each model's logging_config"):
        _request_log(args, models_config=True)


def _serve(root, models):
    options = ServerOptions(grpc_port=portpicker.pick_unused_port(), rest_port=0)
    server = ModelServer(models, options).start()
    return server


def test_server_logs_every_answered_request_in_tf_serving_format(tmp_path):
    save_version(str(tmp_path / "m"), 4, scale=2.0)
    prefix = str(tmp_path / "logs" / "requests")
    (model,) = _config(base=tmp_path / "m", prefix=prefix)
    server = _serve(tmp_path, [model])
    try:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            client.wait_until_available("m", timeout_s=30)
            rows = [{"x": 1.0, "color": "red"}, {"x": -2.0, "color": "blue"}]
            predicted = client.predict_rows("m", rows)
            client.classify("m", rows, float_features=["x"])
            with pytest.raises(Exception, match="INVALID_ARGUMENT"):
                client.predict("m", {"nope": np.array([1.0], np.float32)})
    finally:
        server.stop()
    counts = server.request_log_counts()["m"]
    # The refused request is not logged: TF Serving logs answered requests only.
    assert (counts.sampled, counts.written, counts.files) == (2, 2, 1)
    predict, classify = _records(prefix)
    assert predict.log_metadata.model_spec.name == "m"
    assert predict.log_metadata.model_spec.version.value == 4
    assert predict.log_metadata.model_spec.signature_name == "serving_raw"
    assert predict.log_metadata.sampling_config.sampling_rate == 1.0
    assert predict.WhichOneof("log_type") == "predict_log"
    logged_x = tf.make_ndarray(predict.predict_log.request.inputs["x"])
    assert logged_x.tolist() == [1.0, -2.0]
    scores = tf.make_ndarray(predict.predict_log.response.outputs["scores"])
    np.testing.assert_allclose(scores, predicted["scores"], rtol=1e-6)
    assert classify.WhichOneof("log_type") == "classify_log"
    examples = classify.classify_log.request.input.example_list.examples
    assert [e.features.feature["color"].bytes_list.value[0] for e in examples] == [b"red", b"blue"]
    assert len(classify.classify_log.response.result.classifications) == 2


def test_rest_requests_are_logged_as_their_grpc_protos(tmp_path):
    import requests

    save_version(str(tmp_path / "m"), 2, scale=2.0)
    prefix = str(tmp_path / "logs" / "requests")
    (model,) = _config(base=tmp_path / "m", prefix=prefix)
    options = ServerOptions(
        grpc_port=portpicker.pick_unused_port(), rest_port=portpicker.pick_unused_port()
    )
    server = ModelServer([model], options).start()
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/m"
    try:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            client.wait_until_available("m", timeout_s=30)
        rows = [{"x": 1.0, "color": "red"}, {"x": -2.0, "color": "blue"}]
        body = {"signature_name": "serving_raw", "instances": rows}
        predicted = requests.post(f"{url}:predict", json=body, timeout=30).json()
        classify = {"examples": rows}
        assert requests.post(f"{url}:classify", json=classify, timeout=30).ok
    finally:
        server.stop()
    assert server.request_log_counts()["m"].written == 2
    predict, classify = _records(prefix)
    assert predict.log_metadata.model_spec.version.value == 2
    request = predict.predict_log.request
    assert request.model_spec.signature_name == "serving_raw"
    assert tf.make_ndarray(request.inputs["x"]).tolist() == [1.0, -2.0]
    assert tf.make_ndarray(request.inputs["color"]).tolist() == [b"red", b"blue"]
    scores = tf.make_ndarray(predict.predict_log.response.outputs["scores"])
    np.testing.assert_allclose(scores, [p["scores"] for p in predicted["predictions"]], rtol=1e-6)
    assert classify.classify_log.request.model_spec.name == "m"
    assert len(classify.classify_log.request.input.example_list.examples) == 2


def test_a_failing_log_disk_never_fails_a_request(tmp_path):
    save_version(str(tmp_path / "m"), 1)
    (tmp_path / "not-a-dir").write_text("a file where the log folder should be")
    (model,) = _config(base=tmp_path / "m", prefix=tmp_path / "not-a-dir" / "requests")
    server = _serve(tmp_path, [model])
    try:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            client.wait_until_available("m", timeout_s=30)
            for _ in range(3):
                client.predict_rows("m", [{"x": 1.0, "color": "red"}])
    finally:
        server.stop()
    counts = server.request_log_counts()["m"]
    assert (counts.sampled, counts.written, counts.dropped_write_error) == (3, 0, 3)


def test_sampling_rotation_and_a_full_queue(tmp_path):
    prefix = str(tmp_path / "requests")
    request, response = _predict_pair(payload_bytes=2000)
    logger = RequestLogger(RequestLogConfig(prefix, 0.3, max_file_bytes=20_000), seed=1).start()
    queued = sum(logger.log("Predict", request, response) for _ in range(1000))
    counts = logger.stop()
    assert 250 <= queued <= 350, "a 0.3 sample of 1000 requests"
    assert counts.written == queued and counts.dropped_queue_full == 0
    files = log_files(prefix)
    assert len(files) == counts.files and len(files) >= queued * 2000 // 20_000
    assert all(os.path.getsize(f) < 20_000 + 2100 for f in files)
    assert len(_records(prefix)) == queued

    # Nobody drains this logger's queue: past max_queued, log() drops at once.
    stalled = RequestLogger(RequestLogConfig(prefix + "-stalled", 1.0, max_queued=2))
    assert [stalled.log("Predict", request, response) for _ in range(5)] == [True] * 2 + [False] * 3
    assert stalled.counts().dropped_queue_full == 3


def test_truncated_and_foreign_files_are_named(tmp_path):
    prefix = str(tmp_path / "requests")
    request, response = _predict_pair(payload_bytes=100)
    logger = RequestLogger(RequestLogConfig(prefix)).start()
    for _ in range(3):
        logger.log("Predict", request, response)
    logger.stop()
    (path,) = log_files(prefix)
    with open(path, "rb") as f:
        data = f.read()
    truncated = tmp_path / "truncated.tfrecord"
    truncated.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"truncated\.tfrecord: truncated or corrupt"):
        list(read_prediction_logs(str(truncated)))
    foreign = tmp_path / "foreign.tfrecord"
    foreign.write_bytes(b"this is a text file, not TFRecords\n" * 3)
    with pytest.raises(ValueError, match=r"foreign\.tfrecord"):
        list(read_prediction_logs(str(foreign)))


def _predict_pair(payload_bytes: int):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].string_val.append(b"a" * payload_bytes)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "m"
    response.model_spec.version.value = 1
    return request, response


def test_prediction_log_of_multi_inference_takes_the_first_task_spec():
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    response = inference_pb2.MultiInferenceResponse()
    response.results.add().model_spec.name = "m"
    record = logging_requests.prediction_log(
        "MultiInference", request, response, RequestLogConfig("/x", 0.5), 12.7
    )
    assert isinstance(record, prediction_log_pb2.PredictionLog)
    assert record.log_metadata.model_spec.name == "m"
    assert record.log_metadata.timestamp_secs == 12
    assert record.WhichOneof("log_type") == "multi_inference_log"


def _pipeline_config(tmp_path, monitoring):
    import yaml

    from pipeline.config import load_config

    raw = yaml.safe_load((REPO_ROOT / "configs" / "penguins.yaml").read_text())
    raw.pop("schema_file")
    raw["monitoring"] = monitoring
    raw["outputs"] = {"root": str(tmp_path / "out")}
    path = tmp_path / "penguins.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_make_serve_logs_requests_when_the_config_says(tmp_path):
    from pipeline.cli import _serving_args, parser

    config = _pipeline_config(tmp_path, {"request_log_sampling_rate": 0.1})
    args = parser().parse_args(["serve"])
    args.extra = []
    argv = _serving_args(args, config)
    prefix = str(tmp_path / "out" / "request_logs" / "penguins" / "requests")
    assert argv[argv.index("--request-log-prefix") + 1] == prefix
    assert argv[argv.index("--request-log-sampling-rate") + 1] == "0.1"
    off = _serving_args(args, _pipeline_config(tmp_path, {}))
    assert "--request-log-prefix" not in off


@pytest.mark.parametrize(
    ("monitoring", "key"),
    [
        ({"request_log_sampling_rate": 2}, "monitoring.request_log_sampling_rate"),
        ({"numeric_threshold": 0}, "monitoring.numeric_threshold"),
        ({"thresholds": {"island": 1.5}}, "monitoring.thresholds.island"),
        ({"thresholds": {"beak": 0.1}}, "monitoring.thresholds.beak"),
        ({"treshold": 0.1}, "monitoring.treshold"),
    ],
)
def test_bad_monitoring_config_names_the_key(tmp_path, monitoring, key):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _pipeline_config(tmp_path, monitoring)
