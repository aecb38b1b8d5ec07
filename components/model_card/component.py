"""The ModelCard component."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts

from components.model_card import executor
from components.model_card import spec as keys
from components.model_card.spec import ModelCardArtifact, ModelCardSpec


class ModelCard(base_component.BaseComponent):
    """Writes the model card (Markdown, HTML) and puts it inside the model that is pushed.

    The card is built from ML Metadata's artifacts of this run (Evaluator's evaluation
    and blessing, Trainer's fit, Tuner's hyperparameters, StatisticsGen's counts,
    Explanations, Quantization's report) and the config's `model_card` section. Its
    `blessing` output is InfraValidation's blessing with the warmed-up model copied and
    `assets.extra/model_card.md`, `model_card.html` and the explainer bundle added: give it
    to the Pusher as `infra_blessing`, so the pushed model carries its card.

    Args:
      infra_blessing: InfraValidation's blessing (the stamped model inside).
      evaluation: Evaluator's evaluation.
      model_blessing: Evaluator's blessing.
      model_run: Trainer's model_run (training.json).
      hyperparameters: Tuner's best hyperparameters.
      statistics: StatisticsGen's statistics.
      card_config: name, family, task, features, label and the config's model_card section.
      explanations: the Explanations component's output, if it runs.
      quantization_report: the Quantization component's report, if it runs.
    """

    SPEC_CLASS = ModelCardSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        infra_blessing: types.BaseChannel,
        evaluation: types.BaseChannel,
        model_blessing: types.BaseChannel,
        model_run: types.BaseChannel,
        hyperparameters: types.BaseChannel,
        statistics: types.BaseChannel,
        card_config: Mapping[str, Any],
        explanations: types.BaseChannel | None = None,
        quantization_report: types.BaseChannel | None = None,
    ):
        super().__init__(
            spec=ModelCardSpec(
                **{
                    keys.INFRA_BLESSING_KEY: infra_blessing,
                    keys.EVALUATION_KEY: evaluation,
                    keys.MODEL_BLESSING_KEY: model_blessing,
                    keys.MODEL_RUN_KEY: model_run,
                    keys.HYPERPARAMETERS_KEY: hyperparameters,
                    keys.STATISTICS_KEY: statistics,
                    keys.EXPLANATIONS_KEY: explanations,
                    keys.QUANTIZATION_REPORT_KEY: quantization_report,
                    keys.CARD_CONFIG_KEY: json.dumps(dict(card_config), sort_keys=True),
                    keys.MODEL_CARD_KEY: types.Channel(type=ModelCardArtifact),
                    keys.PUSHED_BLESSING_KEY: types.Channel(type=standard_artifacts.InfraBlessing),
                }
            )
        )
