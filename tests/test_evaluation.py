"""Evaluation beyond the overall metrics: slice config errors, gate checks, the residual
histogram metric, and what the eval config asks TFMA for."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorflow_model_analysis.metrics import metric_types

from pipeline import evaluation, residuals
from pipeline.config import SliceGateConfig, load_config
from pipeline.errors import ConfigError
from pipeline.pipeline import eval_config

LABELS = ["Adelie", "Chinstrap", "Gentoo"]


def _load(tmp_path: Path, repo_root: Path, name: str = "penguins.yaml", **evaluation_keys):
    raw = yaml.safe_load((repo_root / "configs" / name).read_text())
    if raw.get("schema_file"):
        raw["schema_file"] = str(repo_root / "configs" / raw["schema_file"])
    raw["evaluation"].update(evaluation_keys)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.mark.parametrize(
    "keys, key, problem",
    [
        ({"slices": {"features": ["island", "colour"]}}, "evaluation.slices.features[1]", "'colour' is not a categorical feature"),
        ({"fairness": {"feature": "body_mass_g"}}, "evaluation.fairness.feature", "'body_mass_g' is not a categorical feature"),
        ({"fairness": {"feature": "sex", "thresholds": [0.5, 1.5]}}, "evaluation.fairness.thresholds", "in (0, 1)"),
        (
            {"gates": [{"gate": "min_slice_metric", "metric": "r2", "threshold": 0.5}]},
            "evaluation.gates[0].metric",
            "a classification has no metric 'r2'",
        ),
        (
            {"gates": [{"gate": "max_gap", "metric": "accuracy", "threshold": 0.1}]},
            "evaluation.gates[0].gate",
            "expected one of ['min_slice_metric', 'max_slice_gap']",
        ),
        (
            {"gates": [{"gate": "max_slice_gap", "metric": "accuracy", "threshold": 0.1, "min_example": 5}]},
            "evaluation.gates[0].min_example",
            "unknown key",
        ),
    ],
)  # fmt: skip
def test_bad_evaluation_keys_are_errors_naming_the_key(tmp_path, repo_root, keys, key, problem):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, repo_root, **keys)
    assert key in str(err.value) and problem in str(err.value)
    assert str(tmp_path / "config.yaml") in str(err.value)


def test_a_regression_has_no_fairness_and_its_gates_take_error_metrics(tmp_path, repo_root):
    with pytest.raises(ConfigError, match="evaluation.fairness.feature.*classification"):
        _load(tmp_path, repo_root, "penguins_body_mass.yaml", fairness={"feature": "sex"})
    gate = {"gate": "min_slice_metric", "metric": "mae", "threshold": 450.0}
    config = _load(tmp_path, repo_root, "penguins_body_mass.yaml", gates=[gate])
    assert config.evaluation.gates == (SliceGateConfig("min_slice_metric", "mae", 450.0, 10),)


def test_default_slices_are_the_categorical_features_with_few_schema_values(tmp_path, repo_root):
    config = _load(tmp_path, repo_root)
    assert evaluation.slice_features(config) == ("island", "sex")
    default = _load(tmp_path, repo_root, slices={"max_values": 2})
    assert evaluation.slice_features(default) == ("sex",)  # three islands are too many
    default = _load(tmp_path, repo_root, slices={"max_values": 3})
    assert evaluation.slice_features(default) == ("island", "sex")
    # A curated schema decides; the values counted in the data do not.
    assert evaluation.without_many_valued_slices(config, ("island",)) == (config, None)
    assert evaluation.schema_domains(config.schema_file)["island"] == (
        "Biscoe",
        "Dream",
        "Torgersen",
    )


def test_the_eval_config_slices_and_asks_for_fairness_curves_and_regression_extras(
    tmp_path, repo_root
):
    config = eval_config(_load(tmp_path, repo_root), LABELS)
    assert [list(s.feature_keys) for s in config.slicing_specs] == [[], ["island"], ["sex"]]
    names = {m.class_name: m for spec in config.metrics_specs for m in spec.metrics}
    assert {
        "FairnessIndicators",
        "ConfusionMatrixPlot",
        "CalibrationPlot",
        "AUCPrecisionRecall",
    } <= set(names)
    assert names["FairnessIndicators"].module == evaluation.FAIRNESS_MODULE
    regression = eval_config(_load(tmp_path, repo_root, "penguins_body_mass.yaml"), [])
    names = {m.class_name: m for spec in regression.metrics_specs for m in spec.metrics}
    assert {"ResidualHistogram", "MeanAbsoluteError"} <= set(names)


def _row(feature, value, count, accuracy):
    return {
        "feature": feature,
        "value": value,
        "example_count": count,
        "metrics": {"sparse_categorical_accuracy": accuracy},
    }


ROWS = [
    _row("island", "Biscoe", 40, 0.95),
    _row("island", "Dream", 30, 0.80),
    _row("island", "Torgersen", 4, 0.25),  # too few examples to judge
    _row("sex", "female", 35, 0.90),
]


def test_the_min_slice_gate_names_the_worst_slice_with_enough_examples():
    gate = SliceGateConfig("min_slice_metric", "accuracy", 0.85, min_examples=10)
    result = evaluation.check_gates(ROWS, [gate])
    [check] = result["checks"]
    assert result["passed"] is False and check["passed"] is False
    assert check["slice"] == "island=Dream" and check["value"] == pytest.approx(0.80)
    lenient = SliceGateConfig("min_slice_metric", "accuracy", 0.8, min_examples=10)
    assert evaluation.check_gates(ROWS, [lenient])["passed"] is True
    strict_counts = SliceGateConfig("min_slice_metric", "accuracy", 0.8, min_examples=1)
    assert evaluation.check_gates(ROWS, [strict_counts])["checks"][0]["slice"] == "island=Torgersen"


def test_the_gap_gate_bounds_best_minus_worst_and_error_metrics_invert():
    gap = SliceGateConfig("max_slice_gap", "accuracy", 0.1, min_examples=10)
    [check] = evaluation.check_gates(ROWS, [gap])["checks"]
    assert check["value"] == pytest.approx(0.15) and check["passed"] is False
    assert check["slice"] == "island=Dream vs island=Biscoe"
    rows = [
        {"feature": "sex", "value": v, "example_count": 50, "metrics": {"mean_absolute_error": e}}
        for v, e in (("female", 300.0), ("male", 420.0))
    ]
    mae = SliceGateConfig("min_slice_metric", "mae", 400.0, min_examples=10)
    [check] = evaluation.check_gates(rows, [mae])["checks"]
    assert (check["slice"], check["passed"]) == ("sex=male", False)


def test_no_slice_with_enough_examples_passes_and_says_so():
    gate = SliceGateConfig("min_slice_metric", "accuracy", 0.99, min_examples=1000)
    [check] = evaluation.check_gates(ROWS, [gate])["checks"]
    assert check["passed"] is True and check["slice"] is None and "1000" in check["note"]


def test_slice_values_without_eval_examples_are_listed_with_count_zero():
    metrics = {"": {"": {"example_count": {"doubleValue": 3.0}}}}
    slicing = [((), metrics), ((("sex", b"female"),), metrics)]
    rows = evaluation.slice_rows(slicing, ["sex"], {"sex": ["female", "male"]})
    assert [(r["value"], r["example_count"]) for r in rows] == [("female", 3), ("male", 0)]
    assert "no eval examples" in rows[1]["note"]


def test_the_residual_metric_counts_every_example_and_gives_r2():
    [computation] = residuals.ResidualHistogram(bins=4).computations()
    combiner = computation.combiner
    accumulators = []
    for labels, predictions in (([10.0, 12.0], [11.0, 12.0]), ([20.0], [14.0])):
        accumulator = combiner.create_accumulator()
        for label, prediction in zip(labels, predictions, strict=True):
            inputs = metric_types.StandardMetricInputs(
                label=np.array([label]), prediction=np.array([prediction]), example_weight=None
            )
            accumulator = combiner.add_input(accumulator, inputs)
        accumulators.append(accumulator)
    output = combiner.extract_output(combiner.merge_accumulators(accumulators))
    by_name = {key.name: value for key, value in output.items()}
    np.testing.assert_allclose(by_name[residuals.EDGES_NAME], [-1.0, 0.75, 2.5, 4.25, 6.0])
    np.testing.assert_allclose(by_name[residuals.COUNTS_NAME], [2, 0, 0, 1])  # -1, 0 and 6
    # labels 10, 12, 20: mean 14, SST 16 + 4 + 36; SSE 1 + 0 + 36
    assert by_name[residuals.R2_NAME] == pytest.approx(1 - 37 / 56)


def _matrix(threshold, tp, fp, tn, fn):
    # protobuf JSON leaves out zero counts, as load_eval_result gives them
    counts = {"truePositives": tp, "falsePositives": fp, "trueNegatives": tn, "falseNegatives": fn}
    return {"threshold": threshold, **{k: float(v) for k, v in counts.items() if v}}


def test_curves_sum_the_classes_counts_for_the_micro_average():
    plots = {
        "classId:0": {"confusionMatrixAtThresholds": {"matrices": [_matrix(0.5, 3, 1, 5, 1)]}},
        "classId:1": {"confusionMatrixAtThresholds": {"matrices": [_matrix(0.5, 1, 0, 8, 1)]}},
    }
    result = evaluation.curves(plots, ["a", "b"])
    assert result["roc"]["tpr"] == [pytest.approx(4 / 6)]
    assert result["roc"]["fpr"] == [pytest.approx(1 / 14)]
    assert result["pr"]["precision"] == [pytest.approx(4 / 5)]
    assert result["per_class"]["b"]["roc"]["fpr"] == [0.0]
    assert result["per_class"]["a"]["pr"]["recall"] == [pytest.approx(0.75)]


def test_fairness_averages_the_classes_where_a_rate_is_defined():
    def rates(fpr0, fpr1):
        return {
            "classId:0": {
                f"{evaluation.FAIRNESS_PREFIX}false_positive_rate@0.5": {"doubleValue": fpr0},
                # Against a baseline TFMA adds the difference, which is not a rate.
                f"{evaluation.FAIRNESS_PREFIX}false_positive_rate@0.5_diff": {"doubleValue": 0.7},
            },
            "classId:1": {
                f"{evaluation.FAIRNESS_PREFIX}false_positive_rate@0.5": {"doubleValue": fpr1}
            },
            "": {"example_count": {"doubleValue": 7.0}},
        }

    slicing = [
        ((), {"": rates(0.1, 0.3)}),
        ((("sex", b"male"),), {"": rates(0.2, "NaN")}),
        ((("island", b"Dream"),), {"": rates(0.9, 0.9)}),
    ]
    result = evaluation.fairness(slicing, "sex", [0.5], ["a", "b"])
    by_value = {s["value"]: s for s in result["slices"]}
    assert set(by_value) == {"(overall)", "male"}
    assert by_value["(overall)"]["metrics"]["false_positive_rate"] == pytest.approx(0.2)
    assert by_value["male"]["metrics"]["false_positive_rate"] == pytest.approx(0.2)
    assert by_value["male"]["per_class"]["b"]["false_positive_rate"] is None
    assert by_value["male"]["example_count"] == 7


def test_every_gate_metric_a_config_accepts_has_a_summary_name():
    from pipeline.config import GATE_METRICS

    for names in GATE_METRICS.values():
        assert set(names) <= set(evaluation.METRIC_KEYS)
    assert set(evaluation.METRIC_KEYS) >= evaluation.LOWER_IS_BETTER


def test_without_a_schema_features_with_many_values_are_not_sliced_by_default(tmp_path, repo_root):
    config = dataclasses.replace(_load(tmp_path, repo_root, slices={}), schema_file=None)
    assert evaluation.slice_features(config) == ("island", "sex")
    narrowed, note = evaluation.without_many_valued_slices(config, ("island",))
    assert evaluation.slice_features(narrowed) == ("sex",)
    assert note.startswith("not sliced by default: island (more than 20 values")
    configured = _load(tmp_path, repo_root, slices={"features": ["island"]})
    assert evaluation.without_many_valued_slices(configured, ("island",)) == (configured, None)
