"""The Quantization component."""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts

from components.quantization import executor
from components.quantization import spec as keys
from components.quantization.spec import QuantizationReport, QuantizationSpec
from models.features import FeatureSpec


class Quantization(base_component.BaseComponent):
    """Quantizes the Trainer's model and picks the model that Evaluator and Pusher get.

    Writes an int8 SavedModel (same signatures, TFT inside; per-channel int8 Dense
    kernels), a fully-integer TFLite model calibrated on transformed training examples
    (and a float one for comparison), and a report with size, eval metrics and CPU
    latency of each. The int8 SavedModel is served only if its primary metric on the
    eval split is at most `max_metric_drop` worse than the float model's; otherwise the
    float model is passed on (or, with `on_guard_failure="push_nothing"`, the output is
    marked `served=none` so the pipeline can skip the push).

    Args:
      model: Trainer's model (Format-Serving and Format-Keras inside).
      transform_graph: Transform's graph.
      transformed_examples: Transform's examples (train: calibration and pruning; eval: TFLite metrics).
      examples: ExampleGen's examples (eval: SavedModel metrics on serialized examples).
      spec: the features and the task.
      method: the SavedModel quantization method (`pipeline.config.QUANTIZATION_METHODS`).
      metric: the primary metric the guard compares.
      max_metric_drop: the largest allowed drop of `metric` (absolute).
      representative_samples: calibration examples for the int8 TFLite model.
      serve: "quantized" or "float".
      on_guard_failure: "push_float" or "push_nothing".
      pruning_sparsity: target sparsity of magnitude pruning before quantization (0: off).
      pruning_epochs: fine-tuning epochs for pruning.
      latency_runs: timed runs per latency figure (the median is reported).
    """

    SPEC_CLASS = QuantizationSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        transform_graph: types.BaseChannel,
        transformed_examples: types.BaseChannel,
        examples: types.BaseChannel,
        spec: FeatureSpec,
        method: str,
        metric: str,
        max_metric_drop: float,
        representative_samples: int,
        serve: str,
        on_guard_failure: str,
        pruning_sparsity: float,
        pruning_epochs: int,
        latency_runs: int,
    ):
        super().__init__(
            spec=QuantizationSpec(
                **{
                    keys.MODEL_KEY: model,
                    keys.TRANSFORM_GRAPH_KEY: transform_graph,
                    keys.TRANSFORMED_EXAMPLES_KEY: transformed_examples,
                    keys.EXAMPLES_KEY: examples,
                    keys.FEATURES_KEY: json.dumps(spec.to_dict()),
                    keys.METHOD_KEY: method,
                    keys.METRIC_KEY: metric,
                    keys.MAX_METRIC_DROP_KEY: max_metric_drop,
                    keys.REPRESENTATIVE_SAMPLES_KEY: representative_samples,
                    keys.SERVE_KEY: serve,
                    keys.ON_GUARD_FAILURE_KEY: on_guard_failure,
                    keys.PRUNING_SPARSITY_KEY: pruning_sparsity,
                    keys.PRUNING_EPOCHS_KEY: pruning_epochs,
                    keys.LATENCY_RUNS_KEY: latency_runs,
                    keys.SERVED_MODEL_KEY: types.Channel(type=standard_artifacts.Model),
                    keys.INT8_MODEL_KEY: types.Channel(type=standard_artifacts.Model),
                    keys.TFLITE_MODEL_KEY: types.Channel(type=standard_artifacts.Model),
                    keys.REPORT_KEY: types.Channel(type=QuantizationReport),
                }
            )
        )
