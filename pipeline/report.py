"""The HTML report of a run: one self-contained page (inline PNGs, no scripts, no network)
rendered from summary.json; every section says plainly when the run has nothing for it.

Figures are in `pipeline/report_figures.py`, the data statistics' reading in
`pipeline/report_data.py`.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline import report_figures as figures

_PER_CLASS = ("precision", "recall", "f1_score", "auc")
_SECTIONS = (
    ("overview", "Run"),
    ("data", "Data"),
    ("tuning", "Tuning"),
    ("training", "Training"),
    ("evaluation", "Evaluation"),
    ("fairness", "Fairness"),
    ("explanations", "Explanations"),
    ("quantization", "Quantization and serving latency"),
    ("model-card", "Model card"),
    ("continuous-training", "Continuous training"),
)


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _img(data: str | None, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">' if data else ""


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return _esc(value)


def _table(rows: Mapping[str, Any]) -> str:
    cells = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _grid(header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        f"<tr{f' class={c!r}' if c else ''}>"
        + "".join(f"<td>{_number(v)}</td>" for v in row)
        + "</tr>"
        for row, c in zip(rows, list(classes) + [""] * (len(rows) - len(classes)), strict=True)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _absent(what: str) -> str:
    return f'<p class="absent">{_esc(what)}</p>'


def _overview(summary: Mapping[str, Any]) -> list[str]:
    evaluation = summary.get("evaluation") or {}
    pushed = summary.get("pushed")
    facts = {
        "status": summary["status"],
        "seconds": f"{summary['seconds']:.1f}",
        "blessed": evaluation.get("blessed", "not evaluated"),
        "pushed": f"{pushed['model_dir']} (version {pushed['version']})" if pushed else "nothing",
    }
    parts = [_table(facts)]
    if summary.get("error"):
        parts.append(f"<pre>{_esc(summary['error'])}</pre>")
    if summary.get("components"):
        parts.append(
            _img(
                figures.component_times(summary["components"], summary["seconds"]),
                "component times",
            )
        )
    return parts


def _data(summary: Mapping[str, Any]) -> list[str]:
    return (
        _spans(summary)
        + _statistics(summary)
        + [
            f"<h3>Text {_esc(feature)}</h3>{_text_table(stats)}"
            for feature, stats in (summary.get("text") or {}).items()
        ]
    )


def _spans(summary: Mapping[str, Any]) -> list[str]:
    """With data.spans: each span's role in the run with its rows, and the span drift."""
    section = summary.get("spans")
    if not section:
        return []
    roles: dict[int, list[str]] = {}
    rows: dict[int, Mapping[str, int]] = {}
    entries = [("ingested", e) for e in section["ingested"]]
    entries += [("trained", e) for e in section["trained"] or []]
    if section["evaluated"]:
        entries.append(("evaluated (blessing)", section["evaluated"]))
    for role, entry in entries:
        roles.setdefault(entry["span"], []).append(role)
        rows[entry["span"]] = entry["rows"]
    table = _grid(
        ["span", "this run", "train rows", "eval rows"],
        [
            [n, ", ".join(roles[n]), rows[n].get("train", "-"), rows[n].get("eval", "-")]
            for n in sorted(roles)
        ],
    )
    parts = [
        f"<h3>Spans</h3><p>On disk: {_esc(section['on_disk'])}; training window: the latest"
        f" {section['window']}.</p>{table}"
    ]
    drift = section.get("drift")
    if drift:
        parts.append(
            f"<p>Span {drift['span']} against span {drift['previous_span']}"
            f" (data.spans.drift: {_esc(drift['action'])}):</p>"
            + _grid(
                ["feature", "statistic", "value", "threshold", "drifted"],
                [
                    [name, f["statistic"], f["value"], f["threshold"], f["drifted"]]
                    for name, f in drift["features"].items()
                ],
                ["fail" if f["drifted"] else "" for f in drift["features"].values()],
            )
        )
    return parts


