"""Compiles the penguins pipeline for Kubeflow V2 / Vertex and checks the JSON as protos."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb
from kubeflow_testlib import IMAGE, REPO, VERTEX, load, merge

from kubeflow.local_executor import with_ancestors
from pipeline import kubeflow_runner, sources
from pipeline.cluster_config import GPU_TYPES, TPU_TYPES
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.images import FASHION_MNIST_CLASSES

ENTRYPOINT = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
COMPONENTS = {
    "CsvExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomalyGate",
    "Transform",
    "Tuner",
    "Trainer",
    "Evaluator",
    "Pusher",
}


def _compile(
    tmp_path, *overrides
) -> tuple[pb.PipelineJob, pb.PipelineSpec, pb.PipelineDeploymentConfig]:
    config = load(tmp_path, VERTEX, *overrides)
    out = tmp_path / "pipeline.json"
    kubeflow_runner.compile_from_flags(config, str(out), {})
    job = pb.PipelineJob()
    json_format.Parse(out.read_text(), job)
    spec = pb.PipelineSpec()
    json_format.ParseDict(json.loads(out.read_text())["pipelineSpec"], spec)
    deployment = pb.PipelineDeploymentConfig()
    json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), deployment)
    return job, spec, deployment


def _executor(spec, deployment, task: str):
    return deployment.executors[
        spec.components[spec.root.dag.tasks[task].component_ref.name].executor_label
    ]


def _constant(spec, task: str, key: str) -> str:
    return (
        spec.root.dag.tasks[task].inputs.parameters[key].runtime_value.constant_value.string_value
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("compile"))


def test_every_component_with_its_dependencies(compiled):
    _, spec, _ = compiled
    tasks = spec.root.dag.tasks
    assert set(tasks) >= COMPONENTS
    # The warm-start resolver: the last blessed model as the Trainer's base_model.
    assert set(tasks["Trainer"].dependent_tasks) == {
        "ImportSchemaGen",
        "Transform",
        "Tuner",
        "warm_start_model_resolver-model-resolver",
    }
    producer = tasks["Trainer"].inputs.artifacts["base_model"].task_output_artifact
    assert producer.producer_task == "warm_start_model_resolver-model-resolver"
    assert set(tasks["Transform"].dependent_tasks) >= {
        "CsvExampleGen",
        "ImportSchemaGen",
        "AnomalyGate",
    }
    assert "Trainer" in with_ancestors(spec, "Evaluator")
    assert {"Trainer", "Evaluator", "Transform"} <= with_ancestors(spec, "Pusher")
    producer = tasks["Trainer"].inputs.artifacts["hyperparameters"].task_output_artifact
    assert (producer.producer_task, producer.output_artifact_key) == (
        "Tuner",
        "best_hyperparameters",
    )


def test_latest_blessed_resolvers_read_only_the_slice_gates_blessings(compiled):
    """TFX compiles the latest-blessed-model resolvers to a query on `blessed` alone, which
    the Evaluator's blessing of a model a slice gate blocked also meets: the compiled
    queries also require the property only the SliceGate's blessings carry."""
    _, spec, deployment = compiled
    for resolver in ("latest_blessed_model_resolver", "warm_start_model_resolver"):
        executor = _executor(spec, deployment, f"{resolver}-model-blessing-resolver")
        [query] = executor.resolver.output_artifact_queries.values()
        assert query.filter.endswith(
            "metadata.blessed.number_value=1 AND metadata.slice_gate.number_value=1"
        ), query.filter


def test_image_entrypoint_and_beam_args(compiled):
    _, spec, deployment = compiled
    for task in COMPONENTS:
        container = _executor(spec, deployment, task).container
        assert container.image == IMAGE, task
        assert list(container.command) == ENTRYPOINT, task
        assert "{{$}}" in container.args, task
    args = list(_executor(spec, deployment, "Transform").container.args)
    assert "--direct_running_mode=in_memory" in args


