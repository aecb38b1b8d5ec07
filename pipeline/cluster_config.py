"""The cluster part of a pipeline config: `kubeflow:`, `vertex:`, `dataflow:`, `resources:`.

All four sections are optional; the local runner ignores them. They are parsed
with the same `_Reader` as the rest of the config (passed in, so this module does
not import pipeline.config), and every error names the file and the dotted key.

Accelerator names are Vertex AI's `AcceleratorType` values; a test checks that
the lists below are a subset of the installed google-cloud-aiplatform enum.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

GPU_TYPES = (
    "NVIDIA_TESLA_P100",
    "NVIDIA_TESLA_V100",
    "NVIDIA_TESLA_P4",
    "NVIDIA_TESLA_T4",
    "NVIDIA_TESLA_A100",
    "NVIDIA_A100_80GB",
    "NVIDIA_L4",
    "NVIDIA_H100_80GB",
    "NVIDIA_H100_MEGA_80GB",
    "NVIDIA_H200_141GB",
    "NVIDIA_B200",
)
TPU_TYPES = ("TPU_V2", "TPU_V3", "TPU_V4_POD", "TPU_V5_LITEPOD")
DATAFLOW_RUNNERS = ("DataflowRunner", "DirectRunner")
# Components whose container may carry a `resources:` entry (the compiled task names).
RESOURCE_COMPONENTS = (
    "CsvExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "SchemaGen",
    "ExampleValidator",
    "AnomalyGate",
    "Transform",
    "Tuner",
    "Trainer",
    "Evaluator",
    "Pusher",
)
_MEMORY = re.compile(r"^(\d+(\.\d+)?)(G|Gi|M|Mi)$")
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """`type` is a GPU (NVIDIA_*) or TPU (TPU_*) name; `count` devices (TPU: cores)."""

    type: str
    count: int = 1

    @property
    def is_tpu(self) -> bool:
        return self.type.startswith("TPU_")


@dataclasses.dataclass(frozen=True)
class MetadataConfig:
    """The cluster's ML Metadata, which `monitor --cluster` follows from the served model
    to its training data: Kubeflow Pipelines' metadata gRPC service (in-cluster DNS name)."""

    host: str
    port: int = 8080


@dataclasses.dataclass(frozen=True)
class KubeflowConfig:
    """Where the cluster pipeline reads, writes and which image it runs.

    Paths may be gs:// (Vertex needs them) or any path the cluster's pods mount.
    Empty strings mean "not set"; the compile command's flags can fill them.
    """

    image: str = ""
    pipeline_root: str = ""
    data_root: str = ""
    serving_root: str = ""
    schema_uri: str = ""
    output: str = "output/kubeflow/pipeline.json"
    endpoint: str = ""
    experiment: str = "Default"
    # Request logs the monitor job reads (a folder or file prefix, gs:// or mounted).
    request_logs: str = ""
    metadata: MetadataConfig | None = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    cron: str
    max_concurrent_runs: int = 1


@dataclasses.dataclass(frozen=True)
class MachineSpec:
    """A Vertex AI Training worker: machine type, optional accelerator, replicas.

    More than one replica trains with MultiWorkerMirroredStrategy (see
    pipeline/distribution.py).
    """

    machine_type: str = "n1-standard-4"
    accelerator: Accelerator | None = None
    replicas: int = 1


@dataclasses.dataclass(frozen=True)
class VertexConfig:
    """Vertex AI Pipelines, and Vertex AI Training for Tuner and Trainer.

    `training` set: Tuner and Trainer run as Vertex AI custom jobs on that
    machine; `parallel_trials` > 1 runs that many tuner workers at once.
    """

    project: str = ""
    region: str = ""
    service_account: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    schedule: Schedule | None = None
    training: MachineSpec | None = None
    parallel_trials: int = 1
    enable_caching: bool = True


@dataclasses.dataclass(frozen=True)
class DataflowConfig:
    """Beam for the data components (ExampleGen, StatisticsGen, Transform, Evaluator)."""

    runner: str = "DataflowRunner"
    project: str = ""
    region: str = ""
    temp_location: str = ""
    machine_type: str = "n1-standard-4"
    max_num_workers: int = 4
    service_account: str = ""


@dataclasses.dataclass(frozen=True)
class ResourceConfig:
    """Requests for one component's pipeline container (Vertex Pipelines or Kubeflow)."""

    cpu: float = 0.0
    memory: str = ""
    accelerator: Accelerator | None = None


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    kubeflow: KubeflowConfig = KubeflowConfig()
    vertex: VertexConfig = VertexConfig()
    dataflow: DataflowConfig | None = None
    resources: Mapping[str, ResourceConfig] = dataclasses.field(default_factory=dict)


def parse_cluster(top: Any) -> ClusterConfig:
    """Reads the optional cluster sections from the top-level `_Reader`."""
    has_dataflow = top.get("dataflow", Mapping, None) is not None
    return ClusterConfig(
        kubeflow=_kubeflow(top.section("kubeflow")),
        vertex=_vertex(top.section("vertex")),
        dataflow=_dataflow(top.section("dataflow")) if has_dataflow else None,
        resources=_resources(top.section("resources"), list(top.get("resources", Mapping, {}))),
    )


def _kubeflow(reader: Any) -> KubeflowConfig:
    d = KubeflowConfig()
    paths = {
        f.name: reader.get(f.name, str, getattr(d, f.name))
        for f in dataclasses.fields(d)
        if f.name != "metadata"
    }
    metadata = None
    if reader.get("metadata", Mapping, None) is not None:
        metadata = _metadata(reader.section("metadata"))
    reader.finish()
    return KubeflowConfig(**paths, metadata=metadata)


