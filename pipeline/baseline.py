"""Which model the Evaluator compares a candidate against."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy,
)

MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"
CANDIDATE_KEY = "candidate"


class PreviousBlessedModelStrategy(resolver.ResolverStrategy):
    """The latest blessed model other than the candidate itself.

    TFX's LatestBlessedModelStrategy hands a cached Trainer's model back as its own
    baseline on the next run: the Evaluator then re-runs to compare the model with
    itself and the Pusher pushes the same model again as a new version. Leaving the
    candidate out keeps an unchanged pipeline fully cached, and a newly trained
    model is still compared with the last blessed one.
    """

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]):
        candidate = input_dict.get(CANDIDATE_KEY, [])
        candidate_ids = {a.id for a in candidate}
        models = [m for m in input_dict.get(MODEL_KEY, []) if m.id not in candidate_ids]
        blessings = input_dict.get(BLESSING_KEY, [])
        result = {MODEL_KEY: [], BLESSING_KEY: [], CANDIDATE_KEY: candidate}
        if models and blessings:
            result.update(
                LatestBlessedModelStrategy()._resolve(  # noqa: SLF001 - reuse TFX's blessing lookup
                    {MODEL_KEY: models, BLESSING_KEY: blessings}, MODEL_KEY, BLESSING_KEY
                )
            )
        return result
