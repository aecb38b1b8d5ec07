"""Vertex AI and Kubeflow submission, dry-run: built and validated locally, nothing sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb
from kubeflow_testlib import VERTEX, load, write_config

from kubeflow import submit
from pipeline import cli, kubeflow_runner
from pipeline.errors import ConfigError


def _compiled(tmp_path, *overrides):
    config = load(tmp_path, VERTEX, *overrides)
    path = str(tmp_path / "pipeline.json")
    kubeflow_runner.compile_from_flags(config, path, {})
    return config, path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compiled(
        tmp_path_factory.mktemp("submit"), {"vertex": {"schedule": {"cron": "0 3 * * 1"}}}
    )


def test_vertex_dry_run_builds_the_real_pipeline_job(compiled):
    config, path = compiled
    job = submit.vertex_job(config, path, dry_run=True)
    assert job.project == "my-project" and job.location == "europe-west4"
    resource = job._gca_resource
    assert resource.runtime_config.gcs_output_directory == "gs://my-bucket/tfx/pipelines"
    assert resource.labels["team"] == "ml"
    assert "Trainer" in resource.pipeline_spec["root"]["dag"]["tasks"]
    summary = submit.submit_vertex(config, path, dry_run=True)
    assert summary["schedule"] == {"cron": "0 3 * * 1", "max_concurrent_runs": 1}
    assert summary["job"]["runtimeConfig"]["gcsOutputDirectory"] == "gs://my-bucket/tfx/pipelines"


def test_vertex_needs_a_gs_pipeline_root(tmp_path):
    config, path = _compiled(tmp_path, {"kubeflow": {"pipeline_root": str(tmp_path / "root")}})
    with pytest.raises(ConfigError) as err:
        submit.submit_vertex(config, path, dry_run=True)
    assert err.value.key == "kubeflow.pipeline_root" and "gs://" in err.value.problem


@pytest.mark.parametrize("key", ["project", "region"])
def test_vertex_needs_project_and_region(compiled, tmp_path, key):
    _, path = compiled
    config = load(tmp_path, VERTEX, {"vertex": {key: ""}})
    with pytest.raises(ConfigError) as err:
        submit.submit_vertex(config, path, dry_run=True)
    assert err.value.key == f"vertex.{key}"


def test_kubeflow_dry_run_writes_a_valid_package(compiled):
    config, path = compiled
    summary = submit.submit_kfp(config, path, endpoint="http://localhost:8080", dry_run=True)
    assert summary["endpoint"] == "http://localhost:8080" and "Pusher" in summary["tasks"]
    spec = json_format.ParseDict(
        yaml.safe_load(Path(summary["package"]).read_text()), pb.PipelineSpec()
    )
    assert spec.pipeline_info.name == "penguins"


def test_kubeflow_needs_an_endpoint(compiled):
    config, path = compiled
    with pytest.raises(ConfigError, match="--endpoint"):
        submit.submit_kfp(config, path, dry_run=True)


def test_cli_compile_then_dry_run(tmp_path, capsys):
    config = write_config(tmp_path, VERTEX)
    out = tmp_path / "cli.json"
    assert (
        cli.main(
            ["compile", "--config", str(config), "--out", str(out), "--image", "gcr.io/p/img:2"]
        )
        == 0
    )
    images = {
        e["container"]["image"]
        for e in json.loads(out.read_text())["pipelineSpec"]["deploymentSpec"]["executors"].values()
        if "container" in e
    }
    assert images == {"gcr.io/p/img:2"}
    assert (
        cli.main(["submit", "vertex", "--dry-run", "--config", str(config), "--spec", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "dry run, nothing sent" in printed and '"project": "my-project"' in printed
    assert (
        cli.main(
            [
                "submit",
                "vertex",
                "--dry-run",
                "--config",
                str(config),
                "--spec",
                str(tmp_path / "none.json"),
            ]
        )
        == 2
    )
