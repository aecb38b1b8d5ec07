"""TF Serving's Predict, Classify, Regress and MultiInference on a loaded servable.

Shared by the gRPC service, the REST API and warmup replay, so all three behave the same.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import tensors
from serving.errors import invalid_argument
from serving.servable import Servable, Signature

CLASSES, SCORES, OUTPUTS = "classes", "scores", "outputs"


def tensor_to_array(key: str, proto) -> np.ndarray:
    """Returns the numpy value of TensorProto `proto` sent as input `key`.

    Raises:
      ServingError: INVALID_ARGUMENT when the proto is malformed (e.g. content does not fit shape).
    """
    try:
        return tensors.to_array(proto)
    except (ValueError, TypeError) as err:
        raise invalid_argument(f"input '{key}' is not a valid tensor: {err}") from err


def predict(servable: Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Answers a PredictRequest with `servable`."""
    inputs = {key: tensor_to_array(key, proto) for key, proto in request.inputs.items()}
    signature, outputs = servable.run(
        request.model_spec.signature_name, inputs, request.output_filter
    )
    response = predict_pb2.PredictResponse()
    _fill_model_spec(response.model_spec, servable, signature.name)
    for key, value in outputs.items():
        tensors.fill_proto(response.outputs[key], value)
    return response


def classify(
    servable: Servable, request: classification_pb2.ClassificationRequest
) -> classification_pb2.ClassificationResponse:
    """Answers a ClassificationRequest with a signature that outputs `classes` and/or `scores`."""
    signature, outputs = _run_on_examples(
        servable, request.model_spec.signature_name, request.input, (CLASSES, SCORES)
    )
    response = classification_pb2.ClassificationResponse()
    _fill_model_spec(response.model_spec, servable, signature.name)
    _fill_classifications(response.result, outputs)
    return response


def regress(
    servable: Servable, request: regression_pb2.RegressionRequest
) -> regression_pb2.RegressionResponse:
    """Answers a RegressionRequest with a signature that outputs `outputs` [N] or [N, 1]."""
    signature, outputs = _run_on_examples(
        servable, request.model_spec.signature_name, request.input, (OUTPUTS,)
    )
    response = regression_pb2.RegressionResponse()
    _fill_model_spec(response.model_spec, servable, signature.name)
    _fill_regressions(response.result, outputs[OUTPUTS])
    return response


def multi_inference(
    servable: Servable, request: inference_pb2.MultiInferenceRequest
) -> inference_pb2.MultiInferenceResponse:
    """Runs every classify/regress task of `request` on the same examples of one model."""
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        if task.model_spec.name != servable.name:
            raise invalid_argument("all tasks of a MultiInferenceRequest must name the same model")
        result = response.results.add()
        if task.method_name == "tensorflow/serving/classify":
            sig, out = _run_on_examples(
                servable, task.model_spec.signature_name, request.input, (CLASSES, SCORES)
            )
            _fill_classifications(result.classification_result, out)
        elif task.method_name == "tensorflow/serving/regress":
            sig, out = _run_on_examples(
                servable, task.model_spec.signature_name, request.input, (OUTPUTS,)
            )
            _fill_regressions(result.regression_result, out[OUTPUTS])
        else:
            raise invalid_argument(
                f"unsupported method_name {task.method_name!r}; expected "
                "tensorflow/serving/classify or tensorflow/serving/regress"
            )
        _fill_model_spec(result.model_spec, servable, sig.name)
    return response


def serialized_examples(proto: input_pb2.Input) -> list[bytes]:
    """Returns the serialized tf.Examples of an Input, each merged with the context if any."""
    kind = proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in proto.example_list.examples]
    if kind == "example_list_with_context":
        context = proto.example_list_with_context.context
        merged = []
        for example in proto.example_list_with_context.examples:
            combined = type(example)()
            combined.CopyFrom(context)
            combined.MergeFrom(example)
            merged.append(combined.SerializeToString())
        return merged
    raise invalid_argument("Input is empty: expected example_list or example_list_with_context")


def _run_on_examples(
    servable: Servable, signature_name: str, examples: input_pb2.Input, wanted: tuple[str, ...]
) -> tuple[Signature, dict[str, np.ndarray]]:
    signature = servable.signature(signature_name)
    if len(signature.inputs) != 1 or next(iter(signature.inputs.values())).dtype != tf.string:
        raise invalid_argument(
            f"signature {signature.name} does not take serialized tf.Examples "
            f"(inputs {sorted(signature.inputs)}); use Predict or a signature with one string input"
        )
    present = tuple(key for key in wanted if key in signature.outputs)
    if not present:
        raise invalid_argument(
            f"signature {signature.name} has none of the outputs {list(wanted)} "
            f"(it has {sorted(signature.outputs)})"
        )
    records = serialized_examples(examples)
    if not records:
        raise invalid_argument("Input is empty: the example list has no examples")
    key = next(iter(signature.inputs))
    return servable.run(signature.name, {key: np.array(records, dtype=object)}, present)


def _fill_classifications(result, outputs: Mapping[str, np.ndarray]) -> None:
    scores = outputs.get(SCORES)
    classes = outputs.get(CLASSES)
    reference = scores if scores is not None else classes
    if reference.ndim != 2:
        raise invalid_argument(
            f"classification outputs must be [batch, classes], got {reference.shape}"
        )
    for row in range(reference.shape[0]):
        classifications = result.classifications.add()
        for column in range(reference.shape[1]):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = _text(classes[row, column])
            if scores is not None:
                entry.score = float(scores[row, column])


def _fill_regressions(result, values: np.ndarray) -> None:
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise invalid_argument(
            f"regression output must be [batch] or [batch, 1], got {values.shape}"
        )
    for value in values:
        result.regressions.add().value = float(value)


def _fill_model_spec(spec, servable: Servable, signature_name: str) -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    spec.signature_name = signature_name


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
