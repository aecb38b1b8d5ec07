"""Transfer learning: a trained model's convolutional image encoder, reused in a new model.

A backbone is any tf_keras model holding an image encoder as a nested model with Conv2D
layers (the cnn family's `<feature>_encoder`). The new encoder puts the new task's
augmentation in front of copies of the backbone encoder's layers from its first
convolution on (conv blocks and pooling), with the backbone's weights. The combiner and
head are new, so the new task may have other classes.

The encoder comes frozen: its weights are not trained, and its BatchNormalization layers
run in inference mode (a tf_keras BatchNormalization that is not trainable does), so the
new head first learns on stable features. `unfreeze` then makes the convolutions
trainable for fine-tuning at a lower rate; batch normalisation stays in inference mode,
as Keras' fine-tuning guide does, since updating its statistics from a small new dataset
would undo what the backbone learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tf_keras as keras

from models.encoders import augmentation_layers
from models.features import FeatureSpec


def encoder_name(feature: str) -> str:
    """The layer name of an image feature's encoder in a cnn model."""
    return f"{feature}_encoder"


def transferred_image_encoder(
    backbone: keras.Model,
    hparams: Mapping[str, Any],
    image_shape: Sequence[int],
    feature: str,
) -> keras.Sequential:
    """An image encoder made of the backbone's, with the new task's augmentation in front.

    Args:
      backbone: a trained model holding a convolutional image encoder.
      hparams: the augmentation's (`augmentation_layers`).
      image_shape: (height, width, channels) of the new image feature. Height and width may
        differ from the backbone's (convolutions slide, and the combiner is new); the
        channels must not.
      feature: the new image feature; a backbone encoder of the same name is preferred.

    Returns:
      A frozen `<feature>_encoder` from float32 [batch, height, width, channels] to a
      [batch, n] encoding.

    Raises:
      ValueError: the backbone has no convolutional image encoder for these channels, or
        several and none named for `feature`.
    """
    source = _backbone_encoder(backbone, feature, int(image_shape[-1]))
    layers = source.layers
    first_conv = next(i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Conv2D))
    reused = layers[first_conv:]
    copies = [type(layer).from_config(layer.get_config()) for layer in reused]
    encoder = keras.Sequential(
        [keras.Input(shape=tuple(image_shape), dtype="float32"), *augmentation_layers(hparams)]
        + copies,
        name=encoder_name(feature),
    )
    for copy, layer in zip(copies, reused, strict=True):
        copy.set_weights(layer.get_weights())
    encoder.trainable = False
    return encoder


def _backbone_encoder(backbone: keras.Model, feature: str, channels: int) -> keras.Model:
    """The backbone's convolutional image encoder taking `channels` channels."""
    encoders = [
        layer
        for layer in backbone.layers
        if isinstance(layer, keras.Model)
        and any(isinstance(inner, keras.layers.Conv2D) for inner in layer.layers)
    ]
    if not encoders:
        raise ValueError(
            f"model {backbone.name!r} has no convolutional image encoder (a nested model "
            f"with Conv2D layers, as the cnn family's <feature>_encoder); its layers: "
            f"{[layer.name for layer in backbone.layers]}"
        )
    fitting = [e for e in encoders if e.input_shape[-1] == channels]
    if not fitting:
        found = ", ".join(f"{e.name} takes {e.input_shape[1:]}" for e in encoders)
        raise ValueError(
            f"no image encoder of model {backbone.name!r} takes {channels}-channel images "
            f"like {feature!r} ({found}); use a backbone trained on images with "
            f"{channels} channels"
        )
    named = [e for e in fitting if e.name == encoder_name(feature)]
    if len(fitting) > 1 and not named:
        raise ValueError(
            f"model {backbone.name!r} has several image encoders that could serve "
            f"{feature!r} ({[e.name for e in fitting]}) and none is named "
            f"{encoder_name(feature)!r}"
        )
    return (named or fitting)[0]


def unfreeze(model: keras.Model, spec: FeatureSpec) -> None:
    """Makes the image encoders trainable, batch normalisation excepted; recompile after.

    Args:
      model: a cnn model built with a backbone.
      spec: its features; each image feature's `<feature>_encoder` is unfrozen.
    """
    for feature in spec.image:
        encoder = model.get_layer(encoder_name(feature))
        encoder.trainable = True
        for layer in encoder.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
