"""The explainer bundle: what explaining one raw example needs, in one directory.

`explainer/` holds the Trainer's Keras model (`model.keras`), a copy of the transform
graph (`transform/`) and `explainer.json` (features, task, class names). The Explanations
component writes it; the ModelCard component ships it in the pushed model under
`assets.extra/explainer/`, so `python -m serving.cli explain` works on a pushed model
directory alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.utils import io_utils

from components.explanations import attributions
from components.explanations.spec import EXPLAINER_DIR
from models.features import FeatureSpec

MODEL_FILE = "model.keras"
TRANSFORM_DIR = "transform"
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
    io_utils.copy_dir(transform_graph, os.path.join(target, TRANSFORM_DIR))
    meta = {"features": spec.to_dict(), "class_names": list(class_names), "steps": steps}
    with tf.io.gfile.GFile(os.path.join(target, META_FILE), "w") as f:
        f.write(json.dumps(meta, indent=2))
    return target


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
    return Bundle(
        explainer=attributions.Explainer(rebuilt, segments, spec.is_classification),
        transform_output=tft.TFTransformOutput(os.path.join(directory, TRANSFORM_DIR)),
        spec=spec,
        class_names=list(meta["class_names"]),
        steps=int(meta["steps"]),
    )


def _raw_value(spec: FeatureSpec, key: str, value: Any) -> Any:
    """A CSV/JSON value as a tf.Example value: numeric text to float, missing to None."""
    if value is None or (isinstance(value, str) and value.strip() in _MISSING):
        return None
    if key in spec.numeric:
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"feature {key!r}: expected a number, got {value!r}") from err
        return None if math.isnan(number) else number
    if key in spec.sequence:
        return [float(v) for v in value]
    return value


def transformed(bundle: Bundle, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Raw rows (feature name -> value, as a CSV or JSON gives them) through the transform graph.

    Raises:
      ValueError: a row lacks a feature, or a numeric value is not a number.
    """
    from serving.examples import make_example

    spec = bundle.spec
    examples = []
    for number, row in enumerate(rows):
        missing = [k for k in spec.features if k not in row]
        if missing:
            raise ValueError(f"row {number} lacks features {missing} (has {sorted(row)})")
        values = {k: _raw_value(spec, k, row[k]) for k in spec.features}
        floats = (*spec.numeric, *spec.sequence)
        examples.append(make_example(values, float_features=floats).SerializeToString())
    raw_spec = bundle.transform_output.raw_feature_spec()
    raw = tf.io.parse_example(tf.constant(examples), {k: raw_spec[k] for k in spec.features})
    layer = bundle.transform_output.transform_features_layer()
    return {
        name: np.asarray(value)
        for name, value in layer(raw).items()
        if name in bundle.explainer.model.input_names
    }


def explain_rows(
    bundle: Bundle, rows: Sequence[Mapping[str, Any]], steps: int | None = None
) -> list[dict]:
    """IG of each raw row: the prediction and each raw feature's attribution, largest first.

    Args:
      bundle: from `load`.
      rows: raw feature name -> value (CSV text, JSON values, image bytes).
      steps: integration steps; None for the pipeline's (explainer.json).
    """
    explained = attributions.explain(
        bundle.explainer, transformed(bundle, rows), steps or bundle.steps
    )
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
    return results
