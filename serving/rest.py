"""TF Serving's REST API (/v1/models/...) on the standard library's threaded HTTP server."""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import inference, tensors
from serving.config import RequestLimits
from serving.errors import (
    ServingError,
    invalid_argument,
    log_refusal,
    not_found,
    over_element_limit,
)
from serving.examples import make_example
from serving.grpc_service import SIGNATURE_DEF_FIELD, model_metadata, model_status
from serving.logging_requests import RequestLogger
from serving.manager import ModelManager

_log = logging.getLogger(__name__)
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?$"
)
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")
# Longest chunk-size or trailer line read, and most trailer lines, of a chunked body.
_MAX_LINE = 8192
_MAX_TRAILERS = 32


class RestServer:
    """Serves the REST API for `manager` on host:port in background threads."""

    def __init__(
        self,
        manager: ModelManager,
        host: str,
        port: int,
        limits: RequestLimits,
        request_logs: Mapping[str, RequestLogger] | None = None,
    ):
        attributes = {"manager": manager, "limits": limits, "request_logs": request_logs or {}}
        handler = type("Handler", (_Handler,), attributes)
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest", daemon=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return self._httpd.server_address[1]

    def start(self) -> None:
        """Starts answering requests."""
        self._thread.start()

    def stop(self) -> None:
        """Stops answering and closes the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    """One connection. Every answer, the stdlib's own errors included, is a JSON object.

    A request body is read only for POST, and only within `limits.max_bytes`; a body that is
    refused, malformed or not wanted (GET) is left unread and the connection is closed after
    the answer, since where the next request would start is unknown.
    """

    protocol_version = "HTTP/1.1"
    manager: ModelManager
    limits: RequestLimits
    # Per model name, where its answered requests are logged (TF Serving's request logging).
    request_logs: Mapping[str, RequestLogger]

    def do_GET(self):  # noqa: N802 - the stdlib's naming
        self._answer(self._get)

    def do_POST(self):  # noqa: N802
        self._answer(self._post)

    def send_error(self, code, message=None, explain=None):
        """Answers the stdlib's own errors (bad request line, URI too long, unsupported method,
        header lines too long) as JSON; like the stdlib, closes the connection after."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            # What the stdlib assumes of a request line it cannot read; an HTTP/0.9 answer
            # has no status line, and no client today would understand it.
            self.request_version = "HTTP/1.0"
        self._send_json(code, {"error": message or self.responses.get(code, ("Error",))[0]})

    def handle_expect_100(self):
        """Refuses a POST body over the limit before the client sends it (`Expect: 100-continue`)."""
        if self.command != "POST":
            # Never invite a body that will not be read; the answer comes without it.
            return True
        try:
            length = self._body_length()
            if length is not None:
                self._check_size(length)
        except ServingError as err:
            log_refusal(_log, f"REST {self.command} {self.path}", err)
            self._send_json(err.http_status, {"error": err.message})
            return False
        return super().handle_expect_100()

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        _log.debug("%s %s", self.address_string(), format % args)

    def _answer(self, handle) -> None:
        try:
            body = self._read_body()
            match = _PATH.match(self.path)
            if not match:
                raise not_found(f"Malformed request: {self.command} {self.path}")
            status, result = HTTPStatus.OK, handle(match, body)
        except ServingError as err:
            log_refusal(_log, f"REST {self.command} {self.path}", err)
            status, result = err.http_status, {"error": err.message}
        except Exception as err:  # noqa: BLE001 - answer and keep serving
            _log.exception("REST %s %s failed", self.command, self.path)
            status, result = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(err)}
        self._send_json(status, result)

    def _send_json(self, status: int, result: dict) -> None:
        data = json.dumps(result).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _get(self, match: re.Match, body: bytes) -> dict:
        if match["verb"]:
            raise invalid_argument(f"{match['verb']} needs POST")
        if match["metadata"]:
            request = get_model_metadata_pb2.GetModelMetadataRequest()
            _fill_spec(request.model_spec, match)
            request.metadata_field.append(SIGNATURE_DEF_FIELD)
            response = model_metadata(self.manager, request)
            signatures = get_model_metadata_pb2.SignatureDefMap()
            response.metadata[SIGNATURE_DEF_FIELD].Unpack(signatures)
            spec = json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True)
            return {"model_spec": spec, "metadata": {SIGNATURE_DEF_FIELD: _to_dict(signatures)}}
        request = get_model_status_pb2.GetModelStatusRequest()
        _fill_spec(request.model_spec, match)
        return _to_dict(model_status(self.manager, request))

    def _post(self, match: re.Match, body: bytes) -> dict:
        request_json = _json_object(body)
        if not match["verb"]:
            raise invalid_argument("POST needs :predict, :classify or :regress")
        version = int(match["version"]) if match["version"] else None
        servable = self.manager.servable(match["name"], version, match["label"] or "")
        request_log = self.request_logs.get(servable.name)
        if match["verb"] == "predict":
            return _predict(servable, request_json, self.limits.max_elements, request_log)
        request_type = (
            classification_pb2.ClassificationRequest
            if match["verb"] == "classify"
            else regression_pb2.RegressionRequest
        )
        request = request_type()
        _fill_spec(request.model_spec, match)
        request.model_spec.signature_name = _signature_name(request_json)
        request.input.CopyFrom(_examples_input(request_json, self.limits.max_elements))
        if match["verb"] == "classify":
            response = inference.classify(servable, request, self.limits)
            if request_log is not None:
                request_log.log("Classify", request, response)
            return {
                "results": [
                    [[c.label, c.score] for c in row.classes]
                    for row in response.result.classifications
                ]
            }
        response = inference.regress(servable, request, self.limits)
        if request_log is not None:
            request_log.log("Regress", request, response)
        return {"results": [r.value for r in response.result.regressions]}

    def _read_body(self) -> bytes:
        """Returns the body of a POST; any other method's body is left unread."""
        length = self._body_length()
        if self.command != "POST":
            if length != 0:
                self.close_connection = True
            return b""
        if length is None:
            return self._read_chunked()
        self._check_size(length)
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise invalid_argument(f"the body ended after {len(body)} of {length} bytes")
        return body

    def _body_length(self) -> int | None:
        """Returns the declared body length: 0 when none is declared, None when chunked.

        Raises:
          ServingError: INVALID_ARGUMENT for a malformed Content-Length or one sent together
            with Transfer-Encoding; UNIMPLEMENTED for a transfer coding other than chunked.
        """
        lengths = self.headers.get_all("Content-Length") or []
        encodings = self.headers.get_all("Transfer-Encoding") or []
        if encodings:
            codings = [c.strip().lower() for value in encodings for c in value.split(",")]
            if codings != ["chunked"]:
                self.close_connection = True
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"Transfer-Encoding {', '.join(encodings)!r} is not supported; "
                    "send the body with Content-Length or Transfer-Encoding: chunked",
                )
            if lengths:
                self.close_connection = True
                raise invalid_argument("send Content-Length or Transfer-Encoding, not both")
            return None
        if not lengths:
            return 0
        text = lengths[0].strip()
        if len(lengths) > 1 or not _DIGITS.fullmatch(text):
            self.close_connection = True
            raise invalid_argument(
                f"Content-Length must be one non-negative integer, got {', '.join(lengths)!r}"
            )
        # More digits than any real body: keep int() away from a huge string.
        return int(text) if len(text) <= 18 else 10**18

    def _check_size(self, length: int) -> None:
        if length > self.limits.max_bytes:
            self.close_connection = True
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {length} bytes exceeds the limit of {self.limits.max_bytes} bytes",
            )

    def _read_chunked(self) -> bytes:
        """Reads a chunked body, refusing it as soon as its chunks declare more than the limit."""
        body = bytearray()
        while size := self._chunk_size():
            # Checked against what the chunks declare, before the chunk is read.
            self._check_size(len(body) + size)
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n"):
                raise self._malformed("a chunk does not end where its size says")
            body += chunk
        for _ in range(_MAX_TRAILERS):
            if self.rfile.readline(_MAX_LINE) in (b"\r\n", b"\n"):
                return bytes(body)
        raise self._malformed(f"no end after {_MAX_TRAILERS} trailer lines")

    def _chunk_size(self) -> int:
        line = self.rfile.readline(_MAX_LINE)
        size = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not _HEX.fullmatch(size):
            raise self._malformed(f"bad chunk size line {line[:40]!r}")
        return int(size, 16)

    def _malformed(self, problem: str) -> ServingError:
        self.close_connection = True
        return invalid_argument(f"malformed chunked body: {problem}")


