"""The monitor as a Kubeflow Pipelines (or Vertex AI Pipelines) job: a one-step pipeline
whose container runs `python -m pipeline.cli monitor --cluster` in the pipeline image.

The step reads the request logs (`logs`, a run parameter: gs:// or a mounted folder, read
through tf.io.gfile), follows the served model (`kubeflow.serving_root`) to its training
data through the cluster's ML Metadata (`kubeflow.metadata`) and writes drift.json, the
drift report and its figures into its output artifact `drift`. Its exit code is the
monitor's: 0 no drift, 3 drift, 1 unreadable input, 2 a config error; any non-zero code
fails the step, so a scheduled run that finds drift shows as failed (and alerts) and its
artifact says which features drifted.
"""

# No `from __future__ import annotations`: kfp reads the component's annotations as types.
import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError

# The image's working directory holds the repository's configs/ (Dockerfile: WORKDIR).
_REPO_ROOT = Path(__file__).resolve().parent.parent
MONITOR_COMMAND = ("python", "-m", "pipeline.cli", "monitor")
DEFAULT_OUTPUT = "output/kubeflow/monitor.yaml"


def image_config_path(config: PipelineConfig) -> str:
    """The config's path inside the image: relative to the repository, which the image
    copies to its working directory.

    Raises:
      ConfigError: the config file is not in the repository, so the image lacks it.
    """
    source = Path(config.source_file).resolve()
    if not source.is_relative_to(_REPO_ROOT):
        raise ConfigError(
            config.source_file,
            "(file)",
            f"the monitor job reads its config inside the image, which holds {_REPO_ROOT}'s"
            " configs/ only; put the config there and rebuild the image",
        )
    return source.relative_to(_REPO_ROOT).as_posix()


def monitor_pipeline(config: PipelineConfig, image: str, logs: str, config_path: str):
    """The KFP pipeline function of the monitor job.

    Args:
      config: the pipeline config (its `kubeflow:` section names the metadata service and
        the serving root the job reads).
      image: the pipeline image.
      logs: the default of the run parameter `logs` (the request logs to monitor).
      config_path: the same config's path inside the image.

    Returns:
      A `kfp.dsl` pipeline, for `kfp.compiler.Compiler().compile`.
    """
    from kfp import dsl

    @dsl.container_component
    def monitor(logs: str, drift: dsl.Output[dsl.Artifact]):
        return dsl.ContainerSpec(
            image=image,
            command=list(MONITOR_COMMAND),
            args=[
                "--config",
                config_path,
                "--cluster",
                "--logs",
                logs,
                "--output-root",
                drift.path,
            ],
        )

    @dsl.pipeline(
        name=f"{config.pipeline_name}-monitor",
        description=f"Drift of {config.model_name}'s logged requests against its training data",
    )
    def monitor_job(logs: str = logs):
        monitor(logs=logs).set_display_name("monitor")

    return monitor_job


def compile_monitor(
    config: PipelineConfig,
    output: str | None = None,
    image: str = "",
    logs: str = "",
    image_config: str = "",
) -> dict[str, Any]:
    """Compiles the monitor job to a KFP PipelineSpec YAML.

    Args:
      config: the pipeline config.
      output: the YAML file (default output/kubeflow/monitor.yaml).
      image: overrides `kubeflow.image`.
      logs: overrides `kubeflow.request_logs`.
      image_config: the config's path inside the image (default: its path in the repository).

    Returns:
      The compiled spec, as the YAML file holds it.

    Raises:
      ConfigError: no image, no logs, or the config lacks what `monitor --cluster` reads.
    """
    from kfp import compiler

    kubeflow = config.cluster.kubeflow
    image, logs = image or kubeflow.image, logs or kubeflow.request_logs
    for key, value in (("image", image), ("request_logs", logs)):
        if not value:
            raise ConfigError(config.source_file, f"kubeflow.{key}", "is required (or its flag)")
    for key, value in (("metadata", kubeflow.metadata), ("serving_root", kubeflow.serving_root)):
        if not value:
            raise ConfigError(
                config.source_file, f"kubeflow.{key}", "is required for the monitor job"
            )
    path = output or DEFAULT_OUTPUT
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    job = monitor_pipeline(config, image, logs, image_config or image_config_path(config))
    compiler.Compiler().compile(job, package_path=path)
    with open(path) as f:
        return yaml.safe_load(f)
