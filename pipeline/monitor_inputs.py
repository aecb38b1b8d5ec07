"""What the monitor compares with the training data: logged requests or a folder of data,
read into one table of the model's raw features (numeric as float, categorical as str) and,
in the label's column, what the model predicted (logs) or the true label (data, if present);
image, text and sequence features are kept beside it as raw values (encoded bytes, str,
float lists) for pipeline/monitor_derived.py.

Logged requests may come from any PredictionService method TF Serving logs: Classify,
Regress and MultiInference carry tf.Examples; Predict carries either serialized tf.Examples
(serving_default) or one tensor per raw feature (serving_raw).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2

from pipeline.config import PipelineConfig
from pipeline.data import DataError
from serving.logging_requests import log_files, read_prediction_logs

# How a file in an --examples folder is read, by its ending.
CSV_SUFFIXES = (".csv",)
EXAMPLE_SUFFIXES = (".tfrecord", ".tfrecord.gz", ".gz")


@dataclasses.dataclass(frozen=True)
class ServingData:
    """Rows of raw features; `label_kind` says what the label column holds, if any:
    "predictions" (from logged responses) or "labels" (a folder with the label)."""

    frame: pd.DataFrame
    source: str
    files: int
    label_kind: str | None
    # Logged requests per served model version (logs only): which model answered them.
    versions: Mapping[int, int] = dataclasses.field(default_factory=dict)
    # Image, text and sequence feature -> its raw values, one per row (None: missing).
    raw: Mapping[str, list[Any]] = dataclasses.field(default_factory=dict)


def read_request_logs(path: str, config: PipelineConfig) -> ServingData:
    """The logged requests of the config's model under `path` (a folder or a file prefix).

    Raises:
      DataError: no log files, a truncated or corrupt file, a record of another model, or
        requests that do not carry the model's features (another signature or model).
    """
    files = log_files(path)
    if not files:
        raise DataError(
            f"{path}: no request log files (*.tfrecord); turn logging on with "
            "monitoring.request_log_sampling_rate and `make serve`, or pass --examples"
        )
    rows: list[dict[str, Any]] = []
    versions: collections.Counter = collections.Counter()
    for file in files:
        try:
            for number, record in enumerate(read_prediction_logs(file)):
                rows += _checked_rows(record, config, f"{file}: record {number}")
                versions[record.log_metadata.model_spec.version.value] += 1
        except ValueError as err:
            raise DataError(f"{err}; move the file away to monitor the others") from err
    frame, raw = _frame(rows, config, path)
    return ServingData(frame, path, len(files), "predictions", dict(sorted(versions.items())), raw)


def _checked_rows(record, config: PipelineConfig, where: str) -> list[dict[str, Any]]:
    spec = record.log_metadata.model_spec
    if spec.name != config.model_name:
        raise DataError(
            f"{where}: a request to model {spec.name!r} (signature {spec.signature_name!r}), "
            f"not {config.model_name!r}; give the folder of {config.model_name!r}'s logs"
        )
    rows = _rows(record)
    wanted = set(config.features)
    carried = sorted(k for k in rows[0] if isinstance(k, str)) if rows else []
    missing = sorted(wanted - set(carried))
    if missing:
        raise DataError(
            f"{where}: the request to signature {spec.signature_name!r} carries {carried}, "
            f"not the model's features {missing}; the monitor reads requests that carry the "
            "raw features (tf.Examples, or serving_raw's named inputs)"
        )
    return rows


def _rows(record) -> list[dict[str, Any]]:
    """The rows of one PredictionLog, each with its prediction under the key None."""
    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        rows = _predict_rows(record.predict_log.request)
        predictions = _predict_outputs(record.predict_log.response.outputs)
    elif kind in ("classify_log", "regress_log", "multi_inference_log"):
        log = getattr(record, kind)
        rows = [_example_row(e) for e in _input_examples(log.request.input)]
        predictions = _result_predictions(kind, log.response)
    else:
        raise DataError(f"a {kind or 'empty'} record: the monitor reads Predict/Classify/Regress")
    # A response narrowed by an output_filter may carry no predictions: rows keep none.
    for row, prediction in zip(rows, predictions, strict=False):
        row[None] = prediction
    return rows


def _predict_rows(request) -> list[dict[str, Any]]:
    arrays = {key: _array(proto) for key, proto in request.inputs.items()}
    if len(arrays) == 1:
        (array,) = arrays.values()
        if array.dtype == object and array.ndim == 1 and _are_examples(array):
            return [_example_row(tf.train.Example.FromString(a)) for a in array]
    rows: list[dict[str, Any]] = []
    for key, array in arrays.items():
        values = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
        # One value per row is a scalar feature; more are a series (a sequence feature).
        scalar = values.shape[1] == 1
        for index, row_values in enumerate(values):
            if index == len(rows):
                rows.append({})
            rows[index][key] = _scalar(row_values[0]) if scalar else row_values.tolist()
    return rows


def _scalar(value: Any) -> Any:
    # Bytes stay bytes: an image's are not text; _frame decodes the text ones.
    return value if isinstance(value, bytes) else float(value)


# Dtypes whose values _array reads straight from the proto; others go through TensorFlow.
_NUMBERS = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
}


def _array(proto) -> np.ndarray:
    """A TensorProto's values as a NumPy array; 100k one-row requests spend seconds in
    tf.make_ndarray's generality, so the common dtypes are read directly."""
    shape = [d.size for d in proto.tensor_shape.dim]
    count = math.prod(shape)
    if proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == count:
        return np.array(list(proto.string_val), dtype=object).reshape(shape)
    if proto.dtype in _NUMBERS:
        dtype, field = _NUMBERS[proto.dtype]
        values = (
            np.frombuffer(proto.tensor_content, dtype=dtype)
            if proto.tensor_content
            else np.array(getattr(proto, field), dtype=dtype)
        )
        if values.size == count:
            return values.reshape(shape)
    return tf.make_ndarray(proto)


