"""InfraValidation: serve the candidate model in a model server before it may be pushed."""

from components.infra_validation.component import InfraValidation

__all__ = ["InfraValidation"]
