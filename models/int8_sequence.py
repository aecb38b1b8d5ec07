"""int8 layers for the sequence family: embeddings, 1-D convolutions, attention, LSTM/GRU.

`models.quantization.quantize_weights` replaces the float layers of an inference model
with these. Like `Int8Dense` they read their int8 weights, per-channel scales and biases
from the model's one packed `Int8Weights` at their `Int8Slot`s, and dequantize in the
forward pass, so the SavedModel stores int8 on disk:

- `Int8Embedding`: the table as int8 with one scale per row (token): a row is
  dequantized after the lookup, so a rare token's small vector keeps its precision
  instead of sharing a scale set by the largest rows.
- `Int8Conv1D`: a Conv1D kernel with a scale per filter (batch normalization already
  folded into it by `inference_model`).
- `Int8TransformerBlock`: `models.sequence_encoders.TransformerBlock` at inference, with
  the attention's query, key, value and output projections and both feed-forward
  kernels int8 (a scale per output unit); the layer normalizations stay float (2 x width
  values each, and the statistics they compute are not weights).
- `Int8Recurrent`: an LSTM or GRU (one direction, or both concatenated as
  `Bidirectional`), its kernel and recurrent kernel int8 with a scale per gate unit,
  dequantized once per call; the recurrence itself runs in float, step by step with
  `keras.backend.rnn` and the same mask handling as the float layer, so padded steps
  are skipped exactly as before.

The layers are inference-only and have no standalone config (save the model with
`models.export.export_lean_serving_model`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import tensorflow as tf
import tf_keras as keras

if TYPE_CHECKING:
    from models.quantization import Int8Slot, Int8Weights


def dequantized(packed: Int8Weights, slot: Int8Slot, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """The slot's [fan_in, units] kernel as float: int8 times its per-unit scale."""
    return tf.cast(packed.kernel(slot), dtype) * packed.scale(slot)


def _dense(inputs: tf.Tensor, packed: Int8Weights, slot: Int8Slot) -> tf.Tensor:
    """`inputs @ kernel + bias` over the last axis of an input of any rank."""
    outputs = tf.tensordot(inputs, dequantized(packed, slot, inputs.dtype), [[-1], [0]])
    return outputs + packed.bias(slot) if slot.use_bias else outputs


class _Int8Layer(keras.layers.Layer):
    """An int8 layer reading its weights from its model's shared `Int8Weights`."""

    def __init__(self, packed: Int8Weights, **kwargs):
        super().__init__(**kwargs)
        self.packed = packed

    def get_config(self):
        raise NotImplementedError(
            f"{type(self).__name__} {self.name!r} shares its weights with its model's other "
            "int8 layers and has no standalone config; save the model with "
            "models.export.export_lean_serving_model"
        )


class Int8Embedding(_Int8Layer):
    """An Embedding whose [vocabulary, dim] table is int8 with a float32 scale per row.

    `outputs = table_int8[ids] * row_scale[ids]`, the table in the slot's kernel
    (fan_in = vocabulary, units = dim, `per_row`).
    """

    def __init__(self, packed: Int8Weights, slot: Int8Slot, **kwargs):
        super().__init__(packed, **kwargs)
        if not slot.per_row:
            raise ValueError(f"layer {kwargs.get('name')!r}: an embedding's slot is per row")
        self.slot = slot

    def call(self, ids):
        ids = tf.cast(ids, tf.int32)
        rows = tf.gather(self.packed.kernel(self.slot), ids)
        scales = tf.gather(self.packed.scale(self.slot), ids)
        return tf.cast(rows, self.compute_dtype) * scales[..., tf.newaxis]


class Int8Conv1D(_Int8Layer):
    """A Conv1D (channels last) whose [kernel_size * in, filters] kernel is int8 per filter."""

    def __init__(
        self,
        packed: Int8Weights,
        slot: Int8Slot,
        kernel_size: int,
        strides: int = 1,
        padding: str = "valid",
        dilation_rate: int = 1,
        activation=None,
        **kwargs,
    ):
        super().__init__(packed, **kwargs)
        if padding not in ("valid", "same"):
            raise ValueError(
                f"layer {kwargs.get('name')!r}: int8 Conv1D takes padding valid or same, "
                f"got {padding!r}"
            )
        self.slot = slot
        self.kernel_size, self.strides = int(kernel_size), int(strides)
        self.padding, self.dilation_rate = padding.upper(), int(dilation_rate)
        self.activation = keras.activations.get(activation)

    def call(self, inputs):
        channels = self.slot.fan_in // self.kernel_size
        kernel = tf.reshape(
            dequantized(self.packed, self.slot, inputs.dtype),
            [self.kernel_size, channels, self.slot.units],
        )
        outputs = tf.nn.convolution(
            inputs, kernel, self.strides, self.padding, dilations=self.dilation_rate
        )
        if self.slot.use_bias:
            outputs = outputs + self.packed.bias(self.slot)
        return self.activation(outputs)