def _are_examples(array: np.ndarray) -> bool:
    try:
        return all(tf.train.Example.FromString(a).features.feature for a in array[:1])
    except Exception:  # noqa: BLE001 - bytes that are not a tf.Example are a raw text feature
        return False


def _predict_outputs(outputs) -> list[Any]:
    if "scores" in outputs and "classes" in outputs:
        scores = _array(outputs["scores"])
        classes = _array(outputs["classes"])
        best = scores.argmax(axis=1)
        return [classes[i, j].decode() for i, j in enumerate(best)]
    if "outputs" in outputs:
        return [float(v) for v in _array(outputs["outputs"]).reshape(-1)]
    return []


def _input_examples(proto) -> list[tf.train.Example]:
    if proto.HasField("example_list_with_context"):
        listed = proto.example_list_with_context
        merged = []
        for example in listed.examples:
            full = tf.train.Example()
            full.CopyFrom(listed.context)
            full.MergeFrom(example)
            merged.append(full)
        return merged
    return list(proto.example_list.examples)


def _result_predictions(kind: str, response) -> list[Any]:
    if kind == "multi_inference_log":
        if not response.results:
            return []
        result = response.results[0]
        if result.HasField("classification_result"):
            return _best_classes(result.classification_result)
        return [r.value for r in result.regression_result.regressions]
    if kind == "classify_log":
        return _best_classes(response.result)
    return [r.value for r in response.result.regressions]


def _best_classes(result) -> list[str | None]:
    return [
        max(c.classes, key=lambda c: c.score).label if c.classes else None
        for c in result.classifications
    ]


def _example_row(example: tf.train.Example) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if len(values) == 1:
            row[key] = _scalar(values[0])
        elif values:
            row[key] = [float(v) for v in values] if kind != "bytes_list" else values[0]
    return row