def _fill_spec(spec, match: re.Match) -> None:
    spec.name = match["name"]
    if match["version"]:
        spec.version.value = int(match["version"])
    if match["label"]:
        spec.version_label = match["label"]


def _to_dict(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _json_object(body: bytes) -> dict:
    try:
        request = json.loads(body or b"{}")
    except (ValueError, RecursionError) as err:
        raise invalid_argument(f"JSON Parse error: {err}") from err
    if not isinstance(request, dict):
        raise invalid_argument("the request body must be a JSON object")
    return request


def _signature_name(body: Mapping[str, Any]) -> str:
    name = body.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"'signature_name' must be a string, got {name!r}")
    return name


def _predict(
    servable, body: Mapping[str, Any], max_elements: int, request_log: RequestLogger | None
) -> dict:
    signature = servable.signature(_signature_name(body))
    if "instances" in body and "inputs" in body:
        raise invalid_argument("Request contains both 'instances' and 'inputs'; send one")
    if "instances" in body:
        raw, rows = _columns_from_rows(body["instances"], list(signature.inputs)), True
    elif "inputs" in body:
        raw, rows = _columns(body["inputs"], list(signature.inputs)), False
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    _check_value_count(raw, max_elements)
    inputs = {
        k: _array(k, v, signature.inputs[k].dtype) for k, v in raw.items() if k in signature.inputs
    }
    inputs.update({k: v for k, v in raw.items() if k not in signature.inputs})
    _, outputs = servable.run(signature.name, inputs)
    if request_log is not None:
        build = functools.partial(_predict_protos, servable, signature.name, inputs, outputs)
        request_log.log_later("Predict", build)
    values = {k: _jsonable(v) for k, v in outputs.items()}
    if rows:
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        count = len(next(iter(values.values())))
        return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(count)]}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


