"""The report's figures: matplotlib, drawn to base64 PNGs that the page inlines."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

GREY, BLUE, ORANGE = "#9e9e9e", "#1f77b4", "#ff7f0e"


def png(figure) -> str:
    """The figure as a base64 PNG; closes it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def component_times(components: Mapping[str, Mapping[str, Any]], total: float) -> str:
    """Seconds per component; a cached one shows the seconds of the run that made its
    outputs (grey, hatched), so a cached rerun still shows what each step costs."""
    names = list(components)
    seconds, colours, hatches = [], [], []
    for name in names:
        entry = components[name]
        cached = entry.get("cached")
        seconds.append(
            entry.get("produced_seconds", entry["seconds"]) if cached else entry["seconds"]
        )
        colours.append(GREY if cached else BLUE)
        hatches.append("//" if cached else "")
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    bars = axes.barh(names[::-1], seconds[::-1], color=colours[::-1])
    for bar, hatch in zip(bars, hatches[::-1], strict=True):
        bar.set_hatch(hatch)
    axes.set_xlabel("seconds (grey, hatched: cached; the bar is the run that made it)")
    axes.set_title(f"Components, {total:.0f}s in this run")
    return png(figure)


def tuner_trials(tuner: Mapping[str, Any]) -> str:
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
    return png(figure)


def training_curves(history: Mapping[str, Sequence[float]], best_epoch: int | None) -> str:
    """One panel per logged quantity (loss first), training and validation together."""
    names = sorted(
        {k.removeprefix("val_") for k in history if k != "lr"}, key=lambda k: k != "loss"
    )
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key)
        if best_epoch:
            ax.axvline(best_epoch, color=GREY, linewidth=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend(fontsize=7)
    return png(figure)


_QUANTIZED = ("float", "int8", "float_tflite", "int8_tflite")


def quantization(report: Mapping[str, Any]) -> str:
    """Size, batch-1 latency and the primary metric of the float and quantized models."""
    names = [n for n in _QUANTIZED if n in report]
    metric = report["metric"]
    panels = (
        ("size (KiB)", [report[n]["size_bytes"] / 1024 for n in names]),
        ("batch-1 latency (ms)", [report[n]["latency_ms"]["batch_1"] for n in names]),
        (f"{metric} (eval)", [report[n]["metrics"].get(metric, float("nan")) for n in names]),
    )
    figure, axes = plt.subplots(1, 3, figsize=(11, 3))
    for i, (ax, (title, values)) in enumerate(zip(axes, panels, strict=True)):
        ax.bar(names, values, color=[BLUE, ORANGE, "#aec7e8", "#ffbb78"][: len(names)])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
        if i < 2:
            ax.set_yscale("log")
    figure.suptitle(f"Quantization: served {report['served']}", y=1.04)
    return png(figure)


def confusion_matrix(confusion: Mapping[str, Any]) -> str:
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
    return png(figure)


def _curve_sets(curves: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """{name: {"roc", "pr", "calibration"}}: one unnamed set, or one per class."""
    if any(k in curves for k in ("roc", "pr", "calibration")):
        return {"": curves}
    return {k: v for k, v in curves.items() if isinstance(v, Mapping)}


def evaluation_curves(curves: Mapping[str, Any]) -> str | None:
    """ROC, precision-recall and calibration panels (one line per class if per class)."""
    sets = _curve_sets(curves)
    panels = [
        ("roc", "ROC", "fpr", "tpr", "false positive rate", "true positive rate"),
        ("pr", "Precision-recall", "recall", "precision", "recall", "precision"),
        ("calibration", "Calibration", "predicted", "observed", "mean predicted", "observed rate"),
    ]
    present = [p for p in panels if any(p[0] in s for s in sets.values())]
    if not present:
        return None
    figure, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.6), squeeze=False)
    for ax, (key, title, x, y, xlabel, ylabel) in zip(axes[0], present, strict=True):
        for name, curve_set in sets.items():
            if key in curve_set:
                ax.plot(
                    curve_set[key][x], curve_set[key][y], ".-", markersize=3, label=name or None
                )
        if key in ("roc", "calibration"):
            ax.plot([0, 1], [0, 1], ":", color=GREY)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
        if len(sets) > 1:
            ax.legend(fontsize=7)
    return png(figure)


def residuals(histogram: Mapping[str, Sequence[float]]) -> str:
    """The regression's residual distribution (label − prediction) on the eval split."""
    edges, counts = np.asarray(histogram["edges"], float), np.asarray(histogram["counts"], float)
    figure, axes = plt.subplots(figsize=(7, 3))
    axes.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=BLUE, edgecolor="white")
    axes.axvline(0.0, color=GREY)
    axes.set(title="Residuals (eval split)", xlabel="label − prediction", ylabel="examples")
    return png(figure)


def importance(scores: Sequence[Mapping[str, Any]]) -> str:
    """Global importance: mean |attribution| per raw feature."""
    names = [s["feature"] for s in scores][::-1]
    values = [s["score"] for s in scores][::-1]
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    axes.barh(names, values, color=BLUE)
    axes.set(
        title="Integrated gradients: mean |attribution| per feature", xlabel="mean |attribution|"
    )
    return png(figure)


def _grid(count: int, columns: int = 3):
    rows = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return figure, list(axes.flat)


def numeric_histograms(splits: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Train vs eval histograms (share of examples per bucket) of each numeric feature."""
    names = sorted(
        {n for s in splits.values() for n, f in s["features"].items() if f["kind"] == "numeric"}
    )
    if not names:
        return None
    figure, axes = _grid(len(names))
    for ax, name in zip(axes, names, strict=False):
        for (split, stats), colour in zip(splits.items(), (BLUE, ORANGE), strict=False):
            feature = stats["features"].get(name, {})
            histogram = feature.get("histogram", {})
            if not histogram.get("counts"):
                continue
            edges, counts = np.asarray(histogram["edges"]), np.asarray(histogram["counts"])
            share = counts / max(counts.sum(), 1.0)
            ax.stairs(share, edges, label=split, color=colour, fill=split == "train", alpha=0.6)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return png(figure)


def _tick_label(value: Any) -> str:
    # A value is data, not markup: a "$" would start matplotlib's mathtext (a whole text
    # feature's value can hold several), and a long value would swamp the axis.
    text = str(value)
    text = text if len(text) <= 30 else text[:29] + "…"
    return text.replace("$", r"\$")


def categorical_values(splits: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Train vs eval share of each categorical feature's most frequent values."""
    names = sorted(
        {n for s in splits.values() for n, f in s["features"].items() if f["kind"] == "categorical"}
    )
    if not names:
        return None
    figure, axes = _grid(len(names))
    for ax, name in zip(axes, names, strict=False):
        values = []
        for stats in splits.values():
            values += [v["value"] for v in stats["features"].get(name, {}).get("top_values", [])]
        values = list(dict.fromkeys(values))[:10]
        width = 0.8 / max(len(splits), 1)
        for i, ((split, stats), colour) in enumerate(
            zip(splits.items(), (BLUE, ORANGE), strict=False)
        ):
            feature = stats["features"].get(name, {})
            counts = {v["value"]: v["count"] for v in feature.get("top_values", [])}
            total = max(feature.get("present", 0), 1)
            ax.bar(
                np.arange(len(values)) + i * width,
                [counts.get(v, 0.0) / total for v in values],
                width,
                label=split,
                color=colour,
            )
        ticks = [_tick_label(v) for v in values]
        ax.set_xticks(np.arange(len(values)) + 0.4 - width / 2, ticks, rotation=30, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return png(figure)
