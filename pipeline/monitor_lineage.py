"""What the served model was trained on, found through ML Metadata lineage from its push.

From the PushedModel artifact whose `pushed_destination` is the served version's directory,
the walk goes up the `model` inputs (Pusher → InfraValidation → Quantization → Trainer; a
Pusher's is its `infra_blessing`), then the `examples`
inputs (Trainer → Transform → ExampleGen) to the raw Examples the model learnt from, and
takes the statistics StatisticsGen computed on exactly those and the schema the Trainer read.
No path is guessed: a model pushed by another pipeline, or copied by hand, has no lineage
here and the monitor says so.

The store is the local runner's SQLite file, or on a cluster the ML Metadata gRPC service
Kubeflow Pipelines records into (`kubeflow.metadata` in the config). Paths go through
tf.io.gfile, so the serving root and the artifacts may be gs:// as well as local.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
from ml_metadata import errors, metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.data import DataError

_INPUT = metadata_store_pb2.Event.INPUT
_OUTPUT = metadata_store_pb2.Event.OUTPUT
# Up-the-lineage steps are bounded: a well-formed record needs fewer than ten.
_MAX_STEPS = 20


@dataclasses.dataclass(frozen=True)
class TrainingLineage:
    """The served model's version and the artifacts of its training data."""

    version: str
    pushed_model_uri: str
    model_uri: str
    examples_uri: str
    # ExampleGen's fingerprint of the files it read (TFX's `input_fingerprint`).
    examples_fingerprint: str
    statistics_uri: str
    schema_uri: str
    pipeline_run: str
    # Transform's output the Trainer read (the text features' vocabularies); "" if none.
    transform_graph_uri: str = ""


class _Graph:
    """Events of one ML Metadata store, read per artifact and execution."""

    def __init__(self, store: metadata_store.MetadataStore):
        self._store = store

    def producer(self, artifact_id: int) -> int | None:
        events = self._store.get_events_by_artifact_ids([artifact_id])
        return next((e.execution_id for e in events if e.type == _OUTPUT), None)

    def consumers(self, artifact_id: int) -> list[int]:
        events = self._store.get_events_by_artifact_ids([artifact_id])
        return [e.execution_id for e in events if e.type == _INPUT]

    def artifacts(self, execution_id: int, kind: int, key: str) -> list:
        events = self._store.get_events_by_execution_ids([execution_id])
        ids = [e.artifact_id for e in events if e.type == kind and _key(e) == key]
        return list(self._store.get_artifacts_by_id(ids)) if ids else []


def _key(event) -> str:
    return next((s.key for s in event.path.steps if s.HasField("key")), "")


def served_version(serving_dir: str) -> str:
    """The version TF Serving's default policy serves: the largest numbered folder.

    Raises:
      DataError: there is no pushed version.
    """
    versions = (
        [v.rstrip("/") for v in tf.io.gfile.listdir(serving_dir) if v.rstrip("/").isdigit()]
        if tf.io.gfile.isdir(serving_dir)
        else []
    )
    if not versions:
        raise DataError(f"{serving_dir}: no pushed model version; run the pipeline first")
    return max(versions, key=int)


def grpc_connection(host: str, port: int) -> metadata_store_pb2.MetadataStoreClientConfig:
    """The client config of an ML Metadata gRPC service (Kubeflow Pipelines' metadata)."""
    return metadata_store_pb2.MetadataStoreClientConfig(host=host, port=port)


def training_lineage(
    metadata: str | metadata_store_pb2.MetadataStoreClientConfig, serving_dir: str, version: str
) -> TrainingLineage:
    """Walks from the push of `serving_dir/version` to its training statistics and schema.

    Args:
      metadata: the pipeline's ML Metadata: the local runner's SQLite file, or a cluster's
        gRPC service (`grpc_connection`).
      serving_dir: the model's folder of pushed versions (local or gs://).
      version: the served version.

    Returns:
      The lineage.

    Raises:
      DataError: the store is missing or unreachable, or it has no push of that version, or
        the lineage stops before statistics and schema.
    """
    store, where = _store(metadata)
    destination = _normalized(f"{serving_dir.rstrip('/')}/{version}")
    try:
        return _walk(store, where, destination, version)
    except errors.StatusError as err:
        raise DataError(f"{where}: cannot read ML Metadata: {err}") from err


