"""The drift report: one HTML file, per feature the training and serving distributions
overlaid (numeric: TFDV's standard histograms; categorical: value shares) with the
comparator's value against its threshold, images inlined as PNG; the same figures are
written beside drift.json (`figures/<feature>.png`) for the pipeline report to show."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from tensorflow_metadata.proto.v0 import statistics_pb2  # noqa: E402

_STANDARD = statistics_pb2.Histogram.STANDARD
# Categorical values shown per feature (the most frequent in either data).
_MAX_VALUES = 15


def figures(
    drift: Mapping[str, Any],
    training: statistics_pb2.DatasetFeatureStatisticsList,
    serving: statistics_pb2.DatasetFeatureStatisticsList,
) -> dict[str, bytes]:
    """Per compared feature of drift.json, its figure as PNG bytes: the training and the
    serving distribution overlaid (features without statistics on both sides have none)."""
    trained, served = _features(training), _features(serving)
    drawn = {name: _figure(name, trained.get(name), served.get(name)) for name in drift["features"]}
    return {name: png for name, png in drawn.items() if png is not None}


def render(drift: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    """The report's HTML for one monitor run: drift.json's record and its `figures`."""
    sections = [_section(name, entry, pngs.get(name)) for name, entry in drift["features"].items()]
    drifted = drift["drifted_features"]
    verdict = f"drift in {', '.join(drifted)}" if drifted else "no drift"
    anomalies = "".join(
        f"<li><b>{html.escape(n)}</b>: {html.escape('; '.join(r))}</li>"
        for n, r in drift["anomalies"].items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Drift: {html.escape(drift['model'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}"
        ".drifted{color:#b00020}.ok{color:#1b5e20}td,th{padding:2px 8px}</style></head><body>"
        f"<h1>Drift of {html.escape(drift['model'])} version {drift['served_version']}: "
        f"{html.escape(verdict)}</h1>"
        f"<p>Serving: {drift['serving']['rows']} rows from {html.escape(drift['serving']['source'])}"
        f". Training: statistics {html.escape(drift['training']['statistics'])} (run "
        f"{html.escape(drift['training']['pipeline_run'])}), found through ML Metadata.</p>"
        + (f"<h2>Schema anomalies</h2><ul>{anomalies}</ul>" if anomalies else "")
        + "".join(sections)
        + "</body></html>"
    )


def _features(
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
) -> dict[str, statistics_pb2.FeatureNameStatistics]:
    dataset = statistics.datasets[0] if statistics.datasets else None
    if dataset is None:
        return {}
    return {(f.name or ".".join(f.path.step)): f for f in dataset.features}


def _section(name: str, entry: Mapping[str, Any], png: bytes | None) -> str:
    status = "drifted" if entry["drifted"] else "ok"
    title = f"{name} ({entry['role']})"
    image = (
        f"<img alt='{html.escape(title)}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'>"
        if png
        else ""
    )
    return (
        f"<h2 class='{status}'>{html.escape(title)}: {status}</h2>"
        f"<p>{entry['statistic']} = {entry['value']:.4f}, threshold {entry['threshold']}</p>"
        + image
    )


def _figure(name: str, trained, served) -> bytes | None:
    if trained is None or served is None:
        return None
    figure, axes = plt.subplots(figsize=(6, 2.8))
    if trained.HasField("num_stats"):
        for label, stats in (("training", trained), ("serving", served)):
            _plot_histogram(axes, stats, label)
        axes.set_ylabel("share of rows")
    else:
        _plot_values(axes, trained, served)
    axes.set_title(name)
    axes.legend()
    return _png(figure)


def _plot_histogram(axes, stats, label: str) -> None:
    histogram = next((h for h in stats.num_stats.histograms if h.type == _STANDARD), None)
    if histogram is None or not histogram.buckets:
        return
    total = sum(b.sample_count for b in histogram.buckets) or 1.0
    edges = [b.low_value for b in histogram.buckets] + [histogram.buckets[-1].high_value]
    shares = [b.sample_count / total for b in histogram.buckets]
    training = label == "training"
    axes.stairs(
        shares, edges, label=label, fill=training, alpha=0.5 if training else 1.0, linewidth=2
    )


def _plot_values(axes, trained, served) -> None:
    shares = [_value_shares(trained), _value_shares(served)]
    values = sorted(
        set(shares[0]) | set(shares[1]), key=lambda v: -max(s.get(v, 0) for s in shares)
    )
    values = values[:_MAX_VALUES]
    width = 0.4
    for offset, (label, share) in enumerate(zip(("training", "serving"), shares, strict=True)):
        axes.bar(
            [i + offset * width for i in range(len(values))],
            [share.get(v, 0.0) for v in values],
            width,
            label=label,
        )
    axes.set_xticks([i + width / 2 for i in range(len(values))], values, rotation=30)
    axes.set_ylabel("share of rows")


def _value_shares(stats) -> dict[str, float]:
    string_stats = stats.string_stats
    buckets = [(b.label, b.sample_count) for b in string_stats.rank_histogram.buckets] or [
        (v.value, v.frequency) for v in string_stats.top_values
    ]
    total = sum(count for _, count in buckets) or 1.0
    return {label: count / total for label, count in buckets}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
