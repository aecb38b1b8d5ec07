"""The whole pipeline on penguins, locally: push, cache, and bad input that must not reach serving."""

import collections
import csv
import glob
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from pipeline import local_runner
from pipeline.config import load_config
from pipeline.data import read_source

pytestmark = pytest.mark.e2e


def _config_file(tmp_path, repo_root, **data):
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    raw["schema_file"] = str(repo_root / "configs" / raw["schema_file"])
    raw["tuner"].update(max_trials=3, epochs=20)
    raw["data"].update(data)
    path = tmp_path / f"penguins-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, repo_root):
    """Runs the pipeline into a fresh output root; returns (output_root, run function)."""
    root = tmp_path_factory.mktemp("e2e")
    configs = tmp_path_factory.mktemp("configs")

    def _run(**data):
        config = load_config(_config_file(configs, repo_root, **data), output_root=str(root))
        return config, local_runner.run(config)

    return root, _run


@pytest.fixture(scope="module")
def first(run):
    return run[1]()


def _versions(root):
    return sorted(os.listdir(os.path.join(root, "serving", "penguins")))


def _eval_examples(root):
    files = glob.glob(
        os.path.join(
            root, "pipelines", "penguins", "CsvExampleGen", "examples", "*", "Split-eval", "*.gz"
        )
    )
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_pushes_a_model_that_scores_on_the_eval_split(first, run):
    root = run[0]
    _, summary = first
    assert summary["status"] == "succeeded", summary.get("error")
    assert summary["tuner"]["trials"] == 3
    assert summary["tuner"]["algorithm"] == "keras_tuner.BayesianOptimization"
    assert set(summary["tuner"]["best_hyperparameters"]) >= {
        "units",
        "layers",
        "learning_rate",
        "dropout",
        "l2",
        "optimizer",
    }
    # A first run has no blessed model to warm-start from.
    assert summary["warm_start"]["from"] is None
    assert summary["warm_start"]["reason"].startswith("no base model (nothing blessed yet")
    training = summary["training"]
    assert 1 <= training["best_epoch"] <= training["epochs"]
    assert 0 < training["train_examples"] < 344  # the train split of the hash split
    assert training["examples_per_second"] > 0
    assert summary["evaluation"]["blessed"] is True
    assert summary["evaluation"]["metrics"]["sparse_categorical_accuracy"] >= 0.9
    metrics = summary["evaluation"]["metrics"]
    assert metrics["f1_score"] >= 0.85  # macro average over the three species
    assert {f"f1_score/classId:{i}" for i in range(3)} <= set(metrics)
    assert summary["infra_validation"]["blessed"] is True
    pushed = summary["pushed"]
    assert os.path.isfile(os.path.join(pushed["model_dir"], "saved_model.pb"))
    assert os.path.isfile(
        os.path.join(pushed["model_dir"], "assets.extra", "tf_serving_warmup_requests")
    )
    assert json.loads((root / "summary.json").read_text())["run_id"] == summary["run_id"]

    model = tf.saved_model.load(pushed["model_dir"])
    examples = _eval_examples(root)
    out = model.signatures["serving_default"](examples=tf.constant(examples))
    predicted = [
        row[i].decode()
        for row, i in zip(
            out["classes"].numpy(), np.argmax(out["scores"].numpy(), axis=1), strict=True
        )
    ]
    truth = [
        tf.train.Example.FromString(e).features.feature["species"].bytes_list.value[0].decode()
        for e in examples
    ]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    assert len(examples) > 40
    assert accuracy >= 0.9

    confusion = summary["evaluation"]["confusion_matrix"]
    assert sorted(confusion["labels"]) == ["Adelie", "Chinstrap", "Gentoo"]
    assert confusion["labels"] == [c.decode() for c in out["classes"].numpy()[0]]
    pairs = collections.Counter(zip(truth, predicted, strict=True))
    expected = [[pairs[t, p] for p in confusion["labels"]] for t in confusion["labels"]]
    assert confusion["matrix"] == expected  # the pushed model's own predictions, rows true
    assert sum(map(sum, confusion["matrix"])) == metrics["example_count"] == len(examples)
    per_class = summary["evaluation"]["per_class"]
    assert set(per_class) == set(confusion["labels"])
    assert per_class["Gentoo"]["support"] == truth.count("Gentoo")
    assert 0 <= metrics["sparse_categorical_crossentropy"] < 0.5  # log loss
    assert metrics["auc_precision_recall"] >= 0.9


