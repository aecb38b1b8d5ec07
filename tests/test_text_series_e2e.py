"""Text and time series end to end: small subsets of BBC News and FordA to a pushed model
of the sequence family, which then answers raw text / raw series through serving_raw."""

import numpy as np
import pytest
import tensorflow as tf
import yaml

from pipeline import local_runner, series
from pipeline.config import load_config

pytestmark = pytest.mark.e2e


def _run(repo_root, root, name, examples, search_space):
    raw = yaml.safe_load((repo_root / "configs" / name).read_text())
    raw["data"]["max_examples"] = examples
    raw["tuner"].update(max_trials=1, epochs=2)
    raw["tuner"]["search_space"].update(search_space)
    raw["training"].update(epochs=2)
    raw["evaluation"]["lower_bound"] = 0.0
    path = root / name
    path.write_text(yaml.safe_dump(raw))
    return local_runner.run(load_config(path, output_root=str(root / "out")))


def _pushed(summary):
    assert summary["status"] == "succeeded", summary["error"]
    assert summary["components"]["ImportExampleGen"]["status"] == "succeeded"
    assert summary["tuner"]["trials"] == 1
    assert summary["evaluation"]["blessed"] is True
    assert summary["infra_validation"]["blessed"] is True
    assert summary["pushed"] is not None
    return tf.saved_model.load(summary["pushed"]["model_dir"])


def test_forda_subset_to_a_pushed_model_that_takes_raw_series(repo_root, tmp_path):
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


def test_bbc_news_subset_to_a_pushed_model_that_takes_raw_text(repo_root, tmp_path):
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
    best = summary["tuner"]["best_hyperparameters"]
    assert best["encoder"] == "transformer"
    # conv1d is not listed: its keys never reach the tuner.
    assert not {"conv_blocks", "filters", "kernel_size", "residual"} & set(best)
    texts = tf.constant(["Shares rose as the bank's profits beat forecasts.", ""])
    out = model.signatures["serving_raw"](text=texts)
    assert out["scores"].shape == (2, 5)
    np.testing.assert_allclose(out["scores"].numpy().sum(axis=1), 1.0, atol=1e-5)
