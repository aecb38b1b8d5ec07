"""Post-training quantization of a trained tf_keras model, and conversion to TFLite.

Two products, both from the plain Keras model that takes transformed features:

- `quantize_dense_weights`: the same model with every `Dense` kernel stored as an
  int8 variable plus one float32 scale per output unit (symmetric, per channel),
  dequantized in the forward pass. Saved with `models.export.export_lean_serving_model`
  it is a TF Serving SavedModel whose kernels really are ~4x smaller (fake-quant from
  quantization-aware training would keep float32 kernels on disk).
- `to_tflite`: a TFLite flatbuffer, float or fully integer (int8 weights,
  activations, inputs and outputs) calibrated on a representative dataset.

`prune` (tensorflow-model-optimization) fine-tunes a model to a target sparsity
before quantization.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

_INT8_MAX = 127
# Categorical ids fit an int8 input when the vocabulary (OOV buckets included) does.
_MAX_INT8_VOCABULARY = _INT8_MAX + 1


class Int8Dense(keras.layers.Layer):
    """A Dense layer whose kernel is stored as int8 with a float32 scale per output unit."""

    def __init__(self, units: int, activation=None, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.kernel_int8 = self.add_weight(
            "kernel_int8",
            shape=(fan_in, self.units),
            dtype=tf.int8,
            initializer="zeros",
            trainable=False,
        )
        self.kernel_scale = self.add_weight(
            "kernel_scale",
            shape=(self.units,),
            dtype=tf.float32,
            initializer="ones",
            trainable=False,
        )
        self.bias = (
            self.add_weight(
                "bias", shape=(self.units,), dtype=tf.float32, initializer="zeros", trainable=False
            )
            if self.use_bias
            else None
        )
        super().build(input_shape)

    def call(self, inputs):
        kernel = tf.cast(self.kernel_int8, inputs.dtype) * self.kernel_scale
        outputs = tf.matmul(inputs, kernel)
        if self.bias is not None:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
        }


class OneHot(keras.layers.Layer):
    """One-hot encoding as a row lookup in an identity matrix.

    Replaces `CategoryEncoding(output_mode="one_hot")` for TFLite: that layer lowers to
    `DenseBincount`, which has no TFLite kernel, while GATHER has an int8 one.
    """

    def __init__(self, depth: int, **kwargs):
        super().__init__(**kwargs)
        self.depth = int(depth)

    def call(self, ids):
        return tf.gather(tf.eye(self.depth, dtype=self.compute_dtype), tf.cast(ids, tf.int32))

    def get_config(self):
        return {**super().get_config(), "depth": self.depth}


def quantize_kernel(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 quantization of a [fan_in, units] kernel.

    Returns:
      (int8 kernel, float32 scale per unit) with `kernel ~= int8 * scale`; an all-zero
      column gets scale 1 so that it dequantizes to zeros.
    """
    peak = np.max(np.abs(kernel), axis=0)
    scale = np.where(peak > 0, peak / _INT8_MAX, 1.0).astype(np.float32)
    quantized = np.clip(np.round(kernel / scale), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return quantized, scale


def _clone(
    model: keras.Model, replace: Callable[[keras.layers.Layer], keras.layers.Layer | None]
) -> keras.Model:
    """Clones a functional model, replacing the layers for which `replace` returns one."""

    def clone_layer(layer):
        return replace(layer) or layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    for original in model.layers:
        target = clone.get_layer(original.name)
        if isinstance(target, Int8Dense):
            kernel, *bias = original.get_weights()
            target.set_weights([*quantize_kernel(kernel), *bias])
        elif original.weights:
            target.set_weights(original.get_weights())
    return clone


def _int8_dense(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    if type(layer) is not keras.layers.Dense:
        return None
    return Int8Dense(layer.units, layer.activation, layer.use_bias, name=layer.name)


def quantize_dense_weights(model: keras.Model) -> keras.Model:
    """The model with every Dense kernel stored as per-channel int8 (see `Int8Dense`).

    Args:
      model: a functional tf_keras model.

    Returns:
      An uncompiled model with the same inputs, outputs and layer names.

    Raises:
      ValueError: the model has no Dense layer, so there is nothing to quantize.
    """
    if not any(type(layer) is keras.layers.Dense for layer in model.layers):
        raise ValueError(f"model {model.name!r} has no Dense layer to quantize")
    return _clone(model, _int8_dense)


def _one_hot(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    if not isinstance(layer, keras.layers.CategoryEncoding):
        return None
    if layer.output_mode != "one_hot":
        raise ValueError(f"layer {layer.name!r}: only one_hot CategoryEncoding converts to TFLite")
    return OneHot(layer.num_tokens, name=layer.name)


@dataclasses.dataclass(frozen=True)
class TFLiteInput:
    """One input of the TFLite model: a transformed feature as a [batch] vector."""

    name: str
    dtype: tf.DType
    categorical: bool


def tflite_inputs(model: keras.Model) -> list[TFLiteInput]:
    """The TFLite model's inputs: float32 numeric features, int8 (or int32) ids.

    Ids are int8 when every vocabulary fits (<= 128 ids), int32 otherwise.
    """
    depths = [
        layer.num_tokens
        for layer in model.layers
        if isinstance(layer, keras.layers.CategoryEncoding)
    ]
    id_dtype = tf.int8 if all(d <= _MAX_INT8_VOCABULARY for d in depths) else tf.int32
    return [
        TFLiteInput(
            name, tf.float32 if tensor.dtype.is_floating else id_dtype, not tensor.dtype.is_floating
        )
        for name, tensor in zip(model.input_names, model.inputs, strict=True)
    ]


def _tflite_function(model: keras.Model, inputs: list[TFLiteInput]):
    portable = _clone(model, _one_hot)

    @tf.function(input_signature=[tf.TensorSpec([None], i.dtype, name=i.name) for i in inputs])
    def serve(*values):
        features = {
            name: tf.cast(value, model.inputs[k].dtype)
            for k, (name, value) in enumerate(zip(model.input_names, values, strict=True))
        }
        outputs = portable(features, training=False)
        return {model.output_names[0]: outputs}

    return portable, serve.get_concrete_function()


def representative_dataset(
    features: Mapping[str, np.ndarray], inputs: list[TFLiteInput], count: int
) -> Callable[[], Iterable[dict[str, np.ndarray]]]:
    """A generator of `count` single examples for the TFLite calibrator.

    Args:
      features: transformed training features, name -> [n] array.
      inputs: the TFLite inputs (`tflite_inputs`).
      count: examples to draw (the first `count`; fewer if there are fewer).
    """

    def generate():
        available = len(next(iter(features.values())))
        for row in range(min(count, available)):
            yield {
                i.name: features[i.name][row : row + 1].astype(i.dtype.as_numpy_dtype)
                for i in inputs
            }

    return generate


def to_tflite(
    model: keras.Model,
    representative: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None,
) -> bytes:
    """Converts the model to TFLite; fully int8 when a representative dataset is given.

    Args:
      model: a functional tf_keras model taking transformed features.
      representative: calibration data (`representative_dataset`); None for a float model.

    Returns:
      The flatbuffer. Its inputs are `tflite_inputs(model)`; with int8 quantization the
      numeric inputs and the output are int8 with the scale and zero point in the
      interpreter's tensor details.

    Raises:
      ConversionError: the converter rejected the model; the message has its reason.
    """
    inputs = tflite_inputs(model)
    portable, function = _tflite_function(model, inputs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], portable)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as err:
        kind = "int8" if representative is not None else "float"
        raise ConversionError(
            f"TFLite {kind} conversion of model {model.name!r} failed: {err}"
        ) from err


class ConversionError(RuntimeError):
    """The TFLite converter could not convert a model (e.g. an unsupported op)."""


def prune(
    model: keras.Model,
    train: tf.data.Dataset,
    target_sparsity: float,
    epochs: int,
) -> keras.Model:
    """Fine-tunes the model to `target_sparsity` zero weights (magnitude pruning).

    Args:
      model: a compiled functional tf_keras model.
      train: (features, label) batches to fine-tune on.
      target_sparsity: fraction of each pruned kernel set to zero, in [0, 1).
      epochs: fine-tuning epochs; the sparsity ramps up over the first half.

    Returns:
      The pruned model with the pruning wrappers stripped (plain Dense layers, zeros in
      their kernels).
    """
    import tensorflow_model_optimization as tfmot

    steps = max(1, int(train.cardinality().numpy())) * epochs
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=target_sparsity,
        begin_step=0,
        end_step=max(1, steps // 2),
    )
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    # A fresh optimizer of the same kind: the trained one holds slots for other variables.
    optimizer = model.optimizer.__class__.from_config(model.optimizer.get_config())
    wrapped.compile(optimizer=optimizer, loss=model.loss)
    wrapped.fit(
        train, epochs=epochs, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], verbose=0
    )
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def kernel_sparsity(model: keras.Model) -> float:
    """Fraction of zeros over all Dense kernels (int8 or float)."""
    kernels = [
        layer.get_weights()[0]
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, Int8Dense))
    ]
    total = sum(k.size for k in kernels)
    return float(sum(int(np.sum(k == 0)) for k in kernels) / total) if total else 0.0
