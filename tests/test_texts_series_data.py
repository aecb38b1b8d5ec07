"""Staging texts and series: the packaged datasets, a user's folders and tables, bad input,
the config keys of both feature types, a CSV text column with line breaks."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import json_format

from components.csv_example_gen import reading
from pipeline import data, series, texts
from pipeline.config import load_config
from pipeline.errors import ConfigError


def _read(directory: str, split: str) -> list[tf.train.Example]:
    files = sorted(str(p) for p in (Path(directory) / split).glob("*.tfrecord.gz"))
    return [
        tf.train.Example.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
    ]


def test_bbc_news_is_read_from_the_package_five_classes_2225_texts(tmp_path):
    assert texts.class_names("bbc-news") == (
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    )
    with pytest.raises(data.DataError, match=r"sports/199.txt: byte 0xa3 .* data.encoding"):
        texts.stage_texts("bbc-news", str(tmp_path / "s"), feature="text", label="label")
    staged = texts.stage_texts(
        "bbc-news", str(tmp_path / "s"), feature="text", label="label", fallback_encoding="cp1252"
    )
    assert staged.rows == 2225
    assert len(staged.label_values) == 5
    assert any("sports/199.txt" in note for note in staged.notes)
    eval_examples = _read(staged.directory, "eval")
    assert 0.15 < len(eval_examples) / 2225 < 0.25
    text = eval_examples[0].features.feature["text"].bytes_list.value[0].decode()
    assert len(text) > 100


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def test_a_text_folder_with_test_split_skips_and_reports_empty_texts(tmp_path):
    source = _folder(
        tmp_path / "src",
        {
            "train/pos/a.txt": b"good film",
            "train/pos/b.txt": b"  \n",
            "train/neg/c.txt": b"bad film",
            "train/neg/notes.md": b"not a text",
            "test/pos/d.txt": "très bien".encode(),
            "test/neg/e.txt": b"awful",
        },
    )
    staged = texts.stage_texts(str(source), str(tmp_path / "s"), feature="review", label="y")
    assert staged.rows == 4
    assert staged.label_values == ("neg", "pos")
    assert any("1 empty texts" in n and "train/pos/b.txt" in n for n in staged.notes)
    assert any("train/neg/notes.md" in n for n in staged.notes)
    values = {
        e.features.feature["review"].bytes_list.value[0].decode(): (
            e.features.feature["y"].bytes_list.value[0].decode()
        )
        for e in _read(staged.directory, "eval")
    }
    assert values == {"très bien": "pos", "awful": "neg"}


def test_a_non_utf8_text_is_refused_naming_the_file_and_data_encoding(tmp_path):
    source = _folder(tmp_path / "src", {"a/1.txt": b"caf\xe9", "b/2.txt": b"ok"})
    with pytest.raises(data.DataError) as err:
        texts.stage_texts(str(source), str(tmp_path / "s"), feature="t", label="y")
    message = str(err.value)
    assert "\n" not in message
    assert "a/1.txt: byte 0xe9 at offset 3 is not valid utf-8" in message
    assert "data.encoding" in message


def test_forda_from_the_package_official_split_length_500_labels_minus_1_and_1(tmp_path):
    assert series.class_names("ucr:FordA") == ("-1", "1")
    staged = series.stage_series(
        "ucr:FordA", str(tmp_path / "s"), feature="signal", label="label", length=500
    )
    assert staged.rows == 3601 + 1320
    examples = _read(staged.directory, "eval")
    assert len(examples) == 1320
    values = examples[0].features.feature["signal"].float_list.value
    assert len(values) == 500
    assert {e.features.feature["label"].bytes_list.value[0] for e in examples} == {b"-1", b"1"}
    with pytest.raises(data.DataError, match="ucr:FordB|no dataset 'Forda'"):
        series.files_of("ucr:Forda")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("1\t0.5\t0.1", "line 2: the series has 2 values, features.sequence_length is 3"),
        ("1\t0.5\tNaN\t0.2", "line 2: value 2 is NaN"),
        ("1\t0.5\t\t0.2", "line 2: value 2 is empty"),
        ("1\t0.5\tx\t0.2", "line 2: value 2 is 'x', not a number"),
    ],
)
def test_ragged_nan_and_bad_series_are_refused_naming_file_and_line(tmp_path, line, problem):
    train = tmp_path / "Mine_TRAIN.tsv"
    train.write_text("0\t1\t2\t3\n" + line + "\n")
    with pytest.raises(data.DataError) as err:
        series.stage_series(str(train), str(tmp_path / "s"), feature="x", label="y", length=3)
    assert f"{train}: {problem}" in str(err.value)


def test_a_user_csv_table_without_test_file_is_hash_split(tmp_path):
    rng = np.random.default_rng(0)
    train = tmp_path / "Mine_TRAIN.csv"
    train.write_text(
        "".join(f"{i % 2}.0," + ",".join(map(str, rng.normal(size=4))) + "\n" for i in range(60))
    )
    staged = series.stage_series(str(train), str(tmp_path / "s"), feature="x", label="y", length=4)
    assert staged.label_values == ("0", "1")
    assert staged.rows == 60
    assert 0 < len(_read(staged.directory, "eval")) < 30


def _config(tmp_path, **changes):
    raw = {
        "pipeline_name": "t",
        "model_name": "t",
        "task": "classification",
        "data": {"format": "ucr", "source": "ucr:FordA"},
        "features": {"sequence": ["signal"], "sequence_length": 500},
        "label": "label",
        "model": {"family": "sequence"},
        "quantization": {"enabled": False},
        "evaluation": {"metric": "accuracy"},
    }
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, output_root=str(tmp_path / "out"))


def test_config_reads_sequence_and_text_keys(tmp_path):
    config = _config(tmp_path, **{"features.sequence_normalization": "global"})
    assert config.sequence_features == ("signal",)
    assert config.sequence_length == 500
    assert config.sequence_normalization == "global"
    text = _config(
        tmp_path,
        data={"format": "text_folder", "source": "bbc-news", "fallback_encoding": "cp1252"},
        features={"text": ["text"], "max_tokens": 64, "vocabulary_size": 500},
    )
    assert (text.text_features, text.max_tokens, text.vocabulary_size) == (("text",), 64, 500)


def test_sequence_family_takes_int8_quantization_but_not_for_recurrent_encoders(tmp_path):
    config = _config(tmp_path, quantization={"enabled": True})
    assert config.model_family == "sequence" and config.quantization.enabled
    with pytest.raises(ConfigError, match=r"encoder \['lstm'\].*XNNPACK") as err:
        _config(
            tmp_path,
            quantization={"enabled": True},
            tuner={"search_space": {"encoder": ["transformer", "lstm"]}},
        )
    assert err.value.key == "quantization.enabled"


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"model": {"family": "mlp"}}, "model.family", "need family sequence"),
        ({"features": {"sequence": ["signal"]}}, "features.sequence_length", "is required"),
        (
            {"features.sequence_normalization": "minmax"},
            "features.sequence_normalization",
            "expected one of",
        ),
        ({"features": {"text": ["t"]}}, "features", "data.format ucr holds one series"),
        ({"data": {"format": "csv", "source": "palmerpenguins"}}, "features.sequence", "ucr"),
        (
            {"tuner": {"search_space": {"pooling": ["flatten"]}}},
            "tuner.search_space.pooling",
            "family sequence pools with one of ['global_average', 'global_max']",
        ),
        (
            {"tuner": {"search_space": {"layers": {"min": -1, "max": 1}}}},
            "tuner.search_space.layers.min",
            "must be >= 0",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path, changes, key, words):
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, **changes)
    assert key in str(err.value)
    assert words in str(err.value)


def test_no_dense_layers_max_pooling_and_a_bag_of_embeddings_are_configurable(tmp_path):
    space = {
        "layers": {"min": 0, "max": 0},
        "conv_blocks": {"min": 0, "max": 1},
        "pooling": ["global_max", "global_average"],
    }
    config = _config(tmp_path, tuner={"search_space": space})
    searched = config.tuner.search_space
    assert (searched.layers.min, searched.layers.max, searched.conv_blocks.min) == (0, 0, 0)
    assert searched.pooling == ("global_max", "global_average")


def test_a_csv_text_column_with_line_breaks_in_quotes_is_read_on_one_line(tmp_path):
    source = tmp_path / "r.csv"
    source.write_text('review,stars\n"great,\nreally great",5\n"bad",1\n')
    layout = data.layout_of([str(source)], data.Columns("stars", text=("review",)), (), "utf-8")
    rows = [
        (line, tf.train.Example.FromString(e).features.feature["review"].bytes_list.value[0])
        for _, line, e in reading.read_examples(str(source), layout)
    ]
    assert rows == [(2, b"great, really great"), (4, b"bad")]


def test_csv_text_and_numeric_columns_read_by_csv_example_gen_one_example_per_row(tmp_path):
    """A review (one with a line break and a comma inside quotes) and a rating, as the
    pipeline's CsvExampleGen executor reads the user's file into tf.Examples."""
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts, standard_component_specs

    from components.csv_example_gen import executor
    from pipeline import sources

    source = tmp_path / "reviews.csv"
    source.write_text(
        'review,rating,label\n"Great,\nreally great",5,pos\nbad,1,neg\n'
        '"Fine\r\n\r\nI guess",3,pos\n'
    )
    config = _config(
        tmp_path,
        data={"format": "csv", "source": str(source)},
        features={"numeric": ["rating"], "text": ["review"]},
    )
    example_gen = sources.CsvSource().example_gen(config, sources.stage(config).directory)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    output = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=1)]
        )
    )
    properties = {
        **example_gen.exec_properties,
        standard_component_specs.OUTPUT_CONFIG_KEY: json_format.MessageToJson(output),
    }

    executor.Executor().Do({}, {"examples": [examples]}, properties)

    files = [str(p) for p in (tmp_path / "examples" / "Split-train").glob("*")]
    rows = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        review = feature["review"].bytes_list.value[0].decode()
        rows[review] = (feature["rating"].float_list.value[0], feature["label"].bytes_list.value[0])
    assert rows == {
        "Great, really great": (5.0, b"pos"),
        "bad": (1.0, b"neg"),
        "Fine  I guess": (3.0, b"pos"),  # each line break a space
    }
