"""Measuring a model: metrics on the eval split, CPU latency, and size on disk."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from models.quantization import TFLiteInput

HIGHER_IS_BETTER = {"accuracy": True, "precision": True, "recall": True, "auc": True}
LOWER_IS_BETTER = {"mse": False, "mae": False, "rmse": False}


# Examples per call when a model runs over a whole split: a convolution's activations
# for 10k images at once would take gigabytes.
PREDICT_BATCH = 256
# Eval examples the models are measured on (accuracy, the guard): a uniform sample of a
# large split, whose accuracy is within ~0.005 (2 standard errors) of the whole split's.
EVAL_SAMPLE = 50_000
# Records read per step when sampling a split.
_SAMPLE_READ_BATCH = 8192


def _record_files(pattern: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern}")
    return files


def read_records(pattern: str) -> list[bytes]:
    """The serialized examples of the GZIP TFRecord files matching `pattern`."""
    dataset = tf.data.TFRecordDataset(_record_files(pattern), compression_type="GZIP")
    return [r.numpy() for r in dataset]


def sample_records(pattern: str, count: int, seed: int = 0) -> list[bytes]:
    """`count` serialized examples drawn uniformly from the GZIP TFRecord files matching
    `pattern`, in file order; all of them if there are fewer.

    One pass in batches of `_SAMPLE_READ_BATCH` records: each record gets a random key and
    the `count` smallest keys are kept, so memory holds the sample and one batch, and Python
    touches batches, not records (a million records take seconds). The keys depend only
    on the seed and a record's position, so two splits of equal length written in the same
    order (raw and transformed eval) give the same positions.
    """
    if count <= 0:
        return []
    rng = np.random.default_rng(seed)
    dataset = tf.data.TFRecordDataset(_record_files(pattern), compression_type="GZIP")
    keys, positions = np.empty(0), np.empty(0, dtype=np.int64)
    records = np.empty(0, dtype=object)
    seen = 0
    for batch in dataset.batch(_SAMPLE_READ_BATCH).as_numpy_iterator():
        keys = np.concatenate([keys, rng.random(len(batch))])
        positions = np.concatenate([positions, np.arange(seen, seen + len(batch))])
        records = np.concatenate([records, batch.astype(object)])
        seen += len(batch)
        if len(keys) > count:
            kept = np.argpartition(keys, count - 1)[:count]
            keys, positions, records = keys[kept], positions[kept], records[kept]
    return [bytes(r) for r in records[np.argsort(positions)]]


def parse_features(
    records: Sequence[bytes], feature_spec: Mapping[str, tf.io.FixedLenFeature]
) -> dict[str, np.ndarray]:
    """Parses transformed examples into name -> numpy arrays.

    A scalar feature (shape [] or [1]) becomes [n], any other [n, *shape] (an image
    [n, height, width, channels]).
    """
    parsed = tf.io.parse_example(tf.constant(list(records)), dict(feature_spec))
    features = {}
    for name, values in parsed.items():
        shape = list(feature_spec[name].shape)
        shape = [] if shape == [1] else shape
        features[name] = np.reshape(values.numpy(), [len(records), *shape])
    return features


def directory_bytes(path: str) -> int:
    """Total size of the files under `path`."""
    return sum(
        tf.io.gfile.stat(os.path.join(root, name)).length
        for root, _, files in tf.io.gfile.walk(path)
        for name in files
    )


def checkpoint_bytes(export_dir: str) -> dict[str, int]:
    """What a SavedModel's `variables/` holds, in bytes of tensor data.

    Returns:
      `weights` (the model's variables), `optimizer` (optimizer slots, if saved) and
      `object_graph` (the checkpoint's serialized object graph: names and structure
      of every tracked object, ~14 KB for a Keras export and ~4 KB for a lean one
      (`models.export`), which is most of the bytes for a model of ~1k weights).
    """
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    sizes = {"weights": 0, "optimizer": 0, "object_graph": 0}
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        size = len(value) if isinstance(value, bytes) else value.nbytes
        kind = (
            "object_graph"
            if name == "_CHECKPOINTABLE_OBJECT_GRAPH"
            else "optimizer"
            if name.startswith("optimizer/")
            else "weights"
        )
        sizes[kind] += size
    return sizes


def tflite_bytes(path: str) -> tuple[dict[str, int], dict[str, int]]:
    """What a TFLite flatbuffer holds, in bytes.

    Returns:
      (breakdown, tensor data by type). The breakdown's parts add up to the file size:
      `tensor_data` (constant tensors: weights, biases, lookup tables),
      `quantization_parameters` (the scales and zero points of quantized tensors, one
      pair per output channel for an int8 kernel and its int32 bias: 12 bytes a channel,
      more than its int8 weights for a layer of few inputs), `metadata` (the converter's
      metadata buffers) and `structure` (the rest: operators, tensor shapes and names,
      the signature, flatbuffer tables and alignment; a few KB whatever the weights).
      Tensor data by type is keyed by lowercase type name ("int8", "int32", "float32").
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if k.isupper()}
    sizes = [0 if b.data is None else len(b.data) for b in model.buffers]
    by_type: dict[str, int] = {}
    counted: set[int] = set()
    quantization = 0
    for tensor in (t for subgraph in model.subgraphs for t in subgraph.tensors):
        if tensor.buffer not in counted and sizes[tensor.buffer]:
            counted.add(tensor.buffer)
            name = type_names[tensor.type]
            by_type[name] = by_type.get(name, 0) + sizes[tensor.buffer]
        quantization += _quantization_bytes(tensor.quantization)
    metadata = sum(sizes[m.buffer] for m in model.metadata or [])
    tensor_data = sum(by_type.values())
    breakdown = {
        "tensor_data": tensor_data,
        "quantization_parameters": quantization,
        "metadata": metadata,
        "structure": tf.io.gfile.stat(path).length - tensor_data - quantization - metadata,
    }
    return breakdown, dict(sorted(by_type.items()))


