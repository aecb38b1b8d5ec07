"""SliceGate: the Evaluator's blessing, withdrawn when a slice gate fails."""

from components.slice_gate.component import SliceGate

__all__ = ["SliceGate"]