def _feature(example: bytes, name: str) -> str | None:
    values = tf.train.Example.FromString(example).features.feature[name].bytes_list.value
    return values[0].decode() if values else None


def test_slices_gates_fairness_and_curves_are_in_the_summary(first, run):
    _, summary = first
    evaluation = summary["evaluation"]
    examples = _eval_examples(run[0])
    slices = {(s["feature"], s["value"]): s for s in evaluation["slices"]}
    assert set(slices) == {
        ("island", "Biscoe"),
        ("island", "Dream"),
        ("island", "Torgersen"),
        ("sex", "female"),
        ("sex", "male"),
    }
    for (feature, value), row in slices.items():
        assert row["example_count"] == [_feature(e, feature) for e in examples].count(value)
        assert 0.0 <= row["metrics"]["sparse_categorical_accuracy"] <= 1.0
    gates = evaluation["gates"]
    assert gates["passed"] is True and evaluation["blessed"] is True
    assert [c["gate"] for c in gates["checks"]] == ["min_slice_metric", "max_slice_gap"]
    assert gates["checks"][0]["slice"] in {f"{f}={v}" for f, v in slices}
    fairness = evaluation["fairness"]
    assert fairness["feature"] == "sex" and fairness["thresholds"] == [0.5]
    by_value = {s["value"]: s for s in fairness["slices"]}
    assert set(by_value) == {"(overall)", "female", "male"}
    female = by_value["female"]
    assert female["example_count"] == slices["sex", "female"]["example_count"]
    assert set(female["per_class"]) == {"Adelie", "Chinstrap", "Gentoo"}
    rates = female["metrics"]
    assert rates["false_positive_rate"] == pytest.approx(1 - rates["true_negative_rate"])
    curves = evaluation["curves"]
    assert len(curves["roc"]["fpr"]) == len(curves["roc"]["tpr"]) > 10
    # Micro-averaged one-vs-rest: each example's score for each of the 3 classes.
    assert sum(curves["calibration"]["count"]) == 3 * len(examples)
    assert "baseline" not in evaluation  # nothing blessed before the first run