def tflite_float_ops(path: str) -> dict[str, int]:
    """How many ops of each kind compute in float32 in a TFLite flatbuffer.

    An op counts when one of its outputs is float32 (a DEQUANTIZE back to float, an op
    the converter left without an int8 kernel, or every op of a float model). Keyed by
    the builtin operator's name ("FULLY_CONNECTED", "DEQUANTIZE").
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    counts: dict[str, int] = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if any(subgraph.tensors[t].type == schema.TensorType.FLOAT32 for t in op.outputs):
                name = op_names.get(builtin, str(builtin))
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _quantization_bytes(parameters) -> int:
    """Bytes of a tensor's quantization vectors: float32 scale/min/max, int64 zero_point."""
    if parameters is None:
        return 0
    floats = (parameters.scale, parameters.min, parameters.max)
    zero_points = 0 if parameters.zeroPoint is None else len(parameters.zeroPoint)
    return 4 * sum(0 if v is None else len(v) for v in floats) + 8 * zero_points


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) statistic; ties count one half."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Accuracy, and precision / recall / one-vs-rest AUC macro-averaged over classes.

    Args:
      labels: [n] class ids.
      scores: [n, classes] scores (probabilities or dequantized probabilities).
    """
    predicted = np.argmax(scores, axis=1)
    classes = range(scores.shape[1])
    precision = [np.mean(labels[predicted == c] == c) for c in classes if np.any(predicted == c)]
    recall = [np.mean(predicted[labels == c] == c) for c in classes if np.any(labels == c)]
    aucs = [_auc(labels == c, scores[:, c]) for c in classes]
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "precision": float(np.mean(precision)),
        "recall": float(np.mean(recall)),
        "auc": float(np.nanmean(aucs)),
        "example_count": int(len(labels)),
    }


def regression_metrics(labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """MSE, MAE and RMSE of [n] predictions."""
    errors = np.reshape(outputs, [-1]) - labels
    mse = float(np.mean(errors**2))
    return {
        "mse": mse,
        "mae": float(np.mean(np.abs(errors))),
        "rmse": mse**0.5,
        "example_count": int(len(labels)),
    }


def metric_drop(metric: str, reference: float, candidate: float) -> float:
    """How much worse `candidate` is than `reference` (positive = worse)."""
    if metric in HIGHER_IS_BETTER:
        return reference - candidate
    if metric in LOWER_IS_BETTER:
        return candidate - reference
    raise ValueError(
        f"unknown metric {metric!r}; known: {sorted({**HIGHER_IS_BETTER, **LOWER_IS_BETTER})}"
    )


def median_latency_ms(call: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time of `call()` over `runs` runs after `warmup` runs, in milliseconds."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class SavedModelRunner:
    """A serving SavedModel's `serving_default` on serialized examples."""

    def __init__(self, export_dir: str, output_key: str):
        self._loaded = tf.saved_model.load(export_dir)
        self._serve = self._loaded.signatures["serving_default"]
        self._transform = self._loaded.signatures["transform_features"]
        self._output_key = output_key

    def predict(self, records: Sequence[bytes], batch: int = PREDICT_BATCH) -> np.ndarray:
        """The model's outputs on `records`, run `batch` examples at a time."""
        parts = [
            self._serve(examples=tf.constant(list(part)))[self._output_key].numpy()
            for part in _batches(records, batch)
        ]
        return np.concatenate(parts)

    def labels(
        self, records: Sequence[bytes], label_key: str, batch: int = PREDICT_BATCH
    ) -> np.ndarray:
        """The transformed label, through the model's own TFT graph."""
        parts = [
            np.reshape(self._transform(examples=tf.constant(list(part)))[label_key].numpy(), [-1])
            for part in _batches(records, batch)
        ]
        return np.concatenate(parts)

    def timer(self, records: Sequence[bytes]) -> Callable[[], object]:
        batch = tf.constant(list(records))
        return lambda: self._serve(examples=batch)


