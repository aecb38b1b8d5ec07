"""report.html from a hand-made summary holding every key of issue #13's contract: each
section renders its figures and tables, and says so plainly when the run has nothing for it."""

import base64
import io
import re

import matplotlib.image
import numpy as np

from pipeline import report


def _png_file(tmp_path):
    path = tmp_path / "heat.png"
    matplotlib.image.imsave(path, np.random.default_rng(0).random((32, 32)))
    return str(path)


def _summary(tmp_path):
    card = tmp_path / "model_card.json"
    card.write_text(
        '{"considerations": {"intended_use": "teaching", "users": "students", '
        '"out_of_scope": "field work", "limitations": ["slice island=Torgersen has 9 eval examples"]}}'
    )
    histogram = {"edges": [0.0, 1.0, 2.0, 3.0], "counts": [3.0, 5.0, 2.0]}
    numeric = {
        "kind": "numeric",
        "missing": 1,
        "present": 10,
        "mean": 1.5,
        "std": 0.5,
        "min": 0.0,
        "max": 3.0,
        "zeros": 0,
        "histogram": histogram,
    }
    island = {
        "kind": "categorical",
        "missing": 0,
        "present": 11,
        "unique": 2,
        "top_values": [{"value": "Biscoe", "count": 7.0}, {"value": "Dream", "count": 4.0}],
    }
    return {
        "pipeline": "penguins",
        "run_id": "r1",
        "status": "succeeded",
        "error": None,
        "seconds": 100.0,
        "components": {
            "Trainer": {"status": "succeeded", "seconds": 40.0, "cached": False},
            "Transform": {
                "status": "cached",
                "seconds": 0.0,
                "cached": True,
                "produced_seconds": 30.0,
            },
        },
        "statistics": {
            "artifact": "/x",
            "splits": {
                "train": {"examples": 11, "features": {"bill": numeric, "island": island}},
                "eval": {"examples": 11, "features": {"bill": numeric, "island": island}},
            },
            "anomalies": {"eval": ["bill: out of range"]},
        },
        "tuner": {
            "trial_scores": [0.5, 0.3],
            "objective": "val_loss",
            "best_hyperparameters": {"units": 8},
        },
        "training": {
            "epochs": 3,
            "best_epoch": 2,
            "history": {
                "loss": [1.0, 0.5, 0.4],
                "val_loss": [1.1, 0.6, 0.7],
                "sparse_categorical_accuracy": [0.5, 0.8, 0.9],
                "val_sparse_categorical_accuracy": [0.4, 0.8, 0.85],
            },
        },
        "evaluation": {
            "metrics": {"sparse_categorical_accuracy": 0.9},
            "blessed": False,
            "baseline_compared": True,
            "baseline_model": "/m",
            "baseline": {
                "sparse_categorical_accuracy": {"candidate": 0.9, "baseline": 0.95, "diff": -0.05}
            },
            "slices": [
                {
                    "feature": "island",
                    "value": "Biscoe",
                    "example_count": 40,
                    "metrics": {"sparse_categorical_accuracy": 0.97},
                },
                {
                    "feature": "island",
                    "value": "Torgersen",
                    "example_count": 9,
                    "metrics": {"sparse_categorical_accuracy": 0.55},
                },
                {
                    "feature": "sex",
                    "value": "unknown",
                    "example_count": 0,
                    "metrics": {},
                    "note": "no eval examples",
                },
            ],
            "gates": {
                "passed": False,
                "checks": [
                    {
                        "gate": "min_slice_metric",
                        "metric": "sparse_categorical_accuracy",
                        "threshold": 0.8,
                        "min_examples": 5,
                        "value": 0.55,
                        "slice": "island=Torgersen",
                        "passed": False,
                    }
                ],
            },
            "fairness": {
                "feature": "sex",
                "thresholds": [0.5],
                "slices": [
                    {
                        "value": "female",
                        "example_count": 30,
                        "metrics": {"false_positive_rate": 0.1, "false_negative_rate": 0.05},
                    }
                ],
            },
            "curves": {
                "roc": {"fpr": [0, 0.1, 1], "tpr": [0, 0.9, 1]},
                "pr": {"recall": [0, 0.9, 1], "precision": [1, 0.9, 0.5]},
                "calibration": {"predicted": [0.1, 0.9], "observed": [0.2, 0.8], "count": [5, 5]},
                "scope": "macro-averaged one-vs-rest",
            },
        },
        "explanations": {
            "method": "integrated_gradients",
            "examples": 2,
            "steps": 50,
            "baseline": "zeros",
            "explained_output": "probability of the predicted class",
            "global": [{"feature": "bill", "score": 0.3}, {"feature": "island", "score": 0.1}],
            "completeness": {"max_abs_error": 0.001, "mean_abs_error": 0.0005},
            "per_example": [
                {"target": "Adelie", "output": 0.9, "attributions": {"bill": 0.3, "island": -0.1}}
            ],
            "heatmaps": [_png_file(tmp_path)],
            "text": [
                {
                    "feature": "text",
                    "examples": [
                        {
                            "label": "business",
                            "predicted": "business",
                            "tokens": [{"token": "shares", "score": 0.4}],
                            "sequence": [
                                {"token": "shares", "score": 0.4},
                                {"token": "<b>", "score": -0.1},
                            ],
                        }
                    ],
                    "top_tokens": {"business": [{"token": "shares", "score": 1.25}]},
                }
            ],
            "artifact": "/a",
        },
        "quantization": None,
        "model_card": {
            "markdown": "/c/model_card.md",
            "html": "/c/model_card.html",
            "facts": str(card),
        },
        "pushed": None,
    }