def test_a_slice_gate_blocks_the_model_and_names_the_slice(first, tmp_path):
    """The SliceGate's executor on the first run's own evaluation, with a gate no slice of
    a real model meets (accuracy above 1) and one on the gap with min_examples above the
    smallest island: the blessing is withdrawn and the check names the slice."""
    from tfx.types import standard_artifacts

    from components.slice_gate import executor, spec

    config, summary = first
    evaluation_dir = glob.glob(
        os.path.join(config.output_root, "pipelines", "penguins", "Evaluator", "evaluation", "*")
    )[-1]
    evaluated = standard_artifacts.ModelEvaluation()
    evaluated.uri = evaluation_dir
    evaluator_blessing = standard_artifacts.ModelBlessing()
    evaluator_blessing.uri = str(tmp_path / "evaluator_blessing")
    evaluator_blessing.set_int_custom_property("blessed", 1)
    evaluator_blessing.set_string_custom_property("current_model", "the-candidate")
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    gates = '[{"gate": "min_slice_metric", "metric": "f1", "threshold": 1.01, "min_examples": 5}]'
    executor.Executor().Do(
        {spec.EVALUATION_KEY: [evaluated], spec.MODEL_BLESSING_KEY: [evaluator_blessing]},
        {spec.BLESSING_KEY: [blessing]},
        {
            spec.SLICE_FEATURES_KEY: '["island", "sex"]',
            spec.EXPECTED_VALUES_KEY: "{}",
            spec.GATES_KEY: gates,
            spec.FAIRNESS_KEY: '{"feature": null, "thresholds": [0.5]}',
        },
    )
    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_int_custom_property("slice_gate") == 1  # what Kubeflow's query reads
    assert blessing.get_string_custom_property("current_model") == "the-candidate"
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    result = json.loads((tmp_path / "blessing" / "slices.json").read_text())
    [check] = result["gates"]["checks"]
    assert result["evaluator_blessed"] is True and result["blessed"] is False
    assert check["passed"] is False and check["slice"].split("=")[0] in {"island", "sex"}
    worst = min(
        (
            s
            for s in summary["evaluation"]["slices"]
            if s["example_count"] >= 5 and s["metrics"]["f1_score"] is not None
        ),
        key=lambda s: s["metrics"]["f1_score"],
    )
    assert check["value"] == pytest.approx(worst["metrics"]["f1_score"])
    # The model card reads the gate's slices and checks, and names the failed gate's slice.
    from components.model_card.executor import evaluation_facts
    from pipeline import model_card

    facts = evaluation_facts(evaluation_dir, False, blessing.uri)
    assert facts["slices_from"] == "the SliceGate's slices.json"
    assert [s["slice"] for s in facts["slices"]] == [
        f"{s['feature']}={s['value']}" for s in result["slices"]
    ]
    notes = model_card.limitations(facts["slices"], 1, False, facts["gates"])
    assert f"failed: {check['value']:.4g} at {check['slice']}" in notes[0]


