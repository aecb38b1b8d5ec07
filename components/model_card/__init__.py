"""ModelCard: the model card from the run's artifacts, shipped inside the model that is pushed."""

from components.model_card.component import ModelCard

__all__ = ["ModelCard"]
