"""CSV input: checks before a run (headers, labels) and the row decoding ExampleGen streams,
each bad file one line naming the file and line."""

import bz2
import dataclasses
import gzip

import pytest
import tensorflow as tf

from components.csv_example_gen import reading
from pipeline import data, sources
from pipeline.config import load_config
from pipeline.data import Columns, DataError, read_source

COLUMNS = Columns(label="y", numeric=("a",), categorical=("b",))


def _check(path, columns=COLUMNS, na_values=("NA",)):
    """The run's checks on one file: header and label pass, then every row decoded."""
    files = [str(path)]
    layout = data.layout_of(files, columns, na_values, "utf-8")
    data.check_headers(files, layout)
    scan = data.scan_labels(files, layout, classes=not columns.numeric_label)
    examples = [
        (line, tf.train.Example.FromString(e) if e else None)
        for _, line, e in reading.read_examples(str(path), layout)
    ]
    return scan, examples


def _values(example):
    """{feature: its values as Python} of a tf.Example."""
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = list(getattr(feature, kind).value) if kind else None
    return out


def test_missing_value_markers_become_empty_features_of_the_column_kind(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1,NA,x\nNA,2,z\n")
    scan, examples = _check(path)
    assert [_values(e) for _, e in examples] == [
        {"a": [1.0], "b": [], "y": [b"x"]},
        {"a": [], "b": [b"2"], "y": [b"z"]},  # a categorical column of digits stays text
    ]
    assert examples[1][1].features.feature["a"].HasField("float_list")
    assert (scan.rows, scan.classes) == (2, ("x", "z"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "t.csv: the file is empty; expected a header row"),
        ("\n\n", "t.csv: the file is empty"),
        ("a,b,y\n", "t.csv: the header is there but no data rows follow"),
        ("a,b,y\n\n", "t.csv: the header is there but no data rows follow"),
        ("a,b\n1,2\n", "t.csv: label names 'y', which is not a column of the file"),
        ("a,b,y\n1,2,x\n2,x\n", "t.csv: line 3 has 2 fields, the header has 3"),
        # A quoted field spanning lines counts its lines; blank lines count too.
        ('a,b,y\n1,"two\nlines",x\n\n3,4\n', "t.csv: line 5 has 2 fields"),
        ("a,b,y\n1,2,x\nmany,2,x\n", "t.csv: line 3: column 'a' is numeric but holds 'many'"),
        ("a,b,y\n1,2,NA\n", "t.csv: no row has a value for the label 'y'"),
        ("a,b,y,b\n1,2,x,3\n", "t.csv: line 1: the header names column 'b' twice"),
        ("a,,y\n1,2,x\n", "t.csv: line 1: column 2 of the header has no name"),
        ('a,b,y\n1,"x"y,x\n', "t.csv: line 2: cannot parse this row"),
    ],
)
def test_malformed_csv_is_one_line_naming_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        _check(path)
    assert str(err.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(err.value)


def test_a_configured_column_missing_from_the_header_names_the_key(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("species,island,sex\nA,x,m\n")
    columns = Columns(label="species", categorical=("island", "sexx"))
    with pytest.raises(DataError) as err:
        _check(path, columns, ())
    assert str(err.value) == (
        f"{path}: features.categorical names 'sexx', which is not a column of the file"
        " (did you mean 'sex'?); the header has ['species', 'island', 'sex']"
    )


def test_rows_without_a_label_are_left_out_and_counted(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1,2,x\n3,4,NA\n5,6,z\n7,8,\n")
    scan, examples = _check(path)
    assert [line for line, e in examples if e is not None] == [2, 4]
    assert (scan.rows, scan.unlabelled, scan.first_unlabelled) == (
        2,
        2,
        ((str(path), 3), (str(path), 5)),
    )
    assert data.unlabelled_note(scan, "t.csv", "y") == (
        "t.csv: left out 2 rows without a label 'y' (lines 3, 5)",
    )


def test_empty_string_marker_and_spaces_around_header_names(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(" a , b ,y\n1, ,x\n,2,z\n")
    scan, examples = _check(path, na_values=("NA", ""))
    assert [n for n, _ in data.layout_of([str(path)], COLUMNS, (), "utf-8").columns] == [
        "a",
        "b",
        "y",
    ]
    assert _values(examples[0][1])["b"] == [] and scan.rows == 2


def test_a_utf8_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffy,a,b\nx,1,2\n".encode())
    assert read_source(str(path)).startswith("y,a,b")
    assert _check(path)[0].classes == ("x",)


def test_non_utf8_bytes_name_the_line_and_the_encoding_setting(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b,y\n1,2,x\n3,Gen\xe8ve,z\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        _check(path)
    assert str(err.value).startswith(f"{path}: line 3: byte 0xe8 is not valid utf-8")
    assert "data.encoding" in str(err.value)
    assert "Genève" in read_source(str(path), "latin-1")


def test_a_column_the_config_does_not_name_is_typed_by_its_first_rows(tmp_path):
    path = tmp_path / "t.csv"
    typed = "".join(f"1,2,x,{2007 + i % 3},ok\n" for i in range(data.TYPING_ROWS - 1))
    path.write_text(f"a,b,y,year,note\n{typed}3,4,z,2008,\n5,6,x,recent,fine\n")
    layout = data.layout_of([str(path)], COLUMNS, (), "utf-8")
    kinds = {"a": "float", "b": "bytes", "y": "bytes", "year": "int", "note": "bytes"}
    assert dict(layout.columns) == kinds
    line = data.TYPING_ROWS + 2
    with pytest.raises(DataError, match=f"line {line}: column 'year' held integers in the first"):
        list(reading.read_examples(str(path), layout))


def _penguins(repo_root, tmp_path, text, **changes):
    config = load_config(repo_root / "configs" / "penguins.yaml", output_root=str(tmp_path))
    path = tmp_path / "in.csv"
    path.write_text(text)
    data_config = dataclasses.replace(config.data, source=str(path))
    return dataclasses.replace(config, data=data_config, schema_file=None, **changes)


def test_a_single_class_label_stops_before_anything_runs(repo_root, tmp_path):
    rows = "".join(f"Adelie,Biscoe,{i},1,2,3,male\n" for i in range(20))
    text = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex\n" + rows
    config = _penguins(repo_root, tmp_path, text)
    with pytest.raises(
        DataError, match="the label 'species' has one value \\('Adelie'\\) in all 20"
    ):
        sources.stage(config)
    assert not (tmp_path / "data").exists()


def test_a_regression_label_must_be_numeric(repo_root, tmp_path):
    text = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex\n"
    text += "Adelie,Biscoe,1,1,2,heavy,male\n"
    config = _penguins(repo_root, tmp_path, text, task="regression", label="body_mass_g")
    config = dataclasses.replace(config, numeric_features=("bill_length_mm",))
    layout = sources.CsvSource().example_gen(config, "").exec_properties["layout"]
    with pytest.raises(DataError, match="line 2: column 'body_mass_g' is numeric but holds"):
        list(reading.read_examples(str(tmp_path / "in.csv"), reading.Layout.from_json(layout)))


def test_bundled_penguins_without_body_mass_are_left_out_for_regression(repo_root, tmp_path):
    path = repo_root / "configs" / "penguins_body_mass.yaml"
    config = load_config(path, output_root=str(tmp_path))
    staged = sources.stage(config)
    assert staged.rows == 342
    assert staged.notes == (
        "palmerpenguins: left out 2 rows without a label 'body_mass_g' (lines 5, 273)",
    )


def test_bundled_penguins_are_read_where_they_are(repo_root, tmp_path):
    assert read_source("palmerpenguins").startswith("species,island,")
    config = load_config(repo_root / "configs" / "penguins.yaml", output_root=str(tmp_path))
    staged = sources.stage(config)
    assert (staged.rows, staged.label_values) == (344, ("Adelie", "Chinstrap", "Gentoo"))
    assert staged.directory == str(data.Path(data.penguins_csv()).parent)
    assert not (tmp_path / "data").exists()  # no copy


def test_staging_counts_which_categorical_features_have_too_many_values_to_slice(
    repo_root, tmp_path
):
    rows = "".join(
        f"{'Adelie' if i % 2 else 'Gentoo'},Isle{i},1,1,2,3,{'male' if i % 2 else 'female'}\n"
        for i in range(30)
    )
    text = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex\n" + rows
    config = _penguins(repo_root, tmp_path, text)
    assert config.evaluation.max_slice_values == 20
    assert sources.stage(config).many_valued == ("island",)  # 30 islands, 2 sexes


def test_files_a_folder_and_a_glob_with_compressed_files(repo_root, tmp_path):
    """Every file of a folder (plain, gzip, bzip2) is checked; a header that differs is
    named; the input config's pattern is what the config's source says."""
    folder = tmp_path / "parts"
    folder.mkdir()
    header = "a,b,y\n"
    (folder / "1.csv").write_text(header + "1,2,x\n3,4,NA\n")
    (folder / "2.csv.gz").write_bytes(gzip.compress((header + "5,6,z\n").encode()))
    (folder / "3.csv.bz2").write_bytes(bz2.compress((header + "7,8,x\n").encode()))
    (folder / "notes.txt").write_text("not data")
    config = load_config(repo_root / "configs" / "penguins.yaml", output_root=str(tmp_path))
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, source=str(folder)),
        label="y",
        numeric_features=("a",),
        categorical_features=("b",),
        schema_file=None,
    )
    staged = sources.stage(config)
    assert (staged.directory, staged.rows, staged.label_values) == (str(folder), 3, ("x", "z"))
    assert staged.notes == (f"{folder}: left out 1 rows without a label 'y' (lines 3)",)
    glob = dataclasses.replace(
        config, data=dataclasses.replace(config.data, source=f"{folder}/[12].csv*")
    )
    base, input_config = sources.csv_input(glob)
    assert (base, input_config.splits[0].pattern) == (str(folder), "[12].csv*")
    assert sources.stage(glob).rows == 2
    assert sources.csv_input(glob, "gs://b/data")[0] == "gs://b/data"
    (folder / "4.csv.zst").write_bytes(b"not read")
    with pytest.raises(DataError, match="4.csv.zst: zstd files cannot be read; compress the CSV"):
        sources.stage(config)
    (folder / "4.csv.zst").unlink()
    (folder / "4.csv").write_text("a,y,b\n1,x,2\n")
    with pytest.raises(DataError, match=f"{folder}/4.csv: line 1: the header .* differs"):
        sources.stage(config)


def test_rows_are_estimated_from_a_prefix_plain_and_compressed(tmp_path):
    # Rows of one kind all through, as a sample in random order has them.
    rows = "".join(f"{i * 7919 % 100_000},name{i % 97},{i % 13 * 0.5}\n" for i in range(50_000))
    plain = tmp_path / "big.csv"
    plain.write_text("a,b,c\n" + rows)
    packed = tmp_path / "big.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        estimate = data.estimate_rows([str(path)], prefix_bytes=64 * 1024)
        assert abs(estimate - 50_000) < 50_000 * 0.1, (path, estimate)
    assert data.estimate_rows([str(plain)], prefix_bytes=1 << 24) == 50_000


def test_the_config_takes_a_folder_or_a_glob_and_names_a_glob_matching_nothing(repo_root, tmp_path):
    import yaml

    from pipeline.errors import ConfigError

    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "1.csv.gz").write_bytes(gzip.compress(b"a,b,y\n1,2,x\n"))
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    raw.pop("schema_file")
    path = tmp_path / "c.yaml"
    for source, expected in (("parts", "parts"), ("parts/*.csv.gz", "parts/*.csv.gz")):
        raw["data"]["source"] = source
        path.write_text(yaml.safe_dump(raw))
        assert load_config(path, output_root=str(tmp_path)).data.source == str(tmp_path / expected)
    raw["data"]["source"] = "parts/*.tsv"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="data.source: no file matches '\\*.tsv' in"):
        load_config(path, output_root=str(tmp_path))