def _store(metadata) -> tuple[metadata_store.MetadataStore, str]:
    if not isinstance(metadata, str):
        return metadata_store.MetadataStore(metadata), f"{metadata.host}:{metadata.port}"
    if not os.path.isfile(metadata):
        raise DataError(f"{metadata}: no ML Metadata; run the pipeline first")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config), metadata


def _normalized(path: str) -> str:
    """A path as the Pusher recorded it: local ones resolved (symlinks, `..`), URIs as given."""
    return path.rstrip("/") if "://" in path else os.path.realpath(path)


def _walk(store, metadata_path: str, destination: str, version: str) -> TrainingLineage:
    pushed = _pushed_model(store, destination, metadata_path)
    graph = _Graph(store)
    trainer, model = _trainer(graph, pushed, destination)
    examples = _raw_examples(graph, trainer, destination)
    (schema,) = graph.artifacts(trainer, _INPUT, "schema") or [None]
    (transform_graph,) = graph.artifacts(trainer, _INPUT, "transform_graph") or [None]
    statistics = _statistics_of(graph, examples)
    if schema is None or statistics is None:
        missing = "schema" if schema is None else "StatisticsGen statistics"
        raise DataError(
            f"{destination}: its training data {examples.uri} has no {missing} in {metadata_path}"
        )
    return TrainingLineage(
        version=version,
        pushed_model_uri=pushed.uri,
        model_uri=model.uri,
        examples_uri=examples.uri,
        examples_fingerprint=_string_property(examples, "input_fingerprint"),
        statistics_uri=statistics.uri,
        schema_uri=schema.uri,
        pipeline_run=_run_of(store, trainer),
        transform_graph_uri=transform_graph.uri if transform_graph is not None else "",
    )


def _pushed_model(store, destination: str, metadata_path: str):
    for artifact in store.get_artifacts_by_type("PushedModel"):
        pushed_to = artifact.custom_properties.get("pushed_destination")
        if pushed_to is not None and _normalized(pushed_to.string_value) == destination:
            return artifact
    raise DataError(
        f"{destination}: no Pusher of {metadata_path} pushed this model, so what it was trained "
        "on is unknown; serve a model this pipeline pushed, or pass the training statistics"
    )


def _trainer(graph: _Graph, pushed, destination: str):
    """The execution that trained the pushed model, and that model, up the `model` inputs."""
    artifact = pushed
    for _ in range(_MAX_STEPS):
        execution = graph.producer(artifact.id)
        if execution is None:
            break
        # A Pusher given an infra_blessing pushes the model InfraValidation checked.
        models = graph.artifacts(execution, _INPUT, "model") or graph.artifacts(
            execution, _INPUT, "infra_blessing"
        )
        if not models:
            # No model in: it trained one (Quantization and Pusher take one).
            if graph.artifacts(execution, _INPUT, "examples"):
                return execution, artifact
            break
        artifact = models[0]
    raise DataError(f"{destination}: the lineage of its push reaches no Trainer")


def _raw_examples(graph: _Graph, execution: int, destination: str):
    """The Examples an ExampleGen wrote, up the `examples` inputs from `execution`."""
    for _ in range(_MAX_STEPS):
        # With data.spans a Trainer reads one Examples per span of its window: the newest
        # span's (created last) stands for its training data.
        examples = max(
            graph.artifacts(execution, _INPUT, "examples"), key=lambda a: a.id, default=None
        )
        if examples is None:
            break
        producer = graph.producer(examples.id)
        if producer is None or not graph.artifacts(producer, _INPUT, "examples"):
            return examples
        execution = producer
    raise DataError(f"{destination}: the lineage of its Trainer reaches no ExampleGen output")


def _statistics_of(graph: _Graph, examples):
    for execution in graph.consumers(examples.id):
        statistics = graph.artifacts(execution, _OUTPUT, "statistics")
        if statistics:
            return statistics[-1]
    return None


def _string_property(artifact, name: str) -> str:
    value = artifact.custom_properties.get(name)
    return value.string_value if value is not None else ""


def _run_of(store, execution_id: int) -> str:
    run_type = store.get_context_type("pipeline_run")
    for context in store.get_contexts_by_execution(execution_id):
        if run_type is not None and context.type_id == run_type.id:
            return context.name
    return ""
