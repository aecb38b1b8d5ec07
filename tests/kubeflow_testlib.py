"""Configs for the Kubeflow tests: configs/penguins.yaml with overrides, written to tmp_path."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import PipelineConfig, load_config

REPO = Path(__file__).resolve().parent.parent
PENGUINS = REPO / "configs" / "penguins.yaml"
IMAGE = "europe-west4-docker.pkg.dev/my-project/tfx/tfx-pipeline:1.0"

VERTEX = {
    "kubeflow": {
        "image": IMAGE,
        "pipeline_root": "gs://my-bucket/tfx/pipelines",
        "data_root": "gs://my-bucket/tfx/data/penguins",
        "serving_root": "gs://my-bucket/tfx/serving",
        "schema_uri": "gs://my-bucket/tfx/schemas/penguins.pbtxt",
    },
    "vertex": {"project": "my-project", "region": "europe-west4", "labels": {"team": "ml"}},
}

# A tiny budget so that the compiled pipeline runs quickly on two cores.
FAST = {
    "tuner": {"max_trials": 1, "epochs": 2},
    "training": {"epochs": 15, "early_stopping_patience": 3},
    "evaluation": {"lower_bound": 0.5, "max_regression": 0.5},
    "beam": {"mode": "in_memory"},
}


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def write_config(tmp_path: Path, *overrides: Mapping[str, Any], name: str = "config.yaml") -> Path:
    """Writes penguins.yaml merged with `overrides` (later wins); paths made absolute."""
    raw = yaml.safe_load(PENGUINS.read_text())
    raw["schema_file"] = str(PENGUINS.parent / raw["schema_file"])
    raw["outputs"] = {"root": str(tmp_path / "output")}
    for extra in overrides:
        raw = merge(raw, extra)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def load(tmp_path: Path, *overrides: Mapping[str, Any]) -> PipelineConfig:
    return load_config(write_config(tmp_path, *overrides))
