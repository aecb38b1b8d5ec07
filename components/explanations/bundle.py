"""The explainer bundle: what explaining one raw example needs, in one directory.

`explainer/` holds the Trainer's Keras model (`model.keras`), the transform graph as a tar
(`transform.tar`) and `explainer.json` (features, task, class names, IG steps). The graph
travels as a tar because TFX's Pusher copies a model leaving out every file named
`saved_model.pb` (it writes the top-level one last), which would break a nested SavedModel. The Explanations
component writes it; the ModelCard component ships it in the pushed model under
`assets.extra/explainer/`, so `python -m serving.cli explain` works on a pushed model
directory alone.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from components.explanations import attributions, text
from components.explanations.spec import EXPLAINER_DIR
from models.features import FeatureSpec, transformed_name

MODEL_FILE = "model.keras"
TRANSFORM_TAR = "transform.tar"
META_FILE = "explainer.json"
# Where a pushed model carries the bundle (TF Serving ignores assets.extra beyond warmup).
PUSHED_BUNDLE = os.path.join("assets.extra", EXPLAINER_DIR)
_MISSING = ("", "NA", "NaN", "nan")


@dataclasses.dataclass
class Bundle:
    """A loaded explainer bundle."""

    explainer: attributions.Explainer
    transform_output: tft.TFTransformOutput
    spec: FeatureSpec
    class_names: list[str]
    steps: int
    # Holds the extracted transform graph for as long as the bundle is used.
    workdir: tempfile.TemporaryDirectory


def write(
    output: str,
    trainer_model: str,
    transform_graph: str,
    spec: FeatureSpec,
    class_names: Sequence[str],
    steps: int,
) -> str:
    """Copies the Trainer's Keras model and the transform graph into `<output>/explainer/`,
    with the features, class names and the pipeline's IG steps in explainer.json.

    Raises:
      FileNotFoundError: the Trainer's model has no Format-Keras/model.keras.
    """
    from pipeline.training import KERAS_MODEL_DIR

    source = os.path.join(trainer_model, KERAS_MODEL_DIR, MODEL_FILE)
    if not tf.io.gfile.exists(source):
        raise FileNotFoundError(
            f"the Trainer's Keras model is missing: {source} (pipeline.training.run_fn writes it)"
        )
    target = os.path.join(output, EXPLAINER_DIR)
    tf.io.gfile.makedirs(target)
    tf.io.gfile.copy(source, os.path.join(target, MODEL_FILE), overwrite=True)
    _write_tar(transform_graph, os.path.join(target, TRANSFORM_TAR))
    meta = {"features": spec.to_dict(), "class_names": list(class_names), "steps": steps}
    with tf.io.gfile.GFile(os.path.join(target, META_FILE), "w") as f:
        f.write(json.dumps(meta, indent=2))
    return target


def _write_tar(directory: str, path: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for root, _, files in tf.io.gfile.walk(directory):
            for name in files:
                source = os.path.join(root, name)
                data = tf.io.gfile.GFile(source, "rb").read()
                info = tarfile.TarInfo(os.path.relpath(source, directory))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def _extract_tar(path: str, target: str) -> None:
    with tarfile.open(fileobj=io.BytesIO(tf.io.gfile.GFile(path, "rb").read())) as tar:
        tar.extractall(target, filter="data")


def locate(path: str) -> str:
    """The bundle directory of a pushed model (or version) directory, or `path` itself.

    Args:
      path: a bundle directory, a pushed SavedModel directory, or a serving directory of
        numbered versions (the highest is used).

    Raises:
      FileNotFoundError: none of those holds a bundle.
    """
    candidates = [path, os.path.join(path, PUSHED_BUNDLE)]
    if tf.io.gfile.isdir(path):
        versions = sorted((v for v in tf.io.gfile.listdir(path) if v.strip("/").isdigit()), key=int)
        if versions:
            candidates.append(os.path.join(path, versions[-1].strip("/"), PUSHED_BUNDLE))
    for candidate in candidates:
        if tf.io.gfile.exists(os.path.join(candidate, META_FILE)):
            return candidate
    raise FileNotFoundError(
        f"{path}: no explainer bundle ({META_FILE}) there, in {PUSHED_BUNDLE}, or in its newest "
        "version; push a model with a pipeline that runs the Explanations and ModelCard components"
    )


def load(directory: str) -> Bundle:
    """Loads a bundle written by `write` (see `locate` for a pushed model)."""
    # The sequence family's custom layers must be registered before the model loads.
    from models import sequence_encoders  # noqa: F401

    with tf.io.gfile.GFile(os.path.join(directory, META_FILE)) as f:
        meta = json.loads(f.read())
    spec = FeatureSpec.from_dict(meta["features"])
    model = keras.models.load_model(os.path.join(directory, MODEL_FILE), compile=False)
    rebuilt, segments = attributions.differentiable_model(model, spec)
    workdir = tempfile.TemporaryDirectory(prefix="explainer-")
    _extract_tar(os.path.join(directory, TRANSFORM_TAR), workdir.name)
    return Bundle(
        explainer=attributions.Explainer(rebuilt, segments, spec.is_classification),
        transform_output=tft.TFTransformOutput(workdir.name),
        workdir=workdir,
        spec=spec,
        class_names=list(meta["class_names"]),
        steps=int(meta["steps"]),
    )


def _raw_value(key: str, value: Any, dtype: tf.dtypes.DType) -> Any:
    """A CSV/JSON value as the schema's type for a tf.Example: numbers from text, missing
    (empty, NA, NaN) as None, a series as a list of floats."""
    if value is None or (isinstance(value, str) and value.strip() in _MISSING):
        return None
    if dtype == tf.string:
        return value
    values = value if isinstance(value, list | tuple) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"feature {key!r}: expected a number, got {value!r}") from err
    if any(math.isnan(n) for n in numbers):
        return None
    if dtype == tf.int64:
        if any(not n.is_integer() for n in numbers):
            raise ValueError(f"feature {key!r}: the schema says integer, got {value!r}")
        numbers = [int(n) for n in numbers]
    return numbers if isinstance(value, list | tuple) else numbers[0]


def transformed(bundle: Bundle, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Raw rows (feature name -> value, as a CSV or JSON gives them) through the transform graph.

    Raises:
      ValueError: a row lacks a feature, or a value is not of its schema type.
    """
    from serving.examples import make_example

    spec = bundle.spec
    raw_spec = bundle.transform_output.raw_feature_spec()
    features = {k: raw_spec[k] for k in spec.features}
    floats = [k for k, f in features.items() if f.dtype == tf.float32]
    examples = []
    for number, row in enumerate(rows):
        missing = [k for k in spec.features if k not in row]
        if missing:
            raise ValueError(f"row {number} lacks features {missing} (has {sorted(row)})")
        values = {k: _raw_value(k, row[k], features[k].dtype) for k in spec.features}
        examples.append(make_example(values, float_features=floats).SerializeToString())
    raw = tf.io.parse_example(tf.constant(examples), features)
    layer = bundle.transform_output.transform_features_layer()
    return {
        name: np.asarray(value)
        for name, value in layer(raw).items()
        if name in bundle.explainer.model.input_names
    }


