"""Integrated gradients through the Trainer's Keras model, summed per raw feature.

What is differentiated, per feature type:

- numeric: the transformed value, a z-score. Transform's z-score is affine, so IG on the
  z-score from the baseline 0 equals IG on the raw value through the TFT graph from the
  training mean (the chain rule's 1/std cancels against the raw difference); an imputed
  missing value sits at the mean and gets attribution 0.
- categorical: what the model's encoder makes of the id, the one-hot vector of a
  `CategoryEncoding` (small vocabularies) or the row of an `Embedding` (large ones,
  models/encoders.py). The model is rebuilt with that layer replaced by an identity on a
  float input of its output's width (same weights); the input's attributions are summed
  per feature; the baseline is the all-zero vector (no category, or a zero embedding, as
  for text).
- image, sequence: the transformed pixels (in [0, 1]) and series values; baseline zeros
  (a black image, a flat series at the normalised mean).
- text: token ids select embedding rows, which is not differentiable w.r.t. the ids, so IG
  runs on the embedding layer's output (the usual way for text): the model is rebuilt with
  the text encoder's `Embedding` removed and its output a float input [max_tokens, dim]; the
  ids stay an input, held at the example's value, because the padding mask is made of them.
  The baseline is every token's embedding at zero (not the padding token's embedding: the
  mask already tells the model where padding is, and zero is the flat vector's baseline for
  every other type). A token's score is its attribution summed over the embedding's
  dimensions; the feature's is the sum over its tokens.

Integration is PAIR's `saliency.core.IntegratedGradients` (a Riemann sum over `steps`
points, both ends included) over one flat float vector per example that `Explainer`
splits back into the model's inputs.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import saliency.core as saliency
import tensorflow as tf
import tf_keras as keras

from models.features import FeatureSpec, transformed_name

NUMERIC, CATEGORICAL, IMAGE, SEQUENCE = "numeric", "categorical", "image", "sequence"
TEXT = "text"
BASELINE = (
    "zeros in the model's differentiable inputs: numeric at the training mean (z-score 0), "
    "categorical one-hot all zero (no category), images black, series at 0, text tokens' "
    "embeddings all zero (the padding mask kept from the example's token ids)"
)
# The rebuilt model's float input that replaces a text encoder's embedding output.
EMBEDDED_SUFFIX = "_embedded"


@dataclasses.dataclass(frozen=True)
class Segment:
    """One raw feature's part of the flat vector that IG integrates over."""

    feature: str
    kind: str
    input_name: str
    shape: tuple[int, ...]
    # The embedding table [vocabulary, dim] that turns a text's or an embedded categorical
    # feature's ids into the input.
    table: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def source(self) -> str:
        """The transformed feature it is made from (a text's ids for its embedded input)."""
        return transformed_name(self.feature)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


def _categorical_inputs(config: dict, categorical: set[str]) -> dict[str, tuple[int, str | None]]:
    """Rewrites a functional model's config so that each categorical input feeds its
    encoder's output directly; returns the input name -> (that output's width, the name of
    the Embedding layer whose table maps ids to it, or None for a one-hot)."""
    layers = {layer["name"]: layer for layer in config["layers"]}
    rewritten = {}
    for layer in config["layers"]:
        if layer["class_name"] not in ("CategoryEncoding", "Embedding"):
            continue
        [[source, *_]] = layer["inbound_nodes"][0]
        if source not in categorical:
            continue
        if layer["class_name"] == "Embedding":
            rewritten[source] = (int(layer["config"]["output_dim"]), layer["name"])
        else:
            rewritten[source] = (int(layer["config"]["num_tokens"]), None)
        width = rewritten[source][0]
        layers[source]["config"].update(batch_input_shape=[None, width], dtype="float32")
        # An identity that keeps the layer's name and place in the graph.
        layer["class_name"] = "Activation"
        layer["config"] = {
            "name": layer["name"],
            "trainable": layer["config"].get("trainable", True),
            "dtype": "float32",
            "activation": "linear",
        }
        layer.pop("module", None)
        layer.pop("registered_name", None)
    return rewritten