def _metadata(reader: Any) -> MetadataConfig:
    host = reader.get("host", str)
    if not host or "/" in host or ":" in host:
        raise reader.error("host", f"expected a host name (port apart), got {host!r}")
    port = reader.positive("port", MetadataConfig.port)
    if port > 65535:
        raise reader.error("port", f"must be a TCP port (1-65535), got {port}")
    reader.finish()
    return MetadataConfig(host=host, port=port)


def _accelerator(reader: Any, allowed: tuple[str, ...]) -> Accelerator:
    kind = reader.get("type", str)
    if kind not in allowed:
        raise reader.error("type", f"unknown accelerator {kind!r}; expected one of {list(allowed)}")
    accelerator = Accelerator(type=kind, count=reader.positive("count", 1))
    reader.finish()
    if accelerator.is_tpu and accelerator.count not in (1, 4, 8):
        raise reader.error("count", f"TPU core count must be 1, 4 or 8, got {accelerator.count}")
    return accelerator


def _optional_accelerator(reader: Any, allowed: tuple[str, ...]) -> Accelerator | None:
    if reader.get("accelerator", Mapping, None) is None:
        return None
    return _accelerator(reader.section("accelerator"), allowed)


def _machine(reader: Any) -> MachineSpec:
    d = MachineSpec()
    spec = MachineSpec(
        machine_type=reader.get("machine_type", str, d.machine_type),
        accelerator=_optional_accelerator(reader, GPU_TYPES + TPU_TYPES),
        replicas=reader.positive("replicas", d.replicas),
    )
    reader.finish()
    if spec.accelerator and spec.accelerator.is_tpu and spec.replicas > 1:
        raise reader.error("replicas", "TPU training uses one TPU host; set replicas: 1")
    return spec


def _labels(reader: Any) -> dict[str, str]:
    raw = reader.get("labels", Mapping, {})
    for key, value in raw.items():
        if not isinstance(key, str) or not _LABEL.match(key):
            raise reader.error(
                "labels", f"label key {key!r}: lowercase letters, digits, '_' and '-'"
            )
        if not isinstance(value, str) or (value and not _LABEL.match(value)):
            raise reader.error(
                "labels", f"label {key}: value {value!r}: lowercase letters, digits, '_', '-'"
            )
    return dict(raw)


def _schedule(reader: Any) -> Schedule | None:
    if reader.get("schedule", Mapping, None) is None:
        return None
    section = reader.section("schedule")
    cron = section.get("cron", str)
    if len(cron.replace("TZ=", "").split()) not in (5, 6):
        raise section.error("cron", f"expected a 5-field cron expression, got {cron!r}")
    schedule = Schedule(cron=cron, max_concurrent_runs=section.positive("max_concurrent_runs", 1))
    section.finish()
    return schedule


def _vertex(reader: Any) -> VertexConfig:
    d = VertexConfig()
    training = None
    if reader.get("training", Mapping, None) is not None:
        training = _machine(reader.section("training"))
    config = VertexConfig(
        project=reader.get("project", str, d.project),
        region=reader.get("region", str, d.region),
        service_account=reader.get("service_account", str, d.service_account),
        labels=_labels(reader),
        schedule=_schedule(reader),
        training=training,
        parallel_trials=reader.positive("parallel_trials", d.parallel_trials),
        enable_caching=reader.get("enable_caching", bool, d.enable_caching),
    )
    reader.finish()
    if config.parallel_trials > 1 and training is None:
        raise reader.error(
            "parallel_trials", "parallel trials run on Vertex AI Training; set vertex.training too"
        )
    return config


def _dataflow(reader: Any) -> DataflowConfig:
    d = DataflowConfig()
    config = DataflowConfig(
        runner=reader.choice("runner", DATAFLOW_RUNNERS, d.runner),
        project=reader.get("project", str, d.project),
        region=reader.get("region", str, d.region),
        temp_location=reader.get("temp_location", str, d.temp_location),
        machine_type=reader.get("machine_type", str, d.machine_type),
        max_num_workers=reader.positive("max_num_workers", d.max_num_workers),
        service_account=reader.get("service_account", str, d.service_account),
    )
    reader.finish()
    if config.runner == "DataflowRunner":
        for key in ("region", "temp_location"):
            if not getattr(config, key):
                raise reader.error(key, "is required with runner: DataflowRunner")
        if not config.temp_location.startswith("gs://"):
            raise reader.error(
                "temp_location", f"Dataflow needs a gs:// path, got {config.temp_location!r}"
            )
    return config


def _resource(reader: Any) -> ResourceConfig:
    memory = reader.get("memory", str, "")
    if memory and not _MEMORY.match(memory):
        raise reader.error("memory", f"expected e.g. '16G' or '512Mi', got {memory!r}")
    cpu = reader.get("cpu", float, 0.0)
    if cpu < 0:
        raise reader.error("cpu", f"must be >= 0, got {cpu}")
    resource = ResourceConfig(
        cpu=cpu, memory=memory, accelerator=_optional_accelerator(reader, GPU_TYPES + TPU_TYPES)
    )
    reader.finish()
    return resource


def _resources(reader: Any, names: list[str]) -> dict[str, ResourceConfig]:
    result = {}
    for name in names:
        if name not in RESOURCE_COMPONENTS:
            raise reader.error(
                name, f"unknown component; expected one of {list(RESOURCE_COMPONENTS)}"
            )
        result[name] = _resource(reader.section(name))
    reader.finish()
    return result
