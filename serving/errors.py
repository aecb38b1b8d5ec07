"""Errors the model server returns, with TF Serving's status codes."""

from __future__ import annotations

import grpc

# TF Serving's REST front end turns a canonical status into this HTTP code.
_HTTP_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request failed; `code` is the canonical status the client receives."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers with for this error."""
        return _HTTP_CODES.get(self.code, 500)


def invalid_argument(message: str) -> ServingError:
    """Returns an INVALID_ARGUMENT error with `message`."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """Returns a NOT_FOUND error with `message`."""
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def status_code_from_number(number: int) -> grpc.StatusCode:
    """Returns the gRPC status for a canonical error number (TF's OpError codes share them)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
