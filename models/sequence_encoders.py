"""Encoders for text and sequence features: token ids or a float series in, a vector out.

A text arrives as int64 token ids [batch, length] (0 pads, 1.. are tokens), a sequence as
float32 values [batch, length]. `build_encoder` embeds the ids (or projects each value)
and runs one of `ENCODERS` over the steps:

- transformer: learned position embeddings, `attention_blocks` blocks of multi-head
  self-attention and a feed-forward layer, each with a residual, layer normalisation and
  dropout; masked pooling (`pooling`: the mean or the maximum over the tokens).
- lstm, gru: `rnn_layers` stacked recurrent layers (bidirectional if asked); the last
  layer's final state.
- conv1d: the fully convolutional network of Wang et al. (2017), Conv1D + batch
  normalisation + ReLU blocks, or with `residual` their ResNet (three convolutions per
  block and a shortcut); masked pooling as the transformer's. With `conv_blocks` 0 this is
  a bag of embeddings (fastText's average of the token embeddings, or their maximum).

Padding never changes a text's encoding: attention never attends to padded steps,
recurrent layers skip them, the convolutions see zeros there (as beyond the ends) and
pooling reads only the tokens. A text of padding only encodes as zeros (transformer,
conv1d) or the recurrent layers' initial state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras as keras

ENCODERS = ("transformer", "lstm", "gru", "conv1d")
# `pooling` of the transformer and conv1d: over the unpadded steps, the mean or the maximum
# per channel (the names of the cnn family's global poolings).
POOLINGS = ("global_average", "global_max")

# The hyperparameters each encoder reads, besides `embedding_dim` (text only; also the
# transformer's width) and `dropout`.
ENCODER_HPARAMS: dict[str, tuple[str, ...]] = {
    "transformer": ("num_heads", "attention_blocks", "ff_dim", "pooling"),
    "lstm": ("rnn_units", "rnn_layers", "bidirectional"),
    "gru": ("rnn_units", "rnn_layers", "bidirectional"),
    "conv1d": ("conv_blocks", "filters", "kernel_size", "residual", "pooling"),
}

_PACKAGE = "tfx_pipeline"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PaddingMask(keras.layers.Layer):
    """True where a token id is not 0 (padding): bool [batch, length] from int ids."""

    def call(self, ids):
        return tf.not_equal(ids, tf.zeros([], ids.dtype))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZeroMasked(keras.layers.Layer):
    """Sets the padded steps of [batch, length, channels] to 0 (`mask` False)."""

    def call(self, inputs, mask=None):
        if mask is None:
            return inputs
        return inputs * tf.cast(mask, inputs.dtype)[:, :, tf.newaxis]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedMeanPooling(keras.layers.Layer):
    """The mean over the unpadded steps: [batch, length, channels] -> [batch, channels].

    Unlike `GlobalAveragePooling1D` with a mask, a row with no unpadded step (an empty
    text) gives zeros, not NaN.
    """

    def call(self, inputs, mask=None):
        if mask is None:
            return tf.reduce_mean(inputs, axis=1)
        weights = tf.cast(mask, inputs.dtype)[:, :, tf.newaxis]
        total = tf.reduce_sum(inputs * weights, axis=1)
        return tf.math.divide_no_nan(total, tf.reduce_sum(weights, axis=1))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedMaxPooling(keras.layers.Layer):
    """The maximum over the unpadded steps: [batch, length, channels] -> [batch, channels].

    A row with no unpadded step (an empty text) gives zeros.
    """

    def call(self, inputs, mask=None):
        if mask is None:
            return tf.reduce_max(inputs, axis=1)
        kept = tf.cast(mask, tf.bool)[:, :, tf.newaxis]
        lowest = tf.fill(tf.shape(inputs), inputs.dtype.min)
        pooled = tf.reduce_max(tf.where(kept, inputs, lowest), axis=1)
        return tf.where(tf.reduce_any(kept, axis=1), pooled, tf.zeros_like(pooled))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position to [batch, length, dim], length ≤ `max_length`.

    Args:
      max_length: the most steps an input may have.
    """

    def __init__(self, max_length: int, **kwargs):
        super().__init__(**kwargs)
        self.max_length = int(max_length)

    def build(self, input_shape):
        self.positions = self.add_weight(
            name="positions",
            shape=(self.max_length, int(input_shape[-1])),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        super().build(input_shape)

    def call(self, inputs):
        length = tf.shape(inputs)[1]
        tf.debugging.assert_less_equal(
            length, self.max_length, message="input longer than the position embedding"
        )
        return inputs + self.positions[tf.newaxis, :length]

    def get_config(self):
        return super().get_config() | {"max_length": self.max_length}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """Multi-head self-attention, then a feed-forward layer; each with a residual and
    layer normalisation after it (as in Vaswani et al. 2017), and dropout.

    Args:
      num_heads: attention heads; each attends with `dim // num_heads` (at least 1) sizes.
      ff_dim: units of the feed-forward layer's hidden ReLU layer.
      dropout: on the attention weights and on each sublayer's output.
    """

    def __init__(self, num_heads: int, ff_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.ff_dim, self.dropout = int(num_heads), int(ff_dim), float(dropout)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, max(1, dim // self.num_heads), dropout=self.dropout
        )
        self.feed_forward = keras.Sequential(
            [keras.layers.Dense(self.ff_dim, activation="relu"), keras.layers.Dense(dim)]
        )
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.feed_forward_norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.attention_dropout = keras.layers.Dropout(self.dropout)
        self.feed_forward_dropout = keras.layers.Dropout(self.dropout)
        # Create every weight now, not at the first call: reloading a SavedModel restores
        # weights into the layers that exist when it builds this one, and MultiHeadAttention
        # otherwise makes its own only when first called (its from_config builds the same way).
        self.attention._build_from_signature(input_shape, input_shape)
        self.feed_forward.build(input_shape)
        self.attention_norm.build(input_shape)
        self.feed_forward_norm.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, mask=None, training=None):
        # Every query attends only to unpadded keys; padded queries are ignored downstream.
        attention_mask = None if mask is None else mask[:, tf.newaxis, :]
        attended = self.attention(inputs, inputs, attention_mask=attention_mask, training=training)
        x = self.attention_norm(inputs + self.attention_dropout(attended, training=training))
        transformed = self.feed_forward(x, training=training)
        return self.feed_forward_norm(x + self.feed_forward_dropout(transformed, training=training))

    def get_config(self):
        return super().get_config() | {
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }


def build_encoder(
    hparams: Mapping[str, Any], *, max_length: int, vocab_size: int | None = None, name: str
) -> keras.Model:
    """An encoder for one text (with `vocab_size`) or one float sequence (without).

    Args:
      hparams: `encoder` (one of `ENCODERS`), `dropout`, `embedding_dim` (token
        embeddings; the transformer's width, also for a sequence), and the encoder's own
        (`ENCODER_HPARAMS`): transformer `num_heads`, `attention_blocks`, `ff_dim`,
        `pooling` (one of `POOLINGS`);
        lstm/gru `rnn_units`, `rnn_layers`, `bidirectional`; conv1d `conv_blocks`,
        `filters` (of the first block; later blocks double them, as FCN's 64/128/128),
        `kernel_size` (of the first convolution; each next one 3 shorter, at least 3, as
        FCN's 8/5/3), `residual` (ResNet blocks instead of FCN's), `pooling`. Others are
        ignored.
      max_length: the most steps an input has (the transformer's position embedding).
      vocab_size: token ids a text has, padding (0) included; None for a float sequence.
      name: the encoder's name.

    Returns:
      A model from int64 ids or float32 values [batch, length ≤ max_length] to float32
      [batch, n].

    Raises:
      ValueError: an unknown `encoder` or `pooling`, or a hyperparameter the encoder
        needs is missing.
    """
    kind = hparams.get("encoder")
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; use one of {list(ENCODERS)}")
    embeds = vocab_size is not None or kind == "transformer"
    needed = ENCODER_HPARAMS[kind] + ("dropout",) + (("embedding_dim",) if embeds else ())
    missing = [k for k in needed if k not in hparams]
    if missing:
        raise ValueError(f"encoder {kind!r} needs the hyperparameters {missing}")
    if "pooling" in needed and hparams["pooling"] not in POOLINGS:
        raise ValueError(
            f"unknown pooling {hparams['pooling']!r} for encoder {kind!r}; use one of "
            f"{list(POOLINGS)}"
        )
    if vocab_size is not None:
        inputs = keras.Input(shape=(None,), dtype="int64")
        mask = PaddingMask()(inputs)
        steps = keras.layers.Embedding(vocab_size, int(hparams["embedding_dim"]))(inputs)
    else:
        inputs = keras.Input(shape=(None,), dtype="float32")
        mask = None
        steps = keras.layers.Reshape((-1, 1))(inputs)
    outputs = _BODIES[kind](steps, mask, hparams, max_length)
    return keras.Model(inputs, outputs, name=name)


def _transformer(steps, mask, hparams: Mapping[str, Any], max_length: int) -> tf.Tensor:
    """Position embeddings, attention blocks, masked pooling."""
    dropout = float(hparams["dropout"])
    if mask is None:
        # A value per step: project it to the model's width, as a token is embedded.
        steps = keras.layers.Dense(int(hparams["embedding_dim"]))(steps)
    x = PositionEmbedding(max_length)(steps)
    x = keras.layers.Dropout(dropout)(x)
    for _ in range(int(hparams["attention_blocks"])):
        x = TransformerBlock(int(hparams["num_heads"]), int(hparams["ff_dim"]), dropout)(
            x, mask=mask
        )
    return _pooled(x, mask, hparams["pooling"])


def _recurrent(steps, mask, hparams: Mapping[str, Any], max_length: int) -> tf.Tensor:
    """Stacked LSTM or GRU layers; the last returns its final state."""
    cell = keras.layers.LSTM if hparams["encoder"] == "lstm" else keras.layers.GRU
    x, count = steps, int(hparams["rnn_layers"])
    for i in range(count):
        layer = cell(int(hparams["rnn_units"]), return_sequences=i < count - 1)
        if hparams["bidirectional"]:
            layer = keras.layers.Bidirectional(layer)
        x = layer(x, mask=mask)
        x = keras.layers.Dropout(float(hparams["dropout"]))(x)
    return x


def _conv1d(steps, mask, hparams: Mapping[str, Any], max_length: int) -> tf.Tensor:
    """FCN or ResNet blocks with padded steps kept at 0, then masked pooling."""
    x = ZeroMasked()(steps, mask=mask)
    for i in range(int(hparams["conv_blocks"])):
        filters = int(hparams["filters"]) * (1 if i == 0 else 2)
        if hparams["residual"]:
            x = _residual_block(x, mask, filters, int(hparams["kernel_size"]))
        else:
            x = _conv_bn_relu(x, mask, filters, _kernel_size(hparams["kernel_size"], i))
    x = keras.layers.Dropout(float(hparams["dropout"]))(x)
    return _pooled(x, mask, hparams["pooling"])


def _pooled(x, mask, pooling: str) -> tf.Tensor:
    layer = MaskedMeanPooling() if pooling == "global_average" else MaskedMaxPooling()
    return layer(x, mask=mask)


def _kernel_size(first: int, i: int) -> int:
    """The `i`th convolution's kernel: `first`, then each 3 shorter down to 3 (FCN's 8, 5, 3)."""
    return max(3, int(first) - 3 * i)


def _conv_bn_relu(x, mask, filters: int, kernel_size: int, relu: bool = True) -> tf.Tensor:
    # Batch normalisation has its own shift, so the convolution needs no bias. Momentum
    # 0.9 (Keras' default 0.99) so the moving statistics settle within a short run.
    x = keras.layers.Conv1D(filters, kernel_size, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    if relu:
        x = keras.layers.ReLU()(x)
    # Zeros where the text is padded, as "same" pads beyond its ends: a convolution
    # then sees the same around a token however much padding follows.
    return ZeroMasked()(x, mask=mask)


def _residual_block(x, mask, filters: int, kernel_size: int) -> tf.Tensor:
    """Three convolutions (kernels `kernel_size`, then 3 shorter each) and a shortcut."""
    shortcut = x
    for i in range(3):
        x = _conv_bn_relu(x, mask, filters, _kernel_size(kernel_size, i), relu=i < 2)
    if shortcut.shape[-1] != filters:
        shortcut = _conv_bn_relu(shortcut, mask, filters, 1, relu=False)
    return ZeroMasked()(keras.layers.ReLU()(keras.layers.Add()([x, shortcut])), mask=mask)


_BODIES = {"transformer": _transformer, "lstm": _recurrent, "gru": _recurrent, "conv1d": _conv1d}
