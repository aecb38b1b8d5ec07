"""The Explanations component."""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec

from components.explanations import executor
from components.explanations import spec as keys
from components.explanations.spec import Attributions, ExplanationsSpec
from models.features import FeatureSpec


class Explanations(base_component.BaseComponent):
    """Integrated gradients of the Trainer's model on a sample of eval examples.

    Attributions are per raw feature (a categorical feature's one-hot summed, an image's
    pixels summed); global importance is the mean |attribution| per feature. Images also
    get IG heatmaps (PNG) of a few examples per class. The output holds an explainer bundle
    (model, transform graph) that `python -m serving.cli explain` uses for one raw example.

    Args:
      model: Trainer's model (Format-Keras inside).
      transform_graph: Transform's graph.
      transformed_examples: Transform's examples; the eval split is sampled.
      spec: the features and the task.
      examples: eval examples to explain.
      steps: integration steps per example.
      heatmaps_per_class: image examples per class drawn as heatmaps.
    """

    SPEC_CLASS = ExplanationsSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        transform_graph: types.BaseChannel,
        transformed_examples: types.BaseChannel,
        spec: FeatureSpec,
        examples: int,
        steps: int,
        heatmaps_per_class: int,
    ):
        super().__init__(
            spec=ExplanationsSpec(
                **{
                    keys.MODEL_KEY: model,
                    keys.TRANSFORM_GRAPH_KEY: transform_graph,
                    keys.TRANSFORMED_EXAMPLES_KEY: transformed_examples,
                    keys.FEATURES_KEY: json.dumps(spec.to_dict()),
                    keys.EXAMPLES_KEY: examples,
                    keys.STEPS_KEY: steps,
                    keys.HEATMAPS_PER_CLASS_KEY: heatmaps_per_class,
                    keys.EXPLANATIONS_KEY: types.Channel(type=Attributions),
                }
            )
        )