def _statistics(summary: Mapping[str, Any]) -> list[str]:
    statistics = summary.get("statistics")
    if not statistics or not statistics.get("splits"):
        return [_absent("No data statistics in this run (StatisticsGen did not run).")]
    splits = statistics["splits"]
    names = sorted({n for s in splits.values() for n in s["features"]})
    header = ["feature", "kind"]
    for split in splits:
        header += [f"{split} missing", f"{split} mean ± std / distinct"]
    rows = []
    for name in names:
        row = [
            name,
            next(s["features"][name]["kind"] for s in splits.values() if name in s["features"]),
        ]
        for stats in splits.values():
            feature = stats["features"].get(name)
            if feature is None:
                row += ["absent", ""]
                continue
            row.append(f"{feature['missing']} of {feature['missing'] + feature['present']}")
            if feature["kind"] == "numeric":
                row.append(f"{feature['mean']:.3g} ± {feature['std']:.3g}")
            else:
                row.append(feature.get("unique", ""))
        rows.append(row)
    counts = ", ".join(f"{split} {s['examples']} examples" for split, s in splits.items())
    parts = [f"<p>{_esc(counts)}</p>", _grid(header, rows)]
    parts.append(_img(figures.numeric_histograms(splits), "numeric histograms, train vs eval"))
    parts.append(_img(figures.categorical_values(splits), "categorical values, train vs eval"))
    anomalies = {k: v for k, v in statistics.get("anomalies", {}).items() if v}
    if anomalies:
        items = "".join(
            f"<li>{_esc(s)}: {_esc(a)}</li>" for s, found in anomalies.items() for a in found
        )
        parts.append(f"<h3>Anomalies</h3><ul>{items}</ul>")
    else:
        parts.append("<p>No anomalies against the schema.</p>")
    return parts


def _tuning(summary: Mapping[str, Any]) -> list[str]:
    tuner = summary.get("tuner")
    if not tuner or not tuner.get("trial_scores"):
        return [_absent("No tuning trials in this run.")]
    return [
        _img(figures.tuner_trials(tuner), "tuner trials"),
        _table(tuner["best_hyperparameters"]),
    ]


def _training(summary: Mapping[str, Any]) -> list[str]:
    training = summary.get("training")
    if not training:
        return [_absent("No training record in this run.")]
    parts = [_table({k: v for k, v in training.items() if k != "history"})]
    history = training.get("history")
    if history:
        parts.append(
            _img(figures.training_curves(history, training.get("best_epoch")), "training curves")
        )
    else:
        parts.append(_absent("No per-epoch history (a Trainer from before it was recorded)."))
    return parts


def _per_class_table(per_class: Mapping[str, Mapping[str, float]]) -> str:
    header = "".join(f"<th>{name}</th>" for name in ("class", *_PER_CLASS, "examples"))
    rows = "".join(
        f"<tr><td>{_esc(name)}</td>"
        + "".join(f"<td>{metrics[m]:.4f}</td>" if m in metrics else "<td></td>" for m in _PER_CLASS)
        + f"<td>{metrics.get('support', '')}</td></tr>"
        for name, metrics in per_class.items()
    )
    return f"<table><tr>{header}</tr>{rows}</table>"


def _slices(evaluation: Mapping[str, Any]) -> list[str]:
    slices = evaluation.get("slices") or []
    if not slices:
        return [_absent("No slices were evaluated.")]
    names = sorted({m for s in slices for m in s.get("metrics", {}) if "/" not in m})[:6]
    failing = {
        c.get("slice")
        for c in (evaluation.get("gates") or {}).get("checks", [])
        if not c.get("passed")
    }
    rows, classes = [], []
    for entry in slices:
        label = f"{entry['feature']}={entry['value']}"
        rows.append(
            [
                label,
                entry["example_count"],
                *(entry["metrics"].get(n, "") for n in names),
                entry.get("note", ""),
            ]
        )
        classes.append("fail" if label in failing or entry["value"] in failing else "")
    return ["<h3>Per slice</h3>", _grid(["slice", "examples", *names, "note"], rows, classes)]


