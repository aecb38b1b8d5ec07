"""SavedModel warmup requests: assets.extra/tf_serving_warmup_requests, as TF Serving reads it.

The file is a TFRecord of tensorflow.serving.PredictionLog records. TF Serving replays them when
it loads a version, before the version becomes AVAILABLE; the embedded server does the same.
"""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving import inference
from serving.servable import Servable

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# TF Serving refuses to load a model whose warmup file holds more records than this.
MAX_WARMUP_RECORDS = 1000
DEFAULT_NUM_REQUESTS = 16


class WarmupError(RuntimeError):
    """A warmup file is unreadable or one of its requests failed."""


def warmup_path(saved_model_dir: str) -> str:
    """Returns where the warmup file of `saved_model_dir` lives."""
    return os.path.join(saved_model_dir, WARMUP_FILE)


def write_warmup_requests(
    saved_model_dir: str,
    serialized_examples: list[bytes],
    model_name: str,
    signature_name: str = "serving_default",
    num_requests: int = DEFAULT_NUM_REQUESTS,
) -> str:
    """Writes batch-1 Predict requests made from `serialized_examples` as the model's warmup file.

    Args:
      saved_model_dir: the SavedModel (local or any filesystem TF reads, e.g. gs://).
      serialized_examples: serialized tf.Examples with raw features, e.g. from the eval split.
      model_name: the name the requests address (TF Serving ignores it when warming up).
      signature_name: a signature with one string input, the serialized examples.
      num_requests: how many requests to write; examples are reused if there are fewer.

    Returns:
      The path of the warmup file written.

    Raises:
      ValueError: no examples, a bad count, or the signature does not take one string input.
    """
    if not serialized_examples:
        raise ValueError(f"no examples to make warmup requests for {saved_model_dir}")
    if not 1 <= num_requests <= MAX_WARMUP_RECORDS:
        raise ValueError(f"num_requests must be in [1, {MAX_WARMUP_RECORDS}], got {num_requests}")
    input_key = _examples_input_key(saved_model_dir, signature_name)
    path = warmup_path(saved_model_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for index in range(num_requests):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            example = serialized_examples[index % len(serialized_examples)]
            request.inputs[input_key].CopyFrom(tf.make_tensor_proto([example], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    """Returns the warmup records of `saved_model_dir`, or [] when it has no warmup file.

    Raises:
      WarmupError: the file is not a TFRecord of PredictionLogs or has too many records.
    """
    path = warmup_path(saved_model_dir)
    if not tf.io.gfile.exists(path):
        return []
    logs = []
    try:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            logs.append(prediction_log_pb2.PredictionLog.FromString(record))
    except Exception as err:
        raise WarmupError(f"cannot read warmup file {path}: {err}") from err
    if len(logs) > MAX_WARMUP_RECORDS:
        raise WarmupError(f"{path} has {len(logs)} records; at most {MAX_WARMUP_RECORDS} allowed")
    return logs


def replay(servable: Servable, logs: list[prediction_log_pb2.PredictionLog]) -> None:
    """Runs every warmup request against `servable`, whatever model name the requests carry.

    Raises:
      WarmupError: a request failed; the message names the record and the error.
    """
    handlers = {
        "predict_log": inference.predict,
        "classify_log": inference.classify,
        "regress_log": inference.regress,
        "multi_inference_log": inference.multi_inference,
    }
    for index, log in enumerate(logs):
        kind = log.WhichOneof("log_type")
        if kind not in handlers:
            raise WarmupError(f"warmup record {index} has unsupported log type {kind!r}")
        request = getattr(log, kind).request
        request.model_spec.name = servable.name
        for task in getattr(request, "tasks", ()):
            task.model_spec.name = servable.name
        try:
            handlers[kind](servable, request)
        except Exception as err:
            raise WarmupError(f"warmup request {index} ({kind}) failed: {err}") from err


def _examples_input_key(saved_model_dir: str, signature_name: str) -> str:
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    signatures = saved_model.meta_graphs[0].signature_def
    if signature_name not in signatures:
        raise ValueError(
            f"{saved_model_dir} has no signature {signature_name!r}: {sorted(signatures)}"
        )
    inputs = signatures[signature_name].inputs
    if len(inputs) != 1 or next(iter(inputs.values())).dtype != tf.string.as_datatype_enum:
        raise ValueError(
            f"signature {signature_name!r} of {saved_model_dir} does not take serialized examples"
        )
    return next(iter(inputs))
