"""The InfraValidation component's inputs, outputs and parameters."""

from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
BLESSING_KEY = "blessing"
MODEL_NAME_KEY = "model_name"
NUM_WARMUP_REQUESTS_KEY = "num_warmup_requests"
SPLIT_KEY = "split"
TIMEOUT_KEY = "timeout_s"

# How TFX's Pusher reads an InfraBlessing: `blessed` == 1, and `has_model` == 1 when the blessing
# holds the model (with its warmup file) under stamped_model/.
BLESSED_PROPERTY = "blessed"
HAS_MODEL_PROPERTY = "has_model"
RESULT_FILE = "validation.json"


class InfraValidationSpec(ComponentSpec):
    """Model and Examples in; an InfraBlessing holding the warmed-up model out."""

    PARAMETERS = {
        MODEL_NAME_KEY: ExecutionParameter(type=str),
        NUM_WARMUP_REQUESTS_KEY: ExecutionParameter(type=int),
        SPLIT_KEY: ExecutionParameter(type=str),
        TIMEOUT_KEY: ExecutionParameter(type=int),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing),
    }
