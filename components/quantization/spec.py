"""Quantization's spec: what it reads, what it writes, and how it is configured."""

from tfx.types import artifact, component_spec, standard_artifacts

MODEL_KEY = "model"
TRANSFORM_GRAPH_KEY = "transform_graph"
TRANSFORMED_EXAMPLES_KEY = "transformed_examples"
EXAMPLES_KEY = "examples"

SERVED_MODEL_KEY = "served_model"
INT8_MODEL_KEY = "int8_model"
TFLITE_MODEL_KEY = "tflite_model"
REPORT_KEY = "report"

FEATURES_KEY = "features"
METHOD_KEY = "method"
METRIC_KEY = "metric"
MAX_METRIC_DROP_KEY = "max_metric_drop"
REPRESENTATIVE_SAMPLES_KEY = "representative_samples"
SERVE_KEY = "serve"
ON_GUARD_FAILURE_KEY = "on_guard_failure"
PRUNING_SPARSITY_KEY = "pruning_sparsity"
PRUNING_EPOCHS_KEY = "pruning_epochs"
LATENCY_RUNS_KEY = "latency_runs"

# Custom properties of the served model and the report, read back by the run summary.
SERVED_PROPERTY = "served"
BLESSED_PROPERTY = "blessed"

SERVING_MODEL_DIR = "Format-Serving"
TFLITE_FILE = "model.tflite"
TFLITE_FLOAT_FILE = "model_float.tflite"
REPORT_FILE = "report.json"


class QuantizationReport(artifact.Artifact):
    """`report.json`: size, metrics and latency of the float and quantized models."""

    # Kubeflow V2 names custom types `<module>.<Class>` and imports them by that
    # path at run time; components/__init__.py resolves it.
    TYPE_NAME = "components.QuantizationReport"


class QuantizationSpec(component_spec.ComponentSpec):
    """Inputs: Trainer's model, Transform's graph and examples, ExampleGen's examples.

    Outputs: the model to serve (int8 or float, per the guard), the int8 SavedModel,
    the TFLite models and the report.
    """

    PARAMETERS = {
        FEATURES_KEY: component_spec.ExecutionParameter(type=str),
        METHOD_KEY: component_spec.ExecutionParameter(type=str),
        METRIC_KEY: component_spec.ExecutionParameter(type=str),
        MAX_METRIC_DROP_KEY: component_spec.ExecutionParameter(type=float),
        REPRESENTATIVE_SAMPLES_KEY: component_spec.ExecutionParameter(type=int),
        SERVE_KEY: component_spec.ExecutionParameter(type=str),
        ON_GUARD_FAILURE_KEY: component_spec.ExecutionParameter(type=str),
        PRUNING_SPARSITY_KEY: component_spec.ExecutionParameter(type=float),
        PRUNING_EPOCHS_KEY: component_spec.ExecutionParameter(type=int),
        LATENCY_RUNS_KEY: component_spec.ExecutionParameter(type=int),
    }
    INPUTS = {
        MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        TRANSFORM_GRAPH_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.TransformGraph
        ),
        TRANSFORMED_EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
        EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        SERVED_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        INT8_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        TFLITE_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        REPORT_KEY: component_spec.ChannelParameter(type=QuantizationReport),
    }
