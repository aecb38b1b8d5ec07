"""`monitor --retrain` (`make retrain`): runs the pipeline when the served model's serving
data has drifted, when its training data has changed or (with data.spans) when a span
arrived that ML Metadata does not hold, and never on input the monitor could not read
(that is an error before anything here runs).

The retrain is an ordinary pipeline run: the Trainer warm-starts from the last blessed
model (training.warm_start), the Evaluator compares the new model with the last blessed
one on the new data's eval split, and the Pusher pushes only a blessed model, as a new
version the server picks up. A failed run pushes nothing, so the served model stays.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import json_format
from tfx.components.example_gen import utils as example_gen_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs

from pipeline.config import PipelineConfig
from pipeline.monitor import DRIFT_FILE, MonitorResult


@dataclasses.dataclass(frozen=True)
class Trigger:
    """Why (or whether) to retrain: drift in the monitored requests, changed data, new spans.

    With data.spans, `new_spans` are the spans of the window on disk whose data ML Metadata
    does not hold (new, or changed since ingested); `new_data` is then not measured.
    """

    drift: bool
    new_data: bool
    data_fingerprint: str
    new_spans: tuple[int, ...] = ()

    @property
    def fires(self) -> bool:
        return self.drift or self.new_data or bool(self.new_spans)

    @property
    def reason(self) -> str:
        reasons = [
            r
            for r, on in (
                ("drift", self.drift),
                ("new data", self.new_data),
                ("new span", bool(self.new_spans)),
            )
            if on
        ]
        return " and ".join(reasons) or "no drift and no new data"


def data_fingerprint(config: PipelineConfig) -> str:
    """ExampleGen's fingerprint of the data a pipeline run would read now.

    The data is checked and staged as a run does it (a CSV is read where it is, other
    formats' staged files are rewritten only when their content changes), and the
    fingerprint is TFX's own, over the files the configured ExampleGen's input config
    matches, so it equals the `input_fingerprint` of the served model's Examples exactly
    when a run would read the same files.
    """
    from pipeline.pipeline import data_components
    from pipeline.sources import stage

    staged = stage(config)
    example_gen, _ = data_components(config, staged.directory)
    properties = example_gen.exec_properties
    input_config = properties[standard_component_specs.INPUT_CONFIG_KEY]
    if isinstance(input_config, str):
        input_config = json_format.Parse(input_config, example_gen_pb2.Input())
    fingerprint, _, _ = example_gen_utils.calculate_splits_fingerprint_span_and_version(
        properties[standard_component_specs.INPUT_BASE_KEY], input_config.splits
    )
    return fingerprint


def new_spans(config: PipelineConfig) -> tuple[int, ...]:
    """The spans a run would ingest now: those of the window (and the one before it) whose
    files ML Metadata holds under no ExampleGen output with the same input fingerprint."""
    from ml_metadata import metadata_store

    from pipeline import local_runner, spans
    from pipeline.pipeline import data_components
    from pipeline.sources import stage_spans

    staged = stage_spans(config)
    example_gen, _ = data_components(config, staged.data.directory)
    fingerprints = {n: spans.input_fingerprint(example_gen, n) for n in staged.staged}
    store = metadata_store.MetadataStore(
        local_runner.connection(local_runner.metadata_path(config))
    )
    return spans.pending(store, config.pipeline_name, example_gen.id, fingerprints)


def trigger(config: PipelineConfig, result: MonitorResult) -> Trigger:
    """Whether the monitor's result or the data calls for a retrain: drift, data files
    other than those the served model's ExampleGen read (its `input_fingerprint`), or with
    data.spans a span not yet ingested."""
    if config.data.spans:
        return Trigger(
            drift=result.drifted, new_data=False, data_fingerprint="", new_spans=new_spans(config)
        )
    fingerprint = data_fingerprint(config)
    return Trigger(
        drift=result.drifted,
        new_data=fingerprint != result.lineage.examples_fingerprint,
        data_fingerprint=fingerprint,
    )


def monitoring_section(result: MonitorResult, fired: Trigger) -> dict[str, Any]:
    """The summary's `monitoring`: why the run was started, and the drift.json behind it."""
    return {
        "trigger": fired.reason,
        "drift_file": f"{result.directory}/{DRIFT_FILE}",
        "drift": result.drift,
        "new_data": fired.new_data,
        "data_fingerprint": fired.data_fingerprint,
        "new_spans": list(fired.new_spans),
    }
