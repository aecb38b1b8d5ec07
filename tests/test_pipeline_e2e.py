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
    assert summary["warm_start"] == first[1]["warm_start"]
    assert summary["pushed"] == first[1]["pushed"]
    assert summary["evaluation"]["confusion_matrix"] == first[1]["evaluation"]["confusion_matrix"]
    assert _versions(root) == versions


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
    assert abs(reference["metrics"]["accuracy"] - int8["metrics"]["accuracy"]) <= 0.01
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
