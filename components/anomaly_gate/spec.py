"""AnomalyGate's spec: the anomalies to check, and which splits count."""

from tfx.types import component_spec, standard_artifacts

ANOMALIES_KEY = "anomalies"
RESULT_KEY = "result"
SPLITS_KEY = "splits"


class AnomalyGateSpec(component_spec.ComponentSpec):
    """Inputs: ExampleValidator's anomalies. Output: the checked anomalies, passed on."""

    PARAMETERS = {SPLITS_KEY: component_spec.ExecutionParameter(type=str)}
    INPUTS = {
        ANOMALIES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies)
    }
    OUTPUTS = {
        RESULT_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies)
    }
