"""TensorProto <-> numpy for the request path, faster than tf.make_ndarray/make_tensor_proto.

The common dtypes take a direct path (tensor_content or the typed value field); anything
else falls back to TensorFlow's own converters, so every valid TensorProto is accepted.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

_NUMERIC = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
}
_ENUM_BY_NUMPY = {np.dtype(numpy_type): enum for enum, (numpy_type, _) in _NUMERIC.items()}


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Returns the value of `proto` as a numpy array (object dtype holding bytes for strings).

    Raises:
      ValueError, TypeError: the proto's content does not match its dtype and shape.
    """
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    size = int(np.prod(shape)) if shape else 1
    if proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == size:
        return np.array(list(proto.string_val), dtype=object).reshape(shape)
    if proto.dtype in _NUMERIC:
        numpy_type, field = _NUMERIC[proto.dtype]
        if proto.tensor_content:
            return np.frombuffer(proto.tensor_content, dtype=numpy_type).reshape(shape)
        values = getattr(proto, field)
        if len(values) == size:
            return np.array(values, dtype=numpy_type).reshape(shape)
    return tf.make_ndarray(proto)


def fill_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """Writes `array` into the empty TensorProto `proto`."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind == "S":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(array.ravel().tolist())
    elif array.dtype in _ENUM_BY_NUMPY:
        proto.dtype = _ENUM_BY_NUMPY[array.dtype]
        proto.tensor_content = (
            np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        )
    else:
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
