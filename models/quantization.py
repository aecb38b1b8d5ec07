"""Post-training quantization of a trained tf_keras model, and conversion to TFLite.

Two products, both from the plain Keras model that takes transformed features:

- `quantize_dense_weights`: the same model with every `Dense` kernel stored as int8
  plus one float32 scale per output unit (symmetric, per channel), dequantized in the
  forward pass; all kernels are packed in one int8 variable and all scales and biases
  in one float32 variable. Saved with `models.export.export_lean_serving_model` it is
  a TF Serving SavedModel whose kernels really are ~4x smaller (fake-quant from
  quantization-aware training would keep float32 kernels on disk).
- `to_tflite`: a TFLite flatbuffer, float or fully integer (int8 weights,
  activations, inputs and outputs) calibrated on a representative dataset.

`prune` (tensorflow-model-optimization) fine-tunes a model to a target sparsity
before quantization.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

_INT8_MAX = 127
# Categorical ids fit an int8 input when the vocabulary (OOV buckets included) does.
_MAX_INT8_VOCABULARY = _INT8_MAX + 1


@dataclasses.dataclass(frozen=True)
class Int8Slot:
    """Where one `Int8Dense` layer's weights lie in its model's `Int8Weights`.

    Attributes:
      fan_in: the kernel's rows.
      units: the kernel's columns (output units).
      use_bias: whether a bias follows the scales.
      kernel_offset: the kernel's first element in `Int8Weights.kernels` (row-major).
      float_offset: the first of `units` scales in `Int8Weights.floats`; the `units`
        biases follow them.
    """

    fan_in: int
    units: int
    use_bias: bool
    kernel_offset: int
    float_offset: int


class Int8Weights(keras.layers.Layer):
    """The weights of all `Int8Dense` layers of one model, in two flat variables.

    `kernels` (int8) holds every int8 kernel, `floats` (float32) every scale and bias,
    each layer's at its `Int8Slot`. Packed because in a SavedModel each variable costs
    ~140 bytes of `variables/` whatever its size (a checkpoint object-graph node, a
    capture in each signature, an index entry): for a model of ~1k weights, three
    variables per layer cost as much as the int8 weights themselves, two per model
    little. The layer is never called; the `Int8Dense` layers share it and read their
    slices.
    """

    def __init__(self, kernels: np.ndarray, floats: np.ndarray, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.kernels = self.add_weight(
            "kernels_int8", shape=kernels.shape, dtype=tf.int8, initializer="zeros", trainable=False
        )
        self.floats = self.add_weight(
            "scales_and_biases",
            shape=floats.shape,
            dtype=tf.float32,
            initializer="zeros",
            trainable=False,
        )
        self.kernels.assign(kernels)
        self.floats.assign(floats)
        self.built = True

    def kernel(self, slot: Int8Slot) -> tf.Tensor:
        """The slot's [fan_in, units] int8 kernel."""
        size = slot.fan_in * slot.units
        flat = self.kernels[slot.kernel_offset : slot.kernel_offset + size]
        return tf.reshape(flat, [slot.fan_in, slot.units])

    def scale(self, slot: Int8Slot) -> tf.Tensor:
        """The slot's float32 scale per unit."""
        return self.floats[slot.float_offset : slot.float_offset + slot.units]

    def bias(self, slot: Int8Slot) -> tf.Tensor:
        """The slot's float32 bias (`slot.use_bias` must be true)."""
        start = slot.float_offset + slot.units
        return self.floats[start : start + slot.units]


def _pack_int8_weights(
    layers: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], name: str = "int8_weights"
) -> tuple[Int8Weights, list[Int8Slot]]:
    """Packs quantized layers into one `Int8Weights`.

    Args:
      layers: per layer, its (int8 [fan_in, units] kernel, float32 [units] scale,
        float32 [units] bias or None), e.g. from `quantize_kernel`.
      name: the `Int8Weights` layer's name.

    Returns:
      The packed weights and each layer's slot, in the order of `layers`.
    """
    kernels, floats, slots = [], [], []
    kernel_offset = float_offset = 0
    for kernel, scale, bias in layers:
        fan_in, units = kernel.shape
        slots.append(Int8Slot(fan_in, units, bias is not None, kernel_offset, float_offset))
        kernels.append(kernel.reshape(-1))
        floats.extend([scale] if bias is None else [scale, bias])
        kernel_offset += kernel.size
        float_offset += units * (1 if bias is None else 2)
    packed = Int8Weights(
        np.concatenate(kernels).astype(np.int8),
        np.concatenate(floats).astype(np.float32),
        name=name,
    )
    return packed, slots


