"""CsvExampleGen's executor on real files with Beam's DirectRunner: what it writes, and bad
input (also at scale: generated files of 60k rows) stopping it with one line naming the
file and line, from a Beam worker as from this process."""

import gzip
import json

import pytest
import tensorflow as tf
from google.protobuf import json_format
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs

from components.csv_example_gen import executor, reading
from components.csv_example_gen.spec import LAYOUT_KEY
from pipeline.data import DataError, read_source

LAYOUT = reading.Layout(
    columns=(("n", "float"), ("name", "bytes"), ("review", "text"), ("sex", "bytes")),
    label="sex",
    na_values=("NA",),
)
HEADER = "n,name,review,sex\n"


def _run(tmp_path, pattern, layout=LAYOUT, beam_args=(), buckets=(4, 1)):
    """Do() over the files `pattern` matches under tmp_path; {split: [feature dicts]}."""
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    splits = [
        example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=n)
        for name, n in zip(("train", "eval"), buckets, strict=True)
    ]
    output = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=splits))
    properties = {
        standard_component_specs.INPUT_BASE_KEY: str(tmp_path),
        standard_component_specs.INPUT_CONFIG_KEY: json.dumps(
            {"splits": [{"name": "single_split", "pattern": pattern}]}
        ),
        standard_component_specs.OUTPUT_CONFIG_KEY: json_format.MessageToJson(output),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        LAYOUT_KEY: layout.to_json(),
    }
    context = executor.Executor.Context(beam_pipeline_args=list(beam_args), tmp_dir=str(tmp_path))
    executor.Executor(context).Do({}, {"examples": [examples]}, properties)
    return {split.name: _read(tmp_path / "examples" / f"Split-{split.name}") for split in splits}


def _read(directory):
    rows = []
    files = [str(p) for p in directory.glob("*.gz")]
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append({k: list(getattr(v, v.WhichOneof("kind")).value) for k, v in feature.items()})
    return rows


def test_a_folder_of_plain_and_compressed_files_is_read_typed_and_hash_split(tmp_path):
    (tmp_path / "a.csv").write_text(
        HEADER + '1,Ann,"Great,\nreally great",F\nNA,Bob,,M\n3,Cy,"Fine\r\n\r\nI guess",NA\n'
    )
    rows = "".join(f"{i},name{i},text {i},{'FM'[i % 2]}\n" for i in range(200))
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress((HEADER + rows).encode()))

    splits = _run(tmp_path, "*.csv*")

    every = splits["train"] + splits["eval"]
    assert len(every) == 202  # the row without a label is left out
    assert 0.1 < len(splits["eval"]) / len(every) < 0.3  # 1 bucket in 5
    by_name = {r["name"][0]: r for r in every}
    assert by_name[b"Ann"] == {
        "n": [1.0],
        "name": [b"Ann"],
        "review": [b"Great, really great"],
        "sex": [b"F"],
    }
    assert by_name[b"Bob"]["n"] == [] and by_name[b"Bob"]["review"] == []
    assert by_name[b"name7"] == {
        "n": [7.0],
        "name": [b"name7"],
        "review": [b"text 7"],
        "sex": [b"M"],
    }


def test_the_same_rows_go_to_the_same_split_on_every_run(tmp_path):
    rows = "".join(f"{i},n{i},t,{'FM'[i % 2]}\n" for i in range(100))
    (tmp_path / "a.csv").write_text(HEADER + rows)
    first = _run(tmp_path / ".", "a.csv")
    again = _run(tmp_path / ".", "a.csv")
    assert sorted(r["n"][0] for r in first["eval"]) == sorted(r["n"][0] for r in again["eval"])


def _generated(tmp_path, rows=60_000, bad_line=None, bad_row=""):
    """A CSV of `rows` rows whose line `bad_line` (the header is line 1) is `bad_row`."""
    lines = [f"{i},name{i % 500},some text,{'FM'[i % 2]}\n" for i in range(rows)]
    if bad_line:
        lines[bad_line - 2] = bad_row
    return HEADER + "".join(lines)


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "truncated.csv.gz",
            lambda t: gzip.compress(_generated(t).encode())[:-20_000],
            "truncated.csv.gz: line {}: the compressed data ends early or is corrupt",
        ),
        (
            "quote.csv",
            lambda t: _generated(t, bad_line=30_000, bad_row='7,"Ann,opens a quote,F\n').encode(),
            "quote.csv: line 30000: cannot parse this row (field larger than field limit",
        ),
        (
            "type.csv",
            lambda t: _generated(t, bad_line=50_000, bad_row="many,Ann,x,F\n").encode(),
            "type.csv: line 50000: column 'n' is numeric but holds 'many'",
        ),
    ],
)
def test_bad_input_at_scale_stops_with_one_line_naming_file_and_line(
    tmp_path, name, content, message
):
    (tmp_path / name).write_bytes(content(tmp_path))
    with pytest.raises(DataError) as err:
        _run(tmp_path, name)
    text = str(err.value)
    assert "\n" not in text and "while running" not in text, text
    expected = message.split("{}")[0]
    assert text.startswith(f"{tmp_path}/{expected}"), text
    if "{}" in message:  # truncation: the last line that decompressed, near the cut
        line = int(text.removeprefix(f"{tmp_path}/{expected}").split(":")[0])
        assert 45_000 < line < 60_000


def test_a_data_error_in_a_beam_worker_process_is_the_same_one_line(tmp_path):
    (tmp_path / "a.csv").write_text(HEADER + "1,Ann,x,F\n2,Bob,x\n")
    args = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    with pytest.raises(DataError) as err:
        _run(tmp_path, "a.csv", beam_args=args)
    assert str(err.value) == (
        f"{tmp_path}/a.csv: line 3 has 3 fields, the header has 4;"
        " fix or remove that line (quote fields that contain commas)"
    )


def test_no_file_matching_the_pattern_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no file matches; check data.source"):
        _run(tmp_path, "*.csv")


def test_a_bad_row_found_by_the_example_gen_fails_the_run_with_that_one_line(tmp_path, repo_root):
    """Through the local runner: the checks before the run pass (the label column is fine),
    the ExampleGen meets a text in a numeric column, and the summary's error is its line."""
    from test_local_runner import write_config

    from pipeline import local_runner
    from pipeline.config import load_config

    lines = read_source("palmerpenguins").splitlines()
    fields = lines[100].split(",")
    fields[2] = "long"  # bill_length_mm, line 101
    lines[100] = ",".join(fields)
    source = tmp_path / "penguins.csv"
    source.write_text("\n".join(lines) + "\n")
    config = load_config(write_config(tmp_path, repo_root, source=source))

    summary = local_runner.run(config)

    assert summary["status"] == "failed"
    assert summary["error"] == (
        f"CsvExampleGen failed: DataError: {source}: line 101: column 'bill_length_mm' is"
        " numeric but holds 'long'; fix the value, or list it in data.na_values if it marks"
        " a missing value"
    )
    assert summary["components"]["StatisticsGen"]["status"] == "not_run"
