"""Text and time series end to end: small subsets of BBC News and FordA to a pushed model
of the sequence family, which then answers raw text / raw series through serving_raw, in
process and as `make serve` + `make predict` do: the model server on loopback serving the
pushed model, `pipeline.cli predict` sending a text file / a file of series over gRPC."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import portpicker
import pytest
import tensorflow as tf
import yaml

from pipeline import cli, local_runner, monitor, series
from pipeline import texts as text_folders
from pipeline.config import load_config
from serving.client import ServingClient
from serving.config import ModelConfig
from serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.e2e


def _run(repo_root, root, name, examples, search_space):
    raw = yaml.safe_load((repo_root / "configs" / name).read_text())
    raw["data"]["max_examples"] = examples
    raw["tuner"].update(max_trials=1, epochs=2)
    raw["tuner"]["search_space"].update(search_space)
    raw["training"].update(epochs=2)
    raw["evaluation"]["lower_bound"] = 0.0
    # IG on 10 eval examples (of 100) keeps the explanations' share of the run small.
    raw.setdefault("explanations", {})["examples"] = 10
    # The BBC News run quantizes (the sequence family's int8 path through the pipeline);
    # FordA's int8 conv path has its tests in test_quantization_sequence.py.
    raw["quantization"]["enabled"] = name == "bbc_news.yaml"
    path = root / name
    path.write_text(yaml.safe_dump(raw))
    return local_runner.run(load_config(path, output_root=str(root / "out")))


def _served_predictions(root: Path, name: str, input_path: Path, capsys) -> list[dict]:
    """`make predict` against `make serve`: the server on the config's serving root (the
    pushed model's base path) on a free loopback port, predict's JSON lines back."""
    config = load_config(root / name, output_root=str(root / "out"))
    base = str(Path(config.serving_root) / config.model_name)
    options = ServerOptions(
        grpc_port=portpicker.pick_unused_port(), rest_port=portpicker.pick_unused_port()
    )
    running = ModelServer([ModelConfig(config.model_name, base)], options).start()
    try:
        address = f"127.0.0.1:{running.grpc_port}"
        with ServingClient(address) as client:
            client.wait_until_available(config.model_name, timeout_s=30)
        capsys.readouterr()
        argv = ["predict", "--config", str(root / name), "--output-root", str(root / "out")]
        assert cli.main([*argv, "--input", str(input_path), "--", "--address", address]) == 0
    finally:
        running.stop()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _assert_same_scores(lines: list[dict], scores: np.ndarray, classes: list[str]) -> None:
    assert len(lines) == len(scores)
    for line, row in zip(lines, scores, strict=True):
        assert line["class"] == classes[int(np.argmax(row))]
        served = [line["scores"][c] for c in classes]
        np.testing.assert_allclose(served, row, atol=1e-5)


def _pushed(summary):
    assert summary["status"] == "succeeded", summary["error"]
    assert summary["components"]["ImportExampleGen"]["status"] == "succeeded"
    assert summary["tuner"]["trials"] == 1
    assert summary["evaluation"]["blessed"] is True
    assert summary["infra_validation"]["blessed"] is True
    assert summary["pushed"] is not None
    return tf.saved_model.load(summary["pushed"]["model_dir"])


def test_forda_subset_to_a_pushed_model_that_takes_raw_series(repo_root, tmp_path, capsys):
    summary = _run(
        repo_root,
        tmp_path,
        "forda.yaml",
        {"train": 300, "eval": 100},
        {"conv_blocks": {"min": 1, "max": 1}, "filters": {"min": 8, "max": 8, "step": 8}},
    )
    model = _pushed(summary)
    assert summary["evaluation"]["metrics"]["example_count"] == 100
    assert summary["tuner"]["best_hyperparameters"]["encoder"] == "conv1d"
    test_file = series.files_of("ucr:FordA")[1]
    rows = [line.split("\t") for line in test_file.read_text().splitlines()[:4]]
    values = np.array([[float(v) for v in row[1:]] for row in rows], np.float32)
    out = model.signatures["serving_raw"](signal=tf.constant(values))
    assert out["scores"].shape == (4, 2)
    np.testing.assert_allclose(out["scores"].numpy().sum(axis=1), 1.0, atol=1e-5)
    assert [c.decode() for c in out["classes"].numpy()[0]] == ["-1", "1"]
    # A .tsv of labelled series (the UCR layout) through the served model.
    series_file = tmp_path / "series.tsv"
    series_file.write_text("\n".join("\t".join(row) for row in rows) + "\n")
    lines = _served_predictions(tmp_path, "forda.yaml", series_file, capsys)
    _assert_same_scores(lines, out["scores"].numpy(), ["-1", "1"])
    assert [line["label"] for line in lines] == [row[0] for row in rows]


def test_bbc_news_subset_to_a_pushed_model_that_takes_raw_text(repo_root, tmp_path, capsys):
    summary = _run(
        repo_root,
        tmp_path,
        "bbc_news.yaml",
        {"train": 300, "eval": 100},
        # The config's encoder is a bag of embeddings (conv1d, no blocks); the transformer
        # here takes the heavier path through export and serving.
        {
            "encoder": ["transformer"],
            "embedding_dim": {"min": 16, "max": 16, "step": 16},
            "ff_dim": {"min": 32, "max": 32, "step": 32},
        },
    )
    model = _pushed(summary)
    assert summary["evaluation"]["metrics"]["example_count"] == 100
    # Token statistics of the run's own examples and vocabulary (the train split's words).
    text = summary["text"]["text"]
    train, evaluation = text["splits"]["train"], text["splits"]["eval"]
    assert (train["texts"], evaluation["texts"], text["max_tokens"]) == (300, 100, 512)
    assert 100 < evaluation["tokens_per_text"]["p50"] < evaluation["tokens_per_text"]["max"]
    assert 0.8 < evaluation["vocabulary_coverage"] < train["vocabulary_coverage"] <= 1.0
    assert 0.0 < evaluation["longer_than_max_tokens"] < 1.0 and evaluation["empty"] == 0.0
    best = summary["tuner"]["best_hyperparameters"]
    assert best["encoder"] == "transformer"
    # conv1d is not listed: its keys never reach the tuner.
    assert not {"conv_blocks", "filters", "kernel_size", "residual"} & set(best)
    texts = tf.constant(["Shares rose as the bank's profits beat forecasts.", ""])
    out = model.signatures["serving_raw"](text=texts)
    assert out["scores"].shape == (2, 5)
    np.testing.assert_allclose(out["scores"].numpy().sum(axis=1), 1.0, atol=1e-5)
    # A folder of .txt files (one text each, in sorted order) through the served model.
    folder = tmp_path / "texts"
    folder.mkdir()
    for file_name, text in zip(("a.txt", "b.txt"), texts.numpy(), strict=True):
        (folder / file_name).write_bytes(text)
    lines = _served_predictions(tmp_path, "bbc_news.yaml", folder, capsys)
    classes = [c.decode() for c in out["classes"].numpy()[0]]
    _assert_same_scores(lines, out["scores"].numpy(), classes)
    assert [Path(line["input"]).name for line in lines] == ["a.txt", "b.txt"]
    # Sport news alone drift from the run's mix of five topics: the top tokens' shares move;
    # the vocabulary is the pushed model's own (Transform's, found through lineage).
    config = load_config(tmp_path / "bbc_news.yaml", output_root=str(tmp_path / "out"))
    sport = sorted((text_folders.bbc_news_root() / "sports").glob("*.txt"))[:150]
    frame = pd.DataFrame(
        {"text": [p.read_bytes().decode("utf-8", "replace") for p in sport], "label": "sports"}
    )
    frame.to_csv(tmp_path / "sport.csv", index=False)
    result = monitor.monitor(config, examples=str(tmp_path / "sport.csv"))
    features = result.drift["features"]
    assert {"text.top_tokens", "label"} <= set(result.drift["drifted_features"]), features
    assert features["text.top_tokens"]["statistic"] == "L_infinity"
    assert 0.0 < features["text.oov_share"]["value"] < 1.0
    _assert_text_explanations(summary, classes, tmp_path, capsys)


def _assert_text_explanations(summary, classes, root, capsys):
    """IG on the transformer's token embeddings: the text's global score, top tokens per
    eval example and per class in the summary and report, and `explain` on a raw text."""
    explanations = summary["explanations"]
    assert [g["feature"] for g in explanations["global"]] == ["text"]
    assert explanations["examples"] == 10
    assert explanations["completeness"]["max_abs_error"] < 0.05
    [entry] = explanations["text"]
    assert entry["feature"] == "text" and len(entry["examples"]) == 10
    for example in entry["examples"]:
        assert example["label"] in classes and example["predicted"] in classes
        scores = [abs(t["score"]) for t in example["tokens"]]
        assert len(scores) == 10 and scores == sorted(scores, reverse=True)
        assert "[PAD]" not in {t["token"] for t in example["sequence"]}
    assert set(entry["top_tokens"]) <= set(classes) and entry["top_tokens"]
    assert "Text feature text: top tokens" in Path(summary["report"]).read_text()
    card = (Path(summary["pushed"]["model_dir"]) / "assets.extra" / "model_card.md").read_text()
    assert "Top tokens of the text feature text per predicted class" in card
    article = root / "article.txt"
    article.write_text("Shares rose as the bank's profits beat forecasts, said Zyxwvut.")
    argv = ["explain", "--config", str(root / "bbc_news.yaml"), "--output-root", str(root / "out")]
    capsys.readouterr()
    assert cli.main([*argv, "--input", str(article)]) == 0
    [answer] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert answer["explained"] in classes and answer["completeness_error"] < 0.05
    words = {"shares", "rose", "as", "the", "bank", "'", "s", "profits", "beat", "forecasts"}
    tokens = [t["token"] for t in answer["tokens"]["text"]]
    assert len(tokens) == 10 and set(tokens) <= words | {",", "said", ".", "[OOV]"}
