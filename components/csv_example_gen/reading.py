"""Reading CSV files row by row into tf.Examples, with every error naming the file and line.

Pure functions, shared by the pipeline's checks before a run (pipeline/data.py) and the
ExampleGen's Beam decoding (executor.py). A file is read as a stream: compressed files
(by extension, Beam's `CompressionTypes.AUTO`: .gz, .bz2, ...) are decompressed on the
fly, bytes are decoded line by line (so an encoding error names its line), and the csv
module parses quoted fields across line breaks. Nothing holds more than one row.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import dataclasses
import gzip
import json
import lzma
import zlib
from collections.abc import Iterator
from typing import IO

import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.errors import DataError

# Column kinds: how a column's values become tf.Example features.
FLOAT = "float"  # features.numeric, a regression label: float_list
BYTES = "bytes"  # features.categorical, a classification label: bytes_list
TEXT = "text"  # features.text: bytes_list, line breaks as spaces
INT = "int"  # a column the config does not name, integers in its first rows
KINDS = (FLOAT, BYTES, TEXT, INT)

# Python's csv module refuses a field longer than this (csv.field_size_limit); an
# unterminated quote reaches it after that many characters instead of reading the rest
# of the file into one field.
FIELD_LIMIT = csv.field_size_limit()

# Python's own decompressors (each opens a file object): they raise on a truncated file,
# where Beam's reader ends quietly.
_DECOMPRESSORS = {
    CompressionTypes.GZIP: gzip.open,
    CompressionTypes.BZIP2: bz2.open,
    CompressionTypes.LZMA: lzma.open,
}
_TRUNCATED = (EOFError, zlib.error, OSError, lzma.LZMAError)


@dataclasses.dataclass(frozen=True)
class Layout:
    """What the CSV files hold and how each column becomes a feature.

    `columns` is the header in file order with each column's kind (KINDS); `label` rows
    without a value are left out; `na_values` are the markers read as missing (an empty
    field always is); `encoding` is the files' text encoding.
    """

    columns: tuple[tuple[str, str], ...]
    label: str
    na_values: tuple[str, ...] = ()
    encoding: str = "utf-8"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Layout:
        raw = json.loads(text)
        return cls(
            columns=tuple((name, kind) for name, kind in raw["columns"]),
            label=raw["label"],
            na_values=tuple(raw["na_values"]),
            encoding=raw["encoding"],
        )

    @property
    def header(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def missing(self) -> frozenset[str]:
        """The values read as missing: the markers and an empty field (spaces around ignored)."""
        return frozenset(self.na_values) | {""}


def matching_files(pattern: str) -> list[str]:
    """The files a pattern matches (over Beam's FileSystems: local paths, gs://), sorted.

    Raises:
      DataError: no file matches.
    """
    [result] = FileSystems.match([pattern])
    files = sorted(m.path for m in result.metadata_list)
    if not files:
        raise DataError(f"{pattern}: no file matches; check data.source")
    return files


@contextlib.contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed by its extension (Beam's CompressionTypes.AUTO),
    over Beam's FileSystems (local paths, gs://).

    Raises:
      DataError: the file cannot be opened, or is compressed in a format not read here.
    """
    try:
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err}") from err
    compression = CompressionTypes.detect_compression_type(path)
    if compression not in (*_DECOMPRESSORS, CompressionTypes.UNCOMPRESSED):
        raw.close()
        raise DataError(
            f"{path}: {compression} files cannot be read; compress the CSV with gzip (.gz),"
            " bzip2 (.bz2) or xz (.xz), or leave it uncompressed"
        )
    with raw:
        decompress = _DECOMPRESSORS.get(compression)
        if decompress is None:
            yield raw
        else:
            with decompress(raw, "rb") as stream:
                yield stream


def text_lines(path: str, encoding: str) -> Iterator[str]:
    """The file's lines as text, line breaks kept, each decoded on its own.

    A UTF-8 byte order mark is dropped, so the first column keeps its name.

    Raises:
      DataError: bytes not valid in `encoding`, or a compressed file that ends early;
        the message names the line.
    """
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    decoder = codecs.getincrementaldecoder(codec)()
    line = 0
    with open_binary(path) as stream:
        while True:
            try:
                data = stream.readline()
            except _TRUNCATED as err:
                raise DataError(
                    f"{path}: line {line + 1}: the compressed data ends early or is corrupt"
                    f" ({err}); the file is truncated: copy or compress it again"
                ) from None
            if not data:
                return
            line += 1
            try:
                yield decoder.decode(data)
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}: line {line}: byte 0x{data[err.start]:02x} is not valid {encoding};"
                    " set data.encoding in the config to the file's encoding (e.g. latin-1 or"
                    " cp1252) or save the file as UTF-8"
                ) from None


