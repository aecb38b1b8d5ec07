"""ModelCard's executor: `Do()` unpacks the artifacts, `write_card` builds and ships the card."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.explanations import bundle
from components.explanations.spec import EXPLAINER_DIR, EXPLANATIONS_FILE
from components.infra_validation import spec as infra
from components.model_card import spec as keys
from pipeline import model_card
from pipeline.training import TRAINING_RECORD

_EXTRA = "assets.extra"


def _read_json(path: str) -> Any:
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def slice_entries(result) -> list[dict[str, Any]]:
    """Every single-feature slice of a TFMA result (pipeline/evaluation.py's rows): its name,
    example count, metrics (macro averages and unkeyed metrics; per-class ones are left to
    the summary)."""
    from pipeline import evaluation

    features = sorted({key[0][0] for key, _ in result.slicing_metrics if len(key) == 1})
    return [
        {
            "slice": evaluation.slice_name(row),
            "example_count": row["example_count"],
            "metrics": {k: v for k, v in row["metrics"].items() if "/classId:" not in k},
        }
        for row in evaluation.slice_rows(result.slicing_metrics, features)
    ]


def gate_entries(slice_gate: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The SliceGate's slice rows (slices.json) as card slices: the configured slice
    features' values, those without eval examples included with their note."""
    from pipeline import evaluation

    return [
        {
            "slice": evaluation.slice_name(row),
            "example_count": row["example_count"],
            "metrics": {k: v for k, v in row["metrics"].items() if "/classId:" not in k},
            **({"note": row["note"]} if "note" in row else {}),
        }
        for row in slice_gate["slices"]
    ]


def evaluation_facts(
    evaluation_uri: str, blessed: bool, slice_gate_uri: str | None = None
) -> dict[str, Any]:
    """Overall and per-slice metrics of the candidate model, its blessing and slice gates.

    Args:
      evaluation_uri: the Evaluator's ModelEvaluation directory.
      blessed: the blessing's verdict.
      slice_gate_uri: the SliceGate's blessing directory; when it holds slices.json, the
        card's slices and gate checks are the ones the gate judged (TFMA's result still
        gives the overall metrics and the fairness metrics per slice).

    Returns:
      {"blessed", "metrics", "slices", "slices_from", "gates", "fairness_slices"}.
    """
    from components.slice_gate.spec import RESULT_FILE
    from pipeline.summary import _metric_values, candidate_result

    result = candidate_result(evaluation_uri)
    overall = {k: v for k, v in _metric_values(result).items() if "/" not in k}
    tfma_slices = slice_entries(result)
    facts = {
        "blessed": blessed,
        "metrics": overall,
        "slices": tfma_slices,
        "slices_from": "the Evaluator's result",
        "gates": None,
        "fairness_slices": tfma_slices,
    }
    gate_file = os.path.join(slice_gate_uri, RESULT_FILE) if slice_gate_uri else None
    if gate_file and tf.io.gfile.exists(gate_file):
        slice_gate = _read_json(gate_file)
        facts.update(
            slices=gate_entries(slice_gate),
            slices_from=f"the SliceGate's {RESULT_FILE}",
            gates=slice_gate["gates"],
        )
    return facts


def data_facts(statistics_uri: str) -> dict[str, int]:
    """Examples per split, from StatisticsGen's statistics."""
    import tensorflow_data_validation as tfdv

    counts = {}
    for split in ("train", "eval"):
        path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
        if tf.io.gfile.exists(path):
            stats = tfdv.load_stats_binary(path)
            counts[split] = int(stats.datasets[0].num_examples)
    return counts


def ship(card_dir: str, infra_blessing_dir: str, pushed_blessing_dir: str, explainer: str | None):
    """Copies the warmed-up model into the new blessing with the card and explainer in
    `assets.extra/`; returns whether there was a model to ship."""
    stamped = path_utils.stamped_model_path(infra_blessing_dir)
    if not tf.io.gfile.exists(stamped):
        return False
    target = path_utils.stamped_model_path(pushed_blessing_dir)
    io_utils.copy_dir(src=stamped, dst=target)
    extra = os.path.join(target, _EXTRA)
    tf.io.gfile.makedirs(extra)
    for name in (keys.MARKDOWN_FILE, keys.HTML_FILE):
        tf.io.gfile.copy(os.path.join(card_dir, name), os.path.join(extra, name), overwrite=True)
    if explainer:
        io_utils.copy_dir(src=explainer, dst=os.path.join(target, bundle.PUSHED_BUNDLE))
    return True


def write_card(
    inputs: Mapping[str, str | None], card_config: Mapping[str, Any], outputs: Mapping[str, str]
) -> dict[str, Any]:
    """Builds the card from the input artifacts' directories and writes it and the new blessing.

    Args:
      inputs: artifact URIs by spec key (explanations and quantization_report may be None;
        model_blessing, the SliceGate's, is where slices.json is read), and "blessed", the
        blessing's verdict.
      card_config: name, family, task, features, label, version and the model_card section.
      outputs: the model_card and blessing artifact directories.

    Returns:
      The card's facts.
    """
    training = _read_json(os.path.join(inputs[keys.MODEL_RUN_KEY], TRAINING_RECORD))
    training.pop("history", None)
    hyperparameters = _read_json(
        os.path.join(inputs[keys.HYPERPARAMETERS_KEY], "best_hyperparameters.txt")
    )["values"]
    explanations = quantization = None
    if inputs.get(keys.EXPLANATIONS_KEY):
        explanations = _read_json(os.path.join(inputs[keys.EXPLANATIONS_KEY], EXPLANATIONS_FILE))
    if inputs.get(keys.QUANTIZATION_REPORT_KEY):
        quantization = _read_json(os.path.join(inputs[keys.QUANTIZATION_REPORT_KEY], "report.json"))
    facts = model_card.card(
        model={
            **card_config["model"],
            # The Pusher names the pushed version later; the Trainer's execution names the model.
            "version": f"Trainer execution {os.path.basename(inputs[keys.MODEL_RUN_KEY].rstrip('/'))}",
            "hyperparameters": hyperparameters,
            "training": training,
        },
        data=data_facts(inputs[keys.STATISTICS_KEY]),
        evaluation=evaluation_facts(
            inputs[keys.EVALUATION_KEY],
            bool(inputs["blessed"]),
            inputs.get(keys.MODEL_BLESSING_KEY),
        ),
        quantization=quantization,
        explanations=explanations,
        considerations=card_config["considerations"],
        min_slice_examples=card_config["min_slice_examples"],
    )
    card_dir = outputs[keys.MODEL_CARD_KEY]
    tf.io.gfile.makedirs(card_dir)
    for name, text in (
        (keys.MARKDOWN_FILE, model_card.markdown(facts)),
        (keys.HTML_FILE, model_card.html(facts)),
        (keys.FACTS_FILE, json.dumps(facts, indent=2)),
    ):
        with tf.io.gfile.GFile(os.path.join(card_dir, name), "w") as f:
            f.write(text)
    explainer = None
    if inputs.get(keys.EXPLANATIONS_KEY):
        explainer = os.path.join(inputs[keys.EXPLANATIONS_KEY], EXPLAINER_DIR)
    facts["shipped"] = ship(
        card_dir, inputs[keys.INFRA_BLESSING_KEY], outputs[keys.PUSHED_BLESSING_KEY], explainer
    )
    return facts


def _optional_uri(input_dict, key: str) -> str | None:
    artifacts = input_dict.get(key) or []
    return artifacts[0].uri if artifacts else None


class Executor(base_executor.BaseExecutor):
    """Unpacks the artifacts, calls `write_card`, passes the infra blessing's verdict on."""

    def Do(
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        infra_blessing = artifact_utils.get_single_instance(input_dict[keys.INFRA_BLESSING_KEY])
        model_blessing = artifact_utils.get_single_instance(input_dict[keys.MODEL_BLESSING_KEY])
        inputs = {
            key: artifact_utils.get_single_uri(input_dict[key])
            for key in (
                keys.INFRA_BLESSING_KEY,
                keys.EVALUATION_KEY,
                keys.MODEL_RUN_KEY,
                keys.HYPERPARAMETERS_KEY,
                keys.STATISTICS_KEY,
            )
        }
        for key in (keys.EXPLANATIONS_KEY, keys.QUANTIZATION_REPORT_KEY):
            inputs[key] = _optional_uri(input_dict, key)
        inputs[keys.MODEL_BLESSING_KEY] = model_blessing.uri
        inputs["blessed"] = model_blessing.get_int_custom_property("blessed")
        pushed = artifact_utils.get_single_instance(output_dict[keys.PUSHED_BLESSING_KEY])
        facts = write_card(
            inputs,
            json.loads(exec_properties[keys.CARD_CONFIG_KEY]),
            {
                keys.MODEL_CARD_KEY: artifact_utils.get_single_uri(
                    output_dict[keys.MODEL_CARD_KEY]
                ),
                keys.PUSHED_BLESSING_KEY: pushed.uri,
            },
        )
        blessed = infra_blessing.get_int_custom_property(infra.BLESSED_PROPERTY)
        pushed.set_int_custom_property(infra.BLESSED_PROPERTY, blessed)
        pushed.set_int_custom_property(infra.HAS_MODEL_PROPERTY, int(facts["shipped"]))
        marker = "INFRA_BLESSED" if blessed else "INFRA_NOT_BLESSED"
        io_utils.write_string_file(os.path.join(pushed.uri, marker), "")
