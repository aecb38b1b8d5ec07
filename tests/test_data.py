"""Staging the CSV for ExampleGen."""

import pytest

from pipeline.config import load_config
from pipeline.data import DataError, normalise, read_source, stage


def test_missing_value_markers_become_empty_fields():
    text, rows, labels = normalise("a,b,y\n1,NA,x\nNA,2,z\n", "t.csv", ("NA",), "y")
    assert text == "a,b,y\n1,,x\n,2,z\n"
    assert rows == 2
    assert labels == ("x", "z")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("a,b\n1,2\n", "no label column 'y'"),
        ("a,y\n1,x\n2\n", "line 3 has 1 fields, the header has 2"),
        ("a,y\n", "no data rows"),
    ],
)
def test_malformed_csv_is_reported_with_its_location(text, message):
    with pytest.raises(DataError, match=message):
        normalise(text, "t.csv", ("NA",), "y")


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
