"""Kubernetes manifests for TF Serving (tensorflow/serving images) serving one pushed model.

ConfigMap (models.config, batching_parameters.txt), Deployment, Service and a
HorizontalPodAutoscaler, for CPU, NVIDIA GPU (the -gpu image, nvidia.com/gpu) or GKE TPU
nodes; plus, for TPU with a gs:// model path, a Vertex AI endpoint deployment spec.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.config import BatchingConfig

GRPC_PORT, REST_PORT = 8500, 8501
TF_SERVING_VERSION = "2.19.1"
CONFIG_DIR = "/config"
PVC_MOUNT = "/models"
ACCELERATORS = ("cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class ManifestSpec:
    """What to deploy. `model_path` is gs://bucket/dir or pvc:CLAIM[/subdir] (the model base path)."""

    model_name: str
    model_path: str
    accelerator: str = "cpu"
    namespace: str = "default"
    min_replicas: int = 2
    max_replicas: int = 8
    image: str | None = None
    gpu_type: str = "nvidia-l4"
    tpu_accelerator: str = "tpu-v5-lite-podslice"
    tpu_topology: str = "1x1"
    vertex_tpu_machine_type: str = "ct5lp-hightpu-1t"
    batching: BatchingConfig = BatchingConfig(max_batch_size=32, batch_timeout_micros=2000)

    def __post_init__(self):
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator must be one of {ACCELERATORS}, got {self.accelerator!r}")
        if not (self.model_path.startswith("gs://") or self.model_path.startswith("pvc:")):
            raise ValueError(
                f"model_path must be gs://... or pvc:CLAIM[/subdir], got {self.model_path!r}"
            )
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 1 <= min_replicas <= max_replicas, got {self.min_replicas}, {self.max_replicas}"
            )

    @property
    def app(self) -> str:
        """The name shared by the objects and their label."""
        return f"{self.model_name}-serving"


