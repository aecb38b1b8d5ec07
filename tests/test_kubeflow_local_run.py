"""Executes the compiled Kubeflow V2 spec locally, task by task, with the cluster's entrypoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubeflow_testlib import FAST, load

from kubeflow import local_executor
from pipeline import kubeflow_runner
from pipeline.data import stage_schema
from pipeline.sources import stage


def compile_local(tmp_path: Path, *overrides) -> tuple[str, str, Path]:
    """Compiles the fast penguins pipeline with local paths; returns (spec, root, serving)."""
    config = load(tmp_path, FAST, *overrides)
    staged = stage(config)
    target = kubeflow_runner.resolve_target(
        config,
        image="local/tfx-pipeline:test",
        pipeline_root=str(tmp_path / "root"),
        data_root=staged.directory,
        serving_root=str(tmp_path / "serving"),
        schema_uri=stage_schema(config.schema_file, str(tmp_path / "data")),
    )
    spec = str(tmp_path / "pipeline.json")
    kubeflow_runner.compile_pipeline(config, target, spec)
    return spec, str(tmp_path / "root"), tmp_path / "serving" / config.model_name


@pytest.mark.e2e
def test_compiled_pipeline_runs_and_pushes(tmp_path):
    spec, root, serving = compile_local(tmp_path)
    spec_tasks = set(json.loads(Path(spec).read_text())["pipelineSpec"]["root"]["dag"]["tasks"])
    results = local_executor.run_pipeline(spec, root)
    assert set(results) == spec_tasks
    pushed = results["Pusher"].output.artifacts["pushed_model"].artifacts[0]
    assert pushed.metadata["pushed"] == 1.0
    versions = list(serving.iterdir())
    assert len(versions) == 1 and (versions[0] / "saved_model.pb").is_file()
    assert pushed.metadata["pushed_destination"] == str(versions[0])
    blessing = results["Evaluator"].output.artifacts["blessing"].artifacts[0]
    assert blessing.metadata["blessed"] == 1.0


def test_task_order_follows_dependencies(tmp_path):
    config = load(tmp_path, FAST)
    target = kubeflow_runner.ClusterTarget("img", "/r", "/d", "/s", "/schema.pbtxt", ())
    path = str(tmp_path / "p.json")
    kubeflow_runner.compile_pipeline(config, target, path)
    spec, _ = local_executor.load_spec(path)
    order = local_executor.task_order(spec)
    for name, task in spec.root.dag.tasks.items():
        assert all(order.index(dep) < order.index(name) for dep in task.dependent_tasks)
    with pytest.raises(local_executor.HarnessError, match="no task"):
        local_executor.run_pipeline(path, str(tmp_path / "root"), until="Nope")
