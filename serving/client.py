"""A client for TF Serving's gRPC API; works against tensorflow_model_server and the embedded server.

    with ServingClient("127.0.0.1:8500") as client:
        client.classify("penguins", [{"bill_length_mm": 39.1, "island": "Torgersen", ...}])

One channel per client, a deadline on every call, and retries with exponential backoff on
UNAVAILABLE only (anything else is the caller's or the model's problem and is raised at once).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.examples import make_example

DEFAULT_ADDRESS = "127.0.0.1:8500"
DEFAULT_SIGNATURE = "serving_default"
RAW_SIGNATURE = "serving_raw"
# The pushed model's signatures marked with TF Serving's classify/regress methods
# (models.export): the real server's Classify/Regress take no other kind.
CLASSIFY_SIGNATURE = "classification"
REGRESS_SIGNATURE = "regression"
# Cells read as a missing number, as the pipeline's CSV reading does.
_MISSING = ("", None, "NA", "NaN", "nan", "null")


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """TLS for the channel: the CA bundle, optionally a client certificate for mutual TLS."""

    root_certificates: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    server_name_override: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Returns channel credentials read from the configured files."""

        def read(path):
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.root_certificates),
            private_key=read(self.client_key),
            certificate_chain=read(self.client_certificate),
        )


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE: attempts in all, and the exponential backoff between them."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0


