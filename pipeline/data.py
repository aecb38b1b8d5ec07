"""Checks on the input CSV files before a run, and what the runner needs to know of them.

ExampleGen reads the user's files themselves (components/csv_example_gen), streaming,
and checks every row there. Here, before anything runs: each file's header (its first
row) against the config, the files' layout (the config's types; a column the config
does not name is typed by its first rows), and one streaming pass over the label
column: the classes for the Evaluator's per-class metrics, the rows without a label
(left out, and said), the number of rows (Beam's mode). Memory is bounded by the
number of classes, never by the number of rows.
"""

from __future__ import annotations

import bz2
import dataclasses
import difflib
import hashlib
import itertools
import lzma
import zlib
from importlib import resources
from pathlib import Path

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components.csv_example_gen import reading
from components.csv_example_gen.reading import Layout
from pipeline.config import PipelineConfig
from pipeline.errors import DataError

__all__ = ["DataError"]  # re-exported: the other data formats raise it from here

PENGUINS = "palmerpenguins"
# Rows of the first file that type a column the config does not name.
TYPING_ROWS = 1000
# Bytes read from the start of each file to estimate its rows (estimate_rows).
ESTIMATE_PREFIX_BYTES = 1 << 20
_INCREMENTAL = {
    CompressionTypes.GZIP: lambda: zlib.decompressobj(zlib.MAX_WBITS | 16),
    CompressionTypes.BZIP2: bz2.BZ2Decompressor,
    CompressionTypes.LZMA: lzma.LZMADecompressor,
}


@dataclasses.dataclass(frozen=True)
class StagedData:
    """The directory ExampleGen reads, what it reads there, its size and its label values.

    `notes` are lines for the user about what staging left out (rows without a label,
    files that are not images). `sequential_files` counts the input files that ExampleGen
    reads each from start to end in one worker (CSV); 0 when it splits its input itself.
    """

    directory: str
    path: str
    size_bytes: int
    rows: int
    label_values: tuple[str, ...]
    notes: tuple[str, ...] = ()
    sequential_files: int = 0
    # Categorical features with more distinct values than evaluation.max_slice_values:
    # without a curated schema, the default slices leave them out (pipeline/evaluation.py).
    many_valued: tuple[str, ...] = ()


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

    def kinds(self) -> dict[str, str]:
        """Column name -> its kind (components/csv_example_gen/reading.py), by the config."""
        kinds = dict.fromkeys(self.numeric, reading.FLOAT)
        kinds.update(dict.fromkeys(self.categorical, reading.BYTES))
        kinds.update(dict.fromkeys(self.text, reading.TEXT))
        kinds[self.label] = reading.FLOAT if self.numeric_label else reading.BYTES
        return kinds


def penguins_csv() -> str:
    """The path of the CSV bundled with the palmerpenguins package."""
    return str(resources.files(PENGUINS).joinpath("data", "penguins.csv"))


def read_source(source: str, encoding: str = "utf-8") -> str:
    """The whole text of a small CSV (`palmerpenguins` is the package's file), for tests
    and examples that build their own files from it; the pipeline never reads a file whole.

    Raises:
      DataError: the file cannot be read, or its bytes are not text in `encoding`.
    """
    path = penguins_csv() if source == PENGUINS else source
    return "".join(reading.text_lines(path, encoding))


def layout_of(
    files: list[str], columns: Columns, na_values: tuple[str, ...], encoding: str
) -> Layout:
    """The files' layout: the first file's header with each column's kind.

    Raises:
      DataError: the header lacks a configured column (with a did-you-mean), names a
        column twice or leaves one unnamed.
    """
    header = reading.header_of(files[0], encoding)
    _check_header(header, files[0], columns)
    kinds = columns.kinds()
    untyped = [name for name in header if name not in kinds]
    if untyped:
        kinds.update(_kinds_of_first_rows(files[0], header, untyped, na_values, encoding))
    return Layout(tuple((name, kinds[name]) for name in header), columns.label, na_values, encoding)


def _kinds_of_first_rows(
    path: str, header: list[str], names: list[str], na_values: tuple[str, ...], encoding: str
) -> dict[str, str]:
    """INT, FLOAT or BYTES for each of `names`: what every value in the first TYPING_ROWS
    rows parses as (BYTES when none has a value)."""
    missing = set(na_values) | {""}
    seen: dict[str, list[str]] = {name: [] for name in names}
    rows = itertools.islice(reading.read_rows(path, encoding), 1, TYPING_ROWS + 1)
    for _, row in rows:
        for name in names:
            index = header.index(name)
            if index < len(row) and row[index].strip() not in missing:
                seen[name].append(row[index])
    return {name: _kind_of(values) for name, values in seen.items()}


def _kind_of(values: list[str]) -> str:
    if not values:
        return reading.BYTES
    for kind, parse in ((reading.INT, int), (reading.FLOAT, float)):
        try:
            for value in values:
                parse(value)
        except ValueError:
            continue
        return kind
    return reading.BYTES


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


def check_headers(files: list[str], layout: Layout) -> None:
    """Every file starts with the first file's header (reads one row of each).

    Raises:
      DataError: a file is empty or has another header, naming it.
    """
    for path in files[1:]:
        reading.check_header(reading.header_of(path, layout.encoding), path, layout.header)


@dataclasses.dataclass(frozen=True)
class LabelScan:
    """What one pass over the label column found: labelled rows, the classes (for a
    classification), and the rows without a label as (file, line), the first few."""

    rows: int
    classes: tuple[str, ...]
    unlabelled: int
    first_unlabelled: tuple[tuple[str, int], ...]
    many_valued: tuple[str, ...] = ()


