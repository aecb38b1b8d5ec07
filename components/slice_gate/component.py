"""The SliceGate component."""

import dataclasses
import json
from collections.abc import Mapping, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts

from components.slice_gate import executor
from components.slice_gate.spec import (
    EXPECTED_VALUES_KEY,
    FAIRNESS_KEY,
    GATES_KEY,
    SLICE_FEATURES_KEY,
    SliceGateSpec,
)
from pipeline.config import FairnessConfig, SliceGateConfig


class SliceGate(base_component.BaseComponent):
    """Passes the Evaluator's blessing on only if every slice gate holds.

    TFMA's thresholds bless on the overall slice (and can bound each listed slice), but
    cannot leave out slices with few examples nor bound the gap between the best and
    the worst slice; this step does both, on the Evaluator's own per-slice metrics, and
    writes `slices.json` (per-slice rows and each gate's check, naming the slice).

    Args:
      evaluation: the Evaluator's `evaluation`.
      model_blessing: the Evaluator's `blessing`.
      slice_features: the features sliced on.
      expected_values: values each slice feature may take (a schema's domain), so that
        a value without eval examples is reported with count 0.
      gates: the gates; none passes the Evaluator's blessing through unchanged.
      fairness: the Fairness Indicators' feature and thresholds, recorded for the summary.
    """

    SPEC_CLASS = SliceGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        evaluation: types.BaseChannel,
        model_blessing: types.BaseChannel,
        slice_features: Sequence[str],
        expected_values: Mapping[str, Sequence[str]],
        gates: Sequence[SliceGateConfig],
        fairness: FairnessConfig,
    ):
        blessing = types.Channel(type=standard_artifacts.ModelBlessing)
        super().__init__(
            spec=SliceGateSpec(
                evaluation=evaluation,
                model_blessing=model_blessing,
                blessing=blessing,
                **{
                    SLICE_FEATURES_KEY: json.dumps(list(slice_features)),
                    EXPECTED_VALUES_KEY: json.dumps(
                        {k: list(v) for k, v in sorted(expected_values.items())}
                    ),
                    GATES_KEY: json.dumps([dataclasses.asdict(g) for g in gates]),
                    FAIRNESS_KEY: json.dumps(dataclasses.asdict(fairness)),
                },
            )
        )
