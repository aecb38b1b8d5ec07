"""Serving signatures around a trained model, with the TF Transform graph inside.

Every signature applies the same TFT graph that produced the training data, so
there is no training/serving skew:

- `serving_default`: serialized `tf.Example`s (raw features) in; `scores` and
  `classes` (classification) or `outputs` (regression) out.
- `serving_raw`: raw features as named [batch] tensors (numeric as float32, NaN
  for a missing value; categorical as string, "" for a missing value; an image as
  the string of its encoded file's bytes, which TF Serving's REST API takes as
  `{"b64": ...}`; a text as a string, tokenized inside; a series as float32
  [batch, sequence_length]).
- `transform_features`: serialized examples in, transformed features out (used by
  TFMA to get the transformed label).
- `classification` (or `regression`): serialized examples in as `inputs`, the same
  outputs as `serving_default`, marked with TF Serving's classify (regress) method name,
  which its Classify (Regress) API requires; TensorFlow 2 marks every signature it
  saves as a Predict one, so the method is set in saved_model.pb after saving.

`export_serving_model` saves them with the Keras model (reloadable with
`keras.models.load_model`); `export_lean_serving_model` saves them with the bare
variables and the transform graph's resources, for models where Keras metadata would
outweigh the weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tensorflow.core.protobuf import saved_model_pb2

from models.features import LABEL_VOCABULARY, OOV_BUCKETS, FeatureSpec, vocabulary_name

CLASSIFICATION_SIGNATURE = "classification"
REGRESSION_SIGNATURE = "regression"
_METHODS = {
    CLASSIFICATION_SIGNATURE: "tensorflow/serving/classify",
    REGRESSION_SIGNATURE: "tensorflow/serving/regress",
}


def _model_inputs(model: keras.Model, transformed: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {name: transformed[name] for name in model.input_names}


def _predictions(
    model: keras.Model, transformed: Mapping[str, tf.Tensor], class_names: Sequence[str]
) -> dict[str, tf.Tensor]:
    outputs = model(_model_inputs(model, transformed), training=False)
    if not class_names:
        return {"outputs": tf.reshape(outputs, [-1, 1])}
    batch = tf.shape(outputs)[0]
    classes = tf.tile(tf.constant([list(class_names)], tf.string), [batch, 1])
    return {"scores": outputs, "classes": classes}


def _dense_to_raw(value: tf.Tensor, feature: tf.io.VarLenFeature | tf.io.FixedLenFeature):
    """Makes a raw [batch] tensor look like a parsed example; NaN/"" become missing."""
    if value.dtype == tf.string:
        present = tf.not_equal(value, "")
    else:
        present = tf.logical_not(tf.math.is_nan(value))
        value = tf.cast(value, feature.dtype)
    if isinstance(feature, tf.io.FixedLenFeature):
        # As parse_example gives it: [batch] for shape [], [batch, 1] for shape [1].
        return tf.reshape(value, [-1, *feature.shape])
    rows = tf.cast(tf.where(present)[:, 0], tf.int64)
    indices = tf.stack([rows, tf.zeros_like(rows)], axis=1)
    batch = tf.shape(value, out_type=tf.int64)[0]
    return tf.SparseTensor(indices, tf.boolean_mask(value, present), tf.stack([batch, 1]))


def _series_to_raw(value: tf.Tensor, feature: tf.io.VarLenFeature | tf.io.FixedLenFeature):
    """Makes a [batch, length] series tensor look like a parsed example's feature."""
    if isinstance(feature, tf.io.FixedLenFeature):
        return tf.reshape(value, [-1, *feature.shape])
    indices = tf.where(tf.ones_like(value, tf.bool))
    return tf.SparseTensor(indices, tf.reshape(value, [-1]), tf.shape(value, out_type=tf.int64))


