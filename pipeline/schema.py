"""Schema inference for bringing your own data: infer once with TFDV, curate, commit."""

from __future__ import annotations

from pathlib import Path

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.config import PipelineConfig
from pipeline.data import stage


def infer_schema(config: PipelineConfig) -> schema_pb2.Schema:
    """Infers a schema from the staged CSV; the label is left out of the SERVING environment."""
    staged = stage(config)
    stats = tfdv.generate_statistics_from_csv(staged.path)
    schema = tfdv.infer_schema(stats, infer_feature_shape=False)
    schema.default_environment.extend(["TRAINING", "SERVING"])
    tfdv.get_feature(schema, config.label).not_in_environment.append("SERVING")
    return schema


def write_inferred_schema(config: PipelineConfig, out: str) -> str:
    """Writes the inferred schema as text proto; returns the path."""
    schema = infer_schema(config)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, out)
    return out
