"""The AnomalyGate component."""

from collections.abc import Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts

from components.anomaly_gate import executor
from components.anomaly_gate.spec import AnomalyGateSpec


class AnomalyGate(base_component.BaseComponent):
    """Fails the run, naming each anomaly, when ExampleValidator reported any.

    TFX's ExampleValidator records anomalies but lets the pipeline go on; put this
    gate between it and Transform so bad data never reaches training or the pushed
    model.

    Args:
      anomalies: ExampleValidator's `anomalies` output.
      splits: which splits to check (default: all of them).
    """

    SPEC_CLASS = AnomalyGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies: types.BaseChannel, splits: Sequence[str] = ()):
        result = types.Channel(type=standard_artifacts.ExampleAnomalies)
        super().__init__(
            spec=AnomalyGateSpec(anomalies=anomalies, result=result, splits=",".join(splits))
        )
