"""Post-training quantization of a trained tf_keras model, and conversion to TFLite.

Three products, all from the plain Keras model that takes transformed features:

- `inference_model`: the model as inference computes it, one flat functional model:
  nested encoders inlined, each BatchNormalization folded into the convolution before it,
  and layers that pass their input through at inference (augmentation, Dropout) left
  out. Float, with the same outputs as the trained model called with training=False.
- `quantize_weights`: the inference model with every `Dense` and `Conv2D` kernel
  (and the sequence family's embeddings, attention, LSTM/GRU and Conv1D kernels:
  `models.int8_sequence`) stored as int8 plus one float32 scale per output channel
  (per row for an embedding; symmetric), dequantized in the forward pass; all
  kernels are packed in one int8 variable and all scales and biases in one float32
  variable. Saved with `models.export.export_lean_serving_model`
  it is a TF Serving SavedModel whose kernels really are ~4x smaller (fake-quant from
  quantization-aware training would keep float32 kernels on disk).
- `to_tflite`: a TFLite flatbuffer, float or fully integer (int8 weights,
  activations, inputs and outputs) calibrated on a representative dataset; with
  attention or layer normalization, int8 weights and float activations.

`prune` (tensorflow-model-optimization) fine-tunes a model to a target sparsity
before quantization.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import int8_sequence
from models.sequence_encoders import MaskedMeanPooling, TransformerBlock

_INT8_MAX = 127
# Categorical ids fit an int8 input when the vocabulary (OOV buckets included) does.
_MAX_INT8_VOCABULARY = _INT8_MAX + 1


@dataclasses.dataclass(frozen=True)
class Int8Slot:
    """Where one int8 layer's weights lie in its model's `Int8Weights`.

    Attributes:
      fan_in: the kernel's rows (a Conv2D's: kernel height x width x input channels).
      units: the kernel's columns (output units or filters).
      use_bias: whether a bias follows the scales.
      kernel_offset: the kernel's first element in `Int8Weights.kernels` (row-major).
      float_offset: the first scale in `Int8Weights.floats`; the `units` biases follow
        the scales.
      per_row: one scale per row (`fan_in` of them: an embedding table's, a scale per
        token) instead of one per unit (output channel).
    """

    fan_in: int
    units: int
    use_bias: bool
    kernel_offset: int
    float_offset: int
    per_row: bool = False

    @property
    def scales(self) -> int:
        """How many scales the slot has."""
        return self.fan_in if self.per_row else self.units


class Int8Weights(keras.layers.Layer):
    """The weights of all int8 layers (`Int8Dense`, `Int8Conv2D`) of one model, in two flat variables.

    `kernels` (int8) holds every int8 kernel, `floats` (float32) every scale and bias,
    each layer's at its `Int8Slot`. Packed because in a SavedModel each variable costs
    ~140 bytes of `variables/` whatever its size (a checkpoint object-graph node, a
    capture in each signature, an index entry): for a model of ~1k weights, three
    variables per layer cost as much as the int8 weights themselves, two per model
    little. The layer is never called; the int8 layers share it and read their slices.
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
        """The slot's float32 scale per unit (per row if `slot.per_row`)."""
        return self.floats[slot.float_offset : slot.float_offset + slot.scales]

    def bias(self, slot: Int8Slot) -> tf.Tensor:
        """The slot's float32 bias (`slot.use_bias` must be true)."""
        start = slot.float_offset + slot.scales
        return self.floats[start : start + slot.units]


@dataclasses.dataclass(frozen=True)
class QuantizedKernel:
    """One kernel as int8, before packing.

    Attributes:
      kernel: int8 [fan_in, units].
      scale: float32, [units] per output channel or [fan_in] per row (`per_row`).
      bias: float32 [units], or None.
      per_row: whether the scales are per row.
    """

    kernel: np.ndarray
    scale: np.ndarray
    bias: np.ndarray | None = None
    per_row: bool = False


