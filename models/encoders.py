"""Encoders per feature type: transformed features in, vectors for the combiner out.

Tabular features (numeric z-scores, categorical ids) enter as they are, one-hot (small
vocabularies) or embedded (large ones);
an image goes through a small convolutional network, with random augmentation in
front that Keras runs only in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tf_keras as keras

from models.features import FeatureSpec, transformed_name

# The hyperparameters (fixed, from the config's model.embeddings) that choose between
# one-hot and an embedding for a categorical feature.
EMBEDDING_HPARAMS = ("categorical_embedding_min_vocabulary", "categorical_embedding_dim")


def embedding_size(vocabulary: int) -> int:
    """fast.ai's rule of thumb for a categorical embedding: min(50, round(1.6 * V ** 0.56)),
    V the ids (16 at V = 64, 50 from V ~ 460)."""
    return int(min(50, round(1.6 * vocabulary**0.56)))


def categorical_encoder(
    vocabulary: int, hparams: Mapping[str, Any], name: str
) -> keras.layers.Layer:
    """One categorical feature's encoder: one-hot below `categorical_embedding_min_vocabulary` ids,
    an embedding of `categorical_embedding_dim` (0: `embedding_size`) dimensions from there.

    One-hot costs the first Dense layer (and every batch) V inputs; an embedding a fixed
    few, which a vocabulary of tens of thousands of names needs. Hyperparameters without
    `categorical_embedding_min_vocabulary` (older runs) mean one-hot.
    """
    threshold = hparams.get("categorical_embedding_min_vocabulary")
    if not threshold or vocabulary < int(threshold):
        return keras.layers.CategoryEncoding(vocabulary, output_mode="one_hot", name=name)
    dim = int(hparams.get("categorical_embedding_dim") or 0) or embedding_size(vocabulary)
    return keras.layers.Embedding(vocabulary, dim, name=name)


def tabular_inputs(
    spec: FeatureSpec, vocab_sizes: Mapping[str, int], hparams: Mapping[str, Any] | None = None
) -> tuple[dict, list]:
    """Keras inputs for the numeric and categorical features, and their encodings.

    Args:
      spec: the features; its image features are left out.
      vocab_sizes: ids per categorical feature, OOV buckets included.
      hparams: `categorical_embedding_min_vocabulary` and `categorical_embedding_dim` (`categorical_encoder`);
        None: every categorical feature one-hot.

    Returns:
      (transformed name -> keras.Input, one [batch, n] tensor per feature to concatenate).
    """
    inputs, parts = {}, []
    for key in spec.numeric:
        name = transformed_name(key)
        inputs[name] = keras.Input(shape=(), name=name, dtype="float32")
        parts.append(keras.layers.Reshape((1,))(inputs[name]))
    for key in spec.categorical:
        name = transformed_name(key)
        inputs[name] = keras.Input(shape=(), name=name, dtype="int64")
        encoder = categorical_encoder(vocab_sizes[key], hparams or {}, f"{name}_encoding")
        parts.append(encoder(inputs[name]))
    return inputs, parts


def augmentation_layers(hparams: Mapping[str, Any]) -> list[keras.layers.Layer]:
    """Random flips, shifts and zooms, from `augment_flip`, `augment_translate`, `augment_zoom`.

    Keras applies them only when the model is called with training=True (`fit` does;
    `predict`, `evaluate` and the serving signatures pass training=False), so the
    served model sees images as Transform made them. A bare `model(x)` counts as
    training for these tf_keras layers: pass training=False outside `fit`.
    """
    layers = []
    if hparams["augment_flip"]:
        layers.append(keras.layers.RandomFlip("horizontal"))
    # Zeros fill what a shift or zoom-out uncovers, as in pad-and-crop augmentation;
    # reflecting would mirror parts of an object on a plain background.
    if hparams["augment_translate"] > 0:
        factor = float(hparams["augment_translate"])
        layers.append(keras.layers.RandomTranslation(factor, factor, fill_mode="constant"))
    if hparams["augment_zoom"] > 0:
        layers.append(keras.layers.RandomZoom(float(hparams["augment_zoom"]), fill_mode="constant"))
    return layers


def _conv_block(
    convs: int, filters: int, kernel_size: int, batch_norm: bool, dropout: float
) -> list:
    """`convs` convolutions (each with batch normalisation if asked, then ReLU), a pooling."""
    layers = []
    for _ in range(convs):
        # Batch normalisation has its own shift, so the convolution needs no bias.
        layers.append(
            keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=not batch_norm)
        )
        if batch_norm:
            # Momentum 0.9, not Keras' 0.99: the moving statistics that inference uses
            # must settle within a few hundred steps (a short run on a few thousand
            # images), or evaluation sees chance accuracy while training learns.
            layers.append(keras.layers.BatchNormalization(momentum=0.9))
        layers.append(keras.layers.ReLU())
    # "same" keeps a 1x1 map 1x1, so more blocks than halvings still build.
    layers.append(keras.layers.MaxPool2D(padding="same"))
    layers.append(keras.layers.Dropout(dropout))
    return layers


POOLINGS = {
    "global_average": keras.layers.GlobalAveragePooling2D,
    "flatten": keras.layers.Flatten,
}


def image_encoder(
    hparams: Mapping[str, Any], image_shape: Sequence[int], name: str
) -> keras.Sequential:
    """A convolutional encoder for one image feature: augmentation, conv blocks, pooling.

    Args:
      hparams: `conv_blocks`, `convs_per_block`, `filters` (of the first block; each
        next block doubles them), `kernel_size`, `batch_norm`, `dropout` and the augmentation's
        (`augmentation_layers`).
      image_shape: (height, width, channels) of the transformed image.
      name: the encoder's layer name.

    Returns:
      A model from float32 [batch, height, width, channels] to a [batch, n] encoding:
      the last block's filters (`pooling` global_average, the default) or all its
      positions (flatten).
    """
    layers = [keras.Input(shape=tuple(image_shape), dtype="float32"), *augmentation_layers(hparams)]
    for i in range(int(hparams["conv_blocks"])):
        layers += _conv_block(
            int(hparams["convs_per_block"]),
            int(hparams["filters"]) * 2**i,
            int(hparams["kernel_size"]),
            bool(hparams["batch_norm"]),
            float(hparams["dropout"]),
        )
    # Global average pooling keeps the encoder small and size-independent; flattening
    # keeps where a feature was, which small images (28x28) often need.
    pooling = hparams["pooling"]
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; use one of {list(POOLINGS)}")
    layers.append(POOLINGS[pooling]())
    return keras.Sequential(layers, name=name)