def test_parameters_reference_the_installed_packages(compiled):
    _, spec, _ = compiled
    assert _constant(spec, "Trainer", "run_fn") == "pipeline.training.run_fn"
    assert _constant(spec, "Tuner", "tuner_fn") == "pipeline.training.tuner_fn"
    assert (
        _constant(spec, "Transform", "preprocessing_fn") == "models.preprocessing.preprocessing_fn"
    )
    assert _constant(spec, "CsvExampleGen", "input_base") == VERTEX["kubeflow"]["data_root"]
    assert _constant(spec, "ImportSchemaGen", "schema_file") == VERTEX["kubeflow"]["schema_uri"]
    push = json.loads(_constant(spec, "Pusher", "push_destination"))
    assert push["filesystem"]["base_directory"] == "gs://my-bucket/tfx/serving/penguins"
    custom = json.loads(_constant(spec, "Trainer", "custom_config"))
    assert custom["features"]["label"] == "species"


def test_runtime_config_has_the_pipeline_root(compiled):
    job, spec, _ = compiled
    assert job.runtime_config.gcs_output_directory == VERTEX["kubeflow"]["pipeline_root"]
    assert spec.pipeline_info.name == "penguins"


def test_gpu_config_yields_accelerator_requests(tmp_path):
    resources = {
        "resources": {
            "Trainer": {
                "cpu": 8,
                "memory": "32G",
                "accelerator": {"type": "NVIDIA_TESLA_T4", "count": 2},
            }
        }
    }
    _, spec, deployment = _compile(tmp_path, resources)
    trainer = _executor(spec, deployment, "Trainer").container.resources
    assert (trainer.accelerator.type, trainer.accelerator.count) == ("NVIDIA_TESLA_T4", 2)
    assert trainer.cpu_limit == 8 and trainer.resource_memory_limit == "32G"
    assert not _executor(spec, deployment, "Transform").container.resources.accelerator.type


def test_dataflow_config_yields_dataflow_beam_args(tmp_path):
    dataflow = {
        "dataflow": {
            "region": "europe-west4",
            "temp_location": "gs://my-bucket/tmp",
            "max_num_workers": 8,
        }
    }
    _, spec, deployment = _compile(tmp_path, dataflow)
    for task in ("CsvExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = list(_executor(spec, deployment, task).container.args)
        assert "--runner=DataflowRunner" in args, task
        assert {
            "--project=my-project",
            "--region=europe-west4",
            "--temp_location=gs://my-bucket/tmp",
        } <= set(args)
        assert "--max_num_workers=8" in args and f"--sdk_container_image={IMAGE}" in args


def test_vertex_training_runs_trainer_and_tuner_as_custom_jobs(tmp_path):
    vertex = {
        "vertex": {
            "training": {
                "machine_type": "n1-standard-8",
                "accelerator": {"type": "NVIDIA_L4"},
                "replicas": 2,
            },
            "parallel_trials": 3,
        }
    }
    _, spec, deployment = _compile(tmp_path, vertex)
    args = list(_executor(spec, deployment, "Trainer").container.args)
    assert args[args.index("--executor_class_path") + 1].startswith(
        "tfx.extensions.google_cloud_ai_platform.trainer"
    )
    job = json.loads(_constant(spec, "Trainer", "custom_config"))["ai_platform_training_args"]
    pools = job["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 1]
    assert pools[0]["machine_spec"] == {
        "machine_type": "n1-standard-8",
        "accelerator_type": "NVIDIA_L4",
        "accelerator_count": 1,
    }
    assert pools[0]["container_spec"]["image_uri"] == IMAGE and job["project"] == "my-project"
    tune_args = json.loads(_constant(spec, "Tuner", "tune_args"))
    assert tune_args["num_parallel_trials"] == 3


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        (
            {"resources": {"Trainer": {"accelerator": {"type": "NVIDIA_TESLA_X99"}}}},
            "resources.Trainer.accelerator.type",
            "unknown accelerator",
        ),
        (
            {"vertex": {"training": {"accelerator": {"type": "TPU_V9"}}}},
            "vertex.training.accelerator.type",
            "unknown accelerator",
        ),
        (
            {"vertex": {"training": {"accelerator": {"type": "TPU_V3", "count": 3}}}},
            "vertex.training.accelerator.count",
            "1, 4 or 8",
        ),
        (
            {"dataflow": {"region": "europe-west4", "temp_location": "/tmp"}},
            "dataflow.temp_location",
            "gs://",
        ),
        ({"resources": {"Trainr": {"cpu": 4}}}, "resources.Trainr", "unknown component"),
        ({"vertex": {"parallel_trials": 4}}, "vertex.parallel_trials", "vertex.training"),
    ],
)
def test_bad_cluster_config_is_a_clear_error(tmp_path, override, key, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, VERTEX, override)
    assert err.value.key == key and message in err.value.problem


