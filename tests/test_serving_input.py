"""Bad input never costs the embedded server memory or a 500, and `predict` says what is wrong.

Real servers on free loopback ports; HTTP framing is tested over raw sockets, since an HTTP
client library will not send a negative Content-Length or a lying chunk size.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time

import grpc
import portpicker
import pytest
import requests
import tensorflow as tf
from serving_testlib import example, save_version, start_server
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.cli import _parser, main, read_rows
from serving.config import RequestLimits

MAX_BYTES = 200_000
SMALL_MAX_ELEMENTS = 10


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    save_version(str(root / "m"), 1, scale=2.0)
    save_version(str(root / "r"), 1, scale=0.5, regression=True)
    return root


@pytest.fixture(scope="module")
def server(models):
    """The default element limit, a small byte limit."""
    running = start_server(models, RequestLimits(max_bytes=MAX_BYTES))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def small_server(models):
    """At most SMALL_MAX_ELEMENTS elements per request."""
    running = start_server(
        models, RequestLimits(max_bytes=MAX_BYTES, max_elements=SMALL_MAX_ELEMENTS)
    )
    yield running
    running.stop()


def _stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _rpc_error(call, request, timeout=10.0) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=timeout)
    return caught.value


def _rss_bytes() -> int:
    """This process's resident memory; the in-process server allocates into it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# --- 13: HTTP framing --------------------------------------------------------------------


def _http(port: int, data: bytes, timeout_s: float = 5.0) -> tuple[list, bool]:
    """Sends raw bytes; returns the responses read ((status, headers, JSON body) each) and
    whether the server closed the connection within `timeout_s`."""
    received, closed = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except (TimeoutError, ConnectionResetError):
            pass
    responses = []
    while b"\r\n\r\n" in received:
        head, received = received.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", 0))
        body, received = received[:length], received[length:]
        responses.append((int(status_line.split()[1]), headers, json.loads(body or b"null")))
    return responses, closed


def _chunked(body: bytes, size: int = 7) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


PREDICT_HEAD = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: t\r\n"
STATUS_REQUEST = b"GET /v1/models/m HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
RAW_ROW = json.dumps(
    {"signature_name": "serving_raw", "instances": [{"x": 1.0, "color": "red"}]}
).encode()


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        # Read as "until EOF" before: the handler waited for the client to close.
        (PREDICT_HEAD + b"Content-Length: -1\r\n\r\n" + b"{}" * 1000, 400, "Content-Length"),
        (PREDICT_HEAD + b"Content-Length: abc\r\n\r\n{}", 400, "'abc'"),
        (PREDICT_HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "one"),
        # Refused before the body is sent, instead of inviting it with "100 Continue".
        (PREDICT_HEAD + b"Content-Length: 300000\r\nExpect: 100-continue\r\n\r\n", 429, "300000"),
        # The chunk declares more than the limit; its data never comes.
        (PREDICT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n30d41\r\n{", 429, "limit"),
        (PREDICT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}}}\r\n0\r\n\r\n", 400, "chunk"),
        (PREDICT_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk size"),
        (PREDICT_HEAD + b"Transfer-Encoding: gzip\r\n\r\n", 501, "gzip"),
        # The stdlib's own errors.
        (b"PUT /v1/models/m HTTP/1.1\r\nHost: t\r\n\r\n", 501, "PUT"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "URI Too Long"),
        (b"GET /v1/models/m HTTP/1.1 extra\r\n\r\n", 400, "extra"),
    ],
)
def test_malformed_or_oversized_http_requests_get_json_errors_and_close(
    server, data, status, words
):
    started = time.monotonic()
    responses, closed = _http(server.rest_port, data)
    assert [r[0] for r in responses] == [status]
    _, headers, body = responses[0]
    assert headers["content-type"] == "application/json"
    assert words in body["error"]
    assert closed and headers["connection"] == "close"
    assert time.monotonic() - started < 3
    assert requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/m", timeout=5).ok


def test_get_body_is_not_read(server):
    started = time.monotonic()
    responses, closed = _http(
        server.rest_port,
        b"GET /v1/models/m HTTP/1.1\r\nHost: t\r\nContent-Length: 700000000\r\n\r\n",
    )
    assert [r[0] for r in responses] == [200]
    assert responses[0][2]["model_version_status"][0]["state"] == "AVAILABLE"
    assert closed and time.monotonic() - started < 3


