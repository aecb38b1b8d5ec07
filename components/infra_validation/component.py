"""The InfraValidation component (constructor only; the work is in executor.py)."""

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts

from components.infra_validation import spec
from components.infra_validation.executor import Executor
from serving.warmup import DEFAULT_NUM_REQUESTS


class InfraValidation(base_component.BaseComponent):
    """Serves the candidate model in a model server and blesses it only if it answers.

    Writes warmup requests (PredictionLogs made from real examples of `split`) into a copy of
    the model, serves that copy with tensorflow_model_server (or the embedded server when the
    binary is not on PATH) on a free loopback port, waits until it is AVAILABLE, replays the
    warmup requests over gRPC and checks every answer. The output InfraBlessing has `blessed`
    1 or 0, and when blessed holds the warmed-up model (`has_model` 1), so a Pusher given
    `infra_blessing=` (and no `model=`) pushes the model together with its warmup file.
    `validation.json` in the blessing directory says why it passed or failed.

    Args:
      model: Channel of the Trainer's Model.
      examples: Channel of Examples with raw features (ExampleGen's output).
      model_name: the name the model is served under, e.g. "penguins".
      num_warmup_requests: how many warmup requests to write (batch 1 each).
      split: the split of `examples` the warmup requests come from.
      timeout_s: how long the model may take to become AVAILABLE.
    """

    SPEC_CLASS = spec.InfraValidationSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        model_name: str,
        num_warmup_requests: int = DEFAULT_NUM_REQUESTS,
        split: str = "eval",
        timeout_s: int = 120,
    ):
        super().__init__(
            spec=spec.InfraValidationSpec(
                model=model,
                examples=examples,
                blessing=types.Channel(type=standard_artifacts.InfraBlessing),
                model_name=model_name,
                num_warmup_requests=num_warmup_requests,
                split=split,
                timeout_s=timeout_s,
            )
        )