def _pack_int8_weights(
    layers: Sequence[QuantizedKernel], name: str = "int8_weights"
) -> tuple[Int8Weights, list[Int8Slot]]:
    """Packs quantized kernels into one `Int8Weights`.

    Args:
      layers: the kernels (`quantize_kernel`, `quantize_rows`).
      name: the `Int8Weights` layer's name.

    Returns:
      The packed weights and each kernel's slot, in the order of `layers`.
    """
    kernels, floats, slots = [], [], []
    kernel_offset = float_offset = 0
    for q in layers:
        fan_in, units = q.kernel.shape
        slot = Int8Slot(fan_in, units, q.bias is not None, kernel_offset, float_offset, q.per_row)
        slots.append(slot)
        kernels.append(q.kernel.reshape(-1))
        floats.extend([q.scale] if q.bias is None else [q.scale, q.bias])
        kernel_offset += q.kernel.size
        float_offset += slot.scales + (0 if q.bias is None else units)
    packed = Int8Weights(
        np.concatenate(kernels).astype(np.int8),
        np.concatenate(floats).astype(np.float32),
        name=name,
    )
    return packed, slots


class _Int8Kernel(keras.layers.Layer):
    """A layer whose kernel is int8 with a float32 scale per output channel.

    The weights live in the model's shared `Int8Weights` at `slot` (so Keras lists them
    under every int8 layer; `model.weights` has them once). The layer has no standalone
    config: save its model with `models.export.export_lean_serving_model`.
    """

    def __init__(self, packed: Int8Weights, slot: Int8Slot, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.packed = packed
        self.slot = slot
        self.activation = keras.activations.get(activation)

    @property
    def kernel_int8(self) -> tf.Tensor:
        """The [fan_in, units] int8 kernel (a Conv2D's as [kh * kw * in, out])."""
        return self.packed.kernel(self.slot)

    @property
    def kernel_scale(self) -> tf.Tensor:
        """The float32 scale per output channel: the kernel is `kernel_int8 * kernel_scale`."""
        return self.packed.scale(self.slot)

    @property
    def bias(self) -> tf.Tensor | None:
        """The float32 bias, or None without one."""
        return self.packed.bias(self.slot) if self.slot.use_bias else None

    def _dequantized_kernel(self, dtype: tf.DType) -> tf.Tensor:
        return tf.cast(self.kernel_int8, dtype) * self.kernel_scale

    def _finish(self, outputs: tf.Tensor) -> tf.Tensor:
        if self.slot.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self):
        raise NotImplementedError(
            f"{type(self).__name__} {self.name!r} shares its weights with its model's other "
            "int8 layers and has no standalone config; save the model with "
            "models.export.export_lean_serving_model"
        )


class Int8Dense(_Int8Kernel):
    """A Dense layer whose kernel is int8 with a float32 scale per output unit.

    `outputs = activation(inputs @ (kernel_int8 * kernel_scale) + bias)`.
    """

    def __init__(self, packed: Int8Weights, slot: Int8Slot, activation=None, **kwargs):
        super().__init__(packed, slot, activation, **kwargs)
        self.units = slot.units

    def build(self, input_shape):
        if int(input_shape[-1]) != self.slot.fan_in:
            raise ValueError(
                f"layer {self.name!r}: input has {input_shape[-1]} features, its int8 "
                f"kernel {self.slot.fan_in} rows"
            )
        super().build(input_shape)

    def call(self, inputs):
        kernel = self._dequantized_kernel(inputs.dtype)
        if inputs.shape.rank == 2:
            return self._finish(tf.matmul(inputs, kernel))
        # A Dense on [batch, steps, features] (a series' projection) acts on the last axis.
        return self._finish(tf.tensordot(inputs, kernel, [[-1], [0]]))


