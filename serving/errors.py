"""Errors the model server returns, with TF Serving's status codes."""

from __future__ import annotations

import logging
import re

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
# Codes a well-behaved client meets in passing (a model still loading, a full batch queue).
_ROUTINE = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
# What TensorFlow's ParseExample op says when a value is not a serialized tf.Example; the
# value is quoted raw and followed by the node ("\n\t [[...]]") or op (" [Op:...]") it ran in.
_NOT_AN_EXAMPLE = re.compile(
    r"Could not parse example input, value: '(?P<value>.*?)'?(?:\n\t \[\[| \[Op:|$)", re.DOTALL
)
_PREVIEW_CHARS = 40
# TF messages can quote whole inputs; gRPC clients refuse trailers over 8 KiB by default.
_MAX_MESSAGE_CHARS = 2000


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


def over_element_limit(what: str, limit: int) -> ServingError:
    """Returns the INVALID_ARGUMENT for a request that has `what` (e.g. "12 examples") over `limit`."""
    return invalid_argument(
        f"the request has {what}; this server takes at most {limit} per request "
        "(--max-request-elements): send smaller batches"
    )


def status_code_from_number(number: int) -> grpc.StatusCode:
    """Returns the gRPC status for a canonical error number (TF's OpError codes share them)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def from_tensorflow(err: Exception, signature_name: str) -> ServingError:
    """Returns the error to answer with when TensorFlow failed running `signature_name`.

    Args:
      err: a tf.errors.OpError, or the UnicodeDecodeError TensorFlow raises instead when the
        op's message quotes request bytes that are not UTF-8 (the status code is lost then).
      signature_name: the signature that was running, for the message.

    Returns:
      INVALID_ARGUMENT saying so when an input is not a serialized tf.Example; otherwise the
      op's own status (UNKNOWN when it was lost) and message.
    """
    if isinstance(err, UnicodeDecodeError):
        message = bytes(err.object).decode("utf-8", "replace")
        code = grpc.StatusCode.UNKNOWN
    else:
        message, code = err.message, status_code_from_number(err.error_code)
    not_an_example = _NOT_AN_EXAMPLE.search(message)
    if not_an_example:
        value = not_an_example["value"]
        preview = repr(value[:_PREVIEW_CHARS]) + ("..." if len(value) > _PREVIEW_CHARS else "")
        return invalid_argument(
            f"an input of signature {signature_name} is not a serialized tf.Example: "
            f"ParseExample could not parse {preview}"
        )
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + f"... ({len(message)} characters)"
    return ServingError(code, message)


def log_refusal(logger: logging.Logger, call: str, err: ServingError) -> None:
    """Logs one line for a request answered with `err`: the call, the status, the message."""
    level = logging.DEBUG if err.code in _ROUTINE else logging.INFO
    logger.log(level, "%s refused: %s: %s", call, err.code.name, " ".join(err.message.split()))
