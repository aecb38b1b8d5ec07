"""Feature keys: which raw columns a model uses and what they become after Transform."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

LABEL_VOCABULARY = "label"
OOV_BUCKETS = 1
# What tf.io.decode_image can produce: grey, RGB, RGBA.
IMAGE_CHANNELS = (1, 3, 4)


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

    Attributes:
      numeric: numeric columns (float or int).
      categorical: string columns mapped to vocabulary ids.
      label: the label column.
      task: "classification" or "regression".
      image: image columns, each one encoded image file (PNG, JPEG, ...) as bytes.
      image_shape: (height, width, channels) that every image decodes to; required
        with image features.
      text: free-text columns, tokenized by Transform into `max_tokens` int64 ids per
        text (0 pads; the vocabulary's ids, OOV buckets included, follow).
      max_tokens: tokens per text after padding or truncation; required with text.
      sequence: columns holding one series of floats each, normalised by Transform into
        float32 [sequence_length].
      sequence_length: values per series; required with sequence features.

    Raises:
      ValueError: image features without a valid `image_shape`; text without a positive
        `max_tokens`; sequences without a positive `sequence_length`.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    label: str
    task: str
    image: tuple[str, ...] = ()
    image_shape: tuple[int, ...] = ()
    text: tuple[str, ...] = ()
    max_tokens: int = 0
    sequence: tuple[str, ...] = ()
    sequence_length: int = 0

    def __post_init__(self):
        for names, size, key in (
            (self.text, self.max_tokens, "max_tokens"),
            (self.sequence, self.sequence_length, "sequence_length"),
        ):
            if names and not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
                raise ValueError(f"features {list(names)} need a positive {key}, got {size!r}")
        if not self.image:
            return
        shape = tuple(self.image_shape)
        valid = (
            len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
            and shape[2] in IMAGE_CHANNELS
        )
        if not valid:
            raise ValueError(
                f"image features {list(self.image)} need image_shape (height, width, channels) "
                f"with positive sizes and channels in {IMAGE_CHANNELS}, got {self.image_shape!r}"
            )

    @property
    def is_classification(self) -> bool:
        return self.task == "classification"

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical + self.image + self.text + self.sequence

    @property
    def label_xf(self) -> str:
        return transformed_name(self.label)

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "label": self.label,
            "task": self.task,
            "image": list(self.image),
            "image_shape": list(self.image_shape),
            "text": list(self.text),
            "max_tokens": self.max_tokens,
            "sequence": list(self.sequence),
            "sequence_length": self.sequence_length,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureSpec:
        """The inverse of `to_dict`; a dict written before a feature type existed has none."""
        return cls(
            numeric=tuple(raw["numeric"]),
            categorical=tuple(raw["categorical"]),
            label=raw["label"],
            task=raw["task"],
            image=tuple(raw.get("image", ())),
            image_shape=tuple(raw.get("image_shape", ())),
            text=tuple(raw.get("text", ())),
            max_tokens=raw.get("max_tokens", 0),
            sequence=tuple(raw.get("sequence", ())),
            sequence_length=raw.get("sequence_length", 0),
        )
