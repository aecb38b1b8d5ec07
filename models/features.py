"""Feature keys: which raw columns a model uses and what they become after Transform."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

LABEL_VOCABULARY = "label"
OOV_BUCKETS = 1


def transformed_name(key: str) -> str:
    """The name of a feature after Transform."""
    return f"{key}_xf"


def vocabulary_name(key: str) -> str:
    """The TFT vocabulary file that maps a categorical feature to integer ids."""
    return f"{key}_vocab"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The columns of one dataset and the task on them.

    It travels through TFX as the `custom_config` of Transform, Tuner and Trainer,
    so it converts to and from a plain JSON-able dict.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    label: str
    task: str

    @property
    def is_classification(self) -> bool:
        return self.task == "classification"

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def label_xf(self) -> str:
        return transformed_name(self.label)

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "label": self.label,
            "task": self.task,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            numeric=tuple(raw["numeric"]),
            categorical=tuple(raw["categorical"]),
            label=raw["label"],
            task=raw["task"],
        )
