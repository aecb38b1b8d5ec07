"""Submits a compiled pipeline to Vertex AI Pipelines or to a Kubeflow Pipelines endpoint.

Both paths validate everything locally first (the config's project, region and
gs:// paths; the compiled file parsed into the kfp-pipeline-spec protos) and, with
`dry_run`, stop there and return what they would send. The SDKs are imported
when used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError


class SubmitError(RuntimeError):
    """The compiled file cannot be submitted as it is; the message says why."""


def load_job(spec_path: str) -> tuple[dict[str, Any], pb.PipelineJob]:
    """The compiled PipelineJob JSON, as a dict and parsed strictly into the proto."""
    try:
        raw = json.loads(Path(spec_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SubmitError(
            f"{spec_path}: cannot read the compiled pipeline: {err}; run the compile command first"
        ) from err
    job = pb.PipelineJob()
    json_format.ParseDict(raw, job)
    spec = pb.PipelineSpec()
    json_format.ParseDict(raw["pipelineSpec"], spec)
    if not spec.root.dag.tasks:
        raise SubmitError(f"{spec_path}: the pipeline has no tasks")
    return raw, job


def _image_paths(raw: dict[str, Any]) -> set[str]:
    executors = raw["pipelineSpec"]["deploymentSpec"]["executors"]
    return {e["container"]["image"] for e in executors.values() if "container" in e}


def check_vertex(config: PipelineConfig, raw: dict[str, Any]) -> None:
    """Raises ConfigError for what Vertex AI would reject: no project/region, non-gs:// root."""
    vertex = config.cluster.vertex
    for key in ("project", "region"):
        if not getattr(vertex, key):
            raise ConfigError(
                config.source_file, f"vertex.{key}", "is required to submit to Vertex AI"
            )
    root = raw.get("runtimeConfig", {}).get("gcsOutputDirectory", "")
    if not root.startswith("gs://"):
        raise ConfigError(
            config.source_file,
            "kubeflow.pipeline_root",
            f"Vertex AI needs a gs:// pipeline root, the compiled file has {root!r}; recompile with one",
        )
    for image in _image_paths(raw):
        if "/" not in image:
            raise ConfigError(
                config.source_file,
                "kubeflow.image",
                f"{image!r} is not a registry path Vertex AI can pull",
            )


def vertex_job(config: PipelineConfig, spec_path: str, dry_run: bool):
    """Builds the aiplatform.PipelineJob for the compiled file (no network when dry_run)."""
    try:
        from google.cloud import aiplatform
    except ImportError as err:
        raise SubmitError(
            "google-cloud-aiplatform is missing: pip install google-cloud-aiplatform"
        ) from err
    raw, _ = load_job(spec_path)
    check_vertex(config, raw)
    vertex = config.cluster.vertex
    credentials = None
    if dry_run:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    return aiplatform.PipelineJob(
        display_name=raw.get("displayName") or config.pipeline_name,
        template_path=spec_path,
        pipeline_root=raw["runtimeConfig"]["gcsOutputDirectory"],
        enable_caching=vertex.enable_caching,
        labels=dict(vertex.labels),
        project=vertex.project,
        location=vertex.region,
        credentials=credentials,
    )


def submit_vertex(config: PipelineConfig, spec_path: str, dry_run: bool = False) -> dict[str, Any]:
    """Submits (or, with dry_run, only builds) the Vertex AI PipelineJob.

    Returns:
      What is (or would be) sent: the job's request body, service account, schedule.
    """
    job = vertex_job(config, spec_path, dry_run)
    vertex = config.cluster.vertex
    request = json_format.MessageToDict(job._gca_resource._pb)  # noqa: SLF001 - the request body aiplatform sends
    summary = {
        "target": "vertex",
        "project": vertex.project,
        "region": vertex.region,
        "service_account": vertex.service_account or None,
        "schedule": vars(vertex.schedule) if vertex.schedule else None,
        "job": request,
    }
    if dry_run:
        return summary
    account = vertex.service_account or None
    if vertex.schedule:
        schedule = job.create_schedule(
            display_name=f"{config.pipeline_name}-schedule",
            cron=vertex.schedule.cron,
            max_concurrent_run_count=vertex.schedule.max_concurrent_runs,
            service_account=account,
        )
        summary["schedule_name"] = schedule.resource_name
    else:
        job.submit(service_account=account)
        summary["job_name"] = job.resource_name
    return summary


def kfp_package(spec_path: str) -> str:
    """Writes the PipelineSpec that the kfp client uploads (it takes a spec, not a PipelineJob)."""
    raw, _ = load_job(spec_path)
    path = str(Path(spec_path).with_suffix(".kfp.yaml"))
    Path(path).write_text(yaml.safe_dump(raw["pipelineSpec"], sort_keys=True))
    return path


def submit_kfp(
    config: PipelineConfig, spec_path: str, endpoint: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Creates a run on a Kubeflow Pipelines endpoint (or, with dry_run, only prepares it)."""
    host = endpoint or config.cluster.kubeflow.endpoint
    if not host:
        raise ConfigError(
            config.source_file,
            "kubeflow.endpoint",
            "is required to submit to Kubeflow; set it or pass --endpoint",
        )
    raw, _ = load_job(spec_path)
    package = kfp_package(spec_path)
    summary = {
        "target": "kubeflow",
        "endpoint": host,
        "experiment": config.cluster.kubeflow.experiment,
        "run_name": raw.get("displayName") or config.pipeline_name,
        "package": package,
        "pipeline_root": raw.get("runtimeConfig", {}).get("gcsOutputDirectory"),
        "tasks": sorted(raw["pipelineSpec"]["root"]["dag"]["tasks"]),
    }
    if dry_run:
        return summary
    try:
        import kfp
    except ImportError as err:
        raise SubmitError("kfp is missing: pip install kfp") from err
    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
        package,
        arguments={},
        run_name=summary["run_name"],
        experiment_name=summary["experiment"],
        enable_caching=config.cluster.vertex.enable_caching,
    )
    summary["run_id"] = run.run_id
    return summary
