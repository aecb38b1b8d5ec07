"""Top tokens of a text feature: IG's per-token scores (attributions.Explainer.token_scores)
read back as the words of Transform's vocabulary.

A text's ids are 0 for padding, 1.. for the vocabulary's words in its file's order, then the
OOV bucket (models/preprocessing.py `_text`), so a token is shown as its vocabulary word or
as `OOV` (a word outside the vocabulary: its spelling is not kept in the ids).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_transform as tft

from components.explanations import attributions
from models.features import FeatureSpec, transformed_name, vocabulary_name

PADDING = "[PAD]"
OOV = "[OOV]"
# Tokens per example in the top list, and per class in `top_tokens`.
TOP_TOKENS = 10
# Tokens of an example kept in reading order (for the report's coloured text).
SEQUENCE_TOKENS = 120


def vocabularies(
    transform_output: tft.TFTransformOutput, spec: FeatureSpec
) -> dict[str, list[str]]:
    """Per text feature, the token string of each id: padding, the words, the OOV bucket."""
    return {
        feature: [
            PADDING,
            *(
                w.decode("utf-8", "replace")
                for w in transform_output.vocabulary_by_name(vocabulary_name(feature))
            ),
            OOV,
        ]
        for feature in spec.text
    }


def example_tokens(
    scores: np.ndarray, ids: np.ndarray, vocabulary: Sequence[str]
) -> list[dict[str, Any]]:
    """[{"token", "score"}] in reading order for the example's unpadded positions.

    Args:
      scores: the per-position attribution [max_tokens].
      ids: the example's token ids [max_tokens].
      vocabulary: from `vocabularies`; ids beyond it count as OOV buckets.
    """
    return [
        {"token": vocabulary[i] if i < len(vocabulary) - 1 else OOV, "score": round(float(s), 6)}
        for i, s in zip(ids.astype(np.int64), scores, strict=True)
        if i != 0
    ]


def top(tokens: Sequence[Mapping[str, Any]], count: int = TOP_TOKENS) -> list[dict[str, Any]]:
    """The `count` tokens with the largest |score|, largest first."""
    return [dict(t) for t in sorted(tokens, key=lambda t: -abs(t["score"]))[:count]]


def _label(features: Mapping[str, np.ndarray], spec: FeatureSpec, i: int, class_names) -> Any:
    if spec.label_xf not in features:
        return None
    value = np.asarray(features[spec.label_xf])[i]
    return class_names[int(value)] if class_names else round(float(value), 6)


def text_section(
    explainer: attributions.Explainer,
    explained: attributions.Explained,
    features: Mapping[str, np.ndarray],
    spec: FeatureSpec,
    vocabulary: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    listed: int,
) -> list[dict[str, Any]]:
    """explanations.json `text`: per text feature, `listed` examples with their label, the
    predicted class and top tokens (and the first `SEQUENCE_TOKENS` in order), and over every
    explained example the tokens that pushed most toward each predicted class.

    Returns:
      [{"feature", "examples": [{"label", "predicted", "tokens", "sequence"}], "top_tokens":
      {class: [{"token", "score"}]}}]; [] without text features.
    """
    section = []
    for feature in spec.text:
        ids = np.asarray(features[transformed_name(feature)])
        examples, by_class = [], defaultdict(lambda: defaultdict(float))
        for i, target in enumerate(explained.targets):
            scores = explainer.token_scores(explained.attributions[i], feature)
            tokens = example_tokens(scores, ids[i], vocabulary[feature])
            predicted = (
                class_names[target] if class_names else round(float(explained.outputs[i]), 6)
            )
            for token in tokens:
                by_class[class_names[target] if class_names else "output"][token["token"]] += token[
                    "score"
                ]
            if i < listed:
                examples.append(
                    {
                        "label": _label(features, spec, i, class_names),
                        "predicted": predicted,
                        "probability": round(float(explained.outputs[i]), 6)
                        if class_names
                        else None,
                        "tokens": top(tokens),
                        "sequence": tokens[:SEQUENCE_TOKENS],
                    }
                )
        section.append(
            {"feature": feature, "examples": examples, "top_tokens": _top_by_class(by_class)}
        )
    return section


def _top_by_class(by_class: Mapping[str, Mapping[str, float]]) -> dict[str, list[dict]]:
    """Per predicted class, the tokens with the largest summed score toward it."""
    return {
        name: [
            {"token": token, "score": round(score, 6)}
            for token, score in sorted(totals.items(), key=lambda item: -item[1])[:TOP_TOKENS]
            if score > 0
        ]
        for name, totals in sorted(by_class.items())
    }
