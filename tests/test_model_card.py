"""The model card (pipeline/model_card.py): Model Card schema sections, limitations for small
slices, fairness rows, Markdown and HTML; and its config section's errors."""

import pytest
import yaml

from pipeline import model_card
from pipeline.config import load_config
from pipeline.errors import ConfigError

SLICES = [
    {"slice": "island=Biscoe", "example_count": 40, "metrics": {"accuracy": 0.97}},
    {
        "slice": "sex=female",
        "example_count": 12,
        "metrics": {"accuracy": 0.9, "fairness_indicators_metrics/false_positive_rate@0.5": 0.1},
    },
]


def _facts(**evaluation):
    return model_card.card(
        model={
            "name": "penguins",
            "family": "mlp",
            "task": "classification",
            "label": "species",
            "features": ["bill", "island"],
            "version": "Trainer execution 7",
            "hyperparameters": {"units": 8},
            "training": {"epochs": 3},
        },
        data={"train": 270, "eval": 74},
        evaluation={"blessed": True, "metrics": {"accuracy": 0.95}, "slices": SLICES, **evaluation},
        quantization={
            "served": "int8",
            "reason": "passed",
            "metric": "accuracy",
            "models": {
                "float": {
                    "size_bytes": 100,
                    "metrics": {"accuracy": 0.95},
                    "latency_ms": {"batch_1": 0.5},
                },
            },
        },
        explanations={
            "method": "integrated_gradients",
            "examples": 74,
            "baseline": "zeros",
            "global": [{"feature": "bill", "score": 0.3}],
        },
        considerations={"intended_use": "teaching", "users": "students", "out_of_scope": "field"},
        min_slice_examples=30,
    )


def test_the_card_has_the_schemas_sections_and_names_small_slices():
    facts = _facts()
    assert list(facts) == [
        "model_details",
        "model_parameters",
        "quantitative_analysis",
        "considerations",
    ]
    assert facts["considerations"]["limitations"] == [
        "slice sex=female has 12 eval examples (< 30): its metrics are too noisy to rely on"
    ]
    assert facts["quantitative_analysis"]["fairness"] == [
        {"slice": "sex=female", "metrics": {"false_positive_rate@0.5": 0.1}}
    ]
    text = model_card.markdown(facts)
    assert text.startswith("# Model card: penguins\n")
    for expected in (
        "- Version: Trainer execution 7",
        "| island=Biscoe | 40 | 0.97 |",
        "### Fairness",
        "| float | 100 | 0.95 | 0.5 |",
        "| bill | 0.3 |",
        "- Intended use: teaching",
        "270 training and 74 eval examples",
    ):
        assert expected in text
    assert "|attribution|" not in text  # a bar inside a cell would split the table
    page = model_card.html(facts)
    assert "<h1>Model card: penguins</h1>" in page
    assert "<tr><td>island=Biscoe</td><td>40</td><td>0.97</td></tr>" in page


def test_an_unblessed_model_says_so_among_its_limitations():
    facts = _facts(blessed=False, slices=[])
    assert facts["considerations"]["limitations"] == [
        "the model was not blessed (by the Evaluator or a slice gate); it was not meant to be "
        "pushed"
    ]
    assert "### Per slice" not in model_card.markdown(facts)


def test_the_slice_gates_slices_and_checks_make_the_table_and_the_caveats():
    """With the SliceGate's slices.json, the card lists its slices (an empty one with its
    note), its gate checks, and a failed gate or one with nothing to judge as caveats; the
    fairness rows still come from the Evaluator's slices."""
    gate_slices = [
        {"slice": "island=Biscoe", "example_count": 40, "metrics": {"accuracy": 0.97}},
        {
            "slice": "island=Dream",
            "example_count": 0,
            "metrics": {},
            "note": "no eval examples with this value",
        },
    ]
    gates = {
        "passed": False,
        "checks": [
            {
                "gate": "min_slice_metric",
                "metric": "accuracy",
                "threshold": 0.99,
                "min_examples": 10,
                "value": 0.97,
                "slice": "island=Biscoe",
                "passed": False,
            },
            {
                "gate": "max_slice_gap",
                "metric": "accuracy",
                "threshold": 0.1,
                "min_examples": 100,
                "value": None,
                "slice": None,
                "passed": True,
                "note": "no slice has 100 or more eval examples",
            },
        ],
    }
    facts = _facts(
        blessed=False,
        slices=gate_slices,
        slices_from="the SliceGate's slices.json",
        gates=gates,
        fairness_slices=SLICES,
    )
    assert facts["considerations"]["limitations"] == [
        "slice island=Dream has no eval examples (no eval examples with this value)",
        "slice gate min_slice_metric on accuracy (threshold 0.99) failed: 0.97 at island=Biscoe",
        "slice gate max_slice_gap on accuracy (threshold 0.1) judged nothing: no slice has 100 "
        "or more eval examples",
        "the model was not blessed (by the Evaluator or a slice gate); it was not meant to be "
        "pushed",
    ]
    assert facts["quantitative_analysis"]["fairness"] == [
        {"slice": "sex=female", "metrics": {"false_positive_rate@0.5": 0.1}}
    ]
    text = model_card.markdown(facts)
    for expected in (
        "Slices (from the SliceGate's slices.json):",
        "| island=Dream | 0 |  |",
        "### Slice gates",
        "| min_slice_metric | accuracy | 0.99 | 10 | 0.97 | island=Biscoe | False |",
    ):
        assert expected in text


def test_a_text_features_top_tokens_are_listed_per_class():
    facts = _facts()
    facts["quantitative_analysis"]["explanations"]["top_tokens"] = [
        {
            "feature": "text",
            "by_class": {
                "business": [{"token": "shares", "score": 0.5}, {"token": "|", "score": 0.25}]
            },
        }
    ]
    text = model_card.markdown(facts)
    assert "Top tokens of the text feature text per predicted class" in text
    assert "- business: shares (0.5), | (0.25)" in text
    assert "<li>business: shares (0.5), | (0.25)</li>" in model_card.html(facts)


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("model_card", {"min_slice_examples": 0}, "model_card.min_slice_examples: must be >= 1"),
        ("model_card", {"intended_use": 3}, "model_card.intended_use: expected str"),
        ("model_card", {"owner": "x"}, "model_card.owner: unknown key"),
        ("explanations", {"steps": 1}, "explanations.steps: must be >= 2"),
    ],
)
def test_bad_card_and_explanation_settings_name_the_key(
    tmp_path, repo_root, section, value, message
):
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    raw["schema_file"] = str(repo_root / "configs" / raw["schema_file"])
    raw[section] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_config(path)
