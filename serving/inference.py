"""TF Serving's Predict, Classify, Regress and MultiInference on a loaded servable.

Shared by the gRPC service, the REST API and warmup replay, so all three behave the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import tensors
from serving.config import RequestLimits
from serving.errors import invalid_argument, over_element_limit
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


def _check_tensor_sizes(inputs: Mapping[str, tensor_pb2.TensorProto], max_elements: int) -> None:
    """Refuses tensors that would expand to too many elements, before any is allocated.

    A TensorProto may carry fewer values than its shape (TensorFlow repeats the last one), so a
    few bytes can declare millions of elements. Every fully written tensor carries at least one
    byte per element, and a tensor may declare no more elements than that.

    Raises:
      ServingError: INVALID_ARGUMENT for a negative dimension, a tensor declaring more elements
        than it has bytes, or more than `max_elements` elements in all.
    """
    total = 0
    for key, proto in inputs.items():
        dims = [d.size for d in proto.tensor_shape.dim]
        if any(size < 0 for size in dims):
            raise invalid_argument(f"input '{key}' has a negative dimension: {dims}")
        count = math.prod(dims)
        # The first test is cheap and passes every dense tensor_content or string_val tensor.
        if count > len(proto.tensor_content) + len(proto.string_val) and count > proto.ByteSize():
            raise invalid_argument(
                f"input '{key}' declares shape {dims} ({count} elements) but carries "
                f"{proto.ByteSize()} bytes; send its values: a tensor may declare at most one "
                "element per byte it carries"
            )
        total += count
    if total > max_elements:
        raise over_element_limit(f"{total} tensor elements", max_elements)


def predict(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    limits: RequestLimits | None = None,
) -> predict_pb2.PredictResponse:
    """Answers a PredictRequest with `servable`, first checking it against `limits` if given.

    Raises:
      ServingError: the request is invalid or over `limits`, or the model failed.
    """
    if limits is not None:
        _check_tensor_sizes(request.inputs, limits.max_elements)
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
    servable: Servable,
    request: classification_pb2.ClassificationRequest,
    limits: RequestLimits | None = None,
) -> classification_pb2.ClassificationResponse:
    """Answers a ClassificationRequest with a signature that outputs `classes` and/or `scores`."""
    signature, outputs = _run_on_examples(
        servable, request.model_spec.signature_name, request.input, (CLASSES, SCORES), limits
    )
    response = classification_pb2.ClassificationResponse()
    _fill_model_spec(response.model_spec, servable, signature.name)
    _fill_classifications(response.result, outputs)
    return response


def regress(
    servable: Servable,
    request: regression_pb2.RegressionRequest,
    limits: RequestLimits | None = None,
) -> regression_pb2.RegressionResponse:
    """Answers a RegressionRequest with a signature that outputs `outputs` [N] or [N, 1]."""
    signature, outputs = _run_on_examples(
        servable, request.model_spec.signature_name, request.input, (OUTPUTS,), limits
    )
    response = regression_pb2.RegressionResponse()
    _fill_model_spec(response.model_spec, servable, signature.name)
    _fill_regressions(response.result, outputs[OUTPUTS])
    return response


def multi_inference(
    servable: Servable,
    request: inference_pb2.MultiInferenceRequest,
    limits: RequestLimits | None = None,
) -> inference_pb2.MultiInferenceResponse:
    """Runs every classify/regress task of `request` on the same examples of one model.

    Raises:
      ServingError: INVALID_ARGUMENT for tasks naming another model or, as in TF Serving, the
        same signature twice (so tasks cannot multiply the work of one request).
    """
    response = inference_pb2.MultiInferenceResponse()
    signatures = [servable.signature(t.model_spec.signature_name).name for t in request.tasks]
    repeated = sorted({name for name in signatures if signatures.count(name) > 1})
    if repeated:
        raise invalid_argument(f"Duplicate evaluation of signature: {', '.join(repeated)}")
    for task in request.tasks:
        if task.model_spec.name != servable.name:
            raise invalid_argument("all tasks of a MultiInferenceRequest must name the same model")
        result = response.results.add()
        if task.method_name == "tensorflow/serving/classify":
            sig, out = _run_on_examples(
                servable, task.model_spec.signature_name, request.input, (CLASSES, SCORES), limits
            )
            _fill_classifications(result.classification_result, out)
        elif task.method_name == "tensorflow/serving/regress":
            sig, out = _run_on_examples(
                servable, task.model_spec.signature_name, request.input, (OUTPUTS,), limits
            )
            _fill_regressions(result.regression_result, out[OUTPUTS])
        else:
            raise invalid_argument(
                f"unsupported method_name {task.method_name!r}; expected "
                "tensorflow/serving/classify or tensorflow/serving/regress"
            )
        _fill_model_spec(result.model_spec, servable, sig.name)
    return response


def serialized_examples(proto: input_pb2.Input, limits: RequestLimits | None = None) -> list[bytes]:
    """Returns the serialized tf.Examples of an Input, each merged with the context if any.

    Raises:
      ServingError: INVALID_ARGUMENT for an empty Input, or one over `limits` (if given).
    """
    if limits is not None:
        _check_examples_size(proto, limits)
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


def _check_examples_size(proto: input_pb2.Input, limits: RequestLimits) -> None:
    """Refuses more examples than `limits` allow, or a context that merges into too many bytes."""
    with_context = proto.WhichOneof("kind") == "example_list_with_context"
    examples = (proto.example_list_with_context if with_context else proto.example_list).examples
    if len(examples) > limits.max_elements:
        raise over_element_limit(f"{len(examples)} examples", limits.max_elements)
    if with_context:
        merged = len(examples) * proto.example_list_with_context.context.ByteSize()
        if merged > limits.max_bytes:
            raise invalid_argument(
                f"the context merged into each of the {len(examples)} examples makes {merged} "
                f"bytes; this server takes at most {limits.max_bytes} bytes per request"
            )


def _run_on_examples(
    servable: Servable,
    signature_name: str,
    examples: input_pb2.Input,
    wanted: tuple[str, ...],
    limits: RequestLimits | None,
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
    records = serialized_examples(examples, limits)
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