def test_chunked_body_is_decoded_and_the_connection_goes_on(server):
    data = PREDICT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(RAW_ROW)
    responses, _ = _http(server.rest_port, data + STATUS_REQUEST)
    assert [r[0] for r in responses] == [200, 200]
    assert len(responses[0][2]["predictions"]) == 1
    assert "model_version_status" in responses[1][2]


def test_body_sent_to_an_unknown_path_is_consumed(server):
    head = b"POST /v1/models/m/nothing HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
    responses, _ = _http(server.rest_port, head + STATUS_REQUEST)
    assert [r[0] for r in responses] == [404, 200]


# --- 14: what a request expands to ------------------------------------------------------


def _filled(request, key, dtype, value, size):
    """A tensor of `size` elements carrying one value (TensorFlow repeats it)."""
    tensor = request.inputs[key]
    tensor.dtype = dtype.as_datatype_enum
    tensor.tensor_shape.dim.add().size = size
    if dtype == tf.string:
        tensor.string_val.append(value)
    else:
        tensor.float_val.append(value)


def test_tiny_request_declaring_millions_of_elements_is_refused_at_no_cost(server):
    raw = predict_pb2.PredictRequest()
    raw.model_spec.name = "m"
    raw.model_spec.signature_name = "serving_raw"
    _filled(raw, "x", tf.float32, 1.0, 5_000_000)
    _filled(raw, "color", tf.string, b"red", 5_000_000)
    examples = predict_pb2.PredictRequest()
    examples.model_spec.name = "m"
    _filled(examples, "examples", tf.string, example(1.0, "red"), 5_000_000)
    channel, stub = _stub(server)
    before = _rss_bytes()
    for request in (raw, examples):
        assert request.ByteSize() < 300
        started = time.monotonic()
        error = _rpc_error(stub.Predict, request)
        assert time.monotonic() - started < 1
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "declares shape [5000000]" in error.details()
    assert _rss_bytes() - before < 100 * 1024 * 1024
    # A filled tensor within its bytes still works, as TensorFlow's fill encoding is valid.
    small = predict_pb2.PredictRequest()
    small.model_spec.name = "m"
    small.inputs["examples"].CopyFrom(tf.make_tensor_proto(example(1.0, "red"), shape=[2]))
    assert stub.Predict(small, timeout=10).outputs["scores"].tensor_shape.dim[0].size == 2
    channel.close()


