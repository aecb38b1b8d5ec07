"""The embedded server over real gRPC and HTTP on free loopback ports."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from serving_testlib import CLASS_NAMES, example, save_model, save_version, start_server
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.config import RequestLimits

State = get_model_status_pb2.ModelVersionStatus.State


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    save_version(str(root / "m"), 1, scale=2.0)
    save_version(str(root / "r"), 3, scale=0.5, regression=True)
    running = start_server(root, RequestLimits(max_bytes=200_000))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same model as version 1 of `m`, loaded in process."""
    path = save_model(str(tmp_path_factory.mktemp("ref") / "m"), scale=2.0)
    return tf.saved_model.load(path).signatures["serving_default"]


def _predict_request(name, examples, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
    return request


EXAMPLES = [example(0.5, "red"), example(-1.0, "blue"), example(3.0, "")]


def test_predict_equals_in_process_serving_default(stubs, reference):
    prediction, _ = stubs
    response = prediction.Predict(_predict_request("m", EXAMPLES))
    expected = reference(examples=tf.constant(EXAMPLES))
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["scores"]), expected["scores"], rtol=1e-6
    )
    assert (
        tf.make_ndarray(response.outputs["classes"]).tolist()
        == [[c.encode() for c in CLASS_NAMES]] * 3
    )
    assert response.model_spec.name == "m"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_predict_with_raw_signature_and_output_filter(stubs, reference):
    prediction, _ = stubs
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.signature_name = "serving_raw"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([0.5, -1.0, 3.0], dtype=tf.float32))
    request.inputs["color"].CopyFrom(tf.make_tensor_proto([b"red", b"blue", b""]))
    request.output_filter.append("scores")
    response = prediction.Predict(request)
    assert list(response.outputs) == ["scores"]
    expected = reference(examples=tf.constant(EXAMPLES))["scores"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]), expected, rtol=1e-6)


def test_classify_and_regress(server, reference):
    from serving.client import ServingClient

    with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
        rows = [{"x": 0.5, "color": "red"}, {"x": -1.0, "color": "blue"}]
        classified = client.classify("m", rows)
        regressed = client.regress("r", [{"x": 4.0, "color": "a"}, {"x": -2.0, "color": "b"}])
    expected = reference(examples=tf.constant(EXAMPLES[:2]))["scores"].numpy()
    assert [[label for label, _ in row] for row in classified] == [CLASS_NAMES, CLASS_NAMES]
    np.testing.assert_allclose([[s for _, s in row] for row in classified], expected, rtol=1e-6)
    assert regressed == pytest.approx([2.0, -1.0])


def test_multi_inference_runs_each_task(stubs):
    prediction, _ = stubs
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name = "m"
    task.method_name = "tensorflow/serving/classify"
    request.input.example_list.examples.add().ParseFromString(EXAMPLES[0])
    response = prediction.MultiInference(request)
    classes = response.results[0].classification_result.classifications[0].classes
    assert [c.label for c in classes] == CLASS_NAMES
    assert sum(c.score for c in classes) == pytest.approx(1.0, abs=1e-5)


def test_get_model_metadata_lists_signatures(stubs):
    prediction, _ = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "m"
    request.metadata_field.append("signature_def")
    response = prediction.GetModelMetadata(request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "serving_raw", "transform_features"} <= set(signatures.signature_def)
    assert set(signatures.signature_def["serving_raw"].inputs) == {"x", "color"}
    classification = signatures.signature_def["classification"]
    assert classification.method_name == "tensorflow/serving/classify"
    assert set(classification.inputs) == {"inputs"}
    assert response.model_spec.version.value == 1


def test_get_model_status_reports_available(stubs):
    _, models = stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "r"
    response = models.GetModelStatus(request)
    assert [(s.version, s.state) for s in response.model_version_status] == [(3, State.AVAILABLE)]
    assert response.model_version_status[0].status.error_code == 0


