"""The HTML report of a run: the figures people would rather see than read, from summary.json."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import matplotlib

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


def _table(rows: Mapping[str, Any]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


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
    evaluation = summary.get("evaluation")
    if evaluation:
        parts.append(f"<h2>Evaluation (blessed: {evaluation['blessed']})</h2>")
        metrics = {k: f"{v:.4f}" for k, v in sorted(evaluation["metrics"].items()) if "/" not in k}
        parts.append(_table(metrics))
    quantization = summary.get("quantization")
    if quantization and all(n in quantization for n in ("float", "int8")):
        parts.append("<h2>Quantization</h2>")
        parts.append(f'<img src="data:image/png;base64,{_quantization(quantization)}">')
        parts.append(f"<p>{html.escape(str(quantization.get('reason', '')))}</p>")
    pushed = summary.get("pushed")
    parts.append(
        f"<h2>Pushed</h2><p>{html.escape(pushed['model_dir']) if pushed else 'nothing'}</p>"
    )
    style = "body{font-family:sans-serif;max-width:900px;margin:2em auto}td{padding:2px 12px;border-bottom:1px solid #ddd}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(summary['pipeline'])}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
