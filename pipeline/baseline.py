"""Which model the Evaluator compares a candidate against."""

from __future__ import annotations

from ml_metadata.proto import metadata_store_pb2
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


EXAMPLES_KEY = "examples"
# The Trainer input the warm-start model goes to (TFX's `base_model`).
BASE_MODEL_KEY = "base_model"


class WarmStartModelStrategy(resolver.ResolverStrategy):
    """The model the Trainer warm-starts from: the latest blessed one, unless a Trainer
    already trained on these same transformed examples; then the model that Trainer
    started from (none on a first run).

    The latest blessed model alone would change the Trainer's inputs on every run after
    the first, so an unchanged pipeline would retrain instead of being served from the
    cache. Reusing what the earlier Trainer on the same examples received keeps its
    inputs, and so the cache, unchanged; new data gets the last blessed model.
    """

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]):
        examples = input_dict.get(EXAMPLES_KEY, [])
        result = {MODEL_KEY: [], BLESSING_KEY: [], EXAMPLES_KEY: examples}
        earlier = _earlier_trainer_base_model(store, [a.id for a in examples])
        if earlier is not None:
            result[MODEL_KEY] = earlier
            return result
        models = input_dict.get(MODEL_KEY, [])
        blessings = input_dict.get(BLESSING_KEY, [])
        if models and blessings:
            result.update(
                LatestBlessedModelStrategy()._resolve(  # noqa: SLF001 - reuse TFX's blessing lookup
                    {MODEL_KEY: models, BLESSING_KEY: blessings}, MODEL_KEY, BLESSING_KEY
                )
            )
        return result


def _earlier_trainer_base_model(store, example_ids: list[int]) -> list[types.Artifact] | None:
    """The `base_model` of the latest completed Trainer that read these examples: a list
    of one model, [] when it had none, None when no Trainer read them."""
    if not example_ids:
        return None
    reads = store.get_events_by_artifact_ids(example_ids)
    execution_ids = {e.execution_id for e in reads if e.type == metadata_store_pb2.Event.INPUT}
    executions = [
        e
        for e in store.get_executions_by_id(list(execution_ids))
        if e.last_known_state
        in (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    ]
    # Tuner, Quantization and Trainer all read the transformed examples; any Trainer
    # class counts (the local one or Vertex's).
    trainer_types = {
        t.id
        for t in store.get_execution_types_by_id(list({e.type_id for e in executions}))
        if t.name.endswith("Trainer")
    }
    trainers = sorted((e for e in executions if e.type_id in trainer_types), key=lambda e: e.id)
    if not trainers:
        return None
    events = store.get_events_by_execution_ids([trainers[-1].id])
    model_ids = [
        e.artifact_id
        for e in events
        if e.type == metadata_store_pb2.Event.INPUT
        and e.path.steps
        and e.path.steps[0].key == BASE_MODEL_KEY
    ]
    if not model_ids:
        return []
    artifact = store.get_artifacts_by_id(model_ids[:1])[0]
    model = types.standard_artifacts.Model()
    model.set_mlmd_artifact(artifact)
    return [model]