class ServingClient:
    """TF Serving's PredictionService and ModelService over one reused channel."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        tls: TlsConfig | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
    ):
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            if tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", tls.server_name_override))
            self._channel = grpc.secure_channel(address, tls.credentials(), options=options)
        self.address = address
        self._timeout_s = timeout_s
        self._retry = retry
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signature_cache: dict[tuple[str, str], Any] = {}

    def predict(
        self,
        model_name: str,
        inputs: Mapping[str, Any],
        *,
        signature_name: str = DEFAULT_SIGNATURE,
        version: int | None = None,
        version_label: str = "",
        output_filter: Iterable[str] = (),
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Calls Predict with `inputs` (arrays, lists or TensorProtos) and returns the outputs.

        Arrays are sent with their own dtype; the server rejects one the signature does not take.
        """
        request = predict_pb2.PredictRequest()
        _fill_spec(request.model_spec, model_name, signature_name, version, version_label)
        for key, value in inputs.items():
            proto = (
                value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
            )
            request.inputs[key].CopyFrom(proto)
        request.output_filter.extend(output_filter)
        response = self._call(self._prediction.Predict, request, timeout_s)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def predict_rows(
        self,
        model_name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        signature_name: str = RAW_SIGNATURE,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Predicts on raw feature rows through a signature taking named tensors (serving_raw).

        Each column is cast to the dtype the signature declares, read from GetModelMetadata once.

        Raises:
          ValueError: a row lacks an input of the signature, or has a value that is not of the
            input's type (the message names the row, counted from 0, and the feature).
        """
        signature = self.signature(model_name, signature_name, version=version)
        _check_features(rows, sorted(signature.inputs), f"signature {signature_name}")
        columns = {}
        for key, info in signature.inputs.items():
            dtype = tf.dtypes.as_dtype(info.dtype)
            columns[key] = _column(key, [row[key] for row in rows], dtype)
        return self.predict(
            model_name, columns, signature_name=signature_name, version=version, timeout_s=timeout_s
        )

    def predict_examples(
        self,
        model_name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        signature_name: str = DEFAULT_SIGNATURE,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Predicts on raw feature rows sent as serialized tf.Examples (serving_default).

        Values map as `make_example` maps them: bytes (an image file's) go to bytes_list.

        Raises:
          ValueError: the signature does not take one string tensor, or a row has a value with
            no tf.Example encoding.
        """
        signature = self.signature(model_name, signature_name, version=version)
        inputs = list(signature.inputs.items())
        if len(inputs) != 1 or inputs[0][1].dtype != tf.string.as_datatype_enum:
            raise ValueError(
                f"signature {signature_name} takes {', '.join(sorted(signature.inputs))}, "
                "not one tensor of serialized tf.Examples"
            )
        serialized = [example.SerializeToString() for example in _examples(rows, ())]
        return self.predict(
            model_name,
            {inputs[0][0]: tf.make_tensor_proto(serialized, dtype=tf.string)},
            signature_name=signature_name,
            version=version,
            timeout_s=timeout_s,
        )

    def classify(
        self,
        model_name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        float_features: Iterable[str] = (),
        signature_name: str = CLASSIFY_SIGNATURE,
        version: int | None = None,
        version_label: str = "",
        timeout_s: float | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Classifies raw feature rows (turned into tf.Examples); returns (label, score) per class."""
        request = classification_pb2.ClassificationRequest()
        _fill_spec(request.model_spec, model_name, signature_name, version, version_label)
        request.input.example_list.examples.extend(_examples(rows, float_features))
        response = self._call(self._prediction.Classify, request, timeout_s)
        return [
            [(c.label, c.score) for c in row.classes] for row in response.result.classifications
        ]

    def regress(
        self,
        model_name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        float_features: Iterable[str] = (),
        signature_name: str = REGRESS_SIGNATURE,
        version: int | None = None,
        version_label: str = "",
        timeout_s: float | None = None,
    ) -> list[float]:
        """Regresses raw feature rows (turned into tf.Examples); returns one value per row."""
        request = regression_pb2.RegressionRequest()
        _fill_spec(request.model_spec, model_name, signature_name, version, version_label)
        request.input.example_list.examples.extend(_examples(rows, float_features))
        response = self._call(self._prediction.Regress, request, timeout_s)
        return [r.value for r in response.result.regressions]

    def get_model_metadata(
        self, model_name: str, *, version: int | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Returns the model's SignatureDefs by signature name."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        _fill_spec(request.model_spec, model_name, "", version, "")
        request.metadata_field.append("signature_def")
        response = self._call(self._prediction.GetModelMetadata, request, timeout_s)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return dict(signatures.signature_def)

    def signature(self, model_name: str, signature_name: str, *, version: int | None = None):
        """Returns one SignatureDef of the model, cached per model and signature name.

        Raises:
          ValueError: the model has no such signature.
        """
        key = (model_name, signature_name)
        if key not in self._signature_cache or version is not None:
            signatures = self.get_model_metadata(model_name, version=version)
            if signature_name not in signatures:
                raise ValueError(
                    f"model {model_name} has no signature {signature_name!r}: {sorted(signatures)}"
                )
            self._signature_cache[key] = signatures[signature_name]
        return self._signature_cache[key]

    def get_model_status(
        self, model_name: str, *, version: int | None = None, timeout_s: float | None = None
    ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """Returns the status of each version of the model (or of `version`)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        _fill_spec(request.model_spec, model_name, "", version, "")
        response = self._call(self._models.GetModelStatus, request, timeout_s)
        return list(response.model_version_status)

    def wait_until_available(
        self, model_name: str, *, timeout_s: float = 60.0, version: int | None = None
    ) -> int:
        """Waits until a version (any, or `version`) is AVAILABLE and returns its number.

        Raises:
          TimeoutError: none became AVAILABLE in time; the message has the last status seen.
        """
        available = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
        deadline = time.monotonic() + timeout_s
        last: Any = "no answer"
        while time.monotonic() < deadline:
            try:
                statuses = self.get_model_status(model_name, version=version, timeout_s=2.0)
                last = statuses
                ready = [s.version for s in statuses if s.state == available]
                if ready:
                    return max(ready)
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    raise
                last = f"{err.code().name}: {err.details()}"
            time.sleep(0.1)
        raise TimeoutError(
            f"model {model_name} not AVAILABLE at {self.address} after {timeout_s}s: {last}"
        )

    def call(self, method: str, request, *, timeout_s: float | None = None):
        """Sends a ready-made request proto to TF Serving's RPC `method` (e.g. "Predict").

        Raises:
          ValueError: an unknown method name.
          grpc.RpcError: the call failed (after retries, if UNAVAILABLE).
        """
        stub = (
            self._models
            if method in ("GetModelStatus", "HandleReloadConfigRequest")
            else self._prediction
        )
        if not hasattr(stub, method):
            raise ValueError(f"TF Serving has no RPC {method!r}")
        return self._call(getattr(stub, method), request, timeout_s)

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout_s: float | None):
        """Calls `method` within the deadline, retrying UNAVAILABLE with jittered backoff."""
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        backoff = self._retry.initial_backoff_s
        for attempt in range(1, self._retry.max_attempts + 1):
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.001))
            except grpc.RpcError as err:
                pause = min(backoff * random.uniform(0.5, 1.0), deadline - time.monotonic())
                retryable = err.code() == grpc.StatusCode.UNAVAILABLE and pause > 0
                if not retryable or attempt == self._retry.max_attempts:
                    raise
            time.sleep(pause)
            backoff = min(backoff * 2, self._retry.max_backoff_s)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _fill_spec(spec, name: str, signature_name: str, version: int | None, label: str) -> None:
    spec.name = name
    if signature_name:
        spec.signature_name = signature_name
    if version is not None:
        spec.version.value = version
    if label:
        spec.version_label = label