def _embedded_inputs(config: dict, texts: set[str]) -> dict[str, tuple[str, str]]:
    """Rewrites a functional model's config so that each text encoder takes its embedding
    output as a second, float input; returns the text input name -> (that input's name,
    the encoder's name).

    Raises:
      ValueError: a text input that does not feed an encoder model starting with an
        `Embedding` layer.
    """
    rewritten = {}
    for layer in list(config["layers"]):
        if layer["class_name"] not in ("Functional", "Model") or not layer["inbound_nodes"]:
            continue
        source = layer["inbound_nodes"][0][0][0]
        if source not in texts:
            continue
        embedded = f"{source}{EMBEDDED_SUFFIX}"
        dim = _drop_embedding(layer["config"], layer["name"])
        max_tokens = _input_layer(config, source)["config"]["batch_input_shape"][1]
        config["layers"].insert(0, _float_input(embedded, [None, max_tokens, dim]))
        layer["inbound_nodes"][0].append([embedded, 0, 0, {}])
        _add_input(config, embedded)
        rewritten[source] = (embedded, layer["name"])
    missing = sorted(texts - set(rewritten))
    if missing:
        raise ValueError(
            f"text inputs {missing} do not feed an encoder model that starts with an Embedding "
            "layer (models/sequence_encoders.py build_encoder), so their embeddings cannot be "
            "attributed to"
        )
    return rewritten


def _drop_embedding(encoder: dict, name: str) -> int:
    """Replaces the encoder's `Embedding` on its ids input with a float input of the
    embedding's width, in place; returns that width."""
    [[ids, *_]] = encoder["input_layers"]
    [embedding] = [
        layer
        for layer in encoder["layers"]
        if layer["class_name"] == "Embedding" and layer["inbound_nodes"][0][0][0] == ids
    ] or [None]
    if embedding is None:
        raise ValueError(f"encoder {name!r} has no Embedding layer on its input {ids!r}")
    encoder["layers"].remove(embedding)
    dim = int(embedding["config"]["output_dim"])
    encoder["layers"].insert(0, _float_input(embedding["name"], [None, None, dim]))
    encoder["input_layers"].append([embedding["name"], 0, 0])
    return dim


def _float_input(name: str, shape: list) -> dict:
    return {
        "class_name": "InputLayer",
        "name": name,
        "config": {
            "batch_input_shape": shape,
            "dtype": "float32",
            "sparse": False,
            "ragged": False,
            "name": name,
        },
        "inbound_nodes": [],
    }


def _add_input(config: dict, name: str) -> None:
    # A model built on a dict of inputs keeps them by name, one built on a list in order.
    if isinstance(config["input_layers"], dict):
        config["input_layers"][name] = [name, 0, 0]
    else:
        config["input_layers"].append([name, 0, 0])


