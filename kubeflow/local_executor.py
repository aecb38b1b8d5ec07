"""A test harness that executes a compiled Kubeflow V2 / Vertex PipelineJob JSON locally.

It exists to prove that the compiled file really runs, not as a runner for users
(use `python -m pipeline.cli run` locally, Vertex AI or Kubeflow on a cluster).
kfp.local cannot do this: it runs pipelines defined with the kfp DSL, and runs
container components only through Docker.

What it does, for each task of the root DAG in dependency order:
- builds the task's `ExecutorInput` the way the KFP/Vertex backend does: input
  parameters from the task's constants, input artifacts from the upstream tasks'
  `ExecutorOutput`, output artifacts with URIs under a local pipeline root;
- replaces the `{{$}}` placeholder in the container's args with that JSON and runs
  the container's command (TFX's Kubeflow V2 entrypoint, the same command the
  cluster runs in the image) as a subprocess of this environment; the
  `preCacheCheck` lifecycle hook (ExampleGen's driver) runs first, as on Vertex;
- reads back the `ExecutorOutput` the entrypoint wrote.

Limits, on purpose: there is no ML Metadata, so resolver tasks (the latest
blessed model) resolve to nothing, as on a pipeline's first run; caching and
runtime parameters other than constants are not supported and raise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

PLACEHOLDER = "{{$}}"


class HarnessError(RuntimeError):
    """The compiled spec uses something the harness does not run, or a task failed."""


@dataclasses.dataclass
class TaskResult:
    name: str
    seconds: float
    output: pb.ExecutorOutput
    log_file: str


def load_spec(path: str | os.PathLike) -> tuple[pb.PipelineSpec, pb.PipelineDeploymentConfig]:
    """Parses the PipelineJob JSON into the kfp-pipeline-spec protos (strictly)."""
    job = pb.PipelineJob()
    json_format.Parse(Path(path).read_text(), job)
    spec = pb.PipelineSpec()
    json_format.ParseDict(json_format.MessageToDict(job.pipeline_spec), spec)
    deployment = pb.PipelineDeploymentConfig()
    json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), deployment)
    return spec, deployment


def task_order(spec: pb.PipelineSpec) -> list[str]:
    """The root DAG's task names, each after the tasks it depends on (ties by name)."""
    tasks = spec.root.dag.tasks
    deps = {name: set(task.dependent_tasks) for name, task in tasks.items()}
    for name, task in tasks.items():
        for artifact in task.inputs.artifacts.values():
            if artifact.HasField("task_output_artifact"):
                deps[name].add(artifact.task_output_artifact.producer_task)
    order: list[str] = []
    while len(order) < len(tasks):
        ready = sorted(n for n in tasks if n not in order and deps[n] <= set(order))
        if not ready:
            raise HarnessError(f"dependency cycle among {sorted(set(tasks) - set(order))}")
        order.extend(ready)
    return order


def _parameters(
    task: pb.PipelineTaskSpec, name: str
) -> dict[str, tuple[struct_pb2.Value, pb.Value]]:
    """Each constant parameter in both forms: the struct value and the typed (schema 2.0) value.

    TFX compiles schema 2.0 constants as typed `constant_value`s, and its entrypoint
    reads the typed `ExecutorInput.inputs.parameters`; the backend fills both fields.
    """
    values = {}
    for key, param in task.inputs.parameters.items():
        runtime = param.runtime_value
        if runtime.HasField("constant_value"):
            typed = runtime.constant_value
            kind = typed.WhichOneof("value")
            plain = struct_pb2.Value()
            if kind == "string_value":
                plain.string_value = typed.string_value
            else:
                plain.number_value = getattr(typed, kind)
        elif runtime.HasField("constant"):
            plain = runtime.constant
            typed = (
                pb.Value(string_value=plain.string_value)
                if plain.HasField("string_value")
                else pb.Value(double_value=plain.number_value)
            )
        else:
            raise HarnessError(
                f"task {name}: parameter {key} is not a constant; the harness runs constants only"
            )
        values[key] = (plain, typed)
    return values


def executor_input(
    name: str,
    task: pb.PipelineTaskSpec,
    component: pb.ComponentSpec,
    outputs: Mapping[str, pb.ExecutorOutput],
    pipeline_root: str,
) -> pb.ExecutorInput:
    """The ExecutorInput that the backend would hand this task."""
    result = pb.ExecutorInput()
    for key, (plain, typed) in _parameters(task, name).items():
        result.inputs.parameter_values[key].CopyFrom(plain)
        result.inputs.parameters[key].CopyFrom(typed)
    for key, artifact in task.inputs.artifacts.items():
        producer = artifact.task_output_artifact
        upstream = outputs[producer.producer_task].artifacts.get(producer.output_artifact_key)
        target = result.inputs.artifacts[key]
        if upstream is not None:
            target.CopyFrom(upstream)
        # ExecutorOutput carries no artifact types; the backend takes them from the spec.
        for item in target.artifacts:
            item.type.CopyFrom(component.input_definitions.artifacts[key].artifact_type)
    task_root = os.path.join(pipeline_root, name)
    for key, definition in component.output_definitions.artifacts.items():
        artifact = result.outputs.artifacts[key].artifacts.add()
        artifact.name = f"local/{name}/{key}"
        artifact.type.CopyFrom(definition.artifact_type)
        artifact.uri = os.path.join(task_root, key)
    for key in component.output_definitions.parameters:
        result.outputs.parameters[key].output_file = os.path.join(task_root, "parameters", key)
    result.outputs.output_file = os.path.join(task_root, "executor_output.json")
    return result