def _predict_protos(
    servable, signature_name: str, inputs: Mapping[str, np.ndarray], outputs
) -> tuple[predict_pb2.PredictRequest, predict_pb2.PredictResponse]:
    """The PredictRequest a REST predict amounts to, and its PredictResponse (for the log)."""
    request, response = predict_pb2.PredictRequest(), predict_pb2.PredictResponse()
    for spec in (request.model_spec, response.model_spec):
        spec.name = servable.name
        spec.signature_name = signature_name
    response.model_spec.version.value = servable.version
    for key, value in inputs.items():
        tensors.fill_proto(request.inputs[key], np.asarray(value))
    for key, value in outputs.items():
        tensors.fill_proto(response.outputs[key], value)
    return request, response


def _check_value_count(columns: Mapping[str, Any], max_elements: int) -> None:
    """Refuses more JSON values in all than `max_elements`, before any array is made."""
    count, pending = 0, list(columns.values())
    while pending:
        value = pending.pop()
        if isinstance(value, list):
            pending.extend(value)
            continue
        count += 1
        if count > max_elements:
            raise over_element_limit(f"more than {max_elements} values", max_elements)


def _columns_from_rows(instances: Any, input_names: list[str]) -> dict[str, list]:
    if not isinstance(instances, list) or not instances:
        raise invalid_argument("'instances' must be a non-empty list")
    named = all(isinstance(row, dict) and not _is_b64(row) for row in instances)
    if not named:
        if len(input_names) != 1:
            raise invalid_argument(
                f"the signature has inputs {input_names}; each instance must be an object naming them"
            )
        return {input_names[0]: instances}
    keys = set(instances[0])
    if any(set(row) != keys for row in instances):
        raise invalid_argument("all instances must name the same inputs")
    return {key: [row[key] for row in instances] for key in keys}


def _columns(inputs: Any, input_names: list[str]) -> dict[str, Any]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return inputs
    if len(input_names) != 1:
        raise invalid_argument(f"the signature has inputs {input_names}; 'inputs' must name them")
    return {input_names[0]: inputs}


def _array(key: str, value: Any, dtype: tf.DType) -> np.ndarray:
    try:
        if dtype == tf.string:
            return np.array(_decode_strings(value), dtype=object)
        return np.array(value, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError, RecursionError) as err:
        raise invalid_argument(f"input '{key}' cannot be read as {dtype.name}: {err}") from err


def _decode_strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if _is_b64(value):
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected a string or {{'b64': ...}}, got {value!r}")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object:
        return np.vectorize(_text, otypes=[object])(array).tolist()
    return array.tolist()


def _text(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}


def _examples_input(body: Mapping[str, Any], max_examples: int) -> input_pb2.Input:
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid_argument("'examples' must be a non-empty list of feature objects")
    if len(examples) > max_examples:
        raise over_element_limit(f"{len(examples)} examples", max_examples)
    result = input_pb2.Input()
    try:
        built = [make_example(e) for e in examples]
        if "context" in body:
            target = result.example_list_with_context
            target.context.CopyFrom(make_example(body["context"]))
        else:
            target = result.example_list
    except (ValueError, TypeError, AttributeError) as err:
        raise invalid_argument(f"cannot make tf.Examples from the request: {err}") from err
    target.examples.extend(built)
    return result