def _input_layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["layers"] if layer["name"] == name)


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Each layer of `target` gets the weights of the layer of that name in `source`
    (nested models layer by layer: the rebuilt encoders lack their Embedding)."""
    for layer in target.layers:
        # An encoder replaced by an identity (an embedding) keeps its table for `flatten`.
        if isinstance(layer, keras.layers.InputLayer) or not layer.weights:
            continue
        original = source.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            _copy_weights(original, layer)
        else:
            layer.set_weights(original.get_weights())


def differentiable_model(
    model: keras.Model, spec: FeatureSpec
) -> tuple[keras.Model, list[Segment]]:
    """The model with a float input for every feature IG can attribute to, and their layout.

    Args:
      model: the Trainer's Keras model (transformed features in).
      spec: the features.

    Returns:
      (a model with the same weights whose categorical inputs are their one-hot or
      embedding, as floats, and whose text encoders take their embedding output as an
      input beside the ids; the segments of the flat vector in input order).

    Raises:
      ValueError: a categorical input that does not go through a `CategoryEncoding` or an
        `Embedding` layer, or a text input whose encoder does not start with an `Embedding`
        layer.
    """
    categorical = {transformed_name(k) for k in spec.categorical}
    config = copy.deepcopy(model.get_config())
    encoded = _categorical_inputs(config, categorical)
    missing = sorted(categorical - set(encoded))
    if missing:
        raise ValueError(
            f"categorical inputs {missing} do not feed a CategoryEncoding or Embedding layer "
            "(models/encoders.py categorical_encoder), so they cannot be attributed to"
        )
    embedded = _embedded_inputs(config, {transformed_name(k) for k in spec.text})
    if not encoded and not embedded:
        return model, _segments(model, spec, {}, {})
    rebuilt = keras.Model.from_config(config)
    _copy_weights(model, rebuilt)
    tables = {
        name: _embedding_table(model.get_layer(encoder)) for name, (_, encoder) in embedded.items()
    }
    tables.update(
        (name, model.get_layer(layer).get_weights()[0])
        for name, (_, layer) in encoded.items()
        if layer is not None
    )
    widths = {name: width for name, (width, _) in encoded.items()}
    return rebuilt, _segments(rebuilt, spec, widths, tables)


def _embedding_table(encoder: keras.Model) -> np.ndarray:
    [embedding] = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Embedding)]
    return embedding.embeddings.numpy()


def _segments(
    model: keras.Model,
    spec: FeatureSpec,
    widths: Mapping[str, int],
    tables: Mapping[str, np.ndarray],
) -> list[Segment]:
    kinds = {
        **{transformed_name(k): (k, NUMERIC) for k in spec.numeric},
        **{transformed_name(k): (k, CATEGORICAL) for k in spec.categorical},
        **{transformed_name(k): (k, IMAGE) for k in spec.image},
        **{transformed_name(k) + EMBEDDED_SUFFIX: (k, TEXT) for k in spec.text},
        **{transformed_name(k): (k, SEQUENCE) for k in spec.sequence},
    }
    segments = []
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        if name not in kinds:
            continue
        feature, kind = kinds[name]
        shape = (widths[name],) if name in widths else tuple(int(d) for d in tensor.shape[1:])
        table = tables.get(transformed_name(feature)) if kind in (TEXT, CATEGORICAL) else None
        segments.append(Segment(feature, kind, name, shape, table))
    return segments


def _one_hot(ids: np.ndarray, width: int) -> np.ndarray:
    # Row by row, not np.eye(width)[ids]: a width x width table for thousands of ids.
    value = np.zeros((len(ids), width), dtype=np.float32)
    value[np.arange(len(ids)), ids] = 1.0
    return value


class Explainer:
    """Integrated gradients of one output of a model over a flat vector of its inputs.

    Args:
      model: from `differentiable_model`.
      segments: its layout.
      classification: the output is class probabilities (a target class is explained)
        rather than one regression value.
    """

    def __init__(self, model: keras.Model, segments: Sequence[Segment], classification: bool):
        self.model = model
        self.segments = list(segments)
        self.classification = classification
        self.width = sum(s.size for s in self.segments)
        self._attributed = {s.input_name for s in self.segments}

    def flatten(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """[n, width] float32 from transformed features (categorical ids become one-hots)."""
        parts = []
        for segment in self.segments:
            value = np.asarray(features[segment.source])
            if segment.kind == CATEGORICAL and segment.table is None:
                value = _one_hot(value.reshape(-1).astype(np.int64), segment.size)
            elif segment.kind in (TEXT, CATEGORICAL):
                value = segment.table[value.astype(np.int64)]
            parts.append(value.reshape(len(value), segment.size).astype(np.float32))
        return np.concatenate(parts, axis=1)

    def _inputs(self, flat: tf.Tensor, held: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        inputs, start = dict(held), 0
        for segment in self.segments:
            part = flat[:, start : start + segment.size]
            inputs[segment.input_name] = tf.reshape(part, [-1, *segment.shape])
            start += segment.size
        return {name: inputs[name] for name in self.model.input_names}

    @tf.function(reduce_retracing=True)
    def _output_and_gradient(self, flat, target, held):
        batch = tf.shape(flat)[0]
        held = {k: tf.repeat(v[None], batch, axis=0) for k, v in held.items()}
        with tf.GradientTape() as tape:
            tape.watch(flat)
            outputs = self.model(self._inputs(flat, held), training=False)
            output = outputs[:, target] if self.classification else tf.reshape(outputs, [-1])
        return output, tape.gradient(output, flat)

    def held(self, features: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        """The inputs IG does not integrate over (text ids, for the padding mask), of
        example `index`."""
        return {
            name: np.asarray(features[name])[index]
            for name in self.model.input_names
            if name not in self._attributed
        }

    @tf.function(reduce_retracing=True)
    def _forward(self, flat, held):
        batch = tf.shape(flat)[0]
        held = {k: tf.repeat(v[None], batch, axis=0) for k, v in held.items()}
        outputs = self.model(self._inputs(flat, held), training=False)
        return tf.reshape(outputs, [batch, -1])

    def predict(self, flat: np.ndarray, held: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's outputs [n, classes] (or [n, 1]) for each row of `flat`."""
        return self._forward(tf.constant(flat), dict(held)).numpy()

    def attribute(
        self, x: np.ndarray, target: int, held: Mapping[str, np.ndarray], steps: int
    ) -> np.ndarray:
        """IG of one flat example from the zero baseline, all steps in one batch."""

        def call_model(batch, call_model_args=None, expected_keys=None):
            # The target as a tensor: one trace for every class, not one per class.
            _, gradient = self._output_and_gradient(
                tf.constant(batch), tf.constant(target), dict(held)
            )
            return {saliency.INPUT_OUTPUT_GRADIENTS: gradient.numpy()}

        return saliency.IntegratedGradients().GetMask(
            x, call_model, x_steps=steps, batch_size=steps
        )

    def per_feature(self, attribution: np.ndarray) -> dict[str, float]:
        """A flat attribution summed per raw feature (a one-hot's entries, an image's pixels)."""
        totals, start = {}, 0
        for segment in self.segments:
            totals[segment.feature] = float(attribution[start : start + segment.size].sum())
            start += segment.size
        return totals

    def token_scores(self, attribution: np.ndarray, feature: str) -> np.ndarray:
        """One text feature's attribution per token position [max_tokens]: summed over the
        embedding's dimensions (padding positions get 0: the mask hides them)."""
        return self._part(attribution, feature).sum(axis=-1)

    def _part(self, attribution: np.ndarray, feature: str) -> np.ndarray:
        start = 0
        for segment in self.segments:
            if segment.feature == feature:
                return attribution[start : start + segment.size].reshape(segment.shape)
            start += segment.size
        raise KeyError(f"no feature {feature!r} among {[s.feature for s in self.segments]}")

    def image_map(self, attribution: np.ndarray, feature: str) -> np.ndarray:
        """One image feature's attribution as [height, width]: |IG| summed over channels."""
        return np.abs(self._part(attribution, feature)).sum(axis=-1)


