"""Text and series through real TF Transform: token ids, padding, truncation, OOV, series
normalisation, and the serving signatures on raw text / raw series after save and load."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.export import export_serving_model, vocab_sizes_of
from models.features import OOV_BUCKETS, FeatureSpec, transformed_name, vocabulary_name
from models.preprocessing import tokenize
from pipeline import report, text_stats
from tests.tftlib import analyze_and_transform, serialize

MAX_TOKENS = 6
TEXT_SPEC = FeatureSpec((), (), "label", "classification", text=("text",), max_tokens=MAX_TOKENS)
TEXT_RAW_SPEC = {"text": tf.io.VarLenFeature(tf.string), "label": tf.io.VarLenFeature(tf.string)}
# "the" x4, "cat" x3, "sat" x2, "," x2 ... with top_k 3 the vocabulary is the, cat, sat.
TEXTS = [
    b"The cat sat.",
    b"the CAT, the cat",
    b"The dog sat, and the end of a text far longer than six tokens",
    b"",
]
TEXT_ROWS = [
    {"text": [t] if t else [], "label": [b"a" if i % 2 else b"b"]} for i, t in enumerate(TEXTS)
]

LENGTH = 5
SERIES_SPEC = FeatureSpec(
    (), (), "label", "classification", sequence=("trace",), sequence_length=LENGTH
)
SERIES_RAW_SPEC = {
    "trace": tf.io.VarLenFeature(tf.float32),
    "label": tf.io.VarLenFeature(tf.string),
}
SERIES = np.array(
    [[1, 2, 3, 4, 5], [10, 10, 10, 10, 10], [0, -2, 0, 2, 0], [100, 200, 300, 400, 500]],
    np.float32,
)
SERIES_ROWS = [
    {"trace": list(map(float, s)), "label": [b"a" if i % 2 else b"b"]} for i, s in enumerate(SERIES)
]


@pytest.fixture(scope="module")
def text_output(tmp_path_factory):
    return analyze_and_transform(
        tmp_path_factory.mktemp("text"),
        TEXT_ROWS,
        TEXT_SPEC,
        TEXT_RAW_SPEC,
        options={"vocabulary_size": 3},
    )


def test_tokenize_lower_cases_and_splits_punctuation_off():
    tokens = tokenize(tf.constant(["Hello, World!  It's £5."]))
    assert [t.decode() for t in tokens[0].numpy()] == [
        "hello",
        ",",
        "world",
        "!",
        "it",
        "'",
        "s",
        "£",
        "5",
        ".",
    ]


def test_bytes_that_are_not_utf8_become_a_replacement_character_token():
    # Staging decodes files (with data.fallback_encoding); serving_raw takes any bytes: a
    # cp1252 pound sign is one U+FFFD token (out of vocabulary), the rest reads as usual.
    tokens = tokenize(tf.constant([b"Costs \xa35 More", b""]))
    assert [t.decode() for t in tokens[0].numpy()] == ["costs", "\ufffd", "5", "more"]
    assert tokens[1].shape == (0,)


def test_token_statistics_count_tokens_cut_empty_texts_and_vocabulary_coverage(
    text_output, tmp_path
):
    _, output = text_output
    for split in text_stats.SPLITS:
        (tmp_path / f"Split-{split}").mkdir()
        path = str(tmp_path / f"Split-{split}" / "data.gz")
        with tf.io.TFRecordWriter(path, "GZIP") as writer:
            for row in TEXT_ROWS[: 3 if split == "eval" else 4]:
                writer.write(serialize(row))

    stats = text_stats.token_statistics(str(tmp_path), output, ["text"], MAX_TOKENS)["text"]

    assert (stats["vocabulary_size"], stats["max_tokens"]) == (3, MAX_TOKENS)
    # 4, 5, 15 and 0 tokens; of the 24, the vocabulary (the, cat, sat) holds 3 + 4 + 3.
    train = stats["splits"]["train"]
    assert train["tokens_per_text"] == {
        "mean": 6.0,
        "min": 0,
        "p50": 4,
        "p90": 12,
        "p99": 14,
        "max": 15,
    }
    assert (train["texts"], train["tokens"], train["vocabulary_coverage"]) == (4, 24, 0.4167)
    assert (train["longer_than_max_tokens"], train["empty"]) == (0.25, 0.25)
    evaluation = stats["splits"]["eval"]
    assert (evaluation["texts"], evaluation["tokens"], evaluation["empty"]) == (3, 24, 0.0)
    lines = text_stats.format_lines({"text": stats})
    assert "41.7%" in lines[1] and "25.0% cut" in lines[1]
    summary = {"pipeline": "p", "run_id": "r", "status": "succeeded", "seconds": 1.0}
    page = report.render({**summary, "components": {}, "text": {"text": stats}})
    assert "<h3>Text text</h3>" in page and "in the vocabulary (3 tokens)</td><td>41.7%" in page


def test_text_becomes_padded_truncated_ids_with_0_for_padding_and_oov_after_the_words(
    text_output,
):
    rows, output = text_output
    vocabulary = [v.decode() for v in output.vocabulary_by_name(vocabulary_name("text"))]
    assert vocabulary == ["the", "cat", "sat"]
    assert output.transformed_feature_spec()["text_xf"] == tf.io.FixedLenFeature(
        [MAX_TOKENS], tf.int64
    )
    ids = np.array([r["text_xf"] for r in rows])
    oov = len(vocabulary) + 1
    # "the cat sat ." : ids 1.. follow the vocabulary, "." is out of it, then padding.
    assert ids[0].tolist() == [1, 2, 3, oov, 0, 0]
    assert ids[1].tolist() == [1, 2, oov, 1, 2, 0]
    # Cut to the first MAX_TOKENS tokens.
    assert ids[2].tolist() == [1, oov, 3, oov, oov, 1]
    # A missing text is all padding.
    assert ids[3].tolist() == [0] * MAX_TOKENS
    assert vocab_sizes_of(output, TEXT_SPEC) == {"text": len(vocabulary) + OOV_BUCKETS + 1}


def _series_output(tmp_path, normalization):
    return analyze_and_transform(
        tmp_path,
        SERIES_ROWS,
        SERIES_SPEC,
        SERIES_RAW_SPEC,
        options={"sequence_normalization": normalization},
    )


def test_per_series_normalisation_z_scores_each_series_by_itself(tmp_path):
    rows, output = _series_output(tmp_path, "per_series")
    assert output.transformed_feature_spec()["trace_xf"] == tf.io.FixedLenFeature(
        [LENGTH], tf.float32
    )
    values = np.array([r["trace_xf"] for r in rows])
    expected = (SERIES - SERIES.mean(1, keepdims=True)) / SERIES.std(1, keepdims=True).clip(1e-30)
    expected[1] = 0.0  # a constant series has no spread: zeros
    np.testing.assert_allclose(values, expected, atol=1e-5)
    # Same shape, another level and scale: the same z-scores.
    np.testing.assert_allclose(values[0], values[3], atol=1e-5)


def test_global_normalisation_uses_the_mean_and_deviation_of_all_training_values(tmp_path):
    rows, _ = _series_output(tmp_path, "global")
    values = np.array([r["trace_xf"] for r in rows])
    np.testing.assert_allclose(values, (SERIES - SERIES.mean()) / SERIES.std(), rtol=1e-4)


def _tiny_text_model(vocab_size: int, class_count: int) -> keras.Model:
    tokens = keras.Input([MAX_TOKENS], dtype=tf.int64, name=transformed_name("text"))
    x = keras.layers.Embedding(vocab_size, 4)(tokens)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(class_count, activation="softmax")(x))


def test_serving_raw_text_gives_the_ids_and_scores_of_the_examples_after_save_and_load(
    text_output, tmp_path
):
    rows, output = text_output
    model = _tiny_text_model(vocab_sizes_of(output, TEXT_SPEC)["text"], 2)
    export_dir = export_serving_model(model, output, TEXT_SPEC, str(tmp_path / "m"), ["a", "b"])
    loaded = tf.saved_model.load(export_dir)
    raw = loaded.signatures["serving_raw"](text=tf.constant(TEXTS))
    examples = loaded.signatures["serving_default"](
        examples=tf.constant([serialize(r) for r in TEXT_ROWS])
    )
    np.testing.assert_allclose(raw["scores"].numpy(), examples["scores"].numpy(), atol=1e-6)
    # The transform graph inside the served model gives Transform's own ids.
    transformed = loaded.signatures["transform_features"](
        examples=tf.constant([serialize(r) for r in TEXT_ROWS])
    )
    np.testing.assert_array_equal(
        transformed["text_xf"].numpy(), np.array([r["text_xf"] for r in rows])
    )
    expected = model(np.array([r["text_xf"] for r in rows])).numpy()
    np.testing.assert_allclose(raw["scores"].numpy(), expected, atol=1e-6)


def test_serving_raw_series_takes_batch_by_length_floats_after_save_and_load(tmp_path):
    (tmp_path / "tft").mkdir()
    rows, output = _series_output(tmp_path / "tft", "per_series")
    trace = keras.Input([LENGTH], name=transformed_name("trace"))
    model = keras.Model(trace, keras.layers.Dense(2, activation="softmax")(trace))
    export_dir = export_serving_model(model, output, SERIES_SPEC, str(tmp_path / "m"), ["a", "b"])
    loaded = tf.saved_model.load(export_dir)
    raw = loaded.signatures["serving_raw"](trace=tf.constant(SERIES))
    examples = loaded.signatures["serving_default"](
        examples=tf.constant([serialize(r) for r in SERIES_ROWS])
    )
    np.testing.assert_allclose(raw["scores"].numpy(), examples["scores"].numpy(), atol=1e-6)
    expected = model(np.array([r["trace_xf"] for r in rows])).numpy()
    np.testing.assert_allclose(raw["scores"].numpy(), expected, atol=1e-6)
    short = serialize({"trace": [1.0, 2.0, 3.0]})
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not have 5 values"):
        loaded.signatures["serving_default"](examples=tf.constant([short]))
