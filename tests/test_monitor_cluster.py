"""The monitor as a cluster job, as far as it runs here: the compiled KFP spec of the job,
the metadata connection taken from the config's `kubeflow.metadata`, and paths that are
read through tf.io.gfile (TensorFlow's RAM file system stands in for gs://)."""

from __future__ import annotations

import pytest
import tensorflow as tf
import yaml
from kubeflow_testlib import IMAGE, VERTEX, load, write_config
from test_monitor import _penguin_columns, _raw_request, _write_logs

from kubeflow import monitor_job
from pipeline import cli, monitor
from pipeline.data import DataError
from pipeline.errors import ConfigError
from pipeline.monitor_inputs import read_request_logs
from pipeline.monitor_lineage import served_version, training_lineage

CLUSTER = {
    "kubeflow": {
        "metadata": {"host": "metadata-grpc-service.kubeflow", "port": 8080},
        "request_logs": "gs://my-bucket/logs/penguins",
    }
}


def test_the_monitor_job_compiles_to_one_container_step_running_monitor_cluster(tmp_path):
    config = load(tmp_path, VERTEX, CLUSTER)
    out = tmp_path / "monitor.yaml"
    spec = monitor_job.compile_monitor(config, str(out), image_config="configs/penguins.yaml")
    assert yaml.safe_load(out.read_text()) == spec
    assert spec["pipelineInfo"]["name"] == "penguins-monitor"
    (executor,) = spec["deploymentSpec"]["executors"].values()
    container = executor["container"]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "pipeline.cli", "monitor"]
    assert container["args"] == [
        "--config",
        "configs/penguins.yaml",
        "--cluster",
        "--logs",
        "{{$.inputs.parameters['logs']}}",
        "--output-root",
        "{{$.outputs.artifacts['drift'].path}}",
    ]
    logs = spec["root"]["inputDefinitions"]["parameters"]["logs"]
    assert logs["defaultValue"] == "gs://my-bucket/logs/penguins"
    # The arguments the step passes are ones the monitor command takes.
    args = cli.parser().parse_args(["monitor", "--config", "c.yaml", "--cluster", "--logs", "x"])
    assert args.cluster and args.logs == "x"


def test_the_job_needs_what_monitor_cluster_reads(tmp_path):
    config = load(tmp_path, VERTEX)
    with pytest.raises(ConfigError, match="kubeflow.request_logs: is required"):
        monitor_job.compile_monitor(config, str(tmp_path / "m.yaml"))
    with pytest.raises(ConfigError, match="kubeflow.metadata: is required for the monitor job"):
        monitor_job.compile_monitor(config, str(tmp_path / "m.yaml"), logs="gs://b/logs")
    # A config outside the repository is not in the image.
    with pytest.raises(ConfigError, match="the monitor job reads its config inside the image"):
        monitor_job.compile_monitor(load(tmp_path, VERTEX, CLUSTER), str(tmp_path / "m.yaml"))


def test_monitor_cluster_takes_metadata_serving_root_and_logs_from_the_config(tmp_path):
    config = load(tmp_path, VERTEX, CLUSTER)
    metadata, serving_dir, logs = monitor._sources(config, cluster=True)
    assert (metadata.host, metadata.port) == ("metadata-grpc-service.kubeflow", 8080)
    assert serving_dir == "gs://my-bucket/tfx/serving/penguins"
    assert logs == "gs://my-bucket/logs/penguins"
    with pytest.raises(ConfigError, match=r"kubeflow\.metadata: monitor --cluster reads"):
        monitor._sources(load(tmp_path, VERTEX), cluster=True)


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"host": "mlmd:8080"}, "expected a host name"),
        ({"host": "mlmd", "port": 70000}, "must be a TCP port"),
        ({"host": "mlmd", "user": "x"}, "unknown key"),
    ],
)
def test_a_bad_metadata_section_names_its_key(tmp_path, metadata, problem):
    path = write_config(tmp_path, {"kubeflow": {"metadata": metadata}})
    with pytest.raises(ConfigError, match=f"kubeflow.metadata.*{problem}") as caught:
        load(tmp_path, {"kubeflow": {"metadata": metadata}})
    assert str(path) in str(caught.value)


def test_an_unreachable_metadata_service_is_a_data_error(tmp_path):
    config = load(tmp_path, VERTEX, {"kubeflow": {"metadata": {"host": "127.0.0.1", "port": 1}}})
    metadata, _, _ = monitor._sources(config, cluster=True)
    with pytest.raises(DataError, match="127.0.0.1:1: cannot read ML Metadata"):
        training_lineage(metadata, "gs://my-bucket/tfx/serving/penguins", "1")


def test_versions_and_logs_are_read_through_gfile(tmp_path):
    config = load(tmp_path, VERTEX)
    root = "ram://bucket/serving/penguins"
    for version in ("3", "12", "tmp"):
        tf.io.gfile.makedirs(f"{root}/{version}")
    assert served_version(root) == "12"
    _write_logs(tmp_path / "requests", _raw_request(**_penguin_columns()))
    local = tmp_path / sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tfrecord")[0]
    tf.io.gfile.makedirs("ram://bucket/logs")
    tf.io.gfile.copy(str(local), f"ram://bucket/logs/{local.name}")
    data = read_request_logs("ram://bucket/logs", config)
    assert data.files == 1 and data.frame["island"].tolist() == ["Torgersen", "Dream"]