def _check_features(rows: Sequence[Mapping[str, Any]], needed: list[str], needer: str) -> None:
    """Raises ValueError naming the features `needer` needs that rows lack, and the first row."""
    for index, row in enumerate(rows):
        missing = [key for key in needed if key not in row]
        if missing:
            everywhere = all(key not in other for other in rows for key in missing)
            where = "any row" if everywhere else f"row {index}"
            raise ValueError(
                f"no feature {', '.join(map(repr, missing))} in {where}; {needer} needs "
                f"{', '.join(needed)}"
            )


def _column(key: str, values: list, dtype: tf.DType):
    """Returns `values` as a TensorProto of `dtype`.

    Missing numbers ("", None, NA) become NaN for floats; integers must all be present.
    """
    if dtype == tf.string:
        return tf.make_tensor_proto(
            [v if isinstance(v, bytes) else str(v).encode() for v in values]
        )
    if not (dtype.is_floating or dtype.is_integer):
        raise ValueError(f"feature {key!r} is a {dtype.name} input, which rows cannot fill")
    numbers = []
    for index, value in enumerate(values):
        try:
            numbers.append(_number(value, dtype))
        except (TypeError, ValueError) as err:
            kind = "a number" if dtype.is_floating else "an integer"
            raise ValueError(f"row {index}: feature {key!r} must be {kind}, got {value!r}") from err
    try:
        return tf.make_tensor_proto(numbers, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"feature {key!r} does not fit {dtype.name}: {err}") from err


def _number(value: Any, dtype: tf.DType) -> float | int:
    if dtype.is_floating:
        return float("nan") if value in _MISSING else float(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def _examples(rows: Sequence[Mapping[str, Any]], float_features: Iterable[str]) -> list:
    floats = tuple(float_features)
    return [make_example(row, floats) for row in rows]


def explain_rows(
    model_dir: str, rows: Sequence[Mapping[str, Any]], steps: int | None = None
) -> list[dict[str, Any]]:
    """Integrated gradients of raw rows against a pushed model, without a server.

    The pushed model carries its explainer (the float Keras model the served one was made
    from, and the transform graph) in `assets.extra/explainer/`; see
    components/explanations/bundle.py.

    Args:
      model_dir: the serving directory (its newest version is used), a version directory,
        or an explainer bundle.
      rows: raw feature name -> value, as `predict_rows` takes them (CSV text is parsed).
      steps: integration steps; None for the pipeline's.

    Returns:
      Per row: "explained" (the predicted class, or "output"), "output", "baseline_output",
      "completeness_error" and "attributions" [{"feature", "attribution"}], largest first;
      with text features also "tokens": feature -> [{"token", "score"}], largest |score|
      first.

    Raises:
      FileNotFoundError: no explainer bundle in `model_dir`.
      ValueError: a row lacks a feature or has a value of the wrong kind.
    """
    # The explainer needs TF Transform and the models package, which serving does not.
    from components.explanations import bundle

    return bundle.explain_rows(bundle.load(bundle.locate(model_dir)), rows, steps)
