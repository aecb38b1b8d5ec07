"""A model for text and sequence features, with tabular features alongside.

Each text (int64 token ids, 0 pads) and each sequence (float32 values) goes through its
own encoder (models/sequence_encoders.py), numeric and categorical features through the
MLP's encoding; a combiner concatenates them and applies Dense layers; then the task head.

The hyperparameter `encoder` picks the encoder for every text and sequence: transformer,
lstm, gru or conv1d, so a tuner searching a list of them compares architectures. Each
encoder reads its own sizes and ignores the others':

| hyperparameter | read by |
|---|---|
| `embedding_dim` | every encoder of a text (token embeddings); the transformer's width |
| `num_heads`, `attention_blocks`, `ff_dim` | transformer |
| `rnn_units`, `rnn_layers`, `bidirectional` | lstm, gru |
| `conv_blocks`, `filters`, `kernel_size`, `residual` | conv1d |
| `pooling` (global_average, global_max) | transformer, conv1d |
| `dropout` | every encoder and the combiner |
| `units`, `layers`, `l2` | the combiner |
| `learning_rate`, `optimizer`, `lr_schedule`, `lr_decay_rate` | the optimizer |

`CONDITIONS` tells the tuner the same (models/search_space.py): the keys of encoders the
search space's `encoder` does not list are left out, and when it lists several, each
encoder's own keys are active only in the trials that choose it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tf_keras as keras

from models.combiner import concat_combiner
from models.encoders import tabular_inputs
from models.features import FeatureSpec, transformed_name
from models.heads import compiled_model
from models.sequence_encoders import ENCODER_HPARAMS, ENCODERS, build_encoder

# The hyperparameters build_model reads: the tuner searches these and no others.
HPARAMS = (
    "encoder",
    "embedding_dim",
    "num_heads",
    "attention_blocks",
    "ff_dim",
    "rnn_units",
    "rnn_layers",
    "bidirectional",
    "conv_blocks",
    "filters",
    "kernel_size",
    "residual",
    "pooling",
    "units",
    "layers",
    "dropout",
    "l2",
    "learning_rate",
    "optimizer",
    "lr_schedule",
    "lr_decay_rate",
)

# Each encoder's own hyperparameters, read only when `encoder` is one of those listed:
# key -> ("encoder", the encoders that read it), for search_space.hyperparameters.
CONDITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    key: ("encoder", tuple(kind for kind in ENCODERS if key in ENCODER_HPARAMS[kind]))
    for key in dict.fromkeys(k for kind in ENCODERS for k in ENCODER_HPARAMS[kind])
}


def build_model(
    hparams: Mapping[str, Any],
    spec: FeatureSpec,
    vocab_sizes: Mapping[str, int],
    num_classes: int | None = None,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
) -> keras.Model:
    """Builds and compiles the sequence model.

    Args:
      hparams: `encoder` and its sizes (see the module's table), the combiner's `units`,
        `layers`, `dropout`, `l2`; `learning_rate`, `optimizer`, `lr_schedule` (constant
        when absent), `lr_decay_rate` (exponential schedule).
      spec: the features (at least one text or sequence) and the task.
      vocab_sizes: ids per categorical and per text feature (a text's include padding
        id 0 and the OOV buckets).
      num_classes: number of classes, for classification.
      steps_per_epoch: batches per epoch, which a decaying `lr_schedule` needs.
      epochs: epochs of training, which the cosine schedule decays over.

    Returns:
      A compiled tf_keras model taking the transformed features (a text as int64
      [batch, max_tokens], a sequence as float32 [batch, sequence_length]), giving class
      probabilities [batch, num_classes] or a regression value [batch, 1].

    Raises:
      ValueError: no text or sequence feature, image features, a text without a
        vocabulary size, an unknown encoder or a hyperparameter it needs missing, fewer
        than two classes for classification, an unknown optimizer or schedule, or a
        decaying schedule without `steps_per_epoch` and `epochs`.
    """
    _check_features(spec, vocab_sizes)
    inputs, parts = tabular_inputs(spec, vocab_sizes)
    for key in spec.text:
        name = transformed_name(key)
        inputs[name] = keras.Input(shape=(spec.max_tokens,), name=name, dtype="int64")
        encoder = build_encoder(
            hparams, max_length=spec.max_tokens, vocab_size=vocab_sizes[key], name=f"{key}_encoder"
        )
        parts.append(encoder(inputs[name]))
    for key in spec.sequence:
        name = transformed_name(key)
        inputs[name] = keras.Input(shape=(spec.sequence_length,), name=name, dtype="float32")
        encoder = build_encoder(hparams, max_length=spec.sequence_length, name=f"{key}_encoder")
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


def _check_features(spec: FeatureSpec, vocab_sizes: Mapping[str, int]) -> None:
    if spec.image:
        raise ValueError(
            f"the sequence family takes text, sequence and tabular features, not images "
            f"{list(spec.image)}; use model family cnn"
        )
    if not spec.text and not spec.sequence:
        raise ValueError(
            "the sequence family needs a text or sequence feature (features.text, "
            "features.sequence); use mlp for tabular features only"
        )
    missing = [k for k in spec.text if k not in vocab_sizes]
    if missing:
        raise ValueError(f"text features {missing} have no vocabulary size in vocab_sizes")
