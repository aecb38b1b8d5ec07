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
        "the Evaluator did not bless this model; it was not meant to be pushed"
    ]
    assert "### Per slice" not in model_card.markdown(facts)


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