def read_examples(path: str, config: PipelineConfig) -> ServingData:
    """Rows of a CSV file, a TFRecord file of tf.Examples, or a folder of them.

    Raises:
      DataError: nothing readable there, a corrupt file, or rows without the model's features.
    """
    files = _data_files(path)
    wanted = set(config.features)
    rows: list[dict[str, Any]] = []
    keys: set[str] = set()
    for file in files:
        read = _csv_rows(file, config) if file.endswith(CSV_SUFFIXES) else _tfrecord_rows(file)
        # A schema that differs (a column renamed or gone) is refused, not read as missing.
        file_keys = set().union(*read) if read else set()
        missing = sorted(wanted - file_keys)
        if missing:
            raise DataError(f"{file}: has no column/feature {missing} of the model")
        rows += read
        keys |= file_keys
    if not rows:
        raise DataError(f"{path}: no rows in {len(files)} file(s)")
    label_kind = "labels" if config.label in keys else None
    for row in rows:
        if label_kind:
            row[None] = row.pop(config.label, None)
    frame, raw = _frame(rows, config, path)
    return ServingData(frame, path, len(files), label_kind, raw=raw)


def _data_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such file or folder")
    suffixes = CSV_SUFFIXES + EXAMPLE_SUFFIXES
    files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True))
    files = [f for f in files if os.path.isfile(f) and f.endswith(suffixes)]
    if not files:
        raise DataError(f"{path}: no data files ({', '.join('*' + s for s in suffixes)})")
    return files


def _csv_rows(file: str, config: PipelineConfig) -> list[dict[str, Any]]:
    try:
        frame = pd.read_csv(file, na_values=list(config.data.na_values), keep_default_na=True)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: not a readable CSV: {err}") from err
    rows = frame.to_dict("records")
    # Missing values stay as None: the header says which columns the file has.
    return [{k: None if _missing(v) else v for k, v in row.items()} for row in rows]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _tfrecord_rows(file: str) -> list[dict[str, Any]]:
    compression = "GZIP" if file.endswith(".gz") else ""
    rows = []
    try:
        for payload in tf.data.TFRecordDataset(file, compression_type=compression):
            rows.append(_example_row(tf.train.Example.FromString(payload.numpy())))
    except tf.errors.DataLossError as err:
        raise DataError(f"{file}: truncated or corrupt after {len(rows)} records") from err
    except DecodeError as err:
        raise DataError(f"{file}: record {len(rows)} is not a tf.Example") from err
    return rows


def _frame(
    rows: Iterable[Mapping[Any, Any]], config: PipelineConfig, source: str
) -> tuple[pd.DataFrame, dict[str, list[Any]]]:
    """The table TFDV reads: numeric features float32 (NaN: missing), categorical str or None,
    the label column from the rows' None key; and the raw values of the image (bytes), text
    (str) and sequence (float lists) features."""
    rows = list(rows)
    if not rows:
        raise DataError(f"{source}: no requests with rows in the logs")
    columns: dict[str, Any] = {}
    for name in config.numeric_features:
        columns[name] = np.array([_float(r.get(name)) for r in rows], dtype=np.float32)
    for name in config.categorical_features:
        columns[name] = pd.Series([_text(r.get(name)) for r in rows], dtype=object)
    labels = [r.get(None) for r in rows]
    if any(v is not None for v in labels):
        numeric = config.task == "regression"
        columns[config.label] = (
            np.array([_float(v) for v in labels], dtype=np.float32)
            if numeric
            else pd.Series([_text(v) for v in labels], dtype=object)
        )
    raw: dict[str, list[Any]] = {}
    for name in config.image_features:
        raw[name] = [_image(r.get(name)) for r in rows]
    for name in config.text_features:
        raw[name] = [_text(r.get(name)) for r in rows]
    for name in config.sequence_features:
        raw[name] = [_series(r.get(name)) for r in rows]
    return pd.DataFrame(columns, index=pd.RangeIndex(len(rows))), raw


def _image(value: Any) -> bytes | None:
    return value if isinstance(value, bytes) and value else None


def _series(value: Any) -> list[float] | None:
    if value is None or isinstance(value, str | bytes):
        return None
    return list(value) if isinstance(value, list) else [float(value)]


def _float(value: Any) -> float:
    if value is None or value == "":
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
