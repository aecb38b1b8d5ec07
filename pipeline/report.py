"""The HTML report of a run: the figures people would rather see than read, from summary.json."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _component_times(summary: Mapping[str, Any]) -> str:
    names = list(summary["components"])
    seconds = [summary["components"][n]["seconds"] for n in names]
    colours = ["#9e9e9e" if summary["components"][n]["cached"] else "#1f77b4" for n in names]
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    axes.barh(names[::-1], seconds[::-1], color=colours[::-1])
    axes.set_xlabel("seconds (grey: cached)")
    axes.set_title(f"Components, {summary['seconds']:.0f}s in all")
    return _png(figure)


def _tuner_trials(tuner: Mapping[str, Any]) -> str:
    scores = tuner["trial_scores"]
    best = [min(scores[: i + 1]) for i in range(len(scores))]
    figure, axes = plt.subplots(figsize=(7, 3))
    axes.plot(range(1, len(scores) + 1), scores, "o", label="trial")
    axes.plot(range(1, len(scores) + 1), best, "-", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(tuner["objective"])
    axes.set_yscale("log")
    axes.legend()
    axes.set_title("Bayesian optimisation")
    return _png(figure)


_QUANTIZED = ("float", "int8", "float_tflite", "int8_tflite")


def _quantization(quantization: Mapping[str, Any]) -> str:
    """Size, batch-1 latency and the primary metric of the float and quantized models."""
    names = [n for n in _QUANTIZED if n in quantization]
    metric = quantization["metric"]
    panels = (
        ("size (KiB)", [quantization[n]["size_bytes"] / 1024 for n in names]),
        ("batch-1 latency (ms)", [quantization[n]["latency_ms"]["batch_1"] for n in names]),
        (f"{metric} (eval)", [quantization[n]["metrics"].get(metric, float("nan")) for n in names]),
    )
    figure, axes = plt.subplots(1, 3, figsize=(11, 3))
    for i, (ax, (title, values)) in enumerate(zip(axes, panels, strict=True)):
        ax.bar(names, values, color=["#1f77b4", "#ff7f0e", "#aec7e8", "#ffbb78"][: len(names)])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
        if i < 2:
            ax.set_yscale("log")
    figure.suptitle(f"Quantization: served {quantization['served']}", y=1.04)
    return _png(figure)


def _confusion_matrix(confusion: Mapping[str, Any]) -> str:
    """Counts in the cells; colour is the share of the true class's row, so a rare class
    reads as clearly as a common one."""
    labels, counts = confusion["labels"], np.asarray(confusion["matrix"], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    side = 0.6 * len(labels) + 2.5
    figure, axes = plt.subplots(figsize=(side + 1.5, side))
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(counts):
        colour = "white" if shares[i, j] > 0.5 else "black"
        axes.text(j, i, f"{count:.0f}", ha="center", va="center", color=colour, fontsize=8)
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix (eval split, {counts.sum():.0f} examples)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    return _png(figure)


_PER_CLASS = ("precision", "recall", "f1_score", "auc")


def _per_class_table(per_class: Mapping[str, Mapping[str, float]]) -> str:
    header = "".join(f"<th>{name}</th>" for name in ("class", *_PER_CLASS, "examples"))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{metrics[m]:.4f}</td>" if m in metrics else "<td></td>" for m in _PER_CLASS)
        + f"<td>{metrics.get('support', '')}</td></tr>"
        for name, metrics in per_class.items()
    )
    return f"<table><tr>{header}</tr>{rows}</table>"


def _table(rows: Mapping[str, Any]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


def _text_table(stats: Mapping[str, Any]) -> str:
    """A text feature's token statistics, a column per split (`pipeline.text_stats`)."""
    splits = stats["splits"]

    def row(name, value):
        cells = "".join(f"<td>{html.escape(value(s))}</td>" for s in splits.values())
        return f"<tr><td>{html.escape(name)}</td>{cells}</tr>"

    header = "".join(f"<th>{html.escape(split)}</th>" for split in splits)
    rows = [
        row("texts", lambda s: f"{s['texts']:,}"),
        row(
            "tokens per text (median, p90, max)",
            lambda s: "{p50}, {p90}, {max}".format(**s["tokens_per_text"]),
        ),
        row(
            f"longer than max_tokens ({stats['max_tokens']})",
            lambda s: f"{s['longer_than_max_tokens']:.1%}",
        ),
        row("empty", lambda s: f"{s['empty']:.1%}"),
        row(
            f"in the vocabulary ({stats['vocabulary_size']:,} tokens)",
            lambda s: (
                "-" if s["vocabulary_coverage"] is None else f"{s['vocabulary_coverage']:.1%}"
            ),
        ),
    ]
    return f"<table><tr><th></th>{header}</tr>{''.join(rows)}</table>"


def render(summary: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    parts = [
        f"<h1>Pipeline {html.escape(summary['pipeline'])}</h1>",
        f"<p>Run {html.escape(str(summary['run_id']))}: <b>{summary['status']}</b> in {summary['seconds']:.1f}s</p>",
    ]
    if summary.get("error"):
        parts.append(f"<pre>{html.escape(summary['error'])}</pre>")
    if summary["components"]:
        parts.append(f'<img src="data:image/png;base64,{_component_times(summary)}">')
    tuner = summary.get("tuner")
    if tuner and tuner.get("trial_scores"):
        parts.append("<h2>Tuning</h2>")
        parts.append(f'<img src="data:image/png;base64,{_tuner_trials(tuner)}">')
        parts.append(_table(tuner["best_hyperparameters"]))
    training = summary.get("training")
    if training:
        parts.append("<h2>Training</h2>")
        parts.append(_table(training))
    for feature, stats in (summary.get("text") or {}).items():
        parts.append(f"<h2>Text {html.escape(feature)}</h2>")
        parts.append(_text_table(stats))
    evaluation = summary.get("evaluation")
    if evaluation:
        parts.append(f"<h2>Evaluation (blessed: {evaluation['blessed']})</h2>")
        metrics = {k: f"{v:.4f}" for k, v in sorted(evaluation["metrics"].items()) if "/" not in k}
        parts.append(_table(metrics))
        if evaluation.get("confusion_matrix"):
            parts.append(
                f'<img alt="confusion matrix" src="data:image/png;base64,'
                f'{_confusion_matrix(evaluation["confusion_matrix"])}">'
            )
        if evaluation.get("per_class"):
            parts.append("<h3>Per class</h3>")
            parts.append(_per_class_table(evaluation["per_class"]))
    quantization = summary.get("quantization")
    if quantization and all(n in quantization for n in ("float", "int8")):
        parts.append("<h2>Quantization</h2>")
        parts.append(f'<img src="data:image/png;base64,{_quantization(quantization)}">')
        parts.append(f"<p>{html.escape(str(quantization.get('reason', '')))}</p>")
    pushed = summary.get("pushed")
    parts.append(
        f"<h2>Pushed</h2><p>{html.escape(pushed['model_dir']) if pushed else 'nothing'}</p>"
    )
    style = "body{font-family:sans-serif;max-width:900px;margin:2em auto}td,th{padding:2px 12px;border-bottom:1px solid #ddd;text-align:left}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(summary['pipeline'])}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
