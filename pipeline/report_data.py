"""Data statistics for the report: StatisticsGen's and ExampleValidator's artifacts, as JSON.

TFDV's protos are read here, once, into plain dicts (per split, per feature: missing
values, numeric summary and histogram, or a categorical's top values), so the summary
holds them and the report renders them without TFDV.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

SPLITS = ("train", "eval")
_TOP_VALUES = 10


def _numeric(stats) -> dict[str, Any]:
    standard = [h for h in stats.histograms if h.type == h.STANDARD]
    histogram = standard[0] if standard else None
    return {
        "kind": "numeric",
        "missing": int(stats.common_stats.num_missing),
        "present": int(stats.common_stats.num_non_missing),
        "mean": float(stats.mean),
        "std": float(stats.std_dev),
        "min": float(stats.min),
        "max": float(stats.max),
        "zeros": int(stats.num_zeros),
        "histogram": {
            "edges": [b.low_value for b in histogram.buckets] + [histogram.buckets[-1].high_value]
            if histogram and histogram.buckets
            else [],
            "counts": [float(b.sample_count) for b in histogram.buckets] if histogram else [],
        },
    }


def _string(stats) -> dict[str, Any]:
    return {
        "kind": "categorical",
        "missing": int(stats.common_stats.num_missing),
        "present": int(stats.common_stats.num_non_missing),
        "unique": int(stats.unique),
        "top_values": [
            {"value": v.value, "count": float(v.frequency)} for v in stats.top_values[:_TOP_VALUES]
        ],
    }


def _other(feature) -> dict[str, Any]:
    # Images, texts as bytes, series: TFDV's common stats are what every type shares.
    common = None
    for kind in ("num_stats", "string_stats", "bytes_stats", "struct_stats"):
        if feature.HasField(kind):
            common = getattr(feature, kind).common_stats
    return {
        "kind": "other",
        "missing": int(common.num_missing) if common else 0,
        "present": int(common.num_non_missing) if common else 0,
    }


def split_statistics(path: str) -> dict[str, Any]:
    """One split's FeatureStats.pb as {"examples", "features": {name: stats}}."""
    import tensorflow_data_validation as tfdv

    dataset = tfdv.load_stats_binary(path).datasets[0]
    features = {}
    for feature in dataset.features:
        name = ".".join(feature.path.step) or feature.name
        if feature.HasField("num_stats"):
            features[name] = _numeric(feature.num_stats)
        elif feature.HasField("string_stats"):
            features[name] = _string(feature.string_stats)
        else:
            features[name] = _other(feature)
    return {"examples": int(dataset.num_examples), "features": features}


def anomalies(uri: str) -> dict[str, list[str]]:
    """ExampleValidator's anomalies per split: ["feature: description", ...]."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    found = {}
    for split in SPLITS:
        path = os.path.join(uri, f"Split-{split}", "SchemaDiff.pb")
        if not tf.io.gfile.exists(path):
            continue
        result = anomalies_pb2.Anomalies.FromString(tf.io.gfile.GFile(path, "rb").read())
        found[split] = [
            f"{name}: {info.short_description or info.description}"
            for name, info in sorted(result.anomaly_info.items())
        ]
    return found


def statistics(statistics_uri: str, anomalies_uri: str | None) -> dict[str, Any]:
    """{"splits": {split: split_statistics}, "anomalies": {split: [...]}} of a run."""
    splits = {}
    for split in SPLITS:
        path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
        if tf.io.gfile.exists(path):
            splits[split] = split_statistics(path)
    return {
        "artifact": statistics_uri,
        "splits": splits,
        "anomalies": anomalies(anomalies_uri) if anomalies_uri else {},
    }
