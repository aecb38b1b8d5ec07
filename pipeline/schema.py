"""Schema inference for bringing your own data: infer once, curate, commit.

The schema is inferred by the pipeline's own ExampleGen and StatisticsGen (then
TFX's SchemaGen), not from the raw CSV, so that it describes the tf.Examples the
pipeline validates: a schema inferred from the raw file disagrees with them on
missing values and stops the run it was written for.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import tensorflow_data_validation as tfdv
from ml_metadata import metadata_store
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import data_components
from pipeline.progress import capture_progress
from pipeline.sources import stage


def infer_schema(config: PipelineConfig, log_path: str) -> schema_pb2.Schema:
    """Infers a schema from the config's data; the label is left out of the SERVING environment.

    Runs ExampleGen, StatisticsGen and SchemaGen on the staged CSV in a scratch
    pipeline under the output root, removed afterwards; their logs go to `log_path`.
    """
    staged = stage(config)
    with tempfile.TemporaryDirectory(prefix="schema-", dir=config.output_root) as scratch:
        example_gen, statistics_gen = data_components(config, staged.directory)
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
        )
        metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(Path(scratch) / "metadata.sqlite")
        )
        pipeline = tfx.dsl.Pipeline(
            pipeline_name=f"{config.pipeline_name}-schema",
            pipeline_root=str(Path(scratch) / "pipeline"),
            components=[example_gen, statistics_gen, schema_gen],
            enable_cache=False,
            metadata_connection_config=metadata,
            beam_pipeline_args=["--direct_running_mode=in_memory"],
        )
        with capture_progress([c.id for c in pipeline.components], log_path):
            tfx.orchestration.LocalDagRunner().run(pipeline)
        # The scratch store holds this one run: one Schema artifact.
        [artifact] = metadata_store.MetadataStore(metadata).get_artifacts_by_type(
            tfx.types.standard_artifacts.Schema.TYPE_NAME
        )
        schema = tfdv.load_schema_text(str(Path(artifact.uri) / "schema.pbtxt"))
    schema.default_environment.extend(["TRAINING", "SERVING"])
    tfdv.get_feature(schema, config.label).not_in_environment.append("SERVING")
    return schema


def write_inferred_schema(config: PipelineConfig, out: str, log_path: str) -> str:
    """Writes the inferred schema as text proto; returns the path."""
    schema = infer_schema(config, log_path)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, out)
    return out
