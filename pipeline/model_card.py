"""The model card: facts gathered from a run's artifacts and the config, as Markdown and HTML.

The sections and field names follow Google's Model Card schema (model_details,
model_parameters, quantitative_analysis, considerations); the Model Card Toolkit is
archived, so the card is rendered here from its own template. `card(...)` builds the facts
(a JSON-ready dict, also saved as model_card.json); `markdown` and `html` render them.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Mapping, Sequence
from typing import Any

_FAIRNESS_PREFIX = "fairness_indicators_metrics/"


def limitations(
    slices: Sequence[Mapping[str, Any]],
    min_examples: int,
    blessed: bool | None,
    gates: Mapping[str, Any] | None = None,
) -> list[str]:
    """Caveats a reader must know: small or empty slices, slice gates that failed or had no
    slice large enough to judge, a model that was not blessed.

    Args:
      slices: [{"slice", "example_count", "note"?}].
      min_examples: slices with fewer eval examples are too small to rely on.
      blessed: the blessing's verdict (None: unknown).
      gates: the SliceGate's {"passed", "checks"} (None without a SliceGate result).
    """
    notes = []
    for entry in slices:
        count = entry.get("example_count")
        if count == 0 and entry.get("note"):
            notes.append(f"slice {entry['slice']} has no eval examples ({entry['note']})")
        elif count is not None and count < min_examples:
            notes.append(
                f"slice {entry['slice']} has {count} eval examples (< {min_examples}): its "
                "metrics are too noisy to rely on"
            )
    for check in (gates or {}).get("checks", []):
        gate = f"slice gate {check['gate']} on {check['metric']} (threshold {check['threshold']})"
        if not check["passed"]:
            notes.append(f"{gate} failed: {_number(check['value'])} at {check['slice']}")
        elif check.get("note"):
            notes.append(f"{gate} judged nothing: {check['note']}")
    if blessed is False:
        notes.append(
            "the model was not blessed (by the Evaluator or a slice gate); it was not meant "
            "to be pushed"
        )
    return notes


def card(
    *,
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    quantization: Mapping[str, Any] | None,
    explanations: Mapping[str, Any] | None,
    considerations: Mapping[str, Any],
    min_slice_examples: int,
) -> dict[str, Any]:
    """The model card's facts, by Model Card schema section.

    Args:
      model: name, family, task, version, features, label, hyperparameters, training
        (the Trainer's training.json without the per-epoch history).
      data: {"train": examples, "eval": examples, "source": ...}.
      evaluation: {"blessed", "metrics" (overall), "slices": [{"slice", "example_count",
        "metrics", "note"?}]}, and from a SliceGate "slices_from" (where the slices were
        read), "gates" ({"passed", "checks"}) and "fairness_slices" (slices whose metrics
        hold Fairness Indicators', when `slices` do not).
      quantization: the Quantization report (None without it).
      explanations: explanations.json (None without it).
      considerations: intended_use, users, out_of_scope from the config.
      min_slice_examples: slices with fewer eval examples are listed as limitations.

    Returns:
      {"model_details", "model_parameters", "quantitative_analysis", "considerations"}.
    """
    slices = list(evaluation.get("slices", []))
    return {
        "model_details": {
            "name": model["name"],
            "overview": f"A {model['task']} model ({model['family']} family) predicting "
            f"{model['label']} from {', '.join(model['features'])}.",
            "version": model.get("version"),
        },
        "model_parameters": {
            "model_architecture": model["family"],
            "hyperparameters": dict(model.get("hyperparameters") or {}),
            "training": dict(model.get("training") or {}),
            "input_format": "raw features " + ", ".join(model["features"]),
            "output_format": "class probabilities"
            if model["task"] == "classification"
            else "a regression value",
            "data": dict(data),
        },
        "quantitative_analysis": {
            "blessed": evaluation.get("blessed"),
            "performance_metrics": dict(evaluation.get("metrics", {})),
            "slices": slices,
            "slices_from": evaluation.get("slices_from"),
            "gates": evaluation.get("gates"),
            "fairness": _fairness(evaluation.get("fairness_slices", slices)),
            "quantization": _quantization(quantization),
            "explanations": _explanations(explanations),
        },
        "considerations": {
            "intended_use": considerations["intended_use"],
            "users": considerations["users"],
            "out_of_scope": considerations["out_of_scope"],
            "limitations": limitations(
                slices, min_slice_examples, evaluation.get("blessed"), evaluation.get("gates")
            ),
        },
    }


def _fairness(slices: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fairness Indicators' metrics per slice, where the evaluation computed them."""
    rows = []
    for entry in slices:
        metrics = {
            k.removeprefix(_FAIRNESS_PREFIX): v
            for k, v in entry.get("metrics", {}).items()
            if k.startswith(_FAIRNESS_PREFIX)
        }
        if metrics:
            rows.append({"slice": entry["slice"], "metrics": metrics})
    return rows


def _quantization(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return None
    metric = report.get("metric")
    return {
        "served": report.get("served"),
        "reason": report.get("reason"),
        "metric": metric,
        "models": {
            name: {
                "size_bytes": entry.get("size_bytes"),
                metric: entry.get("metrics", {}).get(metric),
                "latency_ms_batch_1": entry.get("latency_ms", {}).get("batch_1"),
            }
            for name, entry in report.get("models", {}).items()
        },
    }


def _explanations(explanations: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not explanations:
        return None
    return {
        "method": explanations["method"],
        "examples": explanations["examples"],
        "baseline": explanations["baseline"],
        "global": explanations["global"],
        "top_tokens": [
            {"feature": entry["feature"], "by_class": entry.get("top_tokens", {})}
            for entry in explanations.get("text", [])
        ],
    }


def _number(value: Any) -> str:
    # Four significant digits: an L2 factor of 2e-06 must not read as 0.
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _rows(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(v) for v in row) + " |" for row in rows]
    return lines


def _top_token_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per text feature, a list item per predicted class: the tokens that pushed most
    toward it. A list, not a table: a token may be a `|`."""
    lines = []
    for entry in entries:
        lines += [
            "",
            f"Top tokens of the text feature {entry['feature']} per predicted class "
            "(summed attribution over the explained examples):",
            "",
        ]
        lines += [
            f"- {name}: " + ", ".join(f"{t['token']} ({_number(t['score'])})" for t in tokens)
            for name, tokens in entry["by_class"].items()
        ]
    return lines


def markdown(facts: Mapping[str, Any]) -> str:
    """The card as Markdown."""
    details, params = facts["model_details"], facts["model_parameters"]
    analysis, considerations = facts["quantitative_analysis"], facts["considerations"]
    lines = [f"# Model card: {details['name']}", "", details["overview"], ""]
    lines += ["## Model details", "", f"- Version: {details['version']}"]
    lines += [f"- Architecture: {params['model_architecture']}"]
    lines += [f"- Input: {params['input_format']}", f"- Output: {params['output_format']}"]
    data = params["data"]
    lines += [f"- Data: {data.get('train')} training and {data.get('eval')} eval examples", ""]
    lines += ["## Model parameters", ""]
    lines += _rows(("hyperparameter", "value"), sorted(params["hyperparameters"].items()))
    lines += ["", "## Quantitative analysis", "", f"Blessed: {analysis['blessed']}", ""]
    lines += _rows(("metric", "value"), sorted(analysis["performance_metrics"].items()))
    if analysis["slices"]:
        names = sorted({m for s in analysis["slices"] for m in s.get("metrics", {})})
        names = [n for n in names if not n.startswith(_FAIRNESS_PREFIX)][:6]
        source = f" (from {analysis['slices_from']})" if analysis.get("slices_from") else ""
        lines += ["", "### Per slice", "", f"Slices{source}:", ""]
        lines += _rows(
            ("slice", "examples", *names),
            [
                (s["slice"], s.get("example_count"), *(s["metrics"].get(n, "") for n in names))
                for s in analysis["slices"]
            ],
        )
    gates = analysis.get("gates")
    if gates and gates.get("checks"):
        lines += ["", "### Slice gates", "", f"Passed: {gates['passed']}", ""]
        lines += _rows(
            ("gate", "metric", "threshold", "min examples", "value", "slice", "passed"),
            [
                (
                    c["gate"],
                    c["metric"],
                    c["threshold"],
                    c["min_examples"],
                    "" if c["value"] is None else c["value"],
                    c["slice"] or "",
                    c["passed"],
                )
                for c in gates["checks"]
            ],
        )
    if analysis["fairness"]:
        names = sorted({m for row in analysis["fairness"] for m in row["metrics"]})
        lines += ["", "### Fairness", ""]
        lines += _rows(
            ("slice", *names),
            [(r["slice"], *(r["metrics"].get(n, "") for n in names)) for r in analysis["fairness"]],
        )
    quantization = analysis["quantization"]
    if quantization:
        lines += [
            "",
            "### Quantization trade-off",
            "",
            f"Served: {quantization['served']} ({quantization['reason']})",
            "",
        ]
        lines += _rows(
            ("model", "size (bytes)", quantization["metric"], "latency batch 1 (ms)"),
            [
                (name, m["size_bytes"], m[quantization["metric"]], m["latency_ms_batch_1"])
                for name, m in quantization["models"].items()
            ],
        )
    explanations = analysis["explanations"]
    if explanations:
        lines += [
            "",
            "### Explanations",
            "",
            f"{explanations['method']} on "
            f"{explanations['examples']} eval examples; baseline: {explanations['baseline']}.",
            "",
        ]
        lines += _rows(
            ("feature", "mean absolute attribution"),
            [(g["feature"], g["score"]) for g in explanations["global"]],
        )
        lines += _top_token_lines(explanations.get("top_tokens", []))
    lines += ["", "## Considerations", ""]
    lines += [f"- Intended use: {considerations['intended_use']}"]
    lines += [f"- Users: {considerations['users']}"]
    lines += [f"- Out of scope: {considerations['out_of_scope']}", "", "### Limitations", ""]
    lines += [f"- {note}" for note in considerations["limitations"]] or ["- none recorded"]
    return "\n".join(lines) + "\n"


def html(facts: Mapping[str, Any]) -> str:
    """The card as one HTML page: its Markdown tables and lists as HTML."""
    body, in_table = [], False
    for line in markdown(facts).splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [html_lib.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            if not in_table:
                body.insert(len(body) - 1, "<table>")
            in_table = True
            continue
        if line.startswith("|---"):
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html_lib.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html_lib.escape(line[2:])}</li>")
        elif line:
            body.append(f"<p>{html_lib.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    title = html_lib.escape(facts["model_details"]["name"])
    style = "body{font-family:sans-serif;max-width:900px;margin:2em auto}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Model card: {title}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