class Int8Conv2D(_Int8Kernel):
    """A Conv2D layer (channels last) whose kernel is int8 with a float32 scale per filter.

    `outputs = activation(conv2d(inputs, kernel_int8 * kernel_scale) + bias)`, the
    kernel stored as [kh * kw * in_channels, filters] (row-major, so it reshapes to
    Keras' [kh, kw, in_channels, filters]).
    """

    def __init__(
        self,
        packed: Int8Weights,
        slot: Int8Slot,
        kernel_size: Sequence[int],
        strides: Sequence[int] = (1, 1),
        padding: str = "valid",
        dilation_rate: Sequence[int] = (1, 1),
        activation=None,
        **kwargs,
    ):
        super().__init__(packed, slot, activation, **kwargs)
        self.filters = slot.units
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(s) for s in strides)
        self.padding = padding.upper()
        self.dilation_rate = tuple(int(d) for d in dilation_rate)

    def build(self, input_shape):
        height, width = self.kernel_size
        if height * width * int(input_shape[-1]) != self.slot.fan_in:
            raise ValueError(
                f"layer {self.name!r}: a {height}x{width} kernel over {input_shape[-1]} "
                f"channels has {height * width * int(input_shape[-1])} rows, its int8 "
                f"kernel {self.slot.fan_in}"
            )
        super().build(input_shape)

    def call(self, inputs):
        height, width = self.kernel_size
        kernel = tf.reshape(
            self._dequantized_kernel(inputs.dtype),
            [height, width, self.slot.fan_in // (height * width), self.filters],
        )
        outputs = tf.nn.conv2d(
            inputs, kernel, self.strides, self.padding, dilations=self.dilation_rate
        )
        return self._finish(outputs)


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


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a [rows, dim] table with one scale per row.

    Returns:
      (int8 table, float32 scale per row); an all-zero row gets scale 1.
    """
    quantized, scale = quantize_kernel(table.T)
    return np.ascontiguousarray(quantized.T), scale


def _clone(
    model: keras.Model,
    replace: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    configure: Callable[[keras.layers.Layer, dict], dict] | None = None,
) -> keras.Model:
    """Clones a functional model, replacing the layers for which `replace` returns one.

    The other layers are rebuilt from their config (passed through `configure`, which
    may change what does not change the weights) and get copies of their weights; a
    replacement comes with its own.
    """
    replaced = set()

    def clone_layer(layer):
        replacement = replace(layer)
        if replacement is None:
            config = layer.get_config()
            return layer.__class__.from_config(configure(layer, config) if configure else config)
        replaced.add(layer.name)
        return replacement

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    for original in model.layers:
        if original.weights and original.name not in replaced:
            clone.get_layer(original.name).set_weights(original.get_weights())
    return clone


def inference_model(model: keras.Model) -> keras.Model:
    """The model as inference computes it, rebuilt as one flat functional model.

    - Nested models (the cnn family's `keras.Sequential` encoder per image) are
      inlined; their layers are named `<nested model>_<layer>`.
    - A BatchNormalization whose input is a Conv1D's or Conv2D's output (and nothing
      else's input) is folded into that convolution: the kernel scaled per filter, a
      bias added.
    - Layers that pass their input through unchanged at inference are left out
      (augmentation, Dropout, noise, or any custom layer that behaves so): each layer
      without weights is called on a probe with training=False and dropped if the
      probe comes back unchanged, so no list of layer classes needs to be kept.

    Every other layer is a copy with its own copy of the weights.

    Args:
      model: a functional tf_keras model.

    Returns:
      An uncompiled model with the same inputs and outputs as `model` called with
      training=False.
    """
    inputs = {
        name: keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)
        for name, tensor in zip(model.input_names, model.inputs, strict=True)
    }
    tensors = {
        id(tensor): inputs[name]
        for name, tensor in zip(model.input_names, model.inputs, strict=True)
    }
    outputs = _inline(model, tensors, prefix="")
    structure = inputs if isinstance(model.input, dict) else [inputs[n] for n in model.input_names]
    return keras.Model(structure, outputs, name=model.name)


def _inline(model: keras.Model, tensors: dict[int, tf.Tensor], prefix: str):
    """Calls copies of `model`'s layers on the new tensors; returns its outputs' copies.

    Args:
      model: a functional model (or a nested one being inlined).
      tensors: id of an original KerasTensor -> its new counterpart; the model's
        inputs must be there, and every tensor made here is added.
      prefix: put before every layer's name.
    """
    nodes = [
        node
        for depth in sorted(model._nodes_by_depth, reverse=True)
        for node in model._nodes_by_depth[depth]
        if not node.is_input
    ]
    folds = _batch_norm_folds(model, nodes)
    folded = {id(bn) for bn in folds.values()}
    for node in nodes:
        layer = node.layer
        args, kwargs = tf.nest.map_structure(
            lambda x: tensors.get(id(x), x), (node.call_args, node.call_kwargs)
        )
        if isinstance(layer, keras.Model):
            for original, new in zip(layer.inputs, tf.nest.flatten(args[0]), strict=True):
                tensors[id(original)] = new
            outputs = _inline(layer, tensors, prefix=f"{prefix}{layer.name}_")
        elif id(layer) in folded or _is_identity_at_inference(node):
            # A folded normalization's input is already its folded convolution's output.
            outputs = args[0]
        elif id(layer) in folds:
            outputs = _folded_conv(layer, folds[id(layer)], prefix, args)
        else:
            outputs = _copied_layer(layer, prefix, args, kwargs)
        for original, new in zip(
            tf.nest.flatten(node.outputs), tf.nest.flatten(outputs), strict=True
        ):
            tensors[id(original)] = new
    outputs = [tensors[id(t)] for t in model.outputs]
    return outputs[0] if len(outputs) == 1 else outputs


_FOLDABLE_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D)


def _batch_norm_folds(model: keras.Model, nodes: Sequence) -> dict[int, keras.layers.Layer]:
    """id(Conv1D or Conv2D) -> the BatchNormalization folded into it, among `model`'s `nodes`.

    Only where folding is exact: the convolution is called once, has no activation and
    feeds only the normalization, which normalizes the channels (last axis).
    """
    uses = collections.Counter(id(t) for node in nodes for t in node.keras_inputs)
    uses.update(id(t) for t in model.outputs)
    folds = {}
    for node in nodes:
        bn = node.layer
        if type(bn) is not keras.layers.BatchNormalization or len(node.keras_inputs) != 1:
            continue
        (x,) = node.keras_inputs
        conv = x._keras_history.layer
        foldable = (
            type(conv) in _FOLDABLE_CONVOLUTIONS
            and len(conv.inbound_nodes) == 1
            and uses[id(x)] == 1
            and keras.activations.serialize(conv.activation) == "linear"
            and list(bn.axis) in ([-1], [len(x.shape) - 1])
        )
        if foldable:
            folds[id(conv)] = bn
    return folds


def fold_batch_norm(
    kernel: np.ndarray, bias: np.ndarray | None, bn: keras.layers.BatchNormalization
) -> tuple[np.ndarray, np.ndarray]:
    """A convolution's kernel and bias with the inference-time normalization after it folded in.

    `bn(conv(x))` at inference is `(conv(x) - mean) * gamma / sqrt(variance + epsilon) +
    beta` per output channel, which is a convolution with the kernel scaled by
    `gamma / sqrt(variance + epsilon)` and the bias `(bias - mean) * that + beta`.

    Args:
      kernel: [..., filters] float kernel (output channels last).
      bias: [filters] bias, or None for a convolution without one.
      bn: the BatchNormalization layer (its moving statistics, gamma and beta).

    Returns:
      (float32 kernel, float32 [filters] bias).
    """
    filters = kernel.shape[-1]
    gamma = bn.gamma.numpy() if bn.scale else np.ones(filters)
    beta = bn.beta.numpy() if bn.center else np.zeros(filters)
    mean = bn.moving_mean.numpy().astype(np.float64)
    factor = gamma / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)
    bias = np.zeros(filters) if bias is None else bias
    folded_kernel = kernel.astype(np.float64) * factor
    folded_bias = (bias - mean) * factor + beta
    return folded_kernel.astype(np.float32), folded_bias.astype(np.float32)


def _folded_conv(conv: keras.layers.Layer, bn: keras.layers.Layer, prefix: str, args):
    kernel, *bias = conv.get_weights()
    weights = fold_batch_norm(kernel, bias[0] if bias else None, bn)
    config = {**conv.get_config(), "name": prefix + conv.name, "use_bias": True}
    layer = type(conv).from_config(config)
    outputs = layer(*args)
    layer.set_weights(list(weights))
    return outputs


def _copied_layer(layer: keras.layers.Layer, prefix: str, args, kwargs):
    copy = layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name})
    outputs = copy(*args, **kwargs)
    if layer.weights:
        copy.set_weights(layer.get_weights())
    return outputs


def _is_identity_at_inference(node) -> bool:
    """Whether the node's layer returns its one input unchanged when training=False.

    Asked only of layers without weights, on one float input that keeps its shape, and
    answered by calling the layer on a random normal probe (negative values included,
    so that e.g. ReLU does not pass).
    """
    layer = node.layer
    if layer.weights or len(node.keras_inputs) != 1 or node.call_kwargs.get("training"):
        return False
    (x,) = node.keras_inputs
    outputs = tf.nest.flatten(node.outputs)
    shape = x.shape[1:].as_list()
    if len(outputs) != 1 or outputs[0].shape[1:].as_list() != shape or not x.dtype.is_floating:
        return False
    # A dimension of any size (a text encoder's steps) is probed at a small one.
    shape = [3 if d is None else d for d in shape]
    probe = tf.random.stateless_normal([2, *shape], seed=[0, 0], dtype=x.dtype)
    return bool(tf.reduce_all(tf.equal(layer(probe, training=False), probe)))


def _quantized(layer: keras.layers.Layer) -> QuantizedKernel:
    """A Dense or Conv layer's int8 [fan_in, units] kernel, scale and bias."""
    kernel, *bias = layer.get_weights()
    flat = kernel.reshape(-1, kernel.shape[-1])
    return QuantizedKernel(*quantize_kernel(flat), bias[0] if bias else None)


def _check_quantizable(layer: keras.layers.Layer) -> None:
    """Raises ValueError for a layer of a quantized type in a configuration int8 lacks."""
    if type(layer) in _FOLDABLE_CONVOLUTIONS:
        config = layer.get_config()
        if config["data_format"] != "channels_last" or config.get("groups", 1) != 1:
            raise ValueError(
                f"layer {layer.name!r}: int8 {type(layer).__name__} needs data_format "
                f"channels_last and groups 1, got {config['data_format']} and "
                f"{config.get('groups', 1)}"
            )
        if type(layer) is keras.layers.Conv1D and config["padding"] == "causal":
            raise ValueError(f"layer {layer.name!r}: int8 Conv1D takes no causal padding")
    elif isinstance(layer, _RECURRENT):
        _check_recurrent(layer)


def _check_recurrent(layer: keras.layers.Layer) -> None:
    if isinstance(layer, keras.layers.Bidirectional) and layer.merge_mode != "concat":
        raise ValueError(
            f"layer {layer.name!r}: int8 Bidirectional merges by concat, got {layer.merge_mode!r}"
        )
    for rnn in _directions(layer):
        problems = [
            f"{key} {value!r}"
            for key, value, wanted in (
                ("type", type(rnn).__name__, ("LSTM", "GRU")),
                ("use_bias", rnn.use_bias, (True,)),
                ("stateful", rnn.stateful, (False,)),
                ("return_state", rnn.return_state, (False,)),
                ("time_major", rnn.time_major, (False,)),
                ("reset_after", getattr(rnn, "reset_after", True), (True,)),
            )
            if value not in wanted
        ]
        if problems:
            raise ValueError(
                f"layer {layer.name!r}: int8 recurrent layers are LSTM or GRU (reset_after) "
                f"with a bias, not stateful, returning no state; got {', '.join(problems)}"
            )


def _directions(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def _recurrent_kernels(layer: keras.layers.Layer) -> list[QuantizedKernel]:
    """Per direction: the kernel with the input bias, the recurrent kernel (GRU: its bias)."""
    kernels = []
    for rnn in _directions(layer):
        cell = rnn.cell
        bias = cell.bias.numpy()
        input_bias, recurrent_bias = (bias, None) if bias.ndim == 1 else (bias[0], bias[1])
        kernels.append(QuantizedKernel(*quantize_kernel(cell.kernel.numpy()), input_bias))
        kernels.append(
            QuantizedKernel(*quantize_kernel(cell.recurrent_kernel.numpy()), recurrent_bias)
        )
    return kernels


def _transformer_kernels(block: TransformerBlock) -> list[QuantizedKernel]:
    """Query, key, value, output projections, then the feed-forward layer's two kernels."""
    attention = block.attention
    # MultiHeadAttention keeps its projections as EinsumDense layers under these names.
    projections = [
        attention._query_dense,
        attention._key_dense,
        attention._value_dense,
        attention._output_dense,
    ]
    if any(p.bias is None for p in projections):
        raise ValueError(f"layer {block.name!r}: int8 attention needs projections with biases")
    kernels = []
    for i, projection in enumerate(projections):
        kernel, bias = projection.kernel.numpy(), projection.bias.numpy()
        # [width, heads, key_dim] in, or [heads, key_dim, width] for the output.
        flat = (
            kernel.reshape(kernel.shape[0], -1) if i < 3 else kernel.reshape(-1, kernel.shape[-1])
        )
        kernels.append(QuantizedKernel(*quantize_kernel(flat), bias.reshape(-1)))
    return kernels + [_quantized(dense) for dense in block.feed_forward.layers]


def _kernels(layer: keras.layers.Layer) -> list[QuantizedKernel]:
    """The int8 kernels of one layer of a quantized type, in its int8 layer's order."""
    if type(layer) is keras.layers.Embedding:
        return [QuantizedKernel(*quantize_rows(layer.embeddings.numpy()), per_row=True)]
    if type(layer) is TransformerBlock:
        return _transformer_kernels(layer)
    if isinstance(layer, _RECURRENT):
        return _recurrent_kernels(layer)
    return [_quantized(layer)]


def _int8_layer(layer: keras.layers.Layer, packed: Int8Weights, slots: list[Int8Slot]):
    if type(layer) is keras.layers.Dense:
        return Int8Dense(packed, slots[0], layer.activation, name=layer.name)
    if type(layer) is keras.layers.Embedding:
        return int8_sequence.Int8Embedding(packed, slots[0], name=layer.name)
    if type(layer) is keras.layers.Conv1D:
        return int8_sequence.Int8Conv1D(
            packed,
            slots[0],
            layer.kernel_size[0],
            layer.strides[0],
            layer.padding,
            layer.dilation_rate[0],
            layer.activation,
            name=layer.name,
        )
    if type(layer) is TransformerBlock:
        norms = [layer.attention_norm, layer.feed_forward_norm]
        return int8_sequence.Int8TransformerBlock(
            packed, slots, layer.num_heads, norms, name=layer.name
        )
    if isinstance(layer, _RECURRENT):
        return _int8_recurrent(layer, packed, slots)
    return Int8Conv2D(
        packed,
        slots[0],
        layer.kernel_size,
        layer.strides,
        layer.padding,
        layer.dilation_rate,
        layer.activation,
        name=layer.name,
    )


def _int8_recurrent(layer: keras.layers.Layer, packed: Int8Weights, slots: list[Int8Slot]):
    rnns = _directions(layer)
    first = rnns[0]
    return int8_sequence.Int8Recurrent(
        packed,
        "lstm" if isinstance(first, keras.layers.LSTM) else "gru",
        [(slots[2 * i], slots[2 * i + 1], rnn.go_backwards) for i, rnn in enumerate(rnns)],
        first.units,
        first.return_sequences,
        first.zero_output_for_mask,
        first.activation,
        first.recurrent_activation,
        name=layer.name,
    )


_RECURRENT = (keras.layers.LSTM, keras.layers.GRU, keras.layers.Bidirectional)
_QUANTIZED_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Embedding,
    TransformerBlock,
    *_RECURRENT,
)


def quantize_weights(model: keras.Model) -> keras.Model:
    """The inference model with its kernels and embedding tables stored as int8.

    The model is first rebuilt by `inference_model` (normalizations folded into their
    convolutions, pass-through layers left out, nested encoders inlined); then each
    layer of these types becomes its int8 counterpart:

    - Dense, Conv2D, Conv1D: `Int8Dense`, `Int8Conv2D`, `Int8Conv1D`, a scale per
      output channel;
    - Embedding: `Int8Embedding`, a scale per row (token);
    - `TransformerBlock`: `Int8TransformerBlock`, the attention's four projections and
      the feed-forward kernels int8 (a scale per output unit), layer normalization float;
    - LSTM, GRU (also inside Bidirectional): `Int8Recurrent`, kernel and recurrent
      kernel int8 (a scale per gate unit).

    All int8 kernels share one int8 variable and all scales and biases one float32
    variable (`Int8Weights`), so the model's variables are those two plus those of any
    layer left in float (a transformer's position embedding and layer normalizations,
    a normalization that could not be folded).

    Args:
      model: a functional tf_keras model.

    Returns:
      An uncompiled model with the same inputs and outputs as `model` at inference.

    Raises:
      ValueError: the model has no layer to quantize, or one of a quantized type in a
        configuration the int8 layers do not implement (a grouped or channels-first
        convolution, a causal Conv1D, a stateful recurrent layer, a GRU without
        reset_after); the message names the layer.
    """
    inference = inference_model(model)
    layers = [layer for layer in inference.layers if type(layer) in _QUANTIZED_LAYERS]
    if not layers:
        raise ValueError(
            f"model {model.name!r} has no Dense, convolution, embedding, attention "
            "or recurrent layer to quantize"
        )
    for layer in layers:
        _check_quantizable(layer)
    kernels = [_kernels(layer) for layer in layers]
    packed, slots = _pack_int8_weights([k for layer_kernels in kernels for k in layer_kernels])
    slots_of, start = {}, 0
    for layer, layer_kernels in zip(layers, kernels, strict=True):
        slots_of[layer.name] = slots[start : start + len(layer_kernels)]
        start += len(layer_kernels)

    def int8(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name not in slots_of:
            return None
        return _int8_layer(layer, packed, slots_of[layer.name])

    return _clone(inference, int8)


def _portable(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """The layer's TFLite-friendly replacement, or None to keep it."""
    if isinstance(layer, MaskedMeanPooling):
        return int8_sequence.FloorDivMeanPooling(name=layer.name)
    if _fusable_conv1d(layer):
        return int8_sequence.BiasFusedConv1D(layer)
    if not isinstance(layer, keras.layers.CategoryEncoding):
        return None
    if layer.output_mode != "one_hot":
        raise ValueError(f"layer {layer.name!r}: only one_hot CategoryEncoding converts to TFLite")
    return OneHot(layer.num_tokens, name=layer.name)


def _fusable_conv1d(layer: keras.layers.Layer) -> bool:
    return (
        type(layer) is keras.layers.Conv1D
        and layer.padding in ("valid", "same")
        and layer.data_format == "channels_last"
        and layer.groups == 1
    )


@dataclasses.dataclass(frozen=True)
class TFLiteInput:
    """One input of the TFLite model: a transformed feature as a [batch, *shape] tensor.

    Attributes:
      name: the transformed feature's name.
      dtype: the TFLite input's type.
      categorical: whether it holds vocabulary ids (passed as they are, not quantized).
      shape: one example's shape: () for a numeric or categorical feature, (height,
        width, channels) for an image.
    """

    name: str
    dtype: tf.DType
    categorical: bool
    shape: tuple[int, ...] = ()


def tflite_inputs(model: keras.Model) -> list[TFLiteInput]:
    """The TFLite model's inputs: float32 numeric features, images and series, int8 (or
    int32) categorical ids, int64 token ids.

    Categorical ids are int8 when every vocabulary fits (<= 128 ids), int32 otherwise; a
    text's token ids ([max_tokens] per example) stay int64, as Transform gives them.
    """
    # An embedding's ids (a large vocabulary's) need int32 as much as a one-hot's.
    depths = [
        layer.num_tokens if isinstance(layer, keras.layers.CategoryEncoding) else layer.input_dim
        for layer in model.layers
        if isinstance(layer, keras.layers.CategoryEncoding | keras.layers.Embedding)
    ]
    id_dtype = tf.int8 if all(d <= _MAX_INT8_VOCABULARY for d in depths) else tf.int32
    return [
        TFLiteInput(
            name,
            _tflite_dtype(tensor, id_dtype),
            not tensor.dtype.is_floating,
            tuple(tensor.shape[1:].as_list()),
        )
        for name, tensor in zip(model.input_names, model.inputs, strict=True)
    ]


def _tflite_dtype(tensor: tf.Tensor, id_dtype: tf.DType) -> tf.DType:
    if tensor.dtype.is_floating:
        return tf.float32
    return id_dtype if tensor.shape.rank == 1 else tf.int64


def _unrolled(layer: keras.layers.Layer, config: dict) -> dict:
    """An LSTM's or GRU's config (also inside Bidirectional) with the recurrence unrolled.

    TFLite cannot lower the loop keras runs a masked recurrent layer in (a While over
    TensorLists whose element shape depends on the batch), and would run it in float
    if it could; unrolled over the fixed number of steps, every step is fully connected
    layers, gates and a select on the mask, which all have int8 kernels.
    """
    if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
        return {**config, "unroll": True}
    if isinstance(layer, keras.layers.Bidirectional):
        config = dict(config)
        for key in ("layer", "backward_layer"):
            if key in config:
                inner = config[key]
                config[key] = {**inner, "config": {**inner["config"], "unroll": True}}
        return config
    return config


def _tflite_function(model: keras.Model, inputs: list[TFLiteInput]):
    # The inference model: the converter then never sees augmentation or dropout ops.
    portable = _clone(inference_model(model), _portable, _unrolled)
    signature = [tf.TensorSpec([None, *i.shape], i.dtype, name=i.name) for i in inputs]

    @tf.function(input_signature=signature)
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
      features: transformed training features, name -> [n, *shape] array (a sample:
        `components.quantization.measure.sample_records` draws one at random).
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


def integer_activations(model: keras.Model) -> bool:
    """Whether the TFLite model computes with int8 activations, or only stores int8 weights.

    False for a model with attention or layer normalization: their int8 activations
    lose most of the signal (layer normalization's mean, variance and reciprocal square
    root, attention's scores and softmax at 8 bits: a tiny transformer's int8 TFLite
    outputs come out as far from the float ones as they are large), and TFLite's 16x8
    mode aborts on this TFLite build. Such a model gets dynamic-range quantization
    instead: int8 weights (the same size), float activations.
    """
    wide = (TransformerBlock, keras.layers.LayerNormalization, keras.layers.MultiHeadAttention)
    return not any(isinstance(layer, wide) for layer in inference_model(model).layers)


def to_tflite(
    model: keras.Model,
    representative: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None,
) -> bytes:
    """Converts the model to TFLite; int8 when a representative dataset is given.

    With int8, fully integer (int8 weights, activations, inputs and outputs) unless
    `integer_activations(model)` is false (attention, layer normalization): then int8
    weights and float activations. Masked recurrent layers are unrolled and the masked
    mean pooling divides with FLOOR_DIV (`models.int8_sequence.FloorDivMeanPooling`), in
    the converted model only; Conv1D layers add their bias before their output is
    squeezed back to 3-D, so that it fuses into the CONV_2D
    (`models.int8_sequence.BiasFusedConv1D`). Intermediate tensors are unnamed
    (`without_inner_tensor_names`).

    Args:
      model: a functional tf_keras model taking transformed features.
      representative: calibration data (`representative_dataset`); None for a float model.

    Returns:
      The flatbuffer. Its inputs are `tflite_inputs(model)`; with integer activations
      the float inputs and the output are int8 with the scale and zero point in the
      interpreter's tensor details.

    Raises:
      ConversionError: the converter rejected the model; the message has its reason.
    """
    inputs = tflite_inputs(model)
    portable, function = _tflite_function(model, inputs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], portable)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if integer_activations(model):
            converter.representative_dataset = representative
            # An op without an int8 kernel stays float between a dequantize and a
            # quantize (the report's `float_ops` names them) rather than failing.
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        flatbuffer = converter.convert()
    except Exception as err:
        kind = "int8" if representative is not None else "float"
        raise ConversionError(
            f"TFLite {kind} conversion of model {model.name!r} failed: {err}"
        ) from err
    return without_inner_tensor_names(flatbuffer)


def without_inner_tensor_names(flatbuffer: bytes) -> bytes:
    """The flatbuffer with names only on its inputs and outputs.

    The converter names every tensor after the ops fused into it (up to ~200 bytes
    each): debugging information, 2-3% of a small int8 model, that an interpreter never
    reads. The inputs' and outputs' names and the signature stay, so tensors are still
    found by feature name. (TFLite's own `flatbuffer_utils.strip_strings` also drops
    those, and with them the signature.)

    Args:
      flatbuffer: a TFLite model.

    Returns:
      The same model without the names of its intermediate and constant tensors.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    for subgraph in model.subgraphs:
        kept = {int(i) for i in subgraph.inputs} | {int(i) for i in subgraph.outputs}
        for index, tensor in enumerate(subgraph.tensors):
            if index not in kept:
                tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


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
    """Fraction of zeros over all Dense and Conv2D kernels (int8 or float)."""
    kernels = [
        layer.kernel_int8 if isinstance(layer, _Int8Kernel) else layer.kernel
        for layer in model.layers
        if isinstance(layer, (*_QUANTIZED_LAYERS, _Int8Kernel))
    ]
    total = sum(int(tf.size(k)) for k in kernels)
    zeros = sum(int(tf.math.count_nonzero(tf.equal(k, 0))) for k in kernels)
    return float(zeros / total) if total else 0.0
