"""Quantization: an int8 SavedModel and TFLite models next to the float one, with a guard."""

from components.quantization.component import Quantization

__all__ = ["Quantization"]
