"""Kubernetes manifests, validated against the Kubernetes API models of the kubernetes client."""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes import client as k8s
from tensorflow_serving.config import model_server_config_pb2

from serving.cli import main
from serving.config import parse_batching_parameters, parse_models_config
from serving.manifests import ManifestSpec, render

_MODELS = {
    "ConfigMap": "V1ConfigMap",
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
}


class _Response:
    def __init__(self, obj):
        self.data = json.dumps(obj)


def _validated(obj):
    """Deserializes `obj` into its Kubernetes model; unknown or misplaced keys fail the round trip."""
    api = k8s.ApiClient()
    model = api.deserialize(_Response(obj), _MODELS[obj["kind"]])
    assert api.sanitize_for_serialization(model) == obj
    return model


def _objects(tmp_path, *args):
    assert main(["manifests", "--model-name", "penguins", "--out", str(tmp_path), *args]) == 0
    (path,) = tmp_path.glob("*.yaml")
    return {o["kind"]: _validated(o) for o in yaml.safe_load_all(path.read_text())}


def test_cpu_manifests_on_gcs(tmp_path):
    objects = _objects(tmp_path, "--model-path", "gs://bucket/serving/penguins")
    assert set(objects) == set(_MODELS)
    container = objects["Deployment"].spec.template.spec.containers[0]
    assert container.image == "tensorflow/serving:2.19.1"
    assert "--model_config_file=/config/models.config" in container.args
    assert container.readiness_probe.http_get.path == "/v1/models/penguins"
    config = parse_models_config(objects["ConfigMap"].data["models.config"])
    assert [(c.name, c.base_path) for c in config] == [("penguins", "gs://bucket/serving/penguins")]
    assert (
        parse_batching_parameters(
            objects["ConfigMap"].data["batching_parameters.txt"]
        ).max_batch_size
        == 32
    )
    assert {p.port for p in objects["Service"].spec.ports} == {8500, 8501}
    assert objects["HorizontalPodAutoscaler"].spec.scale_target_ref.name == "penguins-serving"


def test_gpu_manifests_on_a_pvc(tmp_path):
    objects = _objects(tmp_path, "--model-path", "pvc:models/penguins", "--accelerator", "gpu")
    pod = objects["Deployment"].spec.template.spec
    assert pod.containers[0].image.endswith("-gpu")
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert pod.tolerations[0].key == "nvidia.com/gpu"
    assert pod.volumes[1].persistent_volume_claim.claim_name == "models"
    config = model_server_config_pb2.ModelServerConfig()
    from google.protobuf import text_format

    text_format.Parse(objects["ConfigMap"].data["models.config"], config)
    assert config.model_config_list.config[0].base_path == "/models/penguins"


def test_tpu_manifests_and_vertex_endpoint(tmp_path):
    objects = _objects(tmp_path, "--model-path", "gs://b/penguins", "--accelerator", "tpu")
    pod = objects["Deployment"].spec.template.spec
    assert pod.node_selector["cloud.google.com/gke-tpu-accelerator"] == "tpu-v5-lite-podslice"
    assert pod.containers[0].resources.limits["google.com/tpu"] == "1"
    vertex = json.loads(next(tmp_path.glob("*vertex-endpoint.json")).read_text())
    assert (
        vertex["deployedModel"]["dedicatedResources"]["machineSpec"]["machineType"]
        == "ct5lp-hightpu-1t"
    )
    assert vertex["model"]["artifactUri"] == "gs://b/penguins"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"model_path": "/local/dir"}, "gs://... or pvc:"),
        ({"model_path": "gs://b/m", "accelerator": "fpga"}, "accelerator must be one of"),
        ({"model_path": "gs://b/m", "min_replicas": 3, "max_replicas": 2}, "min_replicas"),
    ],
)
def test_bad_specs_are_rejected(kwargs, words):
    with pytest.raises(ValueError, match=words):
        render(ManifestSpec(model_name="penguins", **kwargs))