@pytest.mark.parametrize(
    ("request_for", "code", "words"),
    [
        (lambda: _predict_request("nope", EXAMPLES), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
        (
            lambda: _predict_request("m", EXAMPLES, version=9),
            grpc.StatusCode.NOT_FOUND,
            "Specific(m, 9)",
        ),
        (
            lambda: _predict_request("m", EXAMPLES, signature_name="bad"),
            grpc.StatusCode.NOT_FOUND,
            "bad",
        ),
        (
            lambda: _predict_request("m", [b"not a tf.Example"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parse",
        ),
        (
            lambda: _predict_request("m", EXAMPLES, version_label="canary"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "label",
        ),
    ],
)
def test_bad_requests_get_status_and_server_keeps_serving(stubs, request_for, code, words):
    prediction, _ = stubs
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Predict(request_for())
    assert caught.value.code() == code
    assert words.lower() in caught.value.details().lower()
    assert (
        prediction.Predict(_predict_request("m", EXAMPLES[:1]))
        .outputs["scores"]
        .tensor_shape.dim[0]
        .size
        == 1
    )


def test_wrong_dtype_and_missing_input_are_invalid_argument(stubs):
    prediction, _ = stubs
    wrong = predict_pb2.PredictRequest()
    wrong.model_spec.name = "m"
    wrong.inputs["examples"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    missing = predict_pb2.PredictRequest()
    missing.model_spec.name = "m"
    missing.model_spec.signature_name = "serving_raw"
    missing.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    for request, words in [
        (wrong, "expects string but got float32"),
        (missing, "Missing but required: ['color']"),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            prediction.Predict(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in caught.value.details()


def test_request_size_limit(stubs):
    prediction, _ = stubs
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Predict(_predict_request("m", [b"x" * 300_000]))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _rest(server, path):
    return f"http://127.0.0.1:{server.rest_port}/v1/models/{path}"


def test_rest_status_and_metadata(server):
    status = requests.get(_rest(server, "m"), timeout=5).json()
    assert status == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert requests.get(_rest(server, "m/versions/1"), timeout=5).status_code == 200
    metadata = requests.get(_rest(server, "m/metadata"), timeout=5).json()
    assert metadata["model_spec"]["version"] == "1"
    raw = metadata["metadata"]["signature_def"]["signature_def"]["serving_raw"]
    assert set(raw["inputs"]) == {"x", "color"}


def test_rest_predict_row_and_columnar_formats(server, reference):
    expected = reference(examples=tf.constant(EXAMPLES[:2]))["scores"].numpy()
    rows = {
        "signature_name": "serving_raw",
        "instances": [{"x": 0.5, "color": "red"}, {"x": -1, "color": "blue"}],
    }
    columns = {
        "signature_name": "serving_raw",
        "inputs": {"x": [0.5, -1], "color": ["red", "blue"]},
    }
    by_rows = requests.post(_rest(server, "m:predict"), json=rows, timeout=5).json()
    by_columns = requests.post(
        _rest(server, "m/versions/1:predict"), json=columns, timeout=5
    ).json()
    np.testing.assert_allclose([p["scores"] for p in by_rows["predictions"]], expected, rtol=1e-6)
    assert by_rows["predictions"][0]["classes"] == CLASS_NAMES
    np.testing.assert_allclose(by_columns["outputs"]["scores"], expected, rtol=1e-6)


def test_rest_predict_serialized_examples_as_b64(server, reference):
    import base64

    instances = [{"b64": base64.b64encode(e).decode()} for e in EXAMPLES]
    body = requests.post(
        _rest(server, "m:predict"), json={"instances": instances}, timeout=5
    ).json()
    expected = reference(examples=tf.constant(EXAMPLES))["scores"].numpy()
    np.testing.assert_allclose([p["scores"] for p in body["predictions"]], expected, rtol=1e-6)


def test_rest_classify_and_regress(server):
    examples = {"examples": [{"x": 0.5, "color": "red"}]}
    classified = requests.post(_rest(server, "m:classify"), json=examples, timeout=5).json()
    regressed = requests.post(
        _rest(server, "r:regress"), json={"examples": [{"x": 4.0}]}, timeout=5
    ).json()
    assert [label for label, _ in classified["results"][0]] == CLASS_NAMES
    assert regressed["results"] == pytest.approx([2.0])


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "nope", None, 404),
        ("get", "m/versions/7", None, 404),
        (
            "post",
            "m:predict",
            {"instances": [{"x": "a", "color": "b"}], "signature_name": "serving_raw"},
            400,
        ),
        ("post", "m:predict", {"instances": [{"x": 1.0}], "signature_name": "serving_raw"}, 400),
        ("post", "m:predict", {"nothing": 1}, 400),
        ("post", "m:predict", "not json", 400),
        ("post", "m:predict", {"instances": ["x" * 300_000]}, 429),
    ],
)
def test_rest_errors(server, method, path, body, status):
    data = body if isinstance(body, str) else json.dumps(body) if body else None
    response = requests.request(method, _rest(server, path), data=data, timeout=5)
    assert response.status_code == status
    assert response.json()["error"]
    assert requests.get(_rest(server, "m"), timeout=5).status_code == 200


@pytest.mark.parametrize(
    "value",
    [
        np.array([[1.5, -2.0]], dtype=np.float32),
        np.array([3, 4, 5], dtype=np.int64),
        np.array([[b"a", b"\xff"]], dtype=object),
        np.array([True, False]),
    ],
)
def test_tensor_conversion_matches_tensorflow(value):
    from tensorflow.core.framework import tensor_pb2

    from serving.tensors import fill_proto, to_array

    proto = tensor_pb2.TensorProto()
    fill_proto(proto, value)
    np.testing.assert_array_equal(tf.make_ndarray(proto), value)
    np.testing.assert_array_equal(to_array(tf.make_tensor_proto(value)), value)
    filled = tf.make_tensor_proto(7.0, dtype=tf.float32, shape=[3])
    np.testing.assert_array_equal(to_array(filled), [7.0, 7.0, 7.0])