def _command(
    container: pb.PipelineDeploymentConfig.PipelineContainerSpec, payload: str
) -> list[str]:
    argv = [*container.command, *container.args]
    for arg in argv:
        if "{{$" in arg and arg != PLACEHOLDER:
            raise HarnessError(
                f"unsupported placeholder in {arg!r}; the harness fills only {PLACEHOLDER}"
            )
    return [payload if arg == PLACEHOLDER else arg for arg in argv]


def _run(argv: list[str], log_file: str, cwd: str, env: Mapping[str, str], name: str) -> None:
    # The image's `python` is this environment's interpreter here.
    if argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    with open(log_file, "a") as log:
        code = subprocess.run(
            argv, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT
        ).returncode
    if code != 0:
        tail = "".join(Path(log_file).read_text().splitlines(keepends=True)[-30:])
        raise HarnessError(f"task {name} failed (exit {code}); log {log_file}:\n{tail}")


def run_task(
    name: str,
    spec: pb.PipelineSpec,
    deployment: pb.PipelineDeploymentConfig,
    outputs: Mapping[str, pb.ExecutorOutput],
    pipeline_root: str,
    env: Mapping[str, str],
) -> TaskResult:
    """Runs one task's container command (resolvers: an empty result) and reads its output."""
    started = time.time()
    task = spec.root.dag.tasks[name]
    component = spec.components[task.component_ref.name]
    executor = deployment.executors[component.executor_label]
    log_file = os.path.join(pipeline_root, name, "task.log")
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    if executor.HasField("resolver"):
        # No ML Metadata here: nothing to resolve, as on a first run.
        return TaskResult(name, time.time() - started, pb.ExecutorOutput(), log_file)
    if not executor.HasField("container"):
        raise HarnessError(
            f"task {name}: executor kind {executor.WhichOneof('spec')} is not supported"
        )
    request = executor_input(name, task, component, outputs, pipeline_root)
    payload = json_format.MessageToJson(request)
    output_file = request.outputs.output_file
    if os.path.exists(output_file):
        os.remove(output_file)
    container = executor.container
    cwd = os.path.join(pipeline_root, name)
    if container.lifecycle.HasField("pre_cache_check"):
        hook = container.lifecycle.pre_cache_check
        _run(
            _command(
                pb.PipelineDeploymentConfig.PipelineContainerSpec(
                    command=hook.command, args=hook.args
                ),
                payload,
            ),
            log_file,
            cwd,
            env,
            name,
        )
    _run(_command(container, payload), log_file, cwd, env, name)
    output = pb.ExecutorOutput()
    json_format.Parse(Path(output_file).read_text(), output, ignore_unknown_fields=True)
    # Outputs the entrypoint did not report keep the URIs they were given.
    for key, artifacts in request.outputs.artifacts.items():
        if key not in output.artifacts:
            output.artifacts[key].CopyFrom(artifacts)
    return TaskResult(name, time.time() - started, output, log_file)


def with_ancestors(spec: pb.PipelineSpec, task: str) -> set[str]:
    """`task` and every task it depends on, directly or not, in the compiled DAG."""
    if task not in spec.root.dag.tasks:
        raise HarnessError(f"no task {task!r}; the pipeline has {sorted(spec.root.dag.tasks)}")
    found, todo = {task}, [task]
    while todo:
        for parent in spec.root.dag.tasks[todo.pop()].dependent_tasks:
            if parent not in found:
                found.add(parent)
                todo.append(parent)
    return found


def run_pipeline(
    spec_path: str | os.PathLike,
    pipeline_root: str,
    env: Mapping[str, str] | None = None,
    progress: Callable[[str], None] = print,
    until: str | None = None,
) -> dict[str, TaskResult]:
    """Runs every task of the compiled pipeline in dependency order.

    Args:
      spec_path: the PipelineJob JSON (from `python -m pipeline.cli compile`).
      pipeline_root: local directory for the task outputs (`<root>/<task>/<output>`).
      env: environment of the task processes (default: this process's).
      progress: called with one line per task.
      until: run only this task and the tasks it depends on.

    Returns:
      The result of each task, by task name.

    Raises:
      HarnessError: a task failed (the message has its log's tail) or the spec uses
        a feature the harness does not run.
    """
    spec, deployment = load_spec(spec_path)
    env = dict(os.environ if env is None else env)
    results: dict[str, TaskResult] = {}
    wanted = set(task_order(spec)) if until is None else with_ancestors(spec, until)
    for name in [n for n in task_order(spec) if n in wanted]:
        result = run_task(
            name, spec, deployment, {k: r.output for k, r in results.items()}, pipeline_root, env
        )
        results[name] = result
        progress(f"{name}: done in {result.seconds:.1f}s")
    return results


def main(argv: list[str] | None = None) -> int:
    """`python -m kubeflow.local_executor SPEC.json PIPELINE_ROOT` (a test tool)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(
            "usage: python -m kubeflow.local_executor SPEC.json LOCAL_PIPELINE_ROOT",
            file=sys.stderr,
        )
        return 2
    results = run_pipeline(args[0], args[1])
    print(json.dumps({name: round(r.seconds, 1) for name, r in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
