"""AnomalyGate: stops the pipeline when ExampleValidator found anomalies."""

from components.anomaly_gate.component import AnomalyGate

__all__ = ["AnomalyGate"]
