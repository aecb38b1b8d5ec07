"""SliceGate's executor: per-slice rows and gate checks from TFMA's result, then the blessing."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.slice_gate import spec
from pipeline import evaluation
from pipeline.config import SliceGateConfig


def gate(
    slicing_metrics,
    slice_features: Sequence[str],
    expected_values: Mapping[str, Sequence[str]],
    gates: Sequence[SliceGateConfig],
    evaluator_blessed: bool,
) -> dict[str, Any]:
    """The slice rows, the gates' checks, and whether the model stays blessed.

    Args:
      slicing_metrics: the candidate's `tfma.load_eval_result(...).slicing_metrics`.
      slice_features: the features sliced on.
      expected_values: values each feature may take, listed with count 0 when absent.
      gates: the gates to check.
      evaluator_blessed: the Evaluator's verdict (overall threshold, baseline change).

    Returns:
      {"slices": [...], "gates": {"passed", "checks"}, "evaluator_blessed", "blessed"}.
    """
    rows = evaluation.slice_rows(slicing_metrics, slice_features, expected_values)
    gates_result = evaluation.check_gates(rows, gates)
    return {
        "slices": rows,
        "gates": gates_result,
        "evaluator_blessed": evaluator_blessed,
        "blessed": evaluator_blessed and gates_result["passed"],
    }


class Executor(base_executor.BaseExecutor):
    """Unpacks the artifacts, calls `gate`, writes slices.json and the blessing."""

    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        from pipeline.summary import candidate_result

        evaluated = artifact_utils.get_single_instance(input_dict[spec.EVALUATION_KEY])
        evaluator_blessing = artifact_utils.get_single_instance(input_dict[spec.MODEL_BLESSING_KEY])
        gates = [SliceGateConfig(**g) for g in json.loads(exec_properties[spec.GATES_KEY])]
        result = gate(
            candidate_result(evaluated.uri).slicing_metrics,
            json.loads(exec_properties[spec.SLICE_FEATURES_KEY]),
            json.loads(exec_properties[spec.EXPECTED_VALUES_KEY]),
            gates,
            bool(evaluator_blessing.get_int_custom_property(spec.BLESSED_PROPERTY)),
        )
        result["fairness"] = json.loads(exec_properties[spec.FAIRNESS_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[spec.BLESSING_KEY])
        write_blessing(blessing, evaluator_blessing, result)


def write_blessing(blessing, evaluator_blessing, result: Mapping[str, Any]) -> None:
    """The Evaluator's blessing's properties (the model it judged, the baseline), with
    `blessed` from `result` and `slice_gate` 1 (what tells it from the Evaluator's on
    Kubeflow); slices.json and BLESSED or NOT_BLESSED in its directory."""
    for name, value in evaluator_blessing.mlmd_artifact.custom_properties.items():
        blessing.mlmd_artifact.custom_properties[name].CopyFrom(value)
    blessing.set_int_custom_property(spec.BLESSED_PROPERTY, int(result["blessed"]))
    blessing.set_int_custom_property(spec.SLICE_GATE_PROPERTY, 1)
    tf.io.gfile.makedirs(blessing.uri)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, spec.RESULT_FILE), "w") as f:
        f.write(json.dumps(result, indent=2))
    marker = spec.BLESSED_FILE if result["blessed"] else spec.NOT_BLESSED_FILE
    with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), "w") as f:
        f.write("")
