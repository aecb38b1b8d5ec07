"""A TFMA metric for regression: the distribution of residuals (label - prediction).

TFMA 0.52 has mean errors but no residual distribution. `ResidualHistogram` gives two
array metrics per slice: `residual_histogram_edges` (bins + 1 equal-width edges from the
smallest to the largest residual) and `residual_histogram_counts` (eval examples per
bin, the last bin closed). The edges depend on the data, so the combiner keeps every
residual of the slice (one float per eval example) until it extracts the histogram.

Registered with TFMA by import: an EvalConfig names it with
`MetricConfig(class_name="ResidualHistogram", module="pipeline.residuals")`.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util

EDGES_NAME = "residual_histogram_edges"
COUNTS_NAME = "residual_histogram_counts"
DEFAULT_BINS = 20


def histogram(residuals: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of `bins` equal-width bins over the residuals' range.

    Raises:
      ValueError: bins < 1.
    """
    if bins < 1:
        raise ValueError(f"a residual histogram needs at least 1 bin, got {bins}")
    if residuals.size == 0:
        return np.zeros(0), np.zeros(0)
    counts, edges = np.histogram(residuals, bins=bins)
    return edges.astype(np.float64), counts.astype(np.float64)


class ResidualHistogram(metric_types.Metric):
    """Histogram of label - prediction over a slice's examples (weights ignored)."""

    def __init__(self, name: str = "residual_histogram", bins: int = DEFAULT_BINS):
        super().__init__(_computations, name=name, bins=bins)


def _computations(
    name: str,
    bins: int,
    eval_config=None,
    model_names=None,
    output_names=None,
    **_,
) -> metric_types.MetricComputations:
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            keys = [
                metric_types.MetricKey(name=n, model_name=model_name, output_name=output_name)
                for n in (EDGES_NAME, COUNTS_NAME)
            ]
            combiner = _Combiner(eval_config, model_name, output_name, keys, bins)
            computations.append(
                metric_types.MetricComputation(keys=keys, preprocessors=None, combiner=combiner)
            )
    return computations


class _Combiner(beam.CombineFn):
    def __init__(self, eval_config, model_name, output_name, keys, bins):
        self._eval_config = eval_config
        self._model_name = model_name
        self._output_name = output_name
        self._keys = keys
        self._bins = bins

    def create_accumulator(self) -> list[float]:
        return []

    def add_input(self, accumulator: list[float], element) -> list[float]:
        for label, prediction, _ in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._model_name,
            output_name=self._output_name,
        ):
            accumulator.append(float(np.asarray(label).item() - np.asarray(prediction).item()))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[float]]) -> list[float]:
        merged: list[float] = []
        for accumulator in accumulators:
            merged.extend(accumulator)
        return merged

    def extract_output(self, accumulator: list[float]):
        edges, counts = histogram(np.asarray(accumulator, dtype=np.float64), self._bins)
        return dict(zip(self._keys, (edges, counts), strict=True))


metric_types.register_metric(ResidualHistogram)