class Int8TransformerBlock(_Int8Layer):
    """`TransformerBlock` at inference (no dropout) with its six kernels int8.

    Computes what keras' MultiHeadAttention computes: per-head projections, scores
    scaled by 1/sqrt(key_dim), a softmax that gives padded keys no weight (keras'
    `Softmax` with the mask), the heads' outputs projected back; then the post-norm
    residuals and the feed-forward layer.

    Args:
      packed: the model's int8 weights.
      slots: query, key, value, output, feed-forward hidden, feed-forward output; the
        query/key/value kernels as [dim, heads * key_dim], the output's as
        [heads * key_dim, dim].
      num_heads: attention heads.
      norms: the block's two LayerNormalization layers (attention, feed-forward), whose
        weights are copied.
    """

    def __init__(
        self,
        packed: Int8Weights,
        slots: Sequence[Int8Slot],
        num_heads: int,
        norms: Sequence[keras.layers.LayerNormalization],
        **kwargs,
    ):
        super().__init__(packed, **kwargs)
        self.slots = tuple(slots)
        self.num_heads = int(num_heads)
        self.key_dim = self.slots[0].units // self.num_heads
        self.softmax = keras.layers.Softmax(axis=-1)
        self.norms = []
        for norm in norms:
            copy = keras.layers.LayerNormalization.from_config(norm.get_config())
            copy.build((None, None, norm.gamma.shape[0]))
            copy.set_weights(norm.get_weights())
            self.norms.append(copy)

    def _heads(self, x: tf.Tensor, slot: Int8Slot) -> tf.Tensor:
        projected = _dense(x, self.packed, slot)
        shape = tf.shape(x)
        return tf.reshape(projected, [shape[0], shape[1], self.num_heads, self.key_dim])

    def call(self, inputs, mask=None):
        query_slot, key_slot, value_slot, output_slot, hidden_slot, ff_slot = self.slots
        query = self._heads(inputs, query_slot) * (1.0 / math.sqrt(float(self.key_dim)))
        key, value = self._heads(inputs, key_slot), self._heads(inputs, value_slot)
        scores = tf.einsum("aecd,abcd->acbe", key, query)
        key_mask = None if mask is None else mask[:, tf.newaxis, tf.newaxis, :]
        weights = self.softmax(scores, key_mask)
        heads = tf.einsum("acbe,aecd->abcd", weights, value)
        shape = tf.shape(inputs)
        heads = tf.reshape(heads, [shape[0], shape[1], self.num_heads * self.key_dim])
        x = self.norms[0](inputs + _dense(heads, self.packed, output_slot))
        hidden = tf.nn.relu(_dense(x, self.packed, hidden_slot))
        return self.norms[1](x + _dense(hidden, self.packed, ff_slot))


def _lstm_step(recurrent_kernel, recurrent_bias, activation, recurrent_activation):
    def step(projected, states):
        h, c = states
        z = projected + tf.matmul(h, recurrent_kernel)
        i, f, g, o = tf.split(z, 4, axis=1)
        c = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
        h = recurrent_activation(o) * activation(c)
        return h, [h, c]

    return step


def _gru_step(recurrent_kernel, recurrent_bias, activation, recurrent_activation):
    # reset_after (Keras' default, cuDNN's): the reset gate applies after the matmul.
    def step(projected, states):
        (h,) = states
        x_z, x_r, x_h = tf.split(projected, 3, axis=1)
        inner = tf.matmul(h, recurrent_kernel) + recurrent_bias
        r_z, r_r, r_h = tf.split(inner, 3, axis=1)
        z = recurrent_activation(x_z + r_z)
        r = recurrent_activation(x_r + r_r)
        candidate = activation(x_h + r * r_h)
        h = z * h + (1 - z) * candidate
        return h, [h]

    return step