class Int8Dense(keras.layers.Layer):
    """A Dense layer whose kernel is int8 with a float32 scale per output unit.

    `outputs = activation(inputs @ (kernel_int8 * kernel_scale) + bias)`. The weights
    live in the model's shared `Int8Weights` at `slot` (so Keras lists them under
    every Int8Dense layer; `model.weights` has them once). The layer has no standalone
    config: save its model with `models.export.export_lean_serving_model`.
    """

    def __init__(self, packed: Int8Weights, slot: Int8Slot, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.packed = packed
        self.slot = slot
        self.units = slot.units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        if int(input_shape[-1]) != self.slot.fan_in:
            raise ValueError(
                f"layer {self.name!r}: input has {input_shape[-1]} features, its int8 "
                f"kernel {self.slot.fan_in} rows"
            )
        super().build(input_shape)

    @property
    def kernel_int8(self) -> tf.Tensor:
        """The [fan_in, units] int8 kernel."""
        return self.packed.kernel(self.slot)

    @property
    def kernel_scale(self) -> tf.Tensor:
        """The float32 scale per unit: the kernel is `kernel_int8 * kernel_scale`."""
        return self.packed.scale(self.slot)

    @property
    def bias(self) -> tf.Tensor | None:
        """The float32 bias, or None without one."""
        return self.packed.bias(self.slot) if self.slot.use_bias else None

    def call(self, inputs):
        kernel = tf.cast(self.kernel_int8, inputs.dtype) * self.kernel_scale
        outputs = tf.matmul(inputs, kernel)
        if self.slot.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self):
        raise NotImplementedError(
            f"Int8Dense {self.name!r} shares its weights with its model's other Int8Dense "
            "layers and has no standalone config; save the model with "
            "models.export.export_lean_serving_model"
        )


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
    """Clones a functional model, replacing the layers for which `replace` returns one.

    The other layers get copies of their weights; a replacement comes with its own.
    """
    replaced = set()

    def clone_layer(layer):
        replacement = replace(layer)
        if replacement is None:
            return layer.__class__.from_config(layer.get_config())
        replaced.add(layer.name)
        return replacement

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    for original in model.layers:
        if original.weights and original.name not in replaced:
            clone.get_layer(original.name).set_weights(original.get_weights())
    return clone


def _quantized_dense(layer: keras.layers.Dense) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    kernel, *bias = layer.get_weights()
    return (*quantize_kernel(kernel), bias[0] if bias else None)


def quantize_dense_weights(model: keras.Model) -> keras.Model:
    """The model with every Dense kernel stored as per-channel int8 (see `Int8Dense`).

    All int8 kernels share one int8 variable and all scales and biases one float32
    variable (`Int8Weights`), so the model's variables are those two plus those of its
    other layers.

    Args:
      model: a functional tf_keras model.

    Returns:
      An uncompiled model with the same inputs, outputs and layer names.

    Raises:
      ValueError: the model has no Dense layer, so there is nothing to quantize.
    """
    dense = [layer for layer in model.layers if type(layer) is keras.layers.Dense]
    if not dense:
        raise ValueError(f"model {model.name!r} has no Dense layer to quantize")
    packed, slots = _pack_int8_weights([_quantized_dense(layer) for layer in dense])
    slot_of = {layer.name: slot for layer, slot in zip(dense, slots, strict=True)}

    def int8_dense(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if type(layer) is not keras.layers.Dense:
            return None
        return Int8Dense(packed, slot_of[layer.name], layer.activation, name=layer.name)

    return _clone(model, int8_dense)


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
        layer.kernel_int8 if isinstance(layer, Int8Dense) else layer.kernel
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, Int8Dense))
    ]
    total = sum(int(tf.size(k)) for k in kernels)
    zeros = sum(int(tf.math.count_nonzero(tf.equal(k, 0))) for k in kernels)
    return float(zeros / total) if total else 0.0