def read_rows(path: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of every non-blank record, the header's first; `line` is where the
    record starts (a quoted field may span lines).

    Raises:
      DataError: encoding, truncation, or quoting the csv module cannot parse (an
        unterminated quote runs into FIELD_LIMIT characters or the end of the file).
    """
    reader = csv.reader(text_lines(path, encoding), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(
                f"{path}: line {start}: cannot parse this row ({err}); a quote opened here"
                f" may not be closed (a quoted field may span lines, up to {FIELD_LIMIT}"
                " characters): fix the quoting of that row"
            ) from None
        if row:
            yield start, row


def header_of(path: str, encoding: str) -> list[str]:
    """The file's header names, stripped of surrounding spaces; reads the first row only.

    Raises:
      DataError: the file is empty, or its first row cannot be read.
    """
    for _, row in read_rows(path, encoding):
        return [name.strip() for name in row]
    raise DataError(
        f"{path}: the file is empty; expected a header row naming the columns,"
        " then one row per example"
    )


def one_line(text: str) -> str:
    """A text with its line breaks as spaces; the tokenizer splits on any whitespace, so
    the model sees the same tokens, and a served text is one line too."""
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


class RowDecoder:
    """Turns one row of a file into a tf.Example, checking it on the way.

    Args:
      layout: the files' columns and kinds.
      path: the file the rows come from, for error messages.
    """

    def __init__(self, layout: Layout, path: str):
        self._layout = layout
        self._path = path
        self._width = len(layout.columns)
        self._missing = layout.missing
        self._label = layout.header.index(layout.label)

    def example(self, line: int, row: list[str]) -> tf.train.Example | None:
        """The row as a tf.Example; None for a row without a label.

        A missing value is an empty feature of the column's kind.

        Raises:
          DataError: the row has the wrong number of fields, or a value that its
            column's kind cannot hold.
        """
        check_width(self._path, line, row, self._width)
        if row[self._label].strip() in self._missing:
            return None
        example = tf.train.Example()
        features = example.features.feature
        for (name, kind), value in zip(self._layout.columns, row, strict=True):
            feature = features[name]
            present = value.strip() not in self._missing
            # A missing value is an empty list of the column's kind, as TFX's CsvExampleGen
            # writes it: present in the example, no value (what the schema's presence counts).
            if kind == FLOAT:
                values = feature.float_list
                if present:
                    values.value.append(self._number(float, line, name, value))
            elif kind == INT:
                values = feature.int64_list
                if present:
                    values.value.append(self._number(int, line, name, value))
            else:
                values = feature.bytes_list
                if present:
                    values.value.append((one_line(value) if kind == TEXT else value).encode())
            if not present:
                values.SetInParent()
        return example

    def _number(self, parse, line: int, name: str, value: str):
        try:
            return parse(value)
        except ValueError:
            pass
        if parse is int:
            raise DataError(
                f"{self._path}: line {line}: column {name!r} held integers in the first rows"
                f" but holds {value!r}; the config does not name the column, so its type came"
                " from those rows: list it under features, fix the value, or list it in"
                " data.na_values if it marks a missing value"
            )
        raise DataError(
            f"{self._path}: line {line}: column {name!r} is numeric but holds {value!r};"
            " fix the value, or list it in data.na_values if it marks a missing value"
        )


def check_width(path: str, line: int, row: list[str], width: int) -> None:
    """The row has the header's number of fields.

    Raises:
      DataError: it has not, naming the file and line.
    """
    if len(row) != width:
        raise DataError(
            f"{path}: line {line} has {len(row)} fields, the header has {width};"
            " fix or remove that line (quote fields that contain commas)"
        )


def check_header(header: list[str], path: str, expected: list[str]) -> None:
    """Every file of the input has the first file's header.

    Raises:
      DataError: the header differs, naming the file.
    """
    if header != expected:
        raise DataError(
            f"{path}: line 1: the header {header} differs from the first file's {expected};"
            " every file of data.source needs the same columns in the same order"
        )


def read_examples(path: str, layout: Layout) -> Iterator[tuple[str, int, bytes | None]]:
    """(path, line, serialized tf.Example or None for a row without a label) of every data
    row of one file, lazily.

    Raises:
      DataError: as `read_rows`, `check_header` and `RowDecoder.example`; an empty file.
    """
    decoder = RowDecoder(layout, path)
    rows = read_rows(path, layout.encoding)
    first = next(rows, None)
    if first is None:
        raise DataError(
            f"{path}: the file is empty; expected a header row naming the columns,"
            " then one row per example"
        )
    check_header([name.strip() for name in first[1]], path, layout.header)
    for line, row in rows:
        example = decoder.example(line, row)
        yield path, line, None if example is None else example.SerializeToString(deterministic=True)
