"""Warm start: a new model begins from a trained model's weights where their shapes match.

Layers are paired by position when both models have the same layers in the same order
(the same family and hyperparameters: auto-named layers such as `category_encoding_3`
are named by a per-process counter, so names alone would not pair them), and by name
otherwise (the explicitly named `dense_<i>` and `scores` layers). A layer takes the old
weights only when every one of its weight shapes is unchanged; otherwise it keeps its
fresh initialisation. When a categorical feature's vocabulary grows, its one-hot
(CategoryEncoding, no weights) or embedding layer widens, so the embedding and the first
Dense layer that reads the one-hot concatenation change shape and start fresh, while the
deeper layers and the head still warm-start. Rows of a grown embedding are not copied
over because the vocabulary's order (by frequency) may change between runs.
"""

from __future__ import annotations

import dataclasses

import tf_keras as keras


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What a warm start copied: layer names loaded, and why the others were not."""

    loaded: list[str]
    skipped: dict[str, str]


def copy_matching_weights(model: keras.Model, source: keras.Model) -> WarmStart:
    """Sets the weights of `model`'s layers to those of their partners in `source`.

    Args:
      model: the newly built model; changed in place.
      source: the trained model to start from.

    Returns:
      The layers that took `source`'s weights and, for each other layer with weights,
      why not (no partner, or the shapes that differ).
    """
    partners = _partners(model, source)
    loaded, skipped = [], {}
    for layer in model.layers:
        if not layer.weights:
            continue
        partner = partners.get(layer.name)
        if partner is None:
            skipped[layer.name] = "no layer of that name in the base model"
            continue
        new = [tuple(w.shape) for w in layer.weights]
        old = [tuple(w.shape) for w in partner.weights]
        if new != old:
            skipped[layer.name] = f"shapes changed: {old} -> {new}"
            continue
        layer.set_weights(partner.get_weights())
        loaded.append(layer.name)
    return WarmStart(loaded, skipped)


def _partners(model: keras.Model, source: keras.Model) -> dict[str, keras.layers.Layer]:
    """Each of `model`'s layer names -> the layer of `source` that corresponds to it."""
    kinds = [type(layer).__name__ for layer in model.layers]
    if kinds == [type(layer).__name__ for layer in source.layers]:
        return {new.name: old for new, old in zip(model.layers, source.layers, strict=True)}
    by_name = {layer.name: layer for layer in source.layers}
    return {layer.name: by_name[layer.name] for layer in model.layers if layer.name in by_name}