def _gates(evaluation: Mapping[str, Any]) -> list[str]:
    gates = evaluation.get("gates")
    if not gates:
        return []
    rows = [
        [
            c["gate"],
            c["metric"],
            c["threshold"],
            c["min_examples"],
            c["value"],
            c.get("slice") or "",
            "passed" if c["passed"] else "FAILED",
        ]
        for c in gates.get("checks", [])
    ]
    verdict = "passed" if gates.get("passed") else "FAILED: the model is not blessed"
    return [
        f"<h3>Gates: {_esc(verdict)}</h3>",
        _grid(["gate", "metric", "threshold", "min examples", "value", "slice", "result"], rows),
    ]


def _baseline(evaluation: Mapping[str, Any]) -> list[str]:
    baseline = evaluation.get("baseline")
    if not baseline:
        if evaluation.get("baseline_compared"):
            return ["<p>Compared with the last blessed model (the <code>_diff</code> metrics).</p>"]
        return ["<p>No baseline: nothing blessed yet to compare with.</p>"]
    rows = [
        [name, v["candidate"], v["baseline"], v["diff"]] for name, v in sorted(baseline.items())
    ]
    return [
        "<h3>Against the served model</h3>",
        _grid(["metric", "candidate", "baseline", "difference"], rows),
    ]


def _evaluation(summary: Mapping[str, Any]) -> list[str]:
    evaluation = summary.get("evaluation")
    if not evaluation:
        return [_absent("No evaluation in this run.")]
    metrics = {k: f"{v:.4f}" for k, v in sorted(evaluation["metrics"].items()) if "/" not in k}
    parts = [f"<p>Blessed: <b>{_esc(evaluation['blessed'])}</b></p>", _table(metrics)]
    parts += _baseline(evaluation)
    if evaluation.get("confusion_matrix"):
        parts.append(
            _img(figures.confusion_matrix(evaluation["confusion_matrix"]), "confusion matrix")
        )
    if evaluation.get("per_class"):
        parts += ["<h3>Per class</h3>", _per_class_table(evaluation["per_class"])]
    curves = evaluation.get("curves")
    if curves:
        scope = curves.get("scope") or curves.get("note") if isinstance(curves, Mapping) else None
        parts.append(
            _img(figures.evaluation_curves(curves), "ROC, precision-recall and calibration")
        )
        if scope:
            parts.append(f"<p>{_esc(scope)}</p>")
    if evaluation.get("residuals"):
        parts.append(_img(figures.residuals(evaluation["residuals"]), "residuals"))
    parts += _gates(evaluation)
    if "slices" in evaluation:
        parts += _slices(evaluation)
    return parts


def _fairness(summary: Mapping[str, Any]) -> list[str]:
    fairness = (summary.get("evaluation") or {}).get("fairness")
    if not fairness:
        return [_absent("No fairness metrics: no sensitive feature is configured.")]
    thresholds = ", ".join(str(t) for t in fairness.get("thresholds", []))
    slices = fairness.get("slices", [])
    names = sorted({m for s in slices for m in s.get("metrics", {})})
    rows = [
        [s["value"], s["example_count"], *(s["metrics"].get(n, "") for n in names)] for s in slices
    ]
    return [
        f"<p>By {_esc(fairness['feature'])}, at decision threshold(s) {_esc(thresholds)}.</p>",
        _grid([fairness["feature"], "examples", *names], rows),
    ]