def _raw_input(spec: FeatureSpec, key: str) -> tf.TensorSpec:
    """What `serving_raw` takes for feature `key`."""
    if key in spec.sequence:
        return tf.TensorSpec([None, spec.sequence_length], tf.float32, name=key)
    return tf.TensorSpec([None], tf.float32 if key in spec.numeric else tf.string, name=key)


def serving_signatures(
    model: keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    spec: FeatureSpec,
    class_names: Sequence[str] = (),
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """Builds the four signatures; the TFT layer is tracked on the model.

    Args:
      model: a Keras model taking the transformed features.
      tf_transform_output: the Transform component's output.
      spec: the feature columns; the raw spec is restricted to them.
      class_names: label vocabulary in class-id order (empty for regression).

    Returns:
      Signature name to concrete function, for `model.save(signatures=...)`.
    """
    model.tft_layer = tf_transform_output.transform_features_layer()
    return _signatures(model, model.tft_layer, tf_transform_output, spec, class_names)


def _signatures(
    model: keras.Model,
    tft_layer: keras.layers.Layer,
    tf_transform_output: tft.TFTransformOutput,
    spec: FeatureSpec,
    class_names: Sequence[str],
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    raw_spec = tf_transform_output.raw_feature_spec()
    missing = [k for k in (*spec.features, spec.label) if k not in raw_spec]
    if missing:
        raise ValueError(f"features {missing} are not in the Transform schema {sorted(raw_spec)}")
    serving_spec = {k: raw_spec[k] for k in spec.features}
    labelled_spec = {**serving_spec, spec.label: raw_spec[spec.label]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        raw = tf.io.parse_example(examples, serving_spec)
        return _predictions(model, tft_layer(raw), class_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(examples):
        return tft_layer(tf.io.parse_example(examples, labelled_spec))

    raw_inputs = [_raw_input(spec, k) for k in spec.features]

    @tf.function(input_signature=raw_inputs)
    def serve_raw(*values):
        raw = {
            k: _series_to_raw(v, serving_spec[k])
            if k in spec.sequence
            else _dense_to_raw(v, serving_spec[k])
            for k, v in zip(spec.features, values, strict=True)
        }
        return _predictions(model, tft_layer(raw), class_names)

    # TF Serving's Classify and Regress read the examples from an input named "inputs".
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def serve_inputs(inputs):
        raw = tf.io.parse_example(inputs, serving_spec)
        return _predictions(model, tft_layer(raw), class_names)

    method = CLASSIFICATION_SIGNATURE if class_names else REGRESSION_SIGNATURE
    return {
        "serving_default": serve_examples.get_concrete_function(),
        "serving_raw": serve_raw.get_concrete_function(),
        "transform_features": transform_features.get_concrete_function(),
        method: serve_inputs.get_concrete_function(),
    }


def mark_serving_methods(export_dir: str) -> None:
    """Marks the `classification`/`regression` signatures with TF Serving's method names.

    `tf.saved_model.save` gives every signature the Predict method, and TF Serving's
    Classify and Regress refuse a signature without theirs. The method name is read only
    by servers; `tf.saved_model.load` ignores it.
    """
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for key, method in _METHODS.items():
            if key in meta_graph.signature_def:
                meta_graph.signature_def[key].method_name = method
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())


def export_serving_model(
    model: keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    spec: FeatureSpec,
    export_dir: str,
    class_names: Sequence[str] = (),
) -> str:
    """Saves `model` as a Keras SavedModel with the serving signatures; returns `export_dir`.

    The optimizer is left out: a serving model is never trained further, and Adam's two
    slots per weight would triple the variables. `keras.models.load_model` still
    reloads it, with the same weights and outputs.
    """
    signatures = serving_signatures(model, tf_transform_output, spec, class_names)
    model.save(export_dir, save_format="tf", signatures=signatures, include_optimizer=False)
    mark_serving_methods(export_dir)
    return export_dir


def export_lean_serving_model(
    model: keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    spec: FeatureSpec,
    export_dir: str,
    class_names: Sequence[str] = (),
) -> str:
    """Saves only what serving needs: the variables, the TFT graph's resources and the signatures.

    Unlike `export_serving_model` there is no Keras metadata: no layer configs, no
    per-layer traced calls, no training state, and the TFT layer (itself a tf_keras
    Model) is not saved as a Keras object either, only the transform graph's tables
    and assets that it holds. For a model of ~1k weights that metadata outweighs the
    weights (a Keras export's checkpoint object graph alone is ~14 KB), so this is how
    a quantized model keeps its size advantage on disk. The result serves the same
    signatures (TF Serving, `tf.saved_model.load`), and TFMA evaluates it as a generic
    SavedModel through them; `keras.models.load_model` cannot rebuild it.

    Returns:
      `export_dir`.

    Raises:
      AttributeError: the installed tensorflow_transform keeps its resources elsewhere
        (see `_transform_resources`).
    """
    tft_layer = tf_transform_output.transform_features_layer()
    root = tf.__internal__.tracking.AutoTrackable()
    root.transform = _transform_resources(tft_layer)
    # Named as Keras SavedModels and TF Hub's reusable SavedModels name it, so that
    # `tf.saved_model.load(export_dir).variables` works on either kind of export.
    root.variables = list(model.variables)
    signatures = _signatures(model, tft_layer, tf_transform_output, spec, class_names)
    tf.saved_model.save(root, export_dir, signatures=signatures)
    mark_serving_methods(export_dir)
    return export_dir


_TFT_RESOURCES_ATTRIBUTE = "_saved_model_loader_tracked_dict"


def _transform_resources(tft_layer: keras.layers.Layer):
    """The loaded transform graph's trackables (tables, assets) that the TFT layer holds.

    The signatures call the layer, so the SavedModel must track what its graph
    captures. Tracking the layer itself would save it as a tf_keras Model, with
    Keras metadata (traced calls, a save signature) that costs ~1.7 KB of object
    graph; TFT tracks the resources through this private attribute, and tracking it
    on the export's root keeps them (vocabulary tables initialise from their assets
    on load) without the Keras wrapper.

    Raises:
      AttributeError: the attribute is missing (it is in tensorflow_transform 1.21 in
        eager mode); the message names the version to compare against.
    """
    resources = getattr(tft_layer, _TFT_RESOURCES_ATTRIBUTE, None)
    if resources is None:
        raise AttributeError(
            f"tensorflow_transform {tft.__version__}: TransformFeaturesLayer has no "
            f"{_TFT_RESOURCES_ATTRIBUTE!r} (tensorflow_transform 1.21 sets it when running "
            "eagerly), so the lean export cannot find the transform graph's tables and "
            "assets; update models.export._transform_resources for this version"
        )
    return resources


def class_names_of(tf_transform_output: tft.TFTransformOutput, spec: FeatureSpec) -> list[str]:
    """The label vocabulary in class-id order (empty for regression)."""
    return label_vocabulary(tf_transform_output) if spec.is_classification else []


def label_vocabulary(tf_transform_output: tft.TFTransformOutput) -> list[str]:
    """The class names of a classification's label, in class-id order."""
    return [v.decode() for v in tf_transform_output.vocabulary_by_name(LABEL_VOCABULARY)]


def vocab_sizes_of(tf_transform_output: tft.TFTransformOutput, spec: FeatureSpec) -> dict[str, int]:
    """Ids per categorical feature, the OOV bucket included; per text feature, every id
    a token can take: the padding 0, the vocabulary's words and the OOV buckets."""
    sizes = {
        k: tf_transform_output.vocabulary_size_by_name(vocabulary_name(k)) + OOV_BUCKETS
        for k in spec.categorical
    }
    for k in spec.text:
        sizes[k] = tf_transform_output.vocabulary_size_by_name(vocabulary_name(k)) + OOV_BUCKETS + 1
    return sizes