class TFLiteRunner:
    """A TFLite model on transformed features, quantizing inputs and dequantizing outputs."""

    def __init__(self, model_path: str, inputs: Sequence[TFLiteInput]):
        self._path = model_path
        self._inputs = list(inputs)
        self._interpreters: dict[int, tf.lite.Interpreter] = {}

    def _interpreter(self, batch: int) -> tf.lite.Interpreter:
        if batch not in self._interpreters:
            interpreter = tf.lite.Interpreter(model_path=self._path)
            shapes = {spec.name: spec.shape for spec in self._inputs}
            for detail in interpreter.get_input_details():
                shape = shapes[_input_name(detail["name"])]
                interpreter.resize_tensor_input(detail["index"], [batch, *shape])
            interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return self._interpreters[batch]

    def _feed(self, interpreter: tf.lite.Interpreter, features: Mapping[str, np.ndarray]) -> None:
        by_name = {_input_name(d["name"]): d for d in interpreter.get_input_details()}
        for spec in self._inputs:
            detail = by_name[spec.name]
            interpreter.set_tensor(detail["index"], encode(features[spec.name], detail, spec))

    def predict(self, features: Mapping[str, np.ndarray], batch: int = PREDICT_BATCH) -> np.ndarray:
        """Runs the whole feature set in batches of `batch`; returns float outputs."""
        count = len(next(iter(features.values())))
        parts = []
        for start in range(0, count, batch):
            size = min(batch, count - start)
            interpreter = self._interpreter(size)
            self._feed(interpreter, {k: v[start : start + size] for k, v in features.items()})
            interpreter.invoke()
            parts.append(decode(interpreter, interpreter.get_output_details()[0]))
        return np.concatenate(parts)

    def timer(self, features: Mapping[str, np.ndarray]) -> Callable[[], object]:
        interpreter = self._interpreter(len(next(iter(features.values()))))
        self._feed(interpreter, features)
        return interpreter.invoke


def _input_name(tensor_name: str) -> str:
    """`serving_default_bill_length_mm_xf:0` -> `bill_length_mm_xf`."""
    return tensor_name.removeprefix("serving_default_").split(":")[0]


def encode(values: np.ndarray, detail: Mapping, spec: TFLiteInput) -> np.ndarray:
    """A transformed feature as the TFLite input wants it: quantized int8 or cast."""
    scale, zero_point = detail["quantization"]
    if spec.categorical or not scale:
        return values.astype(detail["dtype"])
    quantized = np.round(values / scale) + zero_point
    info = np.iinfo(detail["dtype"])
    return np.clip(quantized, info.min, info.max).astype(detail["dtype"])


def decode(interpreter: tf.lite.Interpreter, detail: Mapping) -> np.ndarray:
    """An output tensor as float, dequantized if it is quantized."""
    values = interpreter.get_tensor(detail["index"])
    scale, zero_point = detail["quantization"]
    if not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def repeat_to(items: Sequence, count: int) -> list:
    """`items` cycled to exactly `count` entries (a batch for latency runs)."""
    if not items:
        raise ValueError("cannot build a batch from no items")
    return [items[i % len(items)] for i in range(count)]
