"""Explanations' executor: `Do()` unpacks the artifacts and calls `explain_model`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.explanations import attributions, bundle, text
from components.explanations import spec as keys
from components.quantization import measure
from models.export import class_names_of
from models.features import FeatureSpec, transformed_name

# Per-example attributions kept in explanations.json (the global scores use all).
_EXAMPLES_LISTED = 20
# Text examples listed with their tokens (the per-class top tokens use all).
_TEXT_EXAMPLES_LISTED = 10


@dataclasses.dataclass(frozen=True)
class Settings:
    """The component's parameters; defaults in `pipeline.config.ExplanationsConfig`."""

    spec: FeatureSpec
    examples: int
    steps: int
    heatmaps_per_class: int


def explain_model(
    trainer_model: str, transform_graph: str, transformed_eval: str, output: str, settings: Settings
) -> dict[str, Any]:
    """IG of the Trainer's model on a sample of transformed eval examples.

    Writes `<output>/explanations.json` (with top tokens per example for text features),
    heatmap PNGs (images) under `heatmaps/`, and the explainer bundle under `explainer/`.

    Args:
      trainer_model: the Trainer's model artifact (Format-Keras/model.keras inside).
      transform_graph: Transform's output directory.
      transformed_eval: the transformed eval split's directory.
      output: the Attributions artifact's directory.
      settings: the component's parameters.

    Returns:
      What explanations.json holds.

    Raises:
      FileNotFoundError: no Keras model or no eval records.
      ValueError: a model whose categorical inputs cannot be made differentiable.
    """
    started = time.perf_counter()
    transform_output = tft.TFTransformOutput(transform_graph)
    class_names = class_names_of(transform_output, settings.spec)
    bundle.write(output, trainer_model, transform_graph, settings.spec, class_names, settings.steps)
    explainer = bundle.load(os.path.join(output, keys.EXPLAINER_DIR)).explainer
    records = measure.sample_records(os.path.join(transformed_eval, "*"), settings.examples, seed=0)
    features = measure.parse_features(records, transform_output.transformed_feature_spec())
    explained = attributions.explain(explainer, features, settings.steps)
    result = summarise(explainer, explained, settings, class_names)
    result["heatmaps"] = write_heatmaps(
        explainer, explained, features, settings, class_names, output
    )
    result["text"] = text.text_section(
        explainer,
        explained,
        features,
        settings.spec,
        text.vocabularies(transform_output, settings.spec),
        class_names,
        listed=_TEXT_EXAMPLES_LISTED,
    )
    result["seconds"] = round(time.perf_counter() - started, 2)
    with tf.io.gfile.GFile(os.path.join(output, keys.EXPLANATIONS_FILE), "w") as f:
        f.write(json.dumps(result, indent=2))
    return result


def summarise(
    explainer: attributions.Explainer,
    explained: attributions.Explained,
    settings: Settings,
    class_names: list[str],
) -> dict[str, Any]:
    """explanations.json without the heatmaps: method, global scores, completeness, examples."""
    errors = explained.completeness_errors()
    target = "probability of the predicted class" if class_names else "the regression output"
    return {
        "method": "integrated_gradients",
        "library": "saliency.core.IntegratedGradients (Google PAIR)",
        "model": "the Trainer's float Keras model (the served int8 model is quantized from it)",
        "explained_output": target,
        "examples": int(len(explained.targets)),
        "steps": settings.steps,
        "baseline": attributions.BASELINE,
        "global": attributions.global_importance(explainer, explained),
        "completeness": {
            "max_abs_error": round(float(errors.max()), 6) if len(errors) else None,
            "mean_abs_error": round(float(errors.mean()), 6) if len(errors) else None,
        },
        "per_example": [
            {
                "target": class_names[t] if class_names else "output",
                "output": round(float(explained.outputs[i]), 6),
                "baseline_output": round(float(explained.baseline_outputs[i]), 6),
                "attributions": {
                    k: round(v, 6)
                    for k, v in explainer.per_feature(explained.attributions[i]).items()
                },
            }
            for i, t in enumerate(explained.targets[:_EXAMPLES_LISTED])
        ],
    }


def write_heatmaps(
    explainer: attributions.Explainer,
    explained: attributions.Explained,
    features: dict[str, np.ndarray],
    settings: Settings,
    class_names: list[str],
    output: str,
) -> list[dict[str, str]]:
    """PNGs of image, |IG| side by side, for `heatmaps_per_class` examples per predicted
    class of each image feature; [] without image features."""
    if not settings.spec.image or not settings.heatmaps_per_class:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = os.path.join(output, keys.HEATMAP_DIR)
    tf.io.gfile.makedirs(directory)
    written, per_class = [], {}
    for i, target in enumerate(explained.targets):
        if per_class.get(target, 0) >= settings.heatmaps_per_class:
            continue
        per_class[target] = per_class.get(target, 0) + 1
        for feature in settings.spec.image:
            image = np.asarray(features[transformed_name(feature)][i], np.float32)
            heat = explainer.image_map(explained.attributions[i], feature)
            figure, axes = plt.subplots(1, 2, figsize=(4, 2))
            axes[0].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
            axes[1].imshow(heat, cmap="inferno")
            for ax in axes:
                ax.axis("off")
            name = class_names[target] if class_names else str(target)
            figure.suptitle(f"{feature}: predicted {name}", fontsize=8)
            # Class names are data ("T-shirt/top"): only safe characters go into a file name.
            safe = re.sub(r"[^A-Za-z0-9_.]+", "_", name)
            path = os.path.join(directory, f"{feature}-{safe}-{per_class[target]}.png")
            figure.savefig(path, dpi=80, bbox_inches="tight")
            plt.close(figure)
            written.append({"feature": feature, "class": name, "path": path})
    return written


class Executor(base_executor.BaseExecutor):
    """Unpacks the artifacts and calls `explain_model`."""

    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        settings = Settings(
            spec=FeatureSpec.from_dict(json.loads(exec_properties[keys.FEATURES_KEY])),
            examples=int(exec_properties[keys.EXAMPLES_KEY]),
            steps=int(exec_properties[keys.STEPS_KEY]),
            heatmaps_per_class=int(exec_properties[keys.HEATMAPS_PER_CLASS_KEY]),
        )
        explain_model(
            trainer_model=artifact_utils.get_single_uri(input_dict[keys.MODEL_KEY]),
            transform_graph=artifact_utils.get_single_uri(input_dict[keys.TRANSFORM_GRAPH_KEY]),
            # One transformed Examples per span with data.spans: the newest (created last).
            transformed_eval=artifact_utils.get_split_uri(
                [max(input_dict[keys.TRANSFORMED_EXAMPLES_KEY], key=lambda a: a.id)], "eval"
            ),
            output=artifact_utils.get_single_uri(output_dict[keys.EXPLANATIONS_KEY]),
            settings=settings,
        )
