"""Raw feature rows to tf.Examples, with TF Serving's JSON typing rules."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from tensorflow.core.example import example_pb2


def make_example(
    features: Mapping[str, Any], float_features: Iterable[str] = ()
) -> example_pb2.Example:
    """Returns a tf.Example holding `features`.

    Values map as in TF Serving's REST API: str, bytes and {"b64": ...} go to bytes_list, int and
    bool to int64_list, float to float_list; a list holds several values of one kind; None is left
    out. Names in `float_features` always go to float_list, so that 39 and 39.0 parse the same.

    Raises:
      ValueError: a value of a kind that has no tf.Example encoding, or a list of mixed kinds.
    """
    floats = set(float_features)
    example = example_pb2.Example()
    for name, value in features.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        kinds = {_kind(name, v, name in floats) for v in values}
        if len(kinds) > 1:
            raise ValueError(f"feature {name!r} mixes kinds {sorted(kinds)}: {value!r}")
        feature = example.features.feature[name]
        kind = kinds.pop() if kinds else "float"
        if kind == "bytes":
            feature.bytes_list.value.extend(_bytes(v) for v in values)
        elif kind == "int":
            feature.int64_list.value.extend(int(v) for v in values)
        else:
            feature.float_list.value.extend(float(v) for v in values)
    return example


def _kind(name: str, value: Any, as_float: bool) -> str:
    if isinstance(value, str | bytes) or (isinstance(value, dict) and set(value) == {"b64"}):
        return "bytes"
    if isinstance(value, bool | int | float) and as_float:
        return "float"
    if isinstance(value, bool | int):
        return "int"
    if isinstance(value, float):
        return "float"
    raise ValueError(f"feature {name!r} has a value of type {type(value).__name__}: {value!r}")


def _bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value.encode("utf-8") if isinstance(value, str) else value
