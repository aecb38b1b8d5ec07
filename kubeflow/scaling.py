"""Scaling knobs from the config: Dataflow Beam args, container resources, Vertex AI Training.

Pure functions from the parsed `ClusterConfig` to what TFX takes: Beam argument
lists, ResourceSpec protos and the `custom_config` entries of TFX's Vertex AI
Training extension (tfx.extensions.google_cloud_ai_platform).
"""

from __future__ import annotations

from typing import Any

from tfx import v1 as tfx
from tfx.extensions.google_cloud_ai_platform.tuner.executor import TUNING_ARGS_KEY

from pipeline.cluster_config import (
    Accelerator,
    ClusterConfig,
    DataflowConfig,
    MachineSpec,
    ResourceConfig,
)
from pipeline.platform import ComponentPlatform, ResourceSpec

_GIB = 1024**3
_UNITS = {"G": 1e9, "Gi": _GIB, "M": 1e6, "Mi": 1024**2}
# Vertex AI machine type for TPU VMs of each accelerator generation, by core count.
_TPU_MACHINES = {
    "TPU_V2": "cloud-tpu",
    "TPU_V3": "cloud-tpu",
    "TPU_V4_POD": "cloud-tpu",
    "TPU_V5_LITEPOD": "ct5lp-hightpu-{n}t",
}


def dataflow_beam_args(dataflow: DataflowConfig, project: str, image: str) -> list[str]:
    """Beam options that run the data components on Dataflow.

    The workers use the pipeline image (`--sdk_container_image`), which carries the
    project's packages, so `preprocessing_fn` imports there as it does locally.
    """
    if dataflow.runner == "DirectRunner":
        return [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=0",
        ]
    args = [
        "--runner=DataflowRunner",
        f"--project={dataflow.project or project}",
        f"--region={dataflow.region}",
        f"--temp_location={dataflow.temp_location}",
        f"--machine_type={dataflow.machine_type}",
        f"--max_num_workers={dataflow.max_num_workers}",
        "--experiments=use_runner_v2",
        f"--sdk_container_image={image}",
    ]
    if dataflow.service_account:
        args.append(f"--service_account_email={dataflow.service_account}")
    return args


def memory_gib(memory: str) -> float:
    """'16G' or '512Mi' in GiB (the unit of ResourceSpec.memory_limit)."""
    for unit in ("Gi", "Mi", "G", "M"):
        if memory.endswith(unit):
            return float(memory[: -len(unit)]) * _UNITS[unit] / _GIB
    raise ValueError(f"memory {memory!r}: expected a number with G, Gi, M or Mi")


def resource_spec(resource: ResourceConfig) -> ResourceSpec:
    """The container resource request of one pipeline task."""
    spec = ResourceSpec()
    if resource.cpu:
        spec.cpu_limit = resource.cpu
        spec.resource_cpu_limit = f"{resource.cpu:g}"
    if resource.memory:
        spec.memory_limit = memory_gib(resource.memory)
        spec.resource_memory_limit = resource.memory
    if resource.accelerator:
        spec.accelerator.type = resource.accelerator.type
        spec.accelerator.count = resource.accelerator.count
        spec.accelerator.resource_type = resource.accelerator.type
        spec.accelerator.resource_count = str(resource.accelerator.count)
    return spec


def _machine_spec(machine: MachineSpec) -> dict[str, Any]:
    spec: dict[str, Any] = {"machine_type": machine.machine_type}
    accelerator: Accelerator | None = machine.accelerator
    if accelerator:
        if accelerator.is_tpu:
            spec["machine_type"] = _TPU_MACHINES[accelerator.type].format(n=accelerator.count)
        spec["accelerator_type"] = accelerator.type
        spec["accelerator_count"] = accelerator.count
    return spec


def worker_pool_specs(
    machine: MachineSpec, image: str, replicas: int | None = None
) -> list[dict[str, Any]]:
    """Vertex AI CustomJob worker pools: one chief, then `replicas - 1` workers."""
    replicas = machine.replicas if replicas is None else replicas
    pool = {"machine_spec": _machine_spec(machine), "container_spec": {"image_uri": image}}
    pools = [{**pool, "replica_count": 1}]
    if replicas > 1:
        pools.append({**pool, "replica_count": replicas - 1})
    return pools


def vertex_training(cluster: ClusterConfig, image: str) -> dict[str, dict[str, Any]]:
    """`custom_config` entries for Tuner and Trainer on Vertex AI Training."""
    vertex = cluster.vertex
    machine = vertex.training
    assert machine is not None
    ext = tfx.extensions.google_cloud_ai_platform
    common = {ext.ENABLE_VERTEX_KEY: True, ext.VERTEX_REGION_KEY: vertex.region}

    def job(replicas: int) -> dict[str, Any]:
        job_spec: dict[str, Any] = {
            "worker_pool_specs": worker_pool_specs(machine, image, replicas)
        }
        if vertex.service_account:
            job_spec["service_account"] = vertex.service_account
        return {"project": vertex.project, "job_spec": job_spec, "labels": dict(vertex.labels)}

    return {
        # The Tuner's workers each run trials; its executor sizes pool 1 from num_parallel_trials.
        "Tuner": {**common, TUNING_ARGS_KEY: job(vertex.parallel_trials)},
        "Trainer": {**common, ext.TRAINING_ARGS_KEY: job(machine.replicas)},
    }


def component_platform(cluster: ClusterConfig, image: str) -> ComponentPlatform:
    """What `create_pipeline` applies per component for this cluster config."""
    return ComponentPlatform(
        resources={name: resource_spec(r) for name, r in cluster.resources.items()},
        vertex_training=vertex_training(cluster, image) if cluster.vertex.training else None,
        parallel_trials=cluster.vertex.parallel_trials,
    )
