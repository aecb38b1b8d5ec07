"""Infra validation: does a candidate SavedModel load in a model server and answer its warmup?

The candidate is served by a real server process (tensorflow_model_server when on PATH, else
the embedded server) on a free loopback port, exactly as it will be after the push.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import portpicker
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2

from serving import warmup
from serving.cli import REAL_SERVER, serve_command
from serving.client import RetryPolicy, ServingClient

State = get_model_status_pb2.ModelVersionStatus.State
_REQUEST_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """The outcome of validate_model; `reason` says why it passed or failed."""

    passed: bool
    reason: str
    model_name: str
    server: str
    seconds: float
    load_seconds: float | None = None
    requests_sent: int = 0

    def to_dict(self) -> dict:
        """Returns the result as a JSON-ready dict."""
        return dataclasses.asdict(self)


class _Failed(Exception):
    """The candidate failed validation; the message is the reason."""


def validate_model(
    saved_model_dir: str, model_name: str, timeout_s: float = 60
) -> ValidationResult:
    """Serves `saved_model_dir` as version 1 of `model_name` and replays its warmup requests.

    Args:
      saved_model_dir: the candidate SavedModel, with assets.extra/tf_serving_warmup_requests.
      model_name: the name to serve it under.
      timeout_s: how long loading may take.

    Returns:
      passed=True when the model became AVAILABLE and every warmup answer was well formed;
      otherwise passed=False with the reason. A bad model never raises.
    """
    if not model_name or not isinstance(model_name, str):
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    binary = shutil.which(REAL_SERVER)
    server = REAL_SERVER if binary else "embedded"
    started = time.monotonic()
    outcome: dict = {}
    with tempfile.TemporaryDirectory(prefix="infra-validation-") as workdir:
        try:
            logs = _warmup_logs(saved_model_dir)
            base_path = _stage(saved_model_dir, workdir, model_name)
            _serve_and_check(base_path, model_name, logs, workdir, timeout_s, outcome)
            passed = True
            reason = f"AVAILABLE after {outcome['load_seconds']:.1f}s; {len(logs)} warmup answers well formed"
        except _Failed as err:
            passed, reason = False, str(err)
    return ValidationResult(
        passed=passed,
        reason=reason,
        model_name=model_name,
        server=server,
        seconds=round(time.monotonic() - started, 3),
        load_seconds=outcome.get("load_seconds"),
        requests_sent=outcome.get("requests_sent", 0),
    )


def _warmup_logs(saved_model_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    if not tf.io.gfile.exists(os.path.join(saved_model_dir, "saved_model.pb")):
        raise _Failed(f"{saved_model_dir} holds no saved_model.pb")
    try:
        return warmup.read_warmup_requests(saved_model_dir)
    except warmup.WarmupError as err:
        raise _Failed(str(err)) from err


def _stage(saved_model_dir: str, workdir: str, model_name: str) -> str:
    """Lays the candidate out as TF Serving expects, <base>/<name>/1/, and returns the base path."""
    base_path = os.path.join(workdir, "models", model_name)
    os.makedirs(base_path)
    version_dir = os.path.join(base_path, "1")
    if "://" in saved_model_dir:
        _copy_tree(saved_model_dir, version_dir)
    else:
        os.symlink(os.path.abspath(saved_model_dir), version_dir)
    return base_path


def _copy_tree(source: str, target: str) -> None:
    for directory, _, files in tf.io.gfile.walk(source):
        relative = os.path.relpath(directory, source)
        tf.io.gfile.makedirs(os.path.join(target, relative))
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, relative, name))


def _serve_and_check(base_path, model_name, logs, workdir, timeout_s, outcome) -> None:
    port = portpicker.pick_unused_port()
    log_path = Path(workdir, "server.log")
    command = serve_command(model_name, base_path, port)
    env = dict(os.environ, PYTHONPATH=_package_root())
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            with ServingClient(
                f"127.0.0.1:{port}", timeout_s=_REQUEST_TIMEOUT_S, retry=RetryPolicy(max_attempts=1)
            ) as client:
                started = time.monotonic()
                _wait_available(client, model_name, process, log_path, timeout_s)
                outcome["load_seconds"] = round(time.monotonic() - started, 3)
                outputs = _signature_outputs(client, model_name)
                for index, log in enumerate(logs):
                    _check_answer(index, _send(client, log, model_name, outcome), outputs)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _package_root() -> str:
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root


def _wait_available(client, model_name, process, log_path, timeout_s) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _Failed(f"server exited with code {process.returncode}: {_tail(log_path)}")
        try:
            statuses = client.get_model_status(model_name, timeout_s=2.0)
        except grpc.RpcError as err:
            if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                raise _Failed(f"GetModelStatus failed: {err.code().name}: {err.details()}") from err
            last = f"{err.code().name}: {err.details()}"
        else:
            last = "; ".join(f"v{s.version} {State.Name(s.state)}" for s in statuses) or last
            if any(s.state == State.AVAILABLE for s in statuses):
                return
            errors = [s.status.error_message for s in statuses if s.status.error_message]
            if errors:
                raise _Failed(f"model failed to load: {errors[0]}")
        time.sleep(0.1)
    raise _Failed(
        f"model not AVAILABLE after {timeout_s}s (last status: {last}); {_tail(log_path)}"
    )


def _tail(log_path: Path, lines: int = 5) -> str:
    text = log_path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) if text else "no server output"


def _signature_outputs(client: ServingClient, model_name: str) -> dict[str, set[str]]:
    try:
        signatures = client.get_model_metadata(model_name)
    except grpc.RpcError as err:
        raise _Failed(f"GetModelMetadata failed: {err.code().name}: {err.details()}") from err
    return {name: set(sig.outputs) for name, sig in signatures.items()}


def _send(client: ServingClient, log, model_name: str, outcome: dict):
    kind = log.WhichOneof("log_type")
    request = getattr(log, kind).request
    methods = {
        "predict_log": "Predict",
        "classify_log": "Classify",
        "regress_log": "Regress",
        "multi_inference_log": "MultiInference",
    }
    if kind not in methods:
        raise _Failed(f"warmup record has unsupported log type {kind!r}")
    for spec in [getattr(request, "model_spec", None)] + [
        t.model_spec for t in getattr(request, "tasks", [])
    ]:
        if spec is not None:
            spec.name = model_name
    outcome["requests_sent"] = outcome.get("requests_sent", 0) + 1
    try:
        return kind, request, client.call(methods[kind], request, timeout_s=_REQUEST_TIMEOUT_S)
    except grpc.RpcError as err:
        raise _Failed(
            f"warmup request {outcome['requests_sent'] - 1} ({kind}) failed: "
            f"{err.code().name}: {err.details()}"
        ) from err


def _check_answer(index: int, sent, outputs: dict[str, set[str]]) -> None:
    kind, request, response = sent
    where = f"warmup request {index} ({kind})"
    if kind == "predict_log":
        signature = request.model_spec.signature_name or "serving_default"
        expected = set(request.output_filter) or outputs.get(signature, set())
        if set(response.outputs) != expected:
            raise _Failed(
                f"{where}: outputs {sorted(response.outputs)}, expected {sorted(expected)}"
            )
        rows = {tf.TensorShape(t.tensor_shape).as_list()[0] for t in request.inputs.values()}
        for key, proto in response.outputs.items():
            _check_tensor(where, key, tf.make_ndarray(proto), rows)
    elif kind == "classify_log":
        scores = [c.score for row in response.result.classifications for c in row.classes]
        _check_tensor(where, "scores", np.array(scores), None)
    elif kind == "regress_log":
        _check_tensor(
            where, "outputs", np.array([r.value for r in response.result.regressions]), None
        )


def _check_tensor(where: str, key: str, value: np.ndarray, rows: set | None) -> None:
    if rows and len(rows) == 1 and (value.ndim == 0 or value.shape[0] != next(iter(rows))):
        raise _Failed(
            f"{where}: output {key!r} has shape {list(value.shape)} for {rows.pop()} rows"
        )
    if value.dtype.kind == "f" and not all(math.isfinite(v) for v in value.ravel()):
        raise _Failed(f"{where}: output {key!r} is not finite: {value.ravel()[:6].tolist()}")
    if key == "scores" and value.size and (value.min() < 0 or value.max() > 1):
        raise _Failed(f"{where}: scores outside [0, 1]: {value.ravel()[:6].tolist()}")
