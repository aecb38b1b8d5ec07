"""Custom TFX components."""


def __getattr__(name: str):
    # Kubeflow V2 recovers a custom artifact class from its type name
    # ("components.QuantizationReport") by importing it from this package.
    if name == "QuantizationReport":
        from components.quantization.spec import QuantizationReport

        return QuantizationReport
    if name == "Attributions":
        from components.explanations.spec import Attributions

        return Attributions
    if name == "ModelCardArtifact":
        from components.model_card.spec import ModelCardArtifact

        return ModelCardArtifact
    raise AttributeError(f"module 'components' has no attribute {name!r}")