def explain_rows(
    bundle: Bundle, rows: Sequence[Mapping[str, Any]], steps: int | None = None
) -> list[dict]:
    """IG of each raw row: the prediction and each raw feature's attribution, largest first;
    for text features also the top tokens.

    Args:
      bundle: from `load`.
      rows: raw feature name -> value (CSV text, JSON values, image bytes).
      steps: integration steps; None for the pipeline's (explainer.json).

    Returns:
      Per row: "explained", "output", "baseline_output", "completeness_error",
      "attributions" [{"feature", "attribution"}]; with text features "tokens": feature ->
      [{"token", "score"}] (the largest |score| first, `[OOV]` for words outside the
      vocabulary).
    """
    features = transformed(bundle, rows)
    explained = attributions.explain(bundle.explainer, features, steps or bundle.steps)
    vocabularies = text.vocabularies(bundle.transform_output, bundle.spec)
    results = []
    for i, target in enumerate(explained.targets):
        scores = bundle.explainer.per_feature(explained.attributions[i])
        results.append(
            {
                "explained": bundle.class_names[target] if bundle.class_names else "output",
                "output": round(float(explained.outputs[i]), 6),
                "baseline_output": round(float(explained.baseline_outputs[i]), 6),
                "completeness_error": round(float(explained.completeness_errors()[i]), 6),
                "attributions": [
                    {"feature": k, "attribution": round(v, 6)}
                    for k, v in sorted(scores.items(), key=lambda item: -abs(item[1]))
                ],
            }
        )
        if vocabularies:
            results[-1]["tokens"] = {
                feature: text.top(
                    text.example_tokens(
                        bundle.explainer.token_scores(explained.attributions[i], feature),
                        features[transformed_name(feature)][i],
                        vocabulary,
                    )
                )
                for feature, vocabulary in vocabularies.items()
            }
    return results