@dataclasses.dataclass
class Explained:
    """IG of a set of examples: per-feature attributions, predictions, completeness."""

    targets: list[int]
    attributions: np.ndarray  # [n, width]
    outputs: np.ndarray  # f(x) of the explained output
    baseline_outputs: np.ndarray  # f(baseline)

    def completeness_errors(self) -> np.ndarray:
        """|sum of attributions − (f(x) − f(baseline))| per example."""
        return np.abs(self.attributions.sum(axis=1) - (self.outputs - self.baseline_outputs))


def explain(explainer: Explainer, features: Mapping[str, np.ndarray], steps: int) -> Explained:
    """IG for every example of `features` (transformed, as the model takes them).

    A classification explains each example's predicted class's probability; a
    regression its output.
    """
    flat = explainer.flatten(features)
    targets, attributions, outputs, baselines = [], [], [], []
    for i, x in enumerate(flat):
        held = explainer.held(features, i)
        # Row 0 the example, row 1 the baseline.
        both = explainer.predict(np.stack([x, np.zeros_like(x)]), held)
        target = int(np.argmax(both[0])) if explainer.classification else 0
        targets.append(target)
        outputs.append(both[0, target])
        baselines.append(both[1, target])
        attributions.append(explainer.attribute(x, target, held, steps))
    return Explained(targets, np.asarray(attributions), np.asarray(outputs), np.asarray(baselines))


def global_importance(explainer: Explainer, explained: Explained) -> list[dict[str, float]]:
    """Mean |attribution| per raw feature over the examples, largest first."""
    per_example = [explainer.per_feature(a) for a in explained.attributions]
    names = [s.feature for s in explainer.segments]
    scores = {name: float(np.mean([abs(p[name]) for p in per_example])) for name in names}
    return [
        {"feature": name, "score": round(score, 6)}
        for name, score in sorted(scores.items(), key=lambda item: -item[1])
    ]