def test_missing_image_names_the_flag(tmp_path):
    config = load(tmp_path, VERTEX, {"kubeflow": {"image": ""}})
    with pytest.raises(ConfigError, match="--image"):
        kubeflow_runner.resolve_target(config)


def test_accelerator_names_are_vertex_ones():
    from google.cloud.aiplatform_v1.types import AcceleratorType

    assert set(GPU_TYPES + TPU_TYPES) <= {a.name for a in AcceleratorType}


def test_an_image_config_compiles_with_its_classes_and_import_example_gen(tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "fashion_mnist.yaml").read_text())
    raw["outputs"] = {"root": str(tmp_path / "output")}
    path = tmp_path / "fashion.yaml"
    path.write_text(yaml.safe_dump(merge(raw, VERTEX)))
    config = load_config(path)
    out = tmp_path / "pipeline.json"
    kubeflow_runner.compile_from_flags(config, str(out), {})
    spec = pb.PipelineSpec()
    json_format.ParseDict(json.loads(out.read_text())["pipelineSpec"], spec)
    assert {"ImportExampleGen", "SchemaGen", "Transform", "Trainer"} <= set(spec.root.dag.tasks)
    assert "CsvExampleGen" not in spec.root.dag.tasks
    # The Evaluator's per-class metrics come from the classes, read without staging.
    assert sources.label_values(config) == tuple(sorted(FASHION_MNIST_CLASSES))


def test_a_pipeline_name_kubeflow_refuses_is_a_config_error(tmp_path):
    config = load(tmp_path, VERTEX, {"pipeline_name": "my_pipeline"})
    with pytest.raises(ConfigError, match="pipeline_name: Kubeflow and Vertex AI take lower-case"):
        kubeflow_runner.compile_from_flags(config, str(tmp_path / "p.json"), {})


def test_without_a_schema_the_compile_leaves_many_valued_features_out_of_the_slices(
    tmp_path, capsys
):
    rows = "".join(
        f"{'Adelie' if i % 2 else 'Gentoo'},Isle{i},1,1,2,3,{'male' if i % 2 else 'female'}\n"
        for i in range(30)
    )
    csv = tmp_path / "birds.csv"
    csv.write_text(
        "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex\n" + rows
    )
    config = dataclasses.replace(
        load(
            tmp_path,
            VERTEX,
            {"data": {"source": str(csv)}, "evaluation": {"slices": {"features": None}}},
        ),
        schema_file=None,
    )
    target = kubeflow_runner.resolve_target(config)
    pipeline = kubeflow_runner.build_kubeflow_pipeline(config, target)
    [evaluator] = [c for c in pipeline.components if c.id == "Evaluator"]
    eval_config = json.loads(evaluator.exec_properties["eval_config"])
    keys = [s.get("feature_keys") for s in eval_config["slicing_specs"]]
    assert keys == [None, ["sex"]]  # overall, then sex: 30 islands are too many
    assert "not sliced by default: island" in capsys.readouterr().out
