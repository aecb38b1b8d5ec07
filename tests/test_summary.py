"""The evaluation in the run summary: TFMA's confusion matrix and per-class metrics by class name."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma_lib
from google.protobuf import json_format
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_metrics as mccm
from tensorflow_model_analysis.proto import config_pb2

from pipeline import evaluation, summary
from pipeline.config import load_config
from pipeline.pipeline import eval_config

LABELS = ["Adelie", "Chinstrap", "Gentoo"]
# true class i predicted as j
COUNTS = [[5, 1, 0], [0, 3, 2], [1, 0, 7]]


def _tfma_plot(counts, no_prediction=None) -> dict:
    """TFMA's own serialisation of a matrix, in the JSON form load_eval_result gives."""
    entries = {
        mccm.MatrixEntryKey(actual, predicted): float(n)
        for (actual, predicted), n in np.ndenumerate(counts)
        if n
    }
    for actual, n in (no_prediction or {}).items():
        entries[mccm.MatrixEntryKey(actual, mccm.NO_PREDICTED_CLASS_ID)] = float(n)
    proto = mccm.Matrices({0.0: entries}).to_proto()
    return json_format.MessageToDict(proto.multi_class_confusion_matrix_at_thresholds)


def test_the_matrix_has_true_classes_in_rows_and_predictions_in_columns():
    result = summary.confusion_matrix(_tfma_plot(COUNTS), LABELS)
    assert result["labels"] == LABELS
    assert result["matrix"] == COUNTS
    assert "true class i predicted as class j" in result["layout"]
    assert "no_prediction" not in result


def test_examples_without_a_prediction_are_counted_apart():
    result = summary.confusion_matrix(_tfma_plot(COUNTS, no_prediction={1: 4}), LABELS)
    assert result["matrix"] == COUNTS
    assert result["no_prediction"] == [0, 4, 0]


def test_a_class_id_outside_the_vocabulary_is_an_error_naming_it():
    with pytest.raises(ValueError, match="outside the 2 classes"):
        summary.confusion_matrix(_tfma_plot(COUNTS), LABELS[:2])


def test_per_class_metrics_are_keyed_by_class_name_with_their_example_counts():
    metrics = {
        "precision/classId:0": 0.8,
        "recall/classId:2": 0.875,
        "f1_score/classId:1": 0.6,
        "f1_score": 0.7,
        "example_count": 19.0,
    }
    result = summary.per_class(metrics, LABELS, COUNTS)
    assert result == {
        "Adelie": {"precision": 0.8, "support": 6},
        "Chinstrap": {"f1_score": 0.6, "support": 5},
        "Gentoo": {"recall": 0.875, "support": 8},
    }


def _examples(path, labels, **scores):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, label in enumerate(labels):
            feature = {"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
            for key, rows in scores.items():
                feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=rows[i]))
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )


def _scores(predicted, rng):
    scores = rng.uniform(0.0, 0.1, (len(predicted), 3))
    scores[np.arange(len(predicted)), predicted] = 0.8
    return scores / scores.sum(axis=1, keepdims=True)


def test_the_candidates_metrics_read_back_from_a_tfma_run_with_a_baseline(tmp_path, repo_root):
    """The pipeline's own metric specs, run by TFMA on fixed scores of a candidate and a
    baseline (TFMA's model-agnostic evaluation: no model needed)."""
    config = load_config(repo_root / "configs" / "penguins.yaml", output_root=str(tmp_path))
    metrics_specs = eval_config(config, LABELS).metrics_specs
    for spec in metrics_specs:
        for metric in spec.metrics:
            metric.ClearField("threshold")
    rng = np.random.default_rng(0)
    truth = [i for i, row in enumerate(COUNTS) for _ in range(sum(row))]
    predicted = [j for row in COUNTS for j, n in enumerate(row) for _ in range(n)]
    baseline = [0] * len(truth)  # the baseline calls everything Adelie
    _examples(
        tmp_path / "eval.tfrecord",
        truth,
        scores=_scores(predicted, rng),
        baseline_scores=_scores(baseline, rng),
    )
    models = [
        config_pb2.ModelSpec(name="candidate", label_key="label", prediction_key="scores"),
        config_pb2.ModelSpec(
            name="baseline", label_key="label", prediction_key="baseline_scores", is_baseline=True
        ),
    ]
    tfma_lib.run_model_analysis(
        eval_config=config_pb2.EvalConfig(
            model_specs=models,
            slicing_specs=[config_pb2.SlicingSpec()],
            metrics_specs=metrics_specs,
        ),
        data_location=str(tmp_path / "eval.tfrecord"),
        output_path=str(tmp_path / "evaluation"),
    )

    result = summary.candidate_result(str(tmp_path / "evaluation"))
    metrics = summary._metric_values(result)
    matrix = summary.confusion_matrix(summary._confusion_plot(result), LABELS)
    per_class = summary.per_class(metrics, LABELS, matrix["matrix"])
    assert matrix["matrix"] == COUNTS
    assert sum(map(sum, matrix["matrix"])) == metrics["example_count"]
    assert per_class["Chinstrap"]["precision"] == pytest.approx(3 / 4)
    assert per_class["Chinstrap"]["recall"] == pytest.approx(3 / 5)
    assert per_class["Gentoo"]["f1_score"] == pytest.approx(2 * 7 / (2 * 7 + 2 + 1))
    assert per_class["Adelie"]["support"] == 6

    baseline = summary._metric_values(
        summary._model_result(str(tmp_path / "evaluation"), baseline=True)
    )
    compared = evaluation.baseline_diff(metrics, baseline)
    accuracy = compared["sparse_categorical_accuracy"]
    assert accuracy["candidate"] == pytest.approx(15 / 19)
    assert accuracy["baseline"] == pytest.approx(6 / 19)  # everything called Adelie
    assert accuracy["diff"] == pytest.approx(9 / 19)
    assert set(compared) == set(metrics)
    curves = evaluation.curves(summary._overall_plots(result), LABELS)
    # The micro average counts each example once per class; at threshold 0 all are positive.
    assert curves["roc"]["tpr"][0] == curves["roc"]["fpr"][0] == 1.0
    assert sum(curves["calibration"]["count"]) == 3 * 19
    assert set(curves["per_class"]) == set(LABELS)


def test_the_printed_summary_names_a_text_features_top_tokens_per_class():
    text = summary.format_summary(
        {
            "pipeline": "bbc-news",
            "run_id": "r",
            "status": "succeeded",
            "seconds": 1.0,
            "components": {},
            "explanations": {
                "examples": 10,
                "global": [{"feature": "text", "score": 0.42}],
                "text": [
                    {
                        "feature": "text",
                        "top_tokens": {"sport": [{"token": "match", "score": 0.3}]},
                    }
                ],
            },
        }
    )
    assert "  explanations (IG, 10 eval examples): text 0.420" in text
    assert "    top tokens of text toward sport: match" in text