def test_monitor_flags_a_new_island_in_logged_requests_and_not_a_same_year_sample(
    first, run, tmp_path
):
    """The served model's training statistics come from ML Metadata lineage; requests go
    through a real gRPC server that logs them; only the shifted traffic is drift."""
    from monitor_testlib import serve_and_log

    from pipeline import cli, monitor

    config, _ = first
    penguins = read_source("palmerpenguins")
    rows = list(csv.DictReader(io.StringIO(penguins)))
    same = [r for r in rows if r["year"] == "2008" and "NA" not in r.values()]
    biscoe = [r for r in rows if r["island"] == "Biscoe" and "NA" not in r.values()]
    serving_dir = os.path.join(run[0], "serving", "penguins")
    calm = monitor.monitor(config, logs=serve_and_log(serving_dir, same, tmp_path / "calm"))
    assert calm.drift["drifted_features"] == [], calm.drift["features"]
    assert calm.drift["serving"]["rows"] == len(same)
    requests = -(-len(same) // 8)
    assert calm.drift["serving"]["requests_by_version"] == {calm.drift["served_version"]: requests}
    assert calm.drift["features"]["species"]["role"] == "prediction"
    assert calm.drift["training"]["statistics"].startswith(str(run[0]))
    shifted = monitor.monitor(config, logs=serve_and_log(serving_dir, biscoe, tmp_path / "new"))
    assert shifted.drift["drifted_features"] == ["island", "species"]
    assert shifted.drift["features"]["island"]["statistic"] == "L_infinity"
    assert shifted.drift["features"]["flipper_length_mm"]["statistic"] == (
        "jensen_shannon_divergence"
    )
    directory = Path(shifted.directory)
    assert json.loads((directory / "drift.json").read_text()) == shifted.drift
    report = (directory / "report.html").read_text()
    assert "drift in island, species" in report and report.count("data:image/png") == 7
    argv = ["monitor", "--config", config.source_file, "--output-root", str(run[0])]
    assert cli.main([*argv, "--logs", str(tmp_path / "new")]) == monitor.DRIFT_EXIT_CODE
    assert cli.main([*argv, "--logs", str(tmp_path / "nothing-here")]) == 1


def test_second_run_is_served_from_the_cache(first, run):
    root, again = run
    versions = _versions(root)
    _, summary = again()
    assert summary["status"] == "succeeded"
    # Resolvers always run; the warm-start one gives the Trainer what it had on the same
    # examples (no model), so the Trainer is cached too.
    not_cached = [
        n for n, c in summary["components"].items() if not c["cached"] and "resolver" not in n
    ]
    assert not_cached == []
    # A cached rerun still shows what each step cost, from the run that made its outputs.
    assert summary["components"]["Trainer"]["produced_seconds"] > 0
    assert summary["warm_start"] == first[1]["warm_start"]
    assert summary["pushed"] == first[1]["pushed"]
    assert summary["evaluation"]["confusion_matrix"] == first[1]["evaluation"]["confusion_matrix"]
    assert _versions(root) == versions


def test_the_report_renders_in_a_real_browser(first):
    """Chromium loads report.html: no console errors, every figure decodes, a screenshot."""
    from tests.browserlib import load_page

    config, summary = first
    report = Path(summary["report"])
    screenshot = Path(config.output_root) / "report.png"
    page = load_page(report, screenshot)
    assert page.errors == []
    assert page.sections[:3] == ["overview", "data", "tuning"] and "model-card" in page.sections
    assert {
        "component times",
        "training curves",
        "confusion matrix",
        "global feature importance",
        "numeric histograms, train vs eval",
        "quantization trade-off",
    } <= set(page.image_widths)
    assert all(width > 0 for width in page.image_widths.values()), page.image_widths
    assert screenshot.stat().st_size > 10_000


def test_explanations_and_the_model_card_ship_with_the_pushed_model(first, capsys):
    from pipeline import cli

    config, summary = first
    explanations = summary["explanations"]
    features = set(config.features)
    assert {g["feature"] for g in explanations["global"]} == features
    assert explanations["examples"] == len(_eval_examples(config.output_root))  # < 200 here
    # 50 steps of a Riemann sum: penguins' cold run measured a mean error of 0.02, max 0.06.
    assert explanations["completeness"]["mean_abs_error"] < 0.04
    assert explanations["completeness"]["max_abs_error"] < 0.12
    history = summary["training"]["history"]
    assert len(history["val_loss"]) == summary["training"]["epochs"]

    pushed = Path(summary["pushed"]["model_dir"])
    card = (pushed / "assets.extra" / "model_card.md").read_text()
    assert card.startswith("# Model card: penguins")
    assert "Intended use:" in card and "### Explanations" in card and "### Quantization" in card
    assert "Slices (from the SliceGate's slices.json):" in card and "### Slice gates" in card
    assert Path(summary["model_card"]["html"]).read_text().startswith("<!doctype html>")

    row = next(csv.DictReader(io.StringIO(read_source("palmerpenguins"))))
    rows = Path(config.output_root) / "row.csv"
    with rows.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    argv = ["explain", "--config", config.source_file, "--output-root", config.output_root]
    assert cli.main([*argv, "--input", str(rows)]) == 0  # the newest version under serving/
    [answer] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert answer["explained"] == row["species"]
    assert {a["feature"] for a in answer["attributions"]} == features
    assert answer["completeness_error"] < 0.12


def _bad_csv(tmp_path, kind):
    rows = list(csv.DictReader(io.StringIO(read_source("palmerpenguins"))))
    if kind == "missing_column":
        for row in rows:
            del row["year"]
    elif kind == "wrong_type":
        for row in rows[::3]:
            row["year"] = "recent"
    else:
        rows[5]["species"] = rows[40]["species"] = "Emperor"
    path = tmp_path / f"{kind}.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "kind, feature",
    [
        # `year` is in the curated schema but not a model feature: only ExampleValidator sees it.
        ("missing_column", "year"),
        ("wrong_type", "year"),
        ("unknown_label", "species"),
    ],
)
def test_bad_input_fails_before_training_and_keeps_the_served_model(
    first, run, tmp_path, kind, feature
):
    root, again = run
    versions = _versions(root)
    _, summary = again(source=str(_bad_csv(tmp_path, kind)))
    assert summary["status"] == "failed"
    assert "AnomalyGate failed" in summary["error"]
    assert f"feature '{feature}'" in summary["error"]
    assert summary["components"]["Trainer"]["status"] == "not_run"
    assert summary["pushed"] is None
    on_disk = json.loads((root / "summary.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == summary["error"]
    assert _versions(root) == versions


def test_quantization_pushes_the_int8_model_and_reports_the_trade_off(first):
    _, summary = first
    quantization = summary["quantization"]
    assert quantization["served"] == "int8" and quantization["blessed"] is True, quantization[
        "reason"
    ]
    reference, int8 = quantization["float"], quantization["int8"]
    # The guard (quantization.max_metric_drop 0.015: one of the 69 eval birds) held.
    assert abs(reference["metrics"]["accuracy"] - int8["metrics"]["accuracy"]) <= 0.015
    assert (
        int8["variables_breakdown"]["weights"] < 0.5 * reference["variables_breakdown"]["weights"]
    )
    for name in ("float", "int8", "float_tflite", "int8_tflite"):
        assert quantization[name]["latency_ms"]["batch_1"] > 0
        assert (
            quantization[name]["metrics"]["example_count"] == reference["metrics"]["example_count"]
        )
    tflite = os.path.join(quantization["tflite_dir"], "model.tflite")
    assert os.path.getsize(tflite) == quantization["int8_tflite"]["size_bytes"]
    interpreter = tf.lite.Interpreter(model_path=tflite)
    assert {d["dtype"] for d in interpreter.get_input_details()} == {np.int8}
    pushed = tf.saved_model.load(summary["pushed"]["model_dir"])
    assert any(v.dtype == tf.int8 for v in pushed.variables)


def test_regression_config_pushes_a_model_within_its_error_bound(tmp_path, repo_root):
    """The second bundled config: a regression task on the same data, with an inferred schema."""
    raw = yaml.safe_load((repo_root / "configs" / "penguins_body_mass.yaml").read_text())
    raw["data"]["source"] = "palmerpenguins"
    raw["tuner"].update(max_trials=2, epochs=40)
    path = tmp_path / "body_mass.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, output_root=str(tmp_path / "out"))
    summary = local_runner.run(config)
    assert summary["status"] == "succeeded", summary.get("error")
    assert summary["components"]["SchemaGen"]["status"] == "succeeded"
    metrics = summary["evaluation"]["metrics"]
    assert metrics["mean_absolute_error"] < 400.0
    assert 0.5 < metrics["r2_score"] <= 1.0
    assert metrics["root_mean_squared_error"] == pytest.approx(
        metrics["mean_squared_error"] ** 0.5, rel=1e-4
    )
    histogram = summary["evaluation"]["residuals"]
    assert sum(histogram["counts"]) == metrics["example_count"]
    assert len(histogram["edges"]) == len(histogram["counts"]) + 1
    # The inferred schema has no domains: every categorical feature is sliced on.
    assert {s["feature"] for s in summary["evaluation"]["slices"]} == {"species", "island", "sex"}
    assert "confusion_matrix" not in summary["evaluation"]
    assert summary["evaluation"]["blessed"] is True
    model = tf.saved_model.load(summary["pushed"]["model_dir"])
    out = model.signatures["serving_raw"](
        bill_length_mm=tf.constant([46.5], tf.float32),
        bill_depth_mm=tf.constant([15.0], tf.float32),
        flipper_length_mm=tf.constant([220.0], tf.float32),
        species=tf.constant(["Gentoo"]),
        island=tf.constant(["Biscoe"]),
        sex=tf.constant(["male"]),
    )
    assert out["outputs"].shape == (1, 1)
    assert 4000.0 < float(out["outputs"][0, 0]) < 6500.0