def render(spec: ManifestSpec) -> list[dict[str, Any]]:
    """Returns the Kubernetes objects (as dicts) that serve `spec`'s model."""
    return [_config_map(spec), _deployment(spec), _service(spec), _autoscaler(spec)]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Returns `objects` as one multi-document YAML text."""
    return yaml.safe_dump_all(objects, sort_keys=False)


def write(spec: ManifestSpec, out_dir: str) -> list[str]:
    """Writes <app>.yaml (and vertex-endpoint.json for TPU on GCS) to `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{spec.app}-{spec.accelerator}.yaml"]
    paths[0].write_text(to_yaml(render(spec)))
    if spec.accelerator == "tpu" and spec.model_path.startswith("gs://"):
        paths.append(out / f"{spec.app}-vertex-endpoint.json")
        paths[1].write_text(json.dumps(vertex_deployment(spec), indent=2))
    return [str(p) for p in paths]


def vertex_deployment(spec: ManifestSpec) -> dict[str, Any]:
    """Returns a Vertex AI Model upload + endpoint deployment spec on a TPU machine type."""
    return {
        "model": {
            "displayName": spec.model_name,
            "artifactUri": spec.model_path,
            "containerSpec": {
                "imageUri": _image(spec),
                "args": [f"--model_name={spec.model_name}", "--model_base_path=$(AIP_STORAGE_URI)"],
                "healthRoute": f"/v1/models/{spec.model_name}",
                "predictRoute": f"/v1/models/{spec.model_name}:predict",
                "ports": [{"containerPort": REST_PORT}],
            },
        },
        "deployedModel": {
            "dedicatedResources": {
                "machineSpec": {
                    "machineType": spec.vertex_tpu_machine_type,
                    "tpuTopology": spec.tpu_topology,
                },
                "minReplicaCount": spec.min_replicas,
                "maxReplicaCount": spec.max_replicas,
            }
        },
    }


def models_config(spec: ManifestSpec) -> str:
    """Returns the models.config text serving the latest version under the model path."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = spec.model_name
    model.base_path = _base_path(spec)
    model.model_platform = "tensorflow"
    model.model_version_policy.latest.num_versions = 1
    return text_format.MessageToString(config)


def batching_parameters(batching: BatchingConfig) -> str:
    """Returns TF Serving's batching_parameters.txt for `batching`."""
    return "".join(
        f"{f.name} {{ value: {getattr(batching, f.name)} }}\n" for f in dataclasses.fields(batching)
    )


def _base_path(spec: ManifestSpec) -> str:
    if spec.model_path.startswith("gs://"):
        return spec.model_path
    _, subdir = _claim(spec)
    return f"{PVC_MOUNT}/{subdir}".rstrip("/")


def _claim(spec: ManifestSpec) -> tuple[str, str]:
    claim, _, subdir = spec.model_path.removeprefix("pvc:").partition("/")
    return claim, subdir


def _image(spec: ManifestSpec) -> str:
    if spec.image:
        return spec.image
    suffix = "-gpu" if spec.accelerator == "gpu" else ""
    return f"tensorflow/serving:{TF_SERVING_VERSION}{suffix}"


def _metadata(spec: ManifestSpec, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": spec.namespace, "labels": {"app": spec.app}}


def _config_map(spec: ManifestSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, f"{spec.app}-config"),
        "data": {
            "models.config": models_config(spec),
            "batching_parameters.txt": batching_parameters(spec.batching),
        },
    }


def _container(spec: ManifestSpec) -> dict[str, Any]:
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    if spec.accelerator == "gpu":
        resources["limits"]["nvidia.com/gpu"] = "1"
    if spec.accelerator == "tpu":
        resources["requests"]["google.com/tpu"] = "1"
        resources["limits"]["google.com/tpu"] = "1"
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    if spec.model_path.startswith("pvc:"):
        mounts.append({"name": "models", "mountPath": PVC_MOUNT, "readOnly": True})
    return {
        "name": "tensorflow-serving",
        "image": _image(spec),
        "args": [
            f"--port={GRPC_PORT}",
            f"--rest_api_port={REST_PORT}",
            f"--model_config_file={CONFIG_DIR}/models.config",
            "--enable_batching=true",
            f"--batching_parameters_file={CONFIG_DIR}/batching_parameters.txt",
            "--file_system_poll_wait_seconds=30",
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "http", "containerPort": REST_PORT},
        ],
        "readinessProbe": {
            "httpGet": {"path": f"/v1/models/{spec.model_name}", "port": REST_PORT},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "tcpSocket": {"port": GRPC_PORT},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
        },
        "resources": resources,
        "volumeMounts": mounts,
    }


def _pod_spec(spec: ManifestSpec) -> dict[str, Any]:
    volumes = [{"name": "config", "configMap": {"name": f"{spec.app}-config"}}]
    if spec.model_path.startswith("pvc:"):
        claim, _ = _claim(spec)
        volumes.append(
            {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    pod: dict[str, Any] = {"containers": [_container(spec)], "volumes": volumes}
    if spec.accelerator == "gpu":
        pod["nodeSelector"] = {"cloud.google.com/gke-accelerator": spec.gpu_type}
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    if spec.accelerator == "tpu":
        pod["nodeSelector"] = {
            "cloud.google.com/gke-tpu-accelerator": spec.tpu_accelerator,
            "cloud.google.com/gke-tpu-topology": spec.tpu_topology,
        }
    return pod


def _deployment(spec: ManifestSpec) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, spec.app),
        "spec": {
            "replicas": spec.min_replicas,
            "selector": {"matchLabels": {"app": spec.app}},
            "template": {"metadata": {"labels": {"app": spec.app}}, "spec": _pod_spec(spec)},
        },
    }


def _service(spec: ManifestSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, spec.app),
        "spec": {
            "selector": {"app": spec.app},
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
                {"name": "http", "port": REST_PORT, "targetPort": REST_PORT},
            ],
        },
    }


def _autoscaler(spec: ManifestSpec) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, spec.app),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.app},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
