"""SliceGate's spec: the Evaluator's evaluation and blessing in, a ModelBlessing out."""

from tfx.types import component_spec, standard_artifacts

EVALUATION_KEY = "evaluation"
MODEL_BLESSING_KEY = "model_blessing"
BLESSING_KEY = "blessing"
SLICE_FEATURES_KEY = "slice_features"
EXPECTED_VALUES_KEY = "expected_values"
GATES_KEY = "gates"
FAIRNESS_KEY = "fairness"

# TFX's ModelBlessing: Pusher and the latest-blessed-model resolver read `blessed`.
BLESSED_PROPERTY = "blessed"
# 1 on the SliceGate's blessings only: the compiled Kubeflow V2 resolvers query blessings by
# their properties, not by producer, and the Evaluator's blessing also has `blessed` 1.
SLICE_GATE_PROPERTY = "slice_gate"
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
RESULT_FILE = "slices.json"


class SliceGateSpec(component_spec.ComponentSpec):
    """Parameters are JSON: slice features [str], expected values {feature: [str]},
    gates [{gate, metric, threshold, min_examples}], fairness {feature, thresholds}."""

    PARAMETERS = {
        SLICE_FEATURES_KEY: component_spec.ExecutionParameter(type=str),
        EXPECTED_VALUES_KEY: component_spec.ExecutionParameter(type=str),
        GATES_KEY: component_spec.ExecutionParameter(type=str),
        FAIRNESS_KEY: component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {
        EVALUATION_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation),
        MODEL_BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
    OUTPUTS = {BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing)}
