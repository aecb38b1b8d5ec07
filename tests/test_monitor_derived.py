"""Drift of image, text and sequence features on real data: the training examples are
written as ExampleGen writes them (Split-train/, Split-eval/), the serving data is a folder
of tf.Examples read as `monitor --examples` reads it, and the comparison is the monitor's.
A shift must drift; a fresh sample of the training distribution must not (false alarms
count as failures)."""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from models.preprocessing import tokenize
from pipeline import monitor_derived
from pipeline.config import load_config
from pipeline.images import fashion_mnist_arrays
from pipeline.monitor_inputs import read_examples
from pipeline.series import files_of
from pipeline.texts import bbc_news_root


def _feature(value) -> tf.train.Feature:
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=value))


def _write(path, name, values, gzip=True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), "GZIP" if gzip else "") as writer:
        for value in values:
            example = tf.train.Example()
            example.features.feature[name].CopyFrom(_feature(value))
            writer.write(example.SerializeToString())


def _drift(tmp_path, config_name, feature, train, evaluation, served, vocabulary=()):
    """drift value and verdict per derived statistic of `served` against train + eval."""
    config = load_config(REPO_ROOT / "configs" / config_name, output_root=str(tmp_path / "out"))
    examples = tmp_path / "examples"
    _write(examples / "Split-train" / "data_tfrecord-00000-of-00001.gz", feature, train)
    _write(examples / "Split-eval" / "data_tfrecord-00000-of-00001.gz", feature, evaluation)
    _write(tmp_path / "serving" / "requests.tfrecord", feature, served, gzip=False)
    kinds = {feature: "text" if vocabulary else ("image" if config.image_features else "sequence")}
    vocabularies = {feature: list(vocabulary)} if vocabulary else {}
    reference = monitor_derived.reference_frame(str(examples), kinds, vocabularies)
    data = read_examples(str(tmp_path / "serving"), config)
    frame = monitor_derived.derived_frame(data.raw, kinds, vocabularies)
    assert len(frame) == len(served)
    _, _, anomalies = monitor_derived.compare(reference, frame, config.monitoring)
    return {
        ".".join(info.path.step): (
            round(info.drift_measurements[0].value, 4),
            info.drift_measurements[0].value > info.drift_measurements[0].threshold,
        )
        for info in anomalies.drift_skew_info
    }


def _drifted(result) -> list[str]:
    return sorted(name for name, (_, drifted) in result.items() if drifted)


def _pngs(pixels) -> list[bytes]:
    return [tf.io.encode_png(image).numpy() for image in pixels]


def test_brighter_fashion_mnist_images_drift_and_a_fresh_sample_does_not(tmp_path):
    train, _ = fashion_mnist_arrays("train")
    test, _ = fashion_mnist_arrays("eval")
    rng = np.random.default_rng(0)
    picked = rng.choice(len(train), 1500, replace=False)
    fresh = test[rng.choice(len(test), 800, replace=False)]
    args = ("fashion_mnist.yaml", "image", _pngs(train[picked[:1200]]), _pngs(train[picked[1200:]]))
    calm = _drift(tmp_path / "calm", *args, _pngs(fresh[:400]))
    assert set(calm) == {f"image.{s}" for s in monitor_derived.IMAGE_STATISTICS}
    assert _drifted(calm) == [], calm
    # Brighter by a fifth of the range (a lamp, an exposure setting), clipped at white.
    brighter = np.clip(fresh[400:].astype(np.int32) + 51, 0, 255).astype(np.uint8)
    shifted = _drift(tmp_path / "shifted", *args, _pngs(brighter))
    assert "image.brightness" in _drifted(shifted), shifted
    assert shifted["image.height"] == (0.0, False) and shifted["image.channels"] == (0.0, False)


def _bbc_texts() -> dict[str, list[bytes]]:
    root = bbc_news_root()
    return {
        folder.name: [p.read_bytes() for p in sorted(folder.glob("*.txt"))]
        for folder in sorted(root.iterdir())
        if folder.is_dir()
    }


def _vocabulary(texts: list[bytes], size: int) -> list[bytes]:
    """Transform's vocabulary: the `size` most frequent tokens of the training texts."""
    counts: collections.Counter = collections.Counter()
    for start in range(0, len(texts), 256):
        for tokens in tokenize(tf.constant(texts[start : start + 256])).to_list():
            counts.update(tokens)
    return [token for token, _ in counts.most_common(size)]