def _inline_png(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()
    except OSError:
        return None


def _explanations(summary: Mapping[str, Any]) -> list[str]:
    explanations = summary.get("explanations")
    if not explanations:
        return [
            _absent(
                "No explanations in this run (explanations.enabled is false, or it did not run)."
            )
        ]
    if not explanations["global"]:
        return [_absent(explanations.get("note") or "The explanations hold no attributions.")]
    completeness = explanations.get("completeness", {})
    parts = [
        f"<p>{_esc(explanations['method'])} on {explanations['examples']} eval examples, "
        f"{explanations.get('steps', '')} steps; explained: {_esc(explanations.get('explained_output', ''))}; "
        f"baseline: {_esc(explanations['baseline'])}. Completeness (|Σ attributions − (f(x) − f(baseline))|): "
        f"max {_esc(completeness.get('max_abs_error'))}, mean {_esc(completeness.get('mean_abs_error'))}.</p>",
        _img(figures.importance(explanations["global"]), "global feature importance"),
    ]
    examples = explanations.get("per_example", [])[:10]
    if examples:
        names = [g["feature"] for g in explanations["global"]]
        rows = [
            [e["target"], e["output"], *(e["attributions"].get(n, "") for n in names)]
            for e in examples
        ]
        parts += ["<h3>Examples</h3>", _grid(["explained", "output", *names], rows)]
    for path in explanations.get("heatmaps", []):
        parts.append(_img(_inline_png(path), f"heatmap {os.path.basename(path)}"))
    for entry in explanations.get("text", []):
        parts += _text_explanations(entry)
    parts.append(f"<p>Artifact: <code>{_esc(explanations['artifact'])}</code></p>")
    return parts


# Text examples shown with their tokens coloured by attribution.
_TEXT_EXAMPLES_SHOWN = 4


def _token_span(token: Mapping[str, Any], scale: float) -> str:
    """A token on a green (toward the explained class) or red (away) background whose
    strength is |score| relative to the example's largest."""
    score = float(token["score"])
    alpha = min(1.0, abs(score) / scale) if scale else 0.0
    colour = "0,150,60" if score >= 0 else "210,40,40"
    return (
        f"<span class='token' style='background:rgba({colour},{alpha:.2f})' "
        f"title='{score:+.4g}'>{_esc(token['token'])}</span>"
    )


def _text_explanations(entry: Mapping[str, Any]) -> list[str]:
    """A text feature's top tokens per predicted class, and a few examples coloured by IG."""
    feature = entry["feature"]
    by_class = entry.get("top_tokens", {})
    parts = [f"<h3>Text feature {_esc(feature)}: top tokens</h3>"]
    if by_class:
        rows = [
            [name, ", ".join(f"{t['token']} ({t['score']:.3g})" for t in tokens)]
            for name, tokens in by_class.items()
        ]
        parts.append(_grid(["predicted", "tokens that pushed most toward it (summed IG)"], rows))
    parts.append(
        "<p>Tokens coloured by attribution: green toward the predicted class, red away from "
        "it, stronger for larger |IG| (hover for the score).</p>"
    )
    for example in entry.get("examples", [])[:_TEXT_EXAMPLES_SHOWN]:
        sequence = example.get("sequence", [])
        scale = max((abs(float(t["score"])) for t in sequence), default=0.0)
        spans = " ".join(_token_span(t, scale) for t in sequence)
        parts.append(
            f"<p class='text-example'><b>label {_esc(example.get('label'))}, predicted "
            f"{_esc(example.get('predicted'))}</b>: {spans}</p>"
        )
    return parts


def _quantization(summary: Mapping[str, Any]) -> list[str]:
    quantization = summary.get("quantization")
    if not quantization or not all(n in quantization for n in ("float", "int8")):
        return [_absent("No quantization in this run, so no latency was measured.")]
    names = [n for n in ("float", "int8", "float_tflite", "int8_tflite") if n in quantization]
    metric = quantization["metric"]
    rows = [
        [
            n,
            quantization[n]["size_bytes"],
            quantization[n]["metrics"].get(metric, ""),
            quantization[n]["latency_ms"].get("batch_1", ""),
            quantization[n]["latency_ms"].get("batch_256", ""),
        ]
        for n in names
    ]
    return [
        _img(figures.quantization(quantization), "quantization trade-off"),
        f"<p>{_esc(quantization.get('reason', ''))}</p>",
        _grid(["model", "bytes", metric, "latency batch 1 (ms)", "latency batch 256 (ms)"], rows),
    ]


def _model_card(summary: Mapping[str, Any]) -> list[str]:
    card = summary.get("model_card")
    if not card:
        return [_absent("No model card in this run (the ModelCard component did not run).")]
    parts = [
        f'<p><a href="file://{_esc(card["html"])}">model_card.html</a> · '
        f'<a href="file://{_esc(card["markdown"])}">model_card.md</a> (also in the pushed model, '
        "assets.extra/model_card.md)</p>"
    ]
    try:
        with open(card["facts"]) as f:
            facts = json.load(f)
    except (OSError, ValueError):
        return parts
    considerations = facts.get("considerations", {})
    parts.append(
        _table({k: considerations.get(k, "") for k in ("intended_use", "users", "out_of_scope")})
    )
    limitations = considerations.get("limitations") or ["none recorded"]
    parts.append(
        "<h3>Limitations</h3><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in limitations) + "</ul>"
    )
    return parts


def _continuous_training(summary: Mapping[str, Any]) -> list[str]:
    """Where the Trainer started (`warm_start`) and, for a run a monitor started, the drift
    behind it (`monitoring`: pipeline/retrain.py) with the drifted features' figures."""
    warm, monitoring = summary.get("warm_start"), summary.get("monitoring")
    if not warm and not monitoring:
        return [_absent("No warm start and no monitor trigger recorded for this run.")]
    parts = []
    if warm:
        skipped = warm.get("layers_skipped") or {}
        facts = {
            "warm start from": warm["from"] or "nothing: trained from scratch",
            "why": warm["reason"],
        }
        if "layers_loaded" in warm:
            facts["layers loaded"] = ", ".join(warm["layers_loaded"]) or "none"
            facts["layers trained fresh"] = (
                "; ".join(f"{name} ({why})" for name, why in skipped.items()) or "none"
            )
        parts += ["<h3>Warm start</h3>", _table(facts)]
    if monitoring:
        parts += _monitoring(monitoring)
    else:
        parts.append(_absent("Started by hand, not by a monitor."))
    return parts


def _monitoring(monitoring: Mapping[str, Any]) -> list[str]:
    drift = monitoring["drift"]
    report = os.path.join(os.path.dirname(monitoring["drift_file"]), "report.html")
    features = drift["features"]
    rows = [
        [
            name,
            f["role"],
            f["statistic"],
            f["value"],
            f["threshold"],
            "drift" if f["drifted"] else "ok",
        ]
        for name, f in features.items()
    ]
    classes = ["fail" if f["drifted"] else "" for f in features.values()]
    parts = [
        "<h3>Why this run: the monitor</h3>",
        f"<p>Trigger: <b>{_esc(monitoring['trigger'])}</b>. The served version "
        f"{_esc(drift['served_version'])} against {_esc(drift['serving']['rows'])} serving rows "
        f"from <code>{_esc(drift['serving']['source'])}</code>; "
        f'<a href="file://{_esc(report)}">the drift report</a>, '
        f'<a href="file://{_esc(monitoring["drift_file"])}">drift.json</a>.</p>',
        _grid(["feature", "role", "statistic", "value", "threshold", "result"], rows, classes),
    ]
    for name in drift["drifted_features"]:
        figure = features[name].get("figure")
        parts.append(_img(_inline_png(figure) if figure else None, f"drift of {name}"))
    return parts


_RENDERERS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "overview": _overview,
    "data": _data,
    "tuning": _tuning,
    "training": _training,
    "evaluation": _evaluation,
    "fairness": _fairness,
    "explanations": _explanations,
    "quantization": _quantization,
    "model-card": _model_card,
    "continuous-training": _continuous_training,
}
_STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left;font-size:14px}"
    "img{max-width:100%;display:block;margin:1em 0}.absent{color:#777;font-style:italic}"
    "tr.fail td{background:#fde0dc}nav a{margin-right:1em}"
    ".text-example{line-height:1.8}.token{padding:1px 2px;border-radius:2px}"
)


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
    """The report as one self-contained HTML page.

    Args:
      summary: the run summary (summary.json's content).

    Returns:
      The page: run overview and component timing, data statistics, tuning, training
      curves, evaluation (slices, gates, curves), fairness, explanations, quantization and
      latency, model card, continuous training (warm start, the monitor's trigger); each
      section says so when the run has nothing for it.
    """
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title in _SECTIONS)
    parts = [
        f"<h1>Pipeline {_esc(summary['pipeline'])}</h1>",
        f"<p>Run {_esc(summary['run_id'])}: <b>{_esc(summary['status'])}</b> in {summary['seconds']:.1f}s</p>",
        f"<nav>{nav}</nav>",
    ]
    for key, title in _SECTIONS:
        parts.append(
            f'<section id="{key}"><h2>{title}</h2>{"".join(_RENDERERS[key](summary))}</section>'
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(summary['pipeline'])}</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
