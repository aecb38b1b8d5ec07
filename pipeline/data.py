"""Staging the input CSV where ExampleGen reads it."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import difflib
import hashlib
import io
from importlib import resources
from pathlib import Path

from pipeline.config import PipelineConfig

STAGED_FILE = "data.csv"


class DataError(ValueError):
    """The input file cannot be used as configured. The message is one line: the file,
    the line or config key, what is wrong and what to do."""


@dataclasses.dataclass(frozen=True)
class StagedData:
    """The directory ExampleGen reads, the staged file, its size and its label values.

    `notes` are lines for the user about what staging left out (rows without a label,
    files that are not images).
    """

    directory: str
    path: str
    size_bytes: int
    rows: int
    label_values: tuple[str, ...]
    notes: tuple[str, ...] = ()


def _unlabelled_note(lines: tuple[int, ...], source: str, label: str) -> tuple[str, ...]:
    """One line on the rows left out for having no label, if any were."""
    if not lines:
        return ()
    shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
    return (f"{source}: left out {len(lines)} rows without a label {label!r} (lines {shown})",)


@dataclasses.dataclass(frozen=True)
class Columns:
    """The columns a config reads from the file, with the config key that names each."""

    label: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric_label: bool = False
    text: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: PipelineConfig) -> Columns:
        return cls(
            config.label,
            config.numeric_features,
            config.categorical_features,
            numeric_label=config.task == "regression",
            text=config.text_features,
        )

    def keys(self) -> dict[str, str]:
        """Column name -> the config key that asks for it."""
        named = {name: "features.numeric" for name in self.numeric}
        named.update({name: "features.categorical" for name in self.categorical})
        named.update({name: "features.text" for name in self.text})
        named[self.label] = "label"
        return named

    def numbers(self) -> tuple[str, ...]:
        """The columns whose values must parse as numbers."""
        return self.numeric + ((self.label,) if self.numeric_label else ())


@dataclasses.dataclass(frozen=True)
class Normalised:
    """The CSV text ExampleGen reads, its number of data rows, the distinct label values
    and the lines left out for having no label."""

    text: str
    rows: int
    label_values: tuple[str, ...]
    unlabelled_lines: tuple[int, ...] = ()


def read_source(source: str, encoding: str = "utf-8") -> str:
    """The text of the configured CSV (`palmerpenguins` is the package's bundled file).

    A UTF-8 byte order mark is dropped, so the first column keeps its name.

    Raises:
      DataError: the file cannot be read, or its bytes are not text in `encoding`.
    """
    if source == "palmerpenguins":
        return resources.files("palmerpenguins").joinpath("data", "penguins.csv").read_text()
    try:
        data = Path(source).read_bytes()
    except OSError as err:
        raise DataError(f"{source}: cannot read: {err.strerror}") from err
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        return data.decode(codec).removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{source}: line {line}: byte 0x{data[err.start]:02x} is not valid {encoding};"
            " set data.encoding in the config to the file's encoding (e.g. latin-1 or cp1252)"
            " or save the file as UTF-8"
        ) from err


def normalise(text: str, source: str, na_values: tuple[str, ...], columns: Columns) -> Normalised:
    """Rewrites missing-value markers (e.g. "NA") as empty fields, which ExampleGen reads as missing.

    Checks, before anything runs, what would otherwise fail deep inside a component:
    the header names every configured column once, every row has the header's number
    of fields and numeric columns hold numbers. Line breaks inside a (quoted) text
    column's value become spaces. Rows without a label are left out: there
    is nothing to learn from them, and Transform would read the label as "" or 0.

    Raises:
      DataError: one line naming the file, the line or config key, and what to do.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise DataError(
            f"{source}: the file is empty; expected a header row naming the columns,"
            " then one row per example"
        )
    header = [name.strip() for name in header]
    _check_header(header, source, columns)
    numbers = [header.index(name) for name in columns.numbers()]
    texts = [header.index(name) for name in columns.text]
    label = header.index(columns.label)
    missing = set(na_values) | {""}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    labels: set[str] = set()
    unlabelled: list[int] = []
    rows = 0
    line = reader.line_num + 1
    for row in reader:
        if row:
            row = ["" if value.strip() in missing else value for value in row]
            _check_row(row, line, header, numbers, source)
            for index in texts:
                row[index] = _one_line(row[index])
            if not row[label]:
                unlabelled.append(line)
            else:
                labels.add(row[label])
                writer.writerow(row)
                rows += 1
        line = reader.line_num + 1
    if rows == 0 and unlabelled:
        raise DataError(f"{source}: no row has a value for the label {columns.label!r}")
    if rows == 0:
        raise DataError(
            f"{source}: the header is there but no data rows follow; add one row per example"
        )
    return Normalised(out.getvalue(), rows, tuple(sorted(labels)), tuple(unlabelled))


def _one_line(text: str) -> str:
    """A text with its line breaks as spaces: CsvExampleGen reads the staged file line by
    line, so a quoted field may not span lines. The tokenizer splits on any whitespace,
    so the model sees the same tokens."""
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def _check_header(header: list[str], source: str, columns: Columns) -> None:
    for position, name in enumerate(header, start=1):
        if not name:
            raise DataError(f"{source}: line 1: column {position} of the header has no name")
        if header.count(name) > 1:
            raise DataError(f"{source}: line 1: the header names column {name!r} twice")
    for name, key in columns.keys().items():
        if name not in header:
            close = difflib.get_close_matches(name, header, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(
                f"{source}: {key} names {name!r}, which is not a column of the file{hint};"
                f" the header has {header}"
            )


def _check_row(
    row: list[str], line: int, header: list[str], numbers: list[int], source: str
) -> None:
    if len(row) != len(header):
        raise DataError(
            f"{source}: line {line} has {len(row)} fields, the header has {len(header)};"
            " fix or remove that line (quote fields that contain commas)"
        )
    for index in numbers:
        value = row[index]
        if value:
            try:
                float(value)
            except ValueError:
                raise DataError(
                    f"{source}: line {line}: column {header[index]!r} is numeric but holds"
                    f" {value!r}; fix the value, or list it in data.na_values if it marks a"
                    " missing value"
                ) from None


def check_label_values(label_values: tuple[str, ...], rows: int, source: str, label: str) -> None:
    """A classifier needs at least two classes to tell apart.

    Raises:
      DataError: the label column holds one value only.
    """
    if len(label_values) < 2:
        raise DataError(
            f"{source}: the label {label!r} has one value ({label_values[0]!r}) in all {rows}"
            " rows; classification needs at least two classes"
        )


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
    source = config.data.source
    table = normalise(
        read_source(source, config.data.encoding), source, config.data.na_values, Columns.of(config)
    )
    if config.task == "classification":
        check_label_values(table.label_values, table.rows, source, config.label)
    directory = Path(config.output_root) / "data" / config.pipeline_name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STAGED_FILE
    data = table.text.encode()
    if (
        not path.exists()
        or hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(data).digest()
    ):
        path.write_bytes(data)
    return StagedData(
        str(directory),
        str(path),
        len(data),
        table.rows,
        table.label_values,
        _unlabelled_note(table.unlabelled_lines, source, config.label),
    )