def scan_labels(
    files: list[str],
    layout: Layout,
    classes: bool,
    shown: int = 5,
    counted: tuple[str, ...] = (),
    most_values: int = 0,
) -> LabelScan:
    """Reads every row's label, streaming: memory holds the classes, never the rows.

    Args:
      files: the input files, each starting with the layout's header.
      layout: the files' layout.
      classes: collect the distinct labels (a classification).
      shown: how many unlabelled rows to remember by file and line.
      counted: columns whose distinct values are counted up to `most_values` + 1 (memory
        holds at most that many per column); those with more are `many_valued`.

    Raises:
      DataError: as reading.read_rows (encoding, quoting, truncation), a row with the wrong
        number of fields, no data rows, no labelled row.
    """
    index = layout.header.index(layout.label)
    width = len(layout.header)
    missing = layout.missing
    labels: set[str] = set()
    values: dict[int, set[str]] = {layout.header.index(name): set() for name in counted}
    rows = unlabelled = 0
    first: list[tuple[str, int]] = []
    for path in files:
        for line, row in itertools.islice(reading.read_rows(path, layout.encoding), 1, None):
            reading.check_width(path, line, row, width)
            value = row[index]
            if value.strip() in missing:
                unlabelled += 1
                if len(first) < shown:
                    first.append((path, line))
                continue
            rows += 1
            if classes:
                labels.add(value)
            for column, seen in values.items():
                if len(seen) <= most_values:
                    seen.add(row[column])
    _check_rows(rows, unlabelled, files, layout.label)
    many = tuple(layout.header[i] for i, seen in values.items() if len(seen) > most_values)
    return LabelScan(rows, tuple(sorted(labels)), unlabelled, tuple(first), many)


def _check_rows(rows: int, unlabelled: int, files: list[str], label: str) -> None:
    where = files[0] if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"
    if rows == 0 and unlabelled:
        raise DataError(f"{where}: no row has a value for the label {label!r}")
    if rows == 0:
        raise DataError(
            f"{where}: the header is there but no data rows follow; add one row per example"
        )


def unlabelled_note(scan: LabelScan, source: str, label: str) -> tuple[str, ...]:
    """One line on the rows left out for having no label, if any were."""
    if not scan.unlabelled:
        return ()
    one_file = len({path for path, _ in scan.first_unlabelled}) == 1
    places = [
        str(line) if one_file else f"{path} line {line}" for path, line in scan.first_unlabelled
    ]
    shown = ", ".join(places) + (", ..." if scan.unlabelled > len(places) else "")
    return (
        f"{source}: left out {scan.unlabelled} rows without a label {label!r}"
        f" ({'lines ' if one_file else ''}{shown})",
    )


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


def estimate_rows(files: list[str], prefix_bytes: int = ESTIMATE_PREFIX_BYTES) -> int:
    """The files' data rows, estimated without reading them: each file's size over the
    bytes per line of its first `prefix_bytes`, for a compressed file decompressed and
    scaled by that prefix's compression ratio. Exact for a file shorter than the prefix;
    a quoted field across lines counts as several rows."""
    total = 0
    for path in files:
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            chunk = raw.read(prefix_bytes)
        decompressor = _INCREMENTAL.get(CompressionTypes.detect_compression_type(path))
        text = decompressor().decompress(chunk) if decompressor else chunk
        lines = text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)
        if len(chunk) == size or not lines:
            total += max(lines - 1, 0)
        else:
            total += round(size * len(text) / len(chunk) * lines / len(text)) - 1
    return total


def stage_schema(schema_file: str, directory: str) -> str:
    """Copies the curated schema to a content-addressed name beside `directory`.

    ImportSchemaGen's cache key is the file path, so an edited schema at the same
    path would be ignored; a name derived from the content makes edits count.
    """
    data = Path(schema_file).read_bytes()
    path = (
        Path(directory).parent
        / f"{Path(directory).name}-schema-{hashlib.sha256(data).hexdigest()[:12]}.pbtxt"
    )
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(path)


def staging_directory(config: PipelineConfig) -> str:
    """`<output_root>/data/<pipeline_name>`: where a run keeps copies it makes (the curated
    schema; the images, texts and series formats' tf.Examples)."""
    return str(Path(config.output_root) / "data" / config.pipeline_name)


def check_csv(
    config: PipelineConfig, files: list[str], input_base: str, one_class_ok: bool = False
) -> StagedData:
    """Checks the config's CSV files before a run; nothing is copied.

    Reads the header of every file and, streaming, the label of every row (see
    scan_labels); the rows themselves are checked by the ExampleGen as it reads them.
    `one_class_ok`: the files are part of the data (a span), so a classifier's label may
    hold one class in them.

    Raises:
      DataError: one line naming the file, the line or config key, and what to do.
    """
    data = config.data
    layout = layout_of(files, Columns.of(config), data.na_values, data.encoding)
    check_headers(files, layout)
    classify = config.task == "classification"
    scan = scan_labels(
        files,
        layout,
        classes=classify,
        counted=config.categorical_features,
        most_values=config.evaluation.max_slice_values,
    )
    if classify and not one_class_ok:
        check_label_values(scan.classes, scan.rows, data.source, config.label)
    sizes = FileSystems.match(files)
    return StagedData(
        directory=input_base,
        path=data.source,
        size_bytes=sum(m.metadata_list[0].size_in_bytes for m in sizes),
        rows=scan.rows,
        label_values=scan.classes,
        notes=unlabelled_note(scan, data.source, config.label),
        sequential_files=len(files),
        many_valued=scan.many_valued,
    )