def test_bbc_texts_of_another_class_mix_drift_and_held_out_texts_do_not(tmp_path):
    rng = random.Random(0)
    train, evaluation, held_out = [], [], {}
    for label, texts in _bbc_texts().items():
        texts = [t.decode("utf-8", "replace").encode() for t in texts]
        rng.shuffle(texts)
        n = len(texts)
        train += texts[: n * 6 // 10]
        evaluation += texts[n * 6 // 10 : n * 8 // 10]
        held_out[label] = texts[n * 8 // 10 :]
    vocabulary = _vocabulary(train, 20_000)
    args = ("bbc_news.yaml", "text", train, evaluation)
    mixed = [t for texts in held_out.values() for t in texts]
    calm = _drift(tmp_path / "calm", *args, mixed, vocabulary=vocabulary)
    assert set(calm) == {f"text.{s}" for s in monitor_derived.TEXT_STATISTICS}
    assert _drifted(calm) == [], calm
    # Sport and technology news only: the topics' words take other shares.
    topical = held_out["sports"] + held_out["tech"][:30]
    shifted = _drift(tmp_path / "shifted", *args, topical, vocabulary=vocabulary)
    assert "text.top_tokens" in _drifted(shifted), shifted


def _ucr_rows(path, limit: int) -> list[list[float]]:
    lines = path.read_text().splitlines()[:limit]
    return [[float(v) for v in line.split("\t")[1:]] for line in lines]


def test_scaled_forda_series_drift_and_test_series_do_not(tmp_path):
    train_file, test_file = files_of("ucr:FordA")
    train, test = _ucr_rows(train_file, 1300), _ucr_rows(test_file, 800)
    args = ("forda.yaml", "signal", train[:1000], train[1000:])
    calm = _drift(tmp_path / "calm", *args, test[:400])
    assert set(calm) == {f"signal.{s}" for s in monitor_derived.SEQUENCE_STATISTICS}
    assert _drifted(calm) == [], calm
    # A sensor's gain doubled: the same shapes, twice the amplitude.
    scaled = _drift(tmp_path / "scaled", *args, [[2 * v for v in row] for row in test[400:]])
    assert {"signal.std", "signal.range"} <= set(_drifted(scaled)), scaled


def test_missing_values_stay_missing_and_undecodable_images_are_named():
    png = tf.io.encode_png(np.full([4, 3, 1], 255, np.uint8)).numpy()
    frame = monitor_derived.derived_frame({"image": [png, None]}, {"image": "image"}, {})
    assert frame.loc[0, ["image.height", "image.width", "image.brightness"]].tolist() == [4, 3, 1]
    assert frame.loc[1].isna().all()
    texts = monitor_derived.derived_frame(
        {"text": ["The cat, the mat.", None]}, {"text": "text"}, {"text": [b"the", b"."]}
    )
    assert texts.loc[0, "text.tokens"] == 6 and texts.loc[0, "text.oov_share"] == 0.5
    assert texts.loc[0, "text.top_tokens"] == ["the", "the", "."]
    assert np.isnan(texts.loc[1, "text.tokens"]) and texts.loc[1, "text.top_tokens"] is None
    with pytest.raises(ValueError, match="'image': the image of example 2 cannot be decoded"):
        monitor_derived.derived_frame({"image": [png, None, b"GIF8?"]}, {"image": "image"}, {})


def test_derived_statistics_take_thresholds_from_the_config(tmp_path):
    import yaml

    from pipeline.errors import ConfigError

    raw = yaml.safe_load((REPO_ROOT / "configs" / "bbc_news.yaml").read_text())
    raw["monitoring"] = {"thresholds": {"text.top_tokens": 0.02, "text.tokens": 0.5}}
    path = tmp_path / "bbc.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, output_root=str(tmp_path / "out"))
    frame = monitor_derived.derived_frame({"text": ["a b"]}, {"text": "text"}, {"text": [b"a"]})
    schema = monitor_derived.comparing_schema(frame, config.monitoring)
    comparators = {f.name: f.drift_comparator for f in schema.feature}
    assert comparators["text.top_tokens"].infinity_norm.threshold == 0.02
    assert comparators["text.tokens"].jensen_shannon_divergence.threshold == 0.5
    assert comparators["text.oov_share"].jensen_shannon_divergence.threshold == 0.25
    raw["monitoring"] = {"thresholds": {"text.brightness": 0.1}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"monitoring\.thresholds\.text\.brightness"):
        load_config(path, output_root=str(tmp_path / "out"))
