"""Explanations: integrated gradients per raw feature, heatmaps, and an explainer bundle."""

from components.explanations.component import Explanations

__all__ = ["Explanations"]
