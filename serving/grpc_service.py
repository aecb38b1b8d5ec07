"""TF Serving's gRPC services (PredictionService, ModelService) over a ModelManager."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import grpc
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import inference
from serving.config import RequestLimits
from serving.errors import ServingError, invalid_argument, log_refusal
from serving.logging_requests import RequestLogger
from serving.manager import ModelManager
from serving.servable import Servable

_log = logging.getLogger(__name__)
SIGNATURE_DEF_FIELD = "signature_def"
# Each service's methods and their request protos, as in tensorflow_serving/apis/*_service.proto.
_REQUESTS = {
    "tensorflow.serving.PredictionService": {
        "Classify": classification_pb2.ClassificationRequest,
        "Regress": regression_pb2.RegressionRequest,
        "Predict": predict_pb2.PredictRequest,
        "MultiInference": inference_pb2.MultiInferenceRequest,
        "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest,
    },
    # HandleReloadConfigRequest is not served: gRPC answers UNIMPLEMENTED.
    "tensorflow.serving.ModelService": {
        "GetModelStatus": get_model_status_pb2.GetModelStatusRequest
    },
}


def _answers_with_status(method):
    """Turns a ServingError into the call's status; any other failure into INTERNAL."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as err:
            log_refusal(_log, method.__name__, err)
            context.abort(err.code, err.message)
        except Exception as err:  # noqa: BLE001 - the client must learn why, the server goes on
            _log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__} failed: {err}")

    return wrapper


def servable_for(manager: ModelManager, model_spec) -> Servable:
    """Returns the servable a request's ModelSpec names (version, label or latest)."""
    version = model_spec.version.value if model_spec.HasField("version") else None
    return manager.servable(model_spec.name, version, model_spec.version_label)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(
        self,
        manager: ModelManager,
        limits: RequestLimits,
        request_logs: Mapping[str, RequestLogger] | None = None,
    ):
        self._manager = manager
        self._limits = limits
        self._request_logs = request_logs or {}

    @_answers_with_status
    def Predict(self, request, context):
        servable = servable_for(self._manager, request.model_spec)
        response = inference.predict(servable, request, self._limits)
        return self._logged("Predict", servable, request, response)

    @_answers_with_status
    def Classify(self, request, context):
        servable = servable_for(self._manager, request.model_spec)
        response = inference.classify(servable, request, self._limits)
        return self._logged("Classify", servable, request, response)

    @_answers_with_status
    def Regress(self, request, context):
        servable = servable_for(self._manager, request.model_spec)
        response = inference.regress(servable, request, self._limits)
        return self._logged("Regress", servable, request, response)

    @_answers_with_status
    def MultiInference(self, request, context):
        if not request.tasks:
            raise invalid_argument("MultiInferenceRequest has no tasks")
        servable = servable_for(self._manager, request.tasks[0].model_spec)
        response = inference.multi_inference(servable, request, self._limits)
        return self._logged("MultiInference", servable, request, response)

    def _logged(self, method: str, servable: Servable, request, response):
        """Hands an answered request to its model's request log (if any); returns `response`."""
        request_log = self._request_logs.get(servable.name)
        if request_log is not None:
            request_log.log(method, request, response)
        return response

    @_answers_with_status
    def GetModelMetadata(self, request, context):
        return model_metadata(self._manager, request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService (status only; config reload is not supported)."""

    def __init__(self, manager: ModelManager):
        self._manager = manager

    @_answers_with_status
    def GetModelStatus(self, request, context):
        return model_status(self._manager, request)


def model_metadata(
    manager: ModelManager, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """Answers GetModelMetadata; like TF Serving, only the signature_def field is known."""
    fields = list(request.metadata_field)
    if fields != [SIGNATURE_DEF_FIELD]:
        raise invalid_argument(
            f'Metadata field {fields} is not supported; request ["{SIGNATURE_DEF_FIELD}"]'
        )
    servable = servable_for(manager, request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
    return response


def model_status(
    manager: ModelManager, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    """Answers GetModelStatus with the state of each version (or the one asked for)."""
    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    if spec.version_label:
        version = servable_for(manager, spec).version
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in manager.status(spec.name, version):
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = status.state
        entry.status.SetInParent()
        if status.error:
            entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            entry.status.error_message = status.error
    return response


def add_services(
    server: grpc.Server,
    manager: ModelManager,
    limits: RequestLimits,
    request_logs: Mapping[str, RequestLogger] | None = None,
) -> None:
    """Registers PredictionService and ModelService for `manager` on `server`; answered
    requests of the models in `request_logs` are logged there.

    Requests reach the servicers as bytes and are parsed there, so that bytes that are not the
    method's request proto get INVALID_ARGUMENT (gRPC's own parsing answers INTERNAL and logs
    a traceback for what is the client's error).
    """
    servicers = {
        "tensorflow.serving.PredictionService": PredictionService(manager, limits, request_logs),
        "tensorflow.serving.ModelService": ModelService(manager),
    }
    for service, servicer in servicers.items():
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                _parsing(getattr(servicer, name), name, request_class),
                response_serializer=lambda response: response.SerializeToString(),
            )
            for name, request_class in _REQUESTS[service].items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def _parsing(handler, name: str, request_class):
    """Wraps `handler` to take its request serialized; bytes that do not parse: INVALID_ARGUMENT."""

    def parse_and_handle(data: bytes, context):
        try:
            request = request_class.FromString(data)
        except DecodeError as err:
            refusal = invalid_argument(
                f"the request is not a serialized {request_class.DESCRIPTOR.full_name} "
                f"({len(data)} bytes): {err}"
            )
            log_refusal(_log, name, refusal)
            context.abort(refusal.code, refusal.message)
        return handler(request, context)

    return parse_and_handle
