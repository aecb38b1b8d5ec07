"""A convolutional network for image features, with tabular features alongside.

Encoders per feature (models/encoders.py: a conv net with training-only augmentation
per image, or a backbone's conv net behind it (models/transfer.py); the MLP's encoding
for numeric and categorical features), a combiner that concatenates them and applies
Dense layers, and the task head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tf_keras as keras

from models.combiner import concat_combiner
from models.encoders import image_encoder, tabular_inputs
from models.features import FeatureSpec, transformed_name
from models.heads import compiled_model
from models.transfer import encoder_name, transferred_image_encoder

# The hyperparameters build_model reads: the tuner searches these and no others.
HPARAMS = (
    "conv_blocks",
    "convs_per_block",
    "filters",
    "kernel_size",
    "batch_norm",
    "pooling",
    "units",
    "layers",
    "dropout",
    "l2",
    "learning_rate",
    "optimizer",
    "lr_schedule",
    "lr_decay_rate",
    "augment_flip",
    "augment_translate",
    "augment_zoom",
)
# What a backbone's image encoder fixes: with a backbone the tuner leaves these out.
ENCODER_HPARAMS = (
    "conv_blocks",
    "convs_per_block",
    "filters",
    "kernel_size",
    "batch_norm",
    "pooling",
)


def build_model(
    hparams: Mapping[str, Any],
    spec: FeatureSpec,
    vocab_sizes: Mapping[str, int],
    num_classes: int | None = None,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    backbone: keras.Model | None = None,
) -> keras.Model:
    """Builds and compiles the CNN.

    Call the model with training=False outside `fit` (`predict`, `evaluate` and the
    serving signatures do): a bare `model(x)` runs the augmentation in tf_keras.

    Args:
      hparams: the image encoder's `conv_blocks`, `convs_per_block`, `filters`, `kernel_size`,
        `batch_norm`, `pooling`, `augment_flip`, `augment_translate`, `augment_zoom`; the
        combiner's `units`, `layers`, `dropout` (also after each conv block), `l2`;
        `learning_rate`, `optimizer`, `lr_schedule` (constant when absent),
        `lr_decay_rate` (exponential schedule). With a backbone, the encoder's
        (`ENCODER_HPARAMS`) are not read.
      spec: the features (at least one image) and the task.
      vocab_sizes: ids per categorical feature, OOV buckets included.
      num_classes: number of classes, for classification.
      steps_per_epoch: batches per epoch, which a decaying `lr_schedule` needs.
      epochs: epochs of training, which the cosine schedule decays over.
      backbone: a trained model whose convolutional image encoder each image feature
        reuses, frozen (models/transfer.py; `transfer.unfreeze` to fine-tune).

    Returns:
      A compiled tf_keras model taking the transformed features (images as float32
      [batch, height, width, channels]), giving class probabilities
      [batch, num_classes] or a regression value [batch, 1].

    Raises:
      ValueError: no image feature, fewer than two classes for classification, an
        unknown optimizer or schedule, a decaying schedule without `steps_per_epoch` and
        `epochs`, or a backbone without an image encoder for these images.
    """
    if not spec.image:
        raise ValueError("the cnn family needs an image feature (features.image); use mlp")
    inputs, parts = tabular_inputs(spec, vocab_sizes)
    for key in spec.image:
        name = transformed_name(key)
        inputs[name] = keras.Input(shape=spec.image_shape, name=name, dtype="float32")
        if backbone is None:
            encoder = image_encoder(hparams, spec.image_shape, name=encoder_name(key))
        else:
            encoder = transferred_image_encoder(backbone, hparams, spec.image_shape, key)
        parts.append(encoder(inputs[name]))
    return compiled_model(
        inputs,
        concat_combiner(parts, hparams),
        hparams,
        spec,
        num_classes,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )
