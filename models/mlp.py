"""A multilayer perceptron over tabular features (numeric z-scores and categorical ids)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tf_keras as keras

from models.combiner import concat_combiner
from models.encoders import EMBEDDING_HPARAMS, tabular_inputs
from models.features import FeatureSpec
from models.heads import compiled_model

# The hyperparameters build_model reads: the tuner searches these and no others.
HPARAMS = (
    "units",
    "layers",
    "learning_rate",
    "dropout",
    "l2",
    "optimizer",
    "lr_schedule",
    "lr_decay_rate",
    *EMBEDDING_HPARAMS,
)


def build_model(
    hparams: Mapping[str, Any],
    spec: FeatureSpec,
    vocab_sizes: Mapping[str, int],
    num_classes: int | None = None,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
) -> keras.Model:
    """Builds and compiles the MLP.

    Args:
      hparams: `units`, `layers`, `dropout`, `l2`, `learning_rate`, `optimizer`,
        `lr_schedule` (constant when absent), `lr_decay_rate` (exponential schedule);
        `categorical_embedding_min_vocabulary`, `categorical_embedding_dim` (models/encoders.py
        `categorical_encoder`; absent: one-hot).
      spec: the features and the task.
      vocab_sizes: ids per categorical feature, OOV buckets included.
      num_classes: number of classes, for classification.
      steps_per_epoch: batches per epoch, which a decaying `lr_schedule` needs.
      epochs: epochs of training, which the cosine schedule decays over.

    Returns:
      A compiled tf_keras model taking the transformed features, giving class
      probabilities [batch, num_classes] or a regression value [batch, 1].

    Raises:
      ValueError: image features (use the cnn family), fewer than two classes for
        classification, an unknown optimizer or schedule, or a decaying schedule without
        `steps_per_epoch` and `epochs`.
    """
    if spec.image:
        raise ValueError(
            f"the mlp family takes numeric and categorical features, not images "
            f"{list(spec.image)}; use model family cnn"
        )
    inputs, parts = tabular_inputs(spec, vocab_sizes, hparams)
    return compiled_model(
        inputs,
        concat_combiner(parts, hparams),
        hparams,
        spec,
        num_classes,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )
