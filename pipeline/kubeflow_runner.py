"""Compiles the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

A thin runner: it resolves the cluster paths, image and Beam arguments (config,
overridden by flags), calls the same `create_pipeline` as the local runner and
hands the result to TFX's KubeflowV2DagRunner, which writes a PipelineJob JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from tfx import v1 as tfx

from pipeline import evaluation, sources
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.local_runner import beam_args, code_version
from pipeline.pipeline import create_pipeline


@dataclasses.dataclass(frozen=True)
class ClusterTarget:
    """Where the compiled pipeline runs from and what it reads and writes."""

    image: str
    pipeline_root: str
    data_root: str
    serving_root: str
    schema_uri: str
    beam_args: tuple[str, ...]


def resolve_target(config: PipelineConfig, **overrides: str | None) -> ClusterTarget:
    """The config's `kubeflow:` values with non-empty flag overrides applied.

    Args:
      config: the pipeline config.
      overrides: image, pipeline_root, data_root, serving_root, schema_uri.

    Raises:
      ConfigError: a value the pipeline needs is set neither in the config nor by a flag.
    """
    from kubeflow import scaling

    kf = config.cluster.kubeflow
    values = {
        key: overrides.get(key) or getattr(kf, key)
        for key in ("image", "pipeline_root", "data_root", "serving_root", "schema_uri")
    }
    required = ["image", "pipeline_root", "data_root", "serving_root"] + (
        ["schema_uri"] if config.schema_file else []
    )
    for key in required:
        if not values[key]:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                config.source_file,
                f"kubeflow.{key}",
                f"is required to compile; set it or pass {flag}",
            )
    if config.cluster.dataflow:
        args = scaling.dataflow_beam_args(
            config.cluster.dataflow, config.cluster.vertex.project, values["image"]
        )
    else:
        # The cluster's DirectRunner mode, by the rows of the local copy of the data.
        args = beam_args(config, data_bytes=0, rows=sources.estimated_rows(config))
    return ClusterTarget(beam_args=tuple(args), **values)


def label_classes(config: PipelineConfig) -> tuple[str, ...]:
    """The label's classes: from the config, else read from the configured data."""
    if config.label_classes or config.task != "classification":
        return config.label_classes
    return sources.label_values(config)


def build_kubeflow_pipeline(config: PipelineConfig, target: ClusterTarget) -> tfx.dsl.Pipeline:
    """The pipeline with cluster paths, no local ML Metadata, and the config's scaling."""
    from kubeflow import scaling

    # The default slices, as the local runner has them: a curated schema decides (read
    # before it becomes the cluster's URI); without one, the local data's count of values.
    if config.evaluation.slice_features is None and not evaluation.schema_domains(
        config.schema_file
    ):
        config, note = evaluation.without_many_valued_slices(config, sources.many_valued(config))
        if note:
            print(note, flush=True)
    if config.schema_file:
        config = dataclasses.replace(config, schema_file=target.schema_uri)
    return create_pipeline(
        config,
        data_root=target.data_root,
        pipeline_root=target.pipeline_root,
        serving_dir=f"{target.serving_root.rstrip('/')}/{config.model_name}",
        label_classes=label_classes(config),
        code_version=code_version(),
        beam_pipeline_args=target.beam_args,
        enable_cache=config.cluster.vertex.enable_caching,
        platform=scaling.component_platform(config.cluster, target.image),
        # Kubeflow V2 compiles only TFX's built-in resolver strategies, and no resolver
        # functions: with data.spans each run trains on the newest span (kubeflow/README.md).
        exclude_candidate_from_baseline=False,
        span_window=False,
    )


def compile_pipeline(config: PipelineConfig, target: ClusterTarget, output: str) -> dict[str, Any]:
    """Writes the PipelineJob JSON to `output` and returns it as a dict.

    Every task runs TFX's Kubeflow V2 entrypoint
    (`python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`)
    in `target.image`.

    Raises:
      ConfigError: the pipeline name is not one Kubeflow/Vertex accepts.
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", config.pipeline_name):
        raise ConfigError(
            config.source_file,
            "pipeline_name",
            f"Kubeflow and Vertex AI take lower-case letters, digits and '-' only,"
            f" got {config.pipeline_name!r}",
        )
    pipeline = build_kubeflow_pipeline(config, target)
    runner_config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
        default_image=target.image
    )
    output_dir, filename = os.path.split(os.path.abspath(output))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=runner_config, output_dir=output_dir, output_filename=filename
    )
    runner.run(pipeline, write_out=True)
    with open(output) as f:
        job = json.load(f)
    _resolve_slice_gate_blessings(job)
    with open(output, "w") as f:
        json.dump(job, f, indent=2, sort_keys=True)
    return job


# TFX's compiled latest-blessed-model query (tfx/orchestration/kubeflow/v2/step_builder.py).
_BLESSED_QUERY = "metadata.blessed.number_value=1"


def _resolve_slice_gate_blessings(job: dict[str, Any]) -> None:
    """Narrows the compiled latest-blessed-model resolvers to the SliceGate's blessings.

    TFX compiles LatestBlessedModelStrategy into a query for every ModelBlessing with
    `blessed` 1, whatever component produced it: the Evaluator's blessing of a model that a
    slice gate then blocked matches too. Locally the resolvers name the SliceGate as the
    producer (pipeline.pipeline._blessed_models); here the query also requires the property
    only the SliceGate's blessings carry.

    Raises:
      RuntimeError: the pipeline has resolvers but none of their queries has TFX's blessed
        clause (TFX changed how it compiles them; the narrowing would silently not apply).
    """
    from components.slice_gate.spec import SLICE_GATE_PROPERTY

    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    queries = [
        query
        for executor in executors.values()
        for query in executor.get("resolver", {}).get("outputArtifactQueries", {}).values()
    ]
    blessed = [q for q in queries if _BLESSED_QUERY in q.get("filter", "")]
    if queries and not blessed:
        raise RuntimeError(
            f"no compiled resolver query holds {_BLESSED_QUERY!r}; cannot restrict the "
            "latest-blessed-model resolvers to the SliceGate's blessings"
        )
    for query in blessed:
        query["filter"] += f" AND metadata.{SLICE_GATE_PROPERTY}.number_value=1"


def compile_from_flags(
    config: PipelineConfig, output: str | None, overrides: dict[str, str | None]
) -> str:
    """Resolves the target and compiles; returns the written path."""
    target = resolve_target(config, **overrides)
    path = output or config.cluster.kubeflow.output
    compile_pipeline(config, target, path)
    return path


def beam_args_of(spec: dict[str, Any]) -> Sequence[str]:
    """The Beam args that the compiled Transform task passes (for printing and checks)."""
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    args = executors["Transform_executor"]["container"]["args"]
    return [a for a in args if a.startswith("--") and "=" in a]
