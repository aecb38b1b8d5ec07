"""Runs the pipeline locally: Beam's DirectRunner, ML Metadata on SQLite, caching on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

from tfx import v1 as tfx

from pipeline import report
from pipeline import summary as summary_lib
from pipeline.config import PipelineConfig
from pipeline.data import StagedData, stage, stage_schema
from pipeline.pipeline import create_pipeline
from pipeline.progress import capture_progress


def code_version() -> str:
    """A fingerprint of the code TFX runs by import path: models/, components/, training.

    TFX's cache keys on function and class names, not their source; this value goes
    into the components' custom_config so that a code change re-runs Transform and
    everything after it.
    """
    digest = hashlib.sha256()
    files = [
        p for package in ("models", "components") for p in _python_files(resources.files(package))
    ]
    for path in [*sorted(files, key=str), resources.files("pipeline").joinpath("training.py")]:
        digest.update("/".join(path.parts[-2:]).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _python_files(directory):
    for path in directory.iterdir():
        if path.is_dir():
            yield from _python_files(path)
        elif path.name.endswith(".py"):
            yield path


def beam_args(config: PipelineConfig, data_bytes: int) -> list[str]:
    """DirectRunner options.

    in_memory runs everything in this process and is fastest for small inputs;
    multi_processing pays a few seconds to start one worker per core but scales
    with the data. `auto` picks by input size (beam.multi_processing_min_mb).
    """
    mode = config.beam.mode
    if mode == "auto":
        big = data_bytes >= config.beam.multi_processing_min_mb * 1024 * 1024
        mode = "multi_processing" if big else "in_memory"
    workers = config.beam.num_workers or (os.cpu_count() or 1)
    args = [f"--direct_running_mode={mode}"]
    if mode == "multi_processing":
        args.append(f"--direct_num_workers={workers}")
    return args


def _paths(config: PipelineConfig) -> dict[str, str]:
    root = Path(config.output_root)
    return {
        "pipeline_root": str(root / "pipelines" / config.pipeline_name),
        "metadata": str(root / "metadata" / config.pipeline_name / "metadata.sqlite"),
        "serving_dir": str(Path(config.serving_root) / config.model_name),
        "logs": str(root / "logs"),
        "summary": str(root / "summary.json"),
        "report": str(root / "report.html"),
    }


def build_local_pipeline(config: PipelineConfig, staged: StagedData) -> tfx.dsl.Pipeline:
    """The pipeline with local paths, SQLite metadata and DirectRunner args."""
    paths = _paths(config)
    Path(paths["metadata"]).parent.mkdir(parents=True, exist_ok=True)
    if config.schema_file:
        config = dataclasses.replace(
            config, schema_file=stage_schema(config.schema_file, staged.directory)
        )
    return create_pipeline(
        config,
        data_root=staged.directory,
        pipeline_root=paths["pipeline_root"],
        serving_dir=paths["serving_dir"],
        label_classes=config.label_classes or staged.label_values,
        code_version=code_version(),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            paths["metadata"]
        ),
        beam_pipeline_args=beam_args(config, staged.size_bytes),
    )


def run(config: PipelineConfig) -> dict[str, Any]:
    """Runs the pipeline once and writes `<output_root>/summary.json`.

    Returns:
      The summary (also printed). Its `status` is "failed" with an `error` when a
      component failed; nothing is pushed then.
    """
    paths = _paths(config)
    Path(paths["logs"]).mkdir(parents=True, exist_ok=True)
    started = time.time()
    staged = stage(config)
    pipeline = build_local_pipeline(config, staged)
    node_ids = [c.id for c in pipeline.components]
    log_path = os.path.join(
        paths["logs"], f"{config.pipeline_name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    )
    print(
        f"Running pipeline {config.pipeline_name} ({len(node_ids)} components); TFX logs: {log_path}",
        flush=True,
    )
    error = None
    with capture_progress(node_ids, log_path) as progress:
        try:
            tfx.orchestration.LocalDagRunner().run(pipeline)
        except Exception as err:  # noqa: BLE001 - reported in the summary, then re-raised by the CLI
            progress.stop_current()
            logging.getLogger("absl").exception("pipeline run failed")
            error = f"{progress.current or 'pipeline'} failed: {type(err).__name__}: {err}"
    result = summarise(config, node_ids, progress.seconds, time.time() - started, error)
    result["log_file"] = log_path
    result["report"] = report.write(result, paths["report"])
    write_summary(result, paths["summary"])
    print(summary_lib.format_summary(result), flush=True)
    print(f"  report: {result['report']}", flush=True)
    return result


def summarise(
    config: PipelineConfig, node_ids, seconds, elapsed: float, error: str | None
) -> dict[str, Any]:
    """Builds the summary dict from ML Metadata after a run."""
    record = summary_lib.RunRecord(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(_paths(config)["metadata"]),
        config.pipeline_name,
    )
    return {
        "pipeline": config.pipeline_name,
        "run_id": record.run.name if record.run else None,
        "status": "failed" if error else "succeeded",
        "error": error,
        "seconds": round(elapsed, 2),
        "components": summary_lib.components_section(record, node_ids, seconds),
        "tuner": summary_lib.tuner_section(record),
        "evaluation": summary_lib.evaluation_section(record),
        "quantization": summary_lib.quantization_section(record),
        "infra_validation": summary_lib.infra_validation_section(record),
        "pushed": None if error else summary_lib.pushed_section(record),
    }


def write_summary(summary: dict[str, Any], path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=False)
    os.replace(tmp, path)
