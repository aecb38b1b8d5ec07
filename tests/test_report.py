"""report.html from a summary: the evaluation's confusion-matrix heatmap and per-class table."""

import base64
import io
import re

import matplotlib.image
import pytest

from pipeline import report

CLASSES = [f"class {i}" for i in range(10)]


def _summary(**evaluation):
    return {
        "pipeline": "fashion-mnist",
        "run_id": "r1",
        "status": "succeeded",
        "error": None,
        "seconds": 12.0,
        "components": {},
        "tuner": None,
        "evaluation": {
            "metrics": {"sparse_categorical_accuracy": 0.9, "f1_score": 0.88},
            "blessed": True,
            "baseline_compared": False,
            "baseline_model": None,
            **evaluation,
        },
        "quantization": None,
        "pushed": None,
    }


def _images(page):
    return [
        matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    ]


def test_a_classification_report_has_a_confusion_matrix_heatmap_and_a_per_class_table():
    matrix = [[40 if i == j else (i + j) % 3 for j in range(10)] for i in range(10)]
    per_class = {
        name: {"precision": 0.9, "recall": 0.8, "f1_score": 0.847, "auc": 0.99, "support": 45}
        for name in CLASSES
    }
    page = report.render(
        _summary(
            confusion_matrix={"layout": "rows true", "labels": CLASSES, "matrix": matrix},
            per_class=per_class,
        )
    )
    assert '<img alt="confusion matrix"' in page
    [heatmap] = _images(page)
    height, width, _ = heatmap.shape
    assert width >= 600 and height >= 500  # ten class names on each axis stay legible
    assert page.count("<td>class ") == 10
    assert "<td>0.8470</td>" in page and "<td>45</td>" in page


@pytest.mark.parametrize("evaluation", [{}, {"confusion_matrix": None, "per_class": None}])
def test_a_regression_report_has_no_confusion_matrix(evaluation):
    page = report.render(_summary(**evaluation))
    assert "confusion matrix" not in page
    assert _images(page) == []
    assert "<td>f1_score</td><td>0.8800</td>" in page
