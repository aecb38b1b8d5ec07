"""TF Serving's REST API (/v1/models/...) on the standard library's threaded HTTP server."""

from __future__ import annotations

import base64
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
    regression_pb2,
)

from serving import inference
from serving.errors import ServingError, invalid_argument, not_found
from serving.examples import make_example
from serving.grpc_service import SIGNATURE_DEF_FIELD, model_metadata, model_status
from serving.manager import ModelManager

_log = logging.getLogger(__name__)
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?$"
)


class RestServer:
    """Serves the REST API for `manager` on host:port in background threads."""

    def __init__(self, manager: ModelManager, host: str, port: int, max_request_bytes: int):
        handler = type("Handler", (_Handler,), {"manager": manager, "max_bytes": max_request_bytes})
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
    protocol_version = "HTTP/1.1"
    manager: ModelManager
    max_bytes: int

    def do_GET(self):  # noqa: N802 - the stdlib's naming
        self._answer(self._get)

    def do_POST(self):  # noqa: N802
        self._answer(self._post)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        _log.debug("%s %s", self.address_string(), format % args)

    def _answer(self, handle) -> None:
        try:
            match = _PATH.match(self.path)
            if not match:
                raise not_found(f"Malformed request: {self.command} {self.path}")
            status, body = HTTPStatus.OK, handle(match)
        except ServingError as err:
            status, body = err.http_status, {"error": err.message}
        except Exception as err:  # noqa: BLE001 - answer and keep serving
            _log.exception("REST %s %s failed", self.command, self.path)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(err)}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _get(self, match: re.Match) -> dict:
        if match["verb"]:
            raise invalid_argument(f"{match['verb']} needs POST")
        self._drain()
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

    def _post(self, match: re.Match) -> dict:
        body = self._json_body()
        if not match["verb"]:
            raise invalid_argument("POST needs :predict, :classify or :regress")
        version = int(match["version"]) if match["version"] else None
        servable = self.manager.servable(match["name"], version, match["label"] or "")
        if match["verb"] == "predict":
            return _predict(servable, body)
        request_type = (
            classification_pb2.ClassificationRequest
            if match["verb"] == "classify"
            else regression_pb2.RegressionRequest
        )
        request = request_type()
        request.model_spec.signature_name = body.get("signature_name", "")
        request.input.CopyFrom(_examples_input(body))
        if match["verb"] == "classify":
            result = inference.classify(servable, request).result
            return {
                "results": [
                    [[c.label, c.score] for c in row.classes] for row in result.classifications
                ]
            }
        return {
            "results": [r.value for r in inference.regress(servable, request).result.regressions]
        }

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _json_body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_bytes:
            self.close_connection = True
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {length} bytes exceeds the limit of {self.max_bytes} bytes",
            )
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as err:
            raise invalid_argument(f"JSON Parse error: {err}") from err
        if not isinstance(body, dict):
            raise invalid_argument("the request body must be a JSON object")
        return body


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


def _predict(servable, body: Mapping[str, Any]) -> dict:
    signature = servable.signature(body.get("signature_name", ""))
    if "instances" in body and "inputs" in body:
        raise invalid_argument("Request contains both 'instances' and 'inputs'; send one")
    if "instances" in body:
        raw, rows = _columns_from_rows(body["instances"], list(signature.inputs)), True
    elif "inputs" in body:
        raw, rows = _columns(body["inputs"], list(signature.inputs)), False
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    inputs = {
        k: _array(k, v, signature.inputs[k].dtype) for k, v in raw.items() if k in signature.inputs
    }
    inputs.update({k: v for k, v in raw.items() if k not in signature.inputs})
    _, outputs = servable.run(signature.name, inputs)
    values = {k: _jsonable(v) for k, v in outputs.items()}
    if rows:
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        count = len(next(iter(values.values())))
        return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(count)]}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


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
    except (ValueError, TypeError) as err:
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


def _examples_input(body: Mapping[str, Any]) -> input_pb2.Input:
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid_argument("'examples' must be a non-empty list of feature objects")
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
