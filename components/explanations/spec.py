"""Explanations' spec: what it reads, what it writes, and how it is configured."""

from tfx.types import artifact, component_spec, standard_artifacts

MODEL_KEY = "model"
TRANSFORM_GRAPH_KEY = "transform_graph"
TRANSFORMED_EXAMPLES_KEY = "transformed_examples"
EXPLANATIONS_KEY = "explanations"

FEATURES_KEY = "features"
EXAMPLES_KEY = "examples"
STEPS_KEY = "steps"
HEATMAPS_PER_CLASS_KEY = "heatmaps_per_class"

EXPLANATIONS_FILE = "explanations.json"
HEATMAP_DIR = "heatmaps"
# A self-contained copy of what `explain` needs for one raw example: the Keras model, the
# transform graph and explainer.json; the ModelCard component ships it in the pushed model.
EXPLAINER_DIR = "explainer"


class Attributions(artifact.Artifact):
    """`explanations.json` (global importance, per-example attributions), heatmap PNGs
    and the explainer bundle."""

    # Kubeflow V2 imports custom types by `<module>.<Class>`; components/__init__.py resolves it.
    TYPE_NAME = "components.Attributions"


class ExplanationsSpec(component_spec.ComponentSpec):
    """Inputs: Trainer's model, Transform's graph and transformed examples (eval split)."""

    PARAMETERS = {
        FEATURES_KEY: component_spec.ExecutionParameter(type=str),
        EXAMPLES_KEY: component_spec.ExecutionParameter(type=int),
        STEPS_KEY: component_spec.ExecutionParameter(type=int),
        HEATMAPS_PER_CLASS_KEY: component_spec.ExecutionParameter(type=int),
    }
    INPUTS = {
        MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        TRANSFORM_GRAPH_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.TransformGraph
        ),
        TRANSFORMED_EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        EXPLANATIONS_KEY: component_spec.ChannelParameter(type=Attributions),
    }
