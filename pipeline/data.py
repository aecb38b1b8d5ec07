"""Staging the input CSV where ExampleGen reads it."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from importlib import resources
from pathlib import Path

from pipeline.config import PipelineConfig

STAGED_FILE = "data.csv"


class DataError(ValueError):
    """The input file cannot be read as a CSV with a header."""


@dataclasses.dataclass(frozen=True)
class StagedData:
    """The directory ExampleGen reads, the staged file, its size and its label values."""

    directory: str
    path: str
    size_bytes: int
    rows: int
    label_values: tuple[str, ...]


def read_source(source: str) -> str:
    """The text of the configured CSV (`palmerpenguins` is the package's bundled file)."""
    if source == "palmerpenguins":
        return resources.files("palmerpenguins").joinpath("data", "penguins.csv").read_text()
    try:
        return Path(source).read_text()
    except OSError as err:
        raise DataError(f"{source}: cannot read: {err.strerror}") from err


def normalise(
    text: str, source: str, na_values: tuple[str, ...], label: str
) -> tuple[str, int, tuple[str, ...]]:
    """Rewrites missing-value markers (e.g. "NA") as empty fields, which ExampleGen reads as missing.

    Returns:
      The CSV text, its number of data rows and the distinct label values.

    Raises:
      DataError: the file is empty, a row has the wrong number of fields, or there is no label column.
    """
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0]:
        raise DataError(f"{source}: empty file, expected a header row")
    header = rows[0]
    if label not in header:
        raise DataError(f"{source}: no label column {label!r}; the header has {header}")
    missing = set(na_values)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    labels = set()
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(
                f"{source}: line {number} has {len(row)} fields, the header has {len(header)}"
            )
        row = ["" if value.strip() in missing else value for value in row]
        labels.add(row[header.index(label)])
        writer.writerow(row)
    data_rows = len(rows) - 1
    if data_rows == 0:
        raise DataError(f"{source}: no data rows")
    return out.getvalue(), data_rows, tuple(sorted(v for v in labels if v))


def stage_schema(schema_file: str, directory: str) -> str:
    """Copies the curated schema to a content-addressed name.

    ImportSchemaGen's cache key is the file path, so an edited schema at the same
    path would be ignored; a name derived from the content makes edits count.
    """
    data = Path(schema_file).read_bytes()
    path = (
        Path(directory).parent
        / f"{Path(directory).name}-schema-{hashlib.sha256(data).hexdigest()[:12]}.pbtxt"
    )
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def stage(config: PipelineConfig) -> StagedData:
    """Writes the normalised CSV to `<output_root>/data/<pipeline_name>/`.

    The file is rewritten only when its content changes, so ExampleGen's input
    fingerprint (and with it the cache) stays put across identical runs.
    """
    text, rows, labels = normalise(
        read_source(config.data.source), config.data.source, config.data.na_values, config.label
    )
    directory = Path(config.output_root) / "data" / config.pipeline_name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STAGED_FILE
    data = text.encode()
    if (
        not path.exists()
        or hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(data).digest()
    ):
        path.write_bytes(data)
    return StagedData(str(directory), str(path), len(data), rows, labels)