def _images(page):
    found = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    return {
        alt: matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        for alt, data in found
    }


def test_every_contract_section_renders_its_figures_and_tables(tmp_path):
    page = report.render(_summary(tmp_path))
    images = _images(page)
    assert set(images) >= {
        "component times",
        "numeric histograms, train vs eval",
        "categorical values, train vs eval",
        "tuner trials",
        "training curves",
        "ROC, precision-recall and calibration",
        "global feature importance",
        "heatmap heat.png",
    }
    assert all(image.shape[0] > 10 and image.shape[1] > 10 for image in images.values())
    # The failing gate names its slice, and that slice's row is marked.
    assert "Gates: FAILED: the model is not blessed" in page
    assert "<tr class='fail'><td>island=Torgersen</td><td>9</td>" in page
    assert "<td>sex=unknown</td><td>0</td>" in page and "no eval examples" in page
    assert "<td>-0.0500</td>" in page  # the baseline difference
    assert "<td>female</td><td>30</td><td>0.0500</td><td>0.1000</td>" in page
    assert "bill: out of range" in page
    assert 'href="file:///c/model_card.html"' in page and "slice island=Torgersen" in page
    assert "macro-averaged one-vs-rest" in page
    assert "No quantization in this run" in page
    # A text's tokens coloured by attribution (scaled to the example's largest), escaped.
    assert "<td>business</td><td>shares (1.25)</td>" in page
    assert "style='background:rgba(0,150,60,1.00)' title='+0.4'>shares</span>" in page
    assert "style='background:rgba(210,40,40,0.25)' title='-0.1'>&lt;b&gt;</span>" in page


def test_a_run_with_nothing_says_so_in_every_section():
    page = report.render(
        {
            "pipeline": "p",
            "run_id": "r",
            "status": "failed",
            "error": "boom",
            "seconds": 1.0,
            "components": {},
        }
    )
    for absent in (
        "No data statistics",
        "No tuning trials",
        "No training record",
        "No evaluation",
        "No fairness metrics",
        "No explanations",
        "No quantization",
        "No model card",
    ):
        assert absent in page
    assert "<img" not in page and "<script" not in page


def test_a_categorical_value_with_dollar_signs_is_drawn_as_text():
    # A text feature's top value is a whole article: "$24m ... $75" made mathtext fail.
    from pipeline import report_figures

    feature = {
        "kind": "categorical",
        "top_values": [{"value": "earned $24m at $75 an hour", "count": 2}],
    }
    splits = {"train": {"features": {"text": feature}, "examples": 2}}
    assert report_figures.categorical_values(splits)