def test_element_limit_covers_predict_classify_and_rest(small_server):
    too_many = SMALL_MAX_ELEMENTS + 1
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "m"
    predict.inputs["examples"].CopyFrom(tf.make_tensor_proto([example(1.0, "a")] * too_many))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "m"
    for _ in range(too_many):
        classify.input.example_list.examples.add().ParseFromString(example(1.0, "a"))
    channel, stub = _stub(small_server)
    for call, request in [(stub.Predict, predict), (stub.Classify, classify)]:
        error = _rpc_error(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--max-request-elements" in error.details()
    channel.close()
    rest = f"http://127.0.0.1:{small_server.rest_port}/v1/models/m"
    rows = [{"x": 1.0, "color": "red"}] * 6  # 12 values
    for verb, body in [
        ("predict", {"signature_name": "serving_raw", "instances": rows}),
        ("predict", {"signature_name": "serving_raw", "inputs": {"x": [[1.0] * 11], "color": []}}),
        ("classify", {"examples": [{"x": 1.0}] * too_many}),
    ]:
        response = requests.post(f"{rest}:{verb}", json=body, timeout=5)
        assert response.status_code == 400
        assert "--max-request-elements" in response.json()["error"]
    assert requests.post(f"{rest}:predict", data=RAW_ROW, timeout=5).status_code == 200


def test_context_that_merges_past_the_byte_limit_is_refused(small_server):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "m"
    target = request.input.example_list_with_context
    context = tf.train.Example()
    context.features.feature["color"].bytes_list.value.append(b"c" * 30_000)
    target.context.CopyFrom(context)
    for _ in range(SMALL_MAX_ELEMENTS):
        target.examples.add().ParseFromString(example(1.0, "a"))
    channel, stub = _stub(small_server)
    error = _rpc_error(stub.Classify, request)
    channel.close()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context merged into each of the 10 examples" in error.details()


def test_multi_inference_refuses_the_same_signature_twice(server):
    request = inference_pb2.MultiInferenceRequest()
    for _ in range(2):
        task = request.tasks.add()
        task.model_spec.name = "m"
        task.model_spec.signature_name = "classification"
        task.method_name = "tensorflow/serving/classify"
    request.input.example_list.examples.add().ParseFromString(example(1.0, "a"))
    channel, stub = _stub(server)
    error = _rpc_error(stub.MultiInference, request)
    channel.close()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Duplicate evaluation of signature: classification" in error.details()


def test_serve_takes_the_element_limit():
    assert _parser().parse_args(["serve"]).max_request_elements == RequestLimits().max_elements
    assert _parser().parse_args(["serve", "--max-request-elements", "5"]).max_request_elements == 5
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--max-request-elements", "0"])


# --- 15: bytes that are not a tf.Example ------------------------------------------------

NOT_UTF8 = b"\xff\xfe\x00 not an Example"


@pytest.mark.parametrize("value", [b"not a tf.Example", NOT_UTF8])
def test_undecodable_examples_are_invalid_argument_with_one_log_line(server, caplog, value):
    caplog.set_level(logging.INFO, logger="serving")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example(1.0, "a"), value]))
    channel, stub = _stub(server)
    error = _rpc_error(stub.Predict, request)
    channel.close()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a serialized tf.Example" in error.details()
    logged = [r for r in caplog.records if r.name.startswith("serving")]
    assert [(r.levelno, r.exc_info) for r in logged] == [(logging.INFO, None)]
    assert "Predict refused: INVALID_ARGUMENT" in logged[0].getMessage()
    rest = requests.post(
        f"http://127.0.0.1:{server.rest_port}/v1/models/m:predict",
        json={"instances": [{"b64": base64.b64encode(value).decode()}]},
        timeout=5,
    )
    assert rest.status_code == 400
    assert "is not a serialized tf.Example" in rest.json()["error"]


@pytest.mark.parametrize("method", ["Classify", "Regress", "Predict"])
def test_request_bytes_that_do_not_parse_are_invalid_argument(server, caplog, method):
    caplog.set_level(logging.INFO)
    examples = b"\x0a\x03\xff\xff\xff"  # ExampleList.examples[0]: bytes that are no Example
    model_input = b"\x0a" + bytes([len(examples)]) + examples  # Input.example_list
    request = b"\x0a\x03\x0a\x01m" + b"\x12" + bytes([len(model_input)]) + model_input
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    call = channel.unary_unary(f"/tensorflow.serving.PredictionService/{method}")
    error = _rpc_error(call, request)
    channel.close()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a serialized tensorflow.serving." in error.details()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


# --- 16: `predict` on bad rows ----------------------------------------------------------


def _predict(server_address: str, rows_file) -> list[str]:
    return [
        "predict",
        "--model-name",
        "m",
        "--input",
        str(rows_file),
        "--address",
        server_address,
        "--timeout-s",
        "5",
    ]


def test_csv_line_with_too_few_fields_names_file_and_line(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("x,color,species\n0.5,red,adelie\n-1,blue\n")
    with pytest.raises(ValueError, match=f"^{rows}:3: 2 fields, but the header has 3"):
        read_rows(str(rows))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x,color\n0.5,red\n-1\n", "rows.csv:3: 1 fields, but the header has 2"),
        ("x,species\n0.5,adelie\n", "no feature 'color' in any row; signature serving_raw needs"),
        ("x,color\n0.5,red\nabc,blue\n", "row 1: feature 'x' must be a number, got 'abc'"),
    ],
)
def test_predict_on_bad_rows_fails_in_one_line(server, tmp_path, capsys, text, words):
    rows = tmp_path / "rows.csv"
    rows.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        main(_predict(f"127.0.0.1:{server.grpc_port}", rows))
    message = exit_.value.code
    assert isinstance(message, str) and "\n" not in message
    assert message.startswith("predict: ") and words in message
    assert capsys.readouterr().out == ""


def test_predict_without_a_server_says_where_it_looked(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("x,color\n0.5,red\n")
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main(_predict(address, rows))
    message = exit_.value.code
    assert isinstance(message, str) and "\n" not in message
    assert f"no model server answered at {address}" in message
    assert "`make serve` starts one" in message
    assert time.monotonic() - started < 5