class Int8Recurrent(_Int8Layer):
    """An LSTM or GRU, one direction or two, with int8 kernels and recurrent kernels.

    Each direction has two slots: the kernel [features, gates * units] with the input
    bias, and the recurrent kernel [units, gates * units] (with the GRU's recurrent
    bias). Both are dequantized once per call; the input projection of every step is
    one matmul before the recurrence, which then runs as keras' own (`backend.rnn`,
    the mask skipping padded steps and holding the state there).

    Args:
      packed: the model's int8 weights.
      kind: "lstm" or "gru".
      directions: per direction, (kernel slot, recurrent slot, go_backwards); two are
        concatenated as `Bidirectional(merge_mode="concat")` does, the backward
        sequence reversed back when sequences are returned.
      units: the state size.
      return_sequences: every step's output, or the last.
      zero_output_for_mask: zeros at masked steps of returned sequences (as keras sets
        it on a Bidirectional's layers), else the previous output.
      activation, recurrent_activation: the cell's.
    """

    def __init__(
        self,
        packed: Int8Weights,
        kind: str,
        directions: Sequence[tuple[Int8Slot, Int8Slot, bool]],
        units: int,
        return_sequences: bool,
        zero_output_for_mask: bool,
        activation="tanh",
        recurrent_activation="sigmoid",
        **kwargs,
    ):
        super().__init__(packed, **kwargs)
        self.kind, self.directions, self.units = kind, tuple(directions), int(units)
        self.return_sequences = bool(return_sequences)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)

    def _direction(self, inputs, mask, kernel_slot, recurrent_slot, go_backwards):
        projected = _dense(inputs, self.packed, kernel_slot)
        recurrent_kernel = dequantized(self.packed, recurrent_slot, inputs.dtype)
        recurrent_bias = self.packed.bias(recurrent_slot) if recurrent_slot.use_bias else 0.0
        make_step = _lstm_step if self.kind == "lstm" else _gru_step
        step = make_step(
            recurrent_kernel, recurrent_bias, self.activation, self.recurrent_activation
        )
        state = tf.zeros([tf.shape(inputs)[0], self.units], inputs.dtype)
        states = [state, state] if self.kind == "lstm" else [state]
        last, outputs, _ = keras.backend.rnn(
            step,
            projected,
            states,
            go_backwards=go_backwards,
            mask=mask,
            input_length=inputs.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )
        if not self.return_sequences:
            return last
        return tf.reverse(outputs, [1]) if go_backwards else outputs

    def call(self, inputs, mask=None):
        outputs = [self._direction(inputs, mask, *d) for d in self.directions]
        return outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=-1)


class FloorDivMeanPooling(keras.layers.Layer):
    """`MaskedMeanPooling` as TFLite can run it fully integer around a float division.

    TFLite's int8 DIV refuses a divisor whose raw int8 value is 0, which the number of
    tokens hits whenever it is near the middle of its calibrated range (so a model
    fails on some text lengths), and a quantized reciprocal loses most of its precision
    for long texts. FLOOR_DIV has no int8 kernel, so the converter keeps it float:
    `floor(total / (tokens * 2**-16)) * 2**-16` is the mean to within 2**-16, computed in
    float from the int8 sum. The 2**16 scales the divisor, not the sum: the converter
    gives an int8 product `total * 2**16` the product's scale on the sum itself
    (measured: every sum of a trained bag of embeddings then rounds to 0, and its
    fully-integer TFLite model answers one class), while `tokens * 2**-16` keeps the
    count's precision. Used only in the model given to the TFLite converter.
    """

    _PRECISION = 2.0**16

    def call(self, inputs, mask=None):
        if mask is None:
            return tf.reduce_mean(inputs, axis=1)
        weights = tf.cast(mask, inputs.dtype)[:, :, tf.newaxis]
        total = tf.reduce_sum(inputs * weights, axis=1)
        count = tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
        step = 1.0 / self._PRECISION
        return tf.math.floordiv(total, count * step) * step


class BiasFusedConv1D(keras.layers.Layer):
    """A Conv1D written as the converter can fuse its bias and activation into CONV_2D.

    Keras' Conv1D adds its bias after squeezing the 2-D convolution's output back to
    [batch, steps, filters], so the TFLite converter keeps the bias as an ADD op of its
    own (an int8 bias tensor, an output tensor and their quantization parameters per
    convolution) next to a CONV_2D without bias. Here the bias is added before the
    squeeze, where the converter fuses it: the int8 CONV_2D gets an int32 bias at the
    product of the input's and the filter's scales, and one op less. Used only in the
    model given to the TFLite converter, with the Conv1D's own weights (batch
    normalization already folded into them by `models.quantization.inference_model`).

    Args:
      conv: the Conv1D to replace (channels last, padding valid or same).
    """

    def __init__(self, conv: keras.layers.Conv1D, **kwargs):
        super().__init__(name=conv.name, **kwargs)
        self.strides, self.dilation_rate = conv.strides[0], conv.dilation_rate[0]
        self.padding = conv.padding.upper()
        self.activation = conv.activation
        self._initial = [w.numpy() for w in conv.weights]

    def build(self, input_shape):
        self.kernel, *bias = (
            self.add_weight(name, shape=value.shape, initializer=keras.initializers.Constant(value))
            for name, value in zip(("kernel", "bias"), self._initial, strict=False)
        )
        self.bias = bias[0] if bias else None
        super().build(input_shape)

    def call(self, inputs):
        outputs = tf.nn.conv2d(
            tf.expand_dims(inputs, 1),
            tf.expand_dims(self.kernel, 0),
            [1, 1, self.strides, 1],
            self.padding,
            dilations=[1, 1, self.dilation_rate, 1],
        )
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(tf.squeeze(outputs, 1))
