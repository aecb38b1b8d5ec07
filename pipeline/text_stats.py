"""Token statistics of a run's text features: how long the texts are in tokens, how many
get cut at `max_tokens`, and how much of each split the training vocabulary covers.

TFDV's StatisticsGen describes a raw text as one string (its length in bytes, and through
the semantic-domain statistics a `natural_language_domain`); its natural-language
statistics (token counts, vocabulary coverage) read features that are already token lists
with a vocabulary in the schema, which the raw text is not here: the tokens only exist
inside Transform. So these figures are computed after the run from what the run made:
ExampleGen's examples, tokenized by the same `tokenize` as Transform and looked up in the
vocabulary Transform computed on the train split (what the model was trained on).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from models.features import vocabulary_name
from models.preprocessing import tokenize

SPLITS = ("train", "eval")
_BATCH = 256
_QUANTILES = {"p50": 50, "p90": 90, "p99": 99}


def token_statistics(
    examples_uri: str,
    transform_output: tft.TFTransformOutput,
    features: Sequence[str],
    max_tokens: int,
) -> dict[str, Any]:
    """Per text feature, per split: tokens per text, share cut or empty, vocabulary coverage.

    Args:
      examples_uri: ExampleGen's examples artifact (`Split-train/`, `Split-eval/`).
      transform_output: Transform's output (the vocabularies).
      features: the text features' names.
      max_tokens: tokens the model reads per text; a longer text is cut there.

    Returns:
      feature -> {"vocabulary_size", "max_tokens", "splits": split -> {"texts",
      "tokens_per_text": {"mean", "min", "p50", "p90", "p99", "max"}, "longer_than_max_tokens",
      "empty" (fractions of the texts), "tokens", "vocabulary_coverage" (fraction of the
      tokens that are in the vocabulary; the rest share the OOV bucket)}}.

    Raises:
      FileNotFoundError: a split has no examples.
    """
    result = {}
    for feature in features:
        vocabulary_file = transform_output.vocabulary_file_by_name(vocabulary_name(feature))
        vocabulary = _vocabulary_table(vocabulary_file)
        splits = {
            split: _split_statistics(
                _texts(os.path.join(examples_uri, f"Split-{split}"), feature),
                vocabulary,
                max_tokens,
            )
            for split in SPLITS
        }
        result[feature] = {
            "vocabulary_size": int(vocabulary.size().numpy()),
            "max_tokens": max_tokens,
            "splits": splits,
        }
    return result


def _vocabulary_table(path: str) -> tf.lookup.StaticHashTable:
    """Token -> 1 for the vocabulary file's tokens (one per line), 0 for any other."""
    tokens = tf.constant(tf.io.gfile.GFile(path, "rb").read().splitlines())
    initializer = tf.lookup.KeyValueTensorInitializer(tokens, tf.ones_like(tokens, tf.int64))
    return tf.lookup.StaticHashTable(initializer, default_value=0)


def _texts(split_dir: str, feature: str) -> Iterator[tf.Tensor]:
    """Batches of the split's texts, [batch] strings ("" where an example has none)."""
    files = tf.io.gfile.glob(os.path.join(split_dir, "*"))
    if not files:
        raise FileNotFoundError(f"{split_dir}: no examples")
    spec = {feature: tf.io.FixedLenFeature([], tf.string, default_value="")}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(_BATCH)
    for records in dataset:
        yield tf.io.parse_example(records, spec)[feature]


def _split_statistics(
    batches: Iterator[tf.Tensor], vocabulary: tf.lookup.StaticHashTable, max_tokens: int
) -> dict[str, Any]:
    counts, known = [], 0
    for texts in batches:
        tokens = tokenize(texts)
        counts.append(tokens.row_lengths().numpy())
        known += int(tf.reduce_sum(vocabulary.lookup(tokens.flat_values)).numpy())
    lengths = np.concatenate(counts)
    total = int(lengths.sum())
    return {
        "texts": len(lengths),
        "tokens_per_text": {
            "mean": round(float(lengths.mean()), 1),
            "min": int(lengths.min()),
            **{k: int(np.percentile(lengths, q)) for k, q in _QUANTILES.items()},
            "max": int(lengths.max()),
        },
        "longer_than_max_tokens": round(float((lengths > max_tokens).mean()), 4),
        "empty": round(float((lengths == 0).mean()), 4),
        "tokens": total,
        "vocabulary_coverage": round(known / total, 4) if total else None,
    }


def format_lines(text: dict[str, Any]) -> list[str]:
    """The summary's text statistics as lines for the terminal."""
    lines = []
    for feature, stats in text.items():
        lines.append(
            f"  text {feature}: vocabulary {stats['vocabulary_size']:,} tokens, "
            f"max_tokens {stats['max_tokens']}"
        )
        for split, s in stats["splits"].items():
            t = s["tokens_per_text"]
            coverage = s["vocabulary_coverage"]
            lines.append(
                f"    {split:<6}{s['texts']:>7,} texts, tokens median {t['p50']} "
                f"(p90 {t['p90']}, max {t['max']}), {s['longer_than_max_tokens']:.1%} cut, "
                f"{s['empty']:.1%} empty, vocabulary coverage "
                + ("-" if coverage is None else f"{coverage:.1%}")
            )
    return lines
