"""Staging the CSV for ExampleGen: missing values, and bad files caught before anything runs."""

import dataclasses

import pytest

from pipeline.config import load_config
from pipeline.data import Columns, DataError, normalise, read_source, stage

COLUMNS = Columns(label="y", numeric=("a",), categorical=("b",))


def test_missing_value_markers_become_empty_fields():
    table = normalise("a,b,y\n1,NA,x\nNA,2,z\n", "t.csv", ("NA",), COLUMNS)
    assert table.text == "a,b,y\n1,,x\n,2,z\n"
    assert table.rows == 2
    assert table.label_values == ("x", "z")


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
    ],
)
def test_malformed_csv_is_one_line_naming_the_file_and_line(text, message):
    with pytest.raises(DataError) as err:
        normalise(text, "t.csv", ("NA",), COLUMNS)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_configured_column_missing_from_the_header_names_the_key():
    columns = Columns(label="species", categorical=("island", "sexx"))
    with pytest.raises(DataError) as err:
        normalise("species,island,sex\nA,x,m\n", "p.csv", (), columns)
    assert str(err.value) == (
        "p.csv: features.categorical names 'sexx', which is not a column of the file"
        " (did you mean 'sex'?); the header has ['species', 'island', 'sex']"
    )


def test_rows_without_a_label_are_left_out_and_counted():
    text = "a,b,y\n1,2,x\n3,4,NA\n5,6,z\n7,8,\n"
    table = normalise(text, "t.csv", ("NA",), COLUMNS)
    assert table.text == "a,b,y\n1,2,x\n5,6,z\n"
    assert (table.rows, table.unlabelled_lines) == (2, (3, 5))


def test_empty_string_marker_and_spaces_around_header_names():
    table = normalise(" a , b ,y\n1, ,x\n,2,z\n", "t.csv", ("NA", ""), COLUMNS)
    assert table.text.splitlines()[0] == "a,b,y"
    assert table.rows == 2


def test_a_utf8_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffy,a,b\nx,1,2\n".encode())
    text = read_source(str(path))
    assert text.startswith("y,a,b")
    assert normalise(text, str(path), (), COLUMNS).label_values == ("x",)


def test_non_utf8_bytes_name_the_line_and_the_encoding_setting(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b,y\n1,2,x\n3,Gen\xe8ve,z\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_source(str(path))
    assert str(err.value).startswith(f"{path}: line 3: byte 0xe8 is not valid utf-8")
    assert "data.encoding" in str(err.value)
    assert "Genève" in read_source(str(path), "latin-1")


def _penguins(repo_root, tmp_path, text, **changes):
    config = load_config(repo_root / "configs" / "penguins.yaml", output_root=str(tmp_path))
    path = tmp_path / "in.csv"
    path.write_text(text)
    data = dataclasses.replace(config.data, source=str(path))
    return dataclasses.replace(config, data=data, schema_file=None, **changes)


def test_a_single_class_label_stops_before_anything_runs(repo_root, tmp_path):
    rows = "".join(f"Adelie,Biscoe,{i},1,2,3,male\n" for i in range(20))
    text = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex\n" + rows
    config = _penguins(repo_root, tmp_path, text)
    with pytest.raises(
        DataError, match="the label 'species' has one value \\('Adelie'\\) in all 20"
    ):
        stage(config)
    assert not (tmp_path / "data").exists()


def test_a_regression_label_must_be_numeric(repo_root, tmp_path):
    text = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex\n"
    text += "Adelie,Biscoe,1,1,2,heavy,male\n"
    config = _penguins(repo_root, tmp_path, text, task="regression", label="body_mass_g")
    config = dataclasses.replace(config, numeric_features=("bill_length_mm",))
    with pytest.raises(DataError, match="line 2: column 'body_mass_g' is numeric but holds"):
        stage(config)


def test_bundled_penguins_without_body_mass_are_left_out_for_regression(repo_root, tmp_path):
    path = repo_root / "configs" / "penguins_body_mass.yaml"
    config = load_config(path, output_root=str(tmp_path))
    staged = stage(config)
    assert staged.rows == 342
    assert staged.notes == (
        "palmerpenguins: left out 2 rows without a label 'body_mass_g' (lines 5, 273)",
    )


def test_bundled_penguins_are_staged_once(repo_root, tmp_path):
    assert read_source("palmerpenguins").startswith("species,island,")
    config = load_config(repo_root / "configs" / "penguins.yaml", output_root=str(tmp_path))
    staged = stage(config)
    assert staged.rows == 344
    assert staged.label_values == ("Adelie", "Chinstrap", "Gentoo")
    mtime = (tmp_path / "data" / "penguins" / "data.csv").stat().st_mtime_ns
    # Unchanged content is not rewritten, so ExampleGen's fingerprint (and the cache) holds.
    assert stage(config).path == staged.path
    assert (tmp_path / "data" / "penguins" / "data.csv").stat().st_mtime_ns == mtime
