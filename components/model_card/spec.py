"""ModelCard's spec: what it reads, what it writes, and how it is configured."""

from tfx.types import artifact, component_spec, standard_artifacts

from components.explanations.spec import Attributions
from components.quantization.spec import QuantizationReport

INFRA_BLESSING_KEY = "infra_blessing"
EVALUATION_KEY = "evaluation"
MODEL_BLESSING_KEY = "model_blessing"
MODEL_RUN_KEY = "model_run"
HYPERPARAMETERS_KEY = "hyperparameters"
STATISTICS_KEY = "statistics"
EXPLANATIONS_KEY = "explanations"
QUANTIZATION_REPORT_KEY = "quantization_report"

MODEL_CARD_KEY = "model_card"
PUSHED_BLESSING_KEY = "blessing"

CARD_CONFIG_KEY = "card_config"

MARKDOWN_FILE = "model_card.md"
HTML_FILE = "model_card.html"
FACTS_FILE = "model_card.json"


class ModelCardArtifact(artifact.Artifact):
    """model_card.md, model_card.html and the facts behind them (model_card.json)."""

    # Kubeflow V2 imports custom types by `<module>.<Class>`; components/__init__.py resolves it.
    TYPE_NAME = "components.ModelCardArtifact"


class ModelCardSpec(component_spec.ComponentSpec):
    """Inputs: the infra-validated model and what the card says about it.

    Outputs: the card, and an InfraBlessing holding the same model with the card (and the
    explainer bundle) in `assets.extra/`, which the Pusher pushes.
    """

    PARAMETERS = {
        CARD_CONFIG_KEY: component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {
        INFRA_BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.InfraBlessing),
        EVALUATION_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation),
        MODEL_BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
        MODEL_RUN_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelRun),
        HYPERPARAMETERS_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.HyperParameters
        ),
        STATISTICS_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleStatistics),
        EXPLANATIONS_KEY: component_spec.ChannelParameter(type=Attributions, optional=True),
        QUANTIZATION_REPORT_KEY: component_spec.ChannelParameter(
            type=QuantizationReport, optional=True
        ),
    }
    OUTPUTS = {
        MODEL_CARD_KEY: component_spec.ChannelParameter(type=ModelCardArtifact),
        PUSHED_BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.InfraBlessing),
    }
