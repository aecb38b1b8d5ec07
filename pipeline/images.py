"""Staging images where ImportExampleGen reads them: tf.Example TFRecords made from a folder
of class folders, or from Fashion-MNIST's IDX files.

Every check that would otherwise fail deep inside a component (a missing or empty class,
a file that does not decode, an image of another size) runs here, before anything else,
and fails with one line naming the file and what to do. The TFRecords are rewritten only
when their inputs change, so ImportExampleGen's input fingerprint, and with it TFX's
cache, holds across identical runs.

TensorFlow is imported where it is used: the CLI points file descriptor 2 at the run's
log before TensorFlow is first imported (pipeline/progress.py).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from pipeline import records
from pipeline.data import DataError
from pipeline.records import SPLITS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# The label files hold indices into this list (the dataset's README).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_SHAPE = (28, 28, 1)

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "eval": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # the IDX magic numbers: 3-D uint8, 1-D uint8
_REINSTALL = "reinstall it: sudo apt-get install --reinstall dataset-fashion-mnist"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_LAYOUT = (
    "expected <source>/train/<class>/*.png|jpg|jpeg (and optionally <source>/test/<class>/...)"
    " or <source>/<class>/*.png|jpg|jpeg, one folder per class"
)
_SKIPPED_SHOWN = 5
# Bumped whenever the same inputs would be written differently, so older stagings are redone.
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ImageStaging:
    """The staged TFRecords: `directory/train/` and `directory/eval/`, GZIP-compressed.

    `size_bytes` is what the TFRecord files take on disk, `rows` the examples per split,
    `label_values` the sorted class names. `skipped` names the first few files that were
    left out for not being .png/.jpg/.jpeg (or for lying outside a class folder), and
    `skipped_count` counts them all.
    """

    directory: str
    size_bytes: int
    rows: dict[str, int]
    label_values: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    skipped_count: int = 0

    def note(self, source: str) -> str | None:
        """One line on the files left out, or None when none were."""
        if not self.skipped_count:
            return None
        more = ", ..." if self.skipped_count > len(self.skipped) else ""
        return (
            f"{source}: skipped {self.skipped_count} files that are not"
            f" {'/'.join(IMAGE_EXTENSIONS)} images in a class folder ({', '.join(self.skipped)}{more})"
        )


@dataclasses.dataclass(frozen=True)
class _Image:
    """One image of a listing: its name (the path relative to the source, or the IDX file)
    and class; `index` is its position in the IDX file (Fashion-MNIST)."""

    name: str
    label: str
    index: int = 0


@dataclasses.dataclass(frozen=True)
class _Listing:
    """What a source holds, found without reading any image.

    `inputs` are the lines the fingerprint is made of (name, size, mtime of each input
    file); `read(images)` yields each image's encoded bytes, checked, in order.
    """

    splits: dict[str, list[_Image]]
    classes: tuple[str, ...]
    inputs: tuple[str, ...]
    read: Callable[[Sequence[_Image]], Iterator[bytes]]
    skipped: tuple[str, ...] = ()


def stage_images(
    source: str,
    directory: str,
    *,
    feature: str,
    label: str,
    shape: tuple[int, int, int],
    max_examples: Mapping[str, int] | None = None,
    eval_fraction: float = 0.2,
    seed: int = 42,
) -> ImageStaging:
    """Writes the images of `source` as tf.Examples to `directory/train/` and `directory/eval/`.

    Each tf.Example has `feature`: the image file's bytes as they are (PNG or JPEG; the
    IDX images encoded as PNG) and `label`: its class name, both bytes_list of one value.

    Args:
      source: `fashion-mnist` (the IDX files under FASHION_MNIST_DIR; t10k is the eval
        split), or a directory: `<source>/train/<class>/*.png|jpg|jpeg`, with an optional
        `<source>/test/<class>/...` as the eval split, or `<source>/<class>/...`. Without a
        test/ folder, `eval_fraction` of the training images go to eval, picked by a hash of
        each file's path under the training folder, so a file keeps its split as data grows.
      directory: where to write; its train/ and eval/ are replaced when the inputs change.
      feature: the tf.Example key of the image bytes.
      label: the tf.Example key of the class name.
      shape: (height, width, channels) every image must have; images are not resized.
      max_examples: at most this many examples per split ({"train": n, "eval": m}), a
        random sample (seeded by `seed`) with each class in its share of the split.
      eval_fraction: the share of the training images that hash into eval without test/.
      seed: seeds the sample and the (shuffled) order the examples are written in.

    Returns:
      The staging; its files are left untouched when the inputs and arguments are the
      same as for the staging already in `directory`.

    Raises:
      DataError: one line naming the file or class folder that cannot be used, and what
        to do (see the module docstring).
      ValueError: an argument is out of range.
    """
    shape = tuple(shape)
    limits = dict(max_examples or {})
    _check_arguments(feature, label, shape, limits, eval_fraction)
    if source == FASHION_MNIST:
        listing = _list_fashion_mnist(Path(FASHION_MNIST_DIR), shape)
    else:
        listing = _list_folders(Path(source), eval_fraction, shape)
    splits = {
        split: records.sample(
            listing.splits[split], limits.get(split), random.Random(f"{seed}:{split}")
        )
        for split in SPLITS
    }
    arguments = {
        "source": source if source == FASHION_MNIST else os.path.abspath(source),
        "feature": feature,
        "label": label,
        "shape": list(shape),
        "max_examples": limits,
        "eval_fraction": eval_fraction,
        "seed": seed,
    }
    fingerprint = records.fingerprint(listing.inputs, arguments, _FORMAT_VERSION)
    out = Path(directory)
    record = records.staged(out, fingerprint)
    if record is None:

        def examples(images: Sequence[_Image]) -> Iterator[bytes]:
            for image, data in zip(images, listing.read(images), strict=True):
                yield _example(feature, data, label, image.label)

        record = records.write(out, splits, examples, seed, fingerprint, "images")
    return ImageStaging(
        str(out),
        record["size_bytes"],
        dict(record["rows"]),
        listing.classes,
        listing.skipped[:_SKIPPED_SHOWN],
        len(listing.skipped),
    )


def _check_arguments(
    feature: str,
    label: str,
    shape: tuple[int, ...],
    limits: dict[str, int],
    eval_fraction: float,
) -> None:
    if not feature or not label or feature == label:
        raise ValueError(
            f"feature and label must be two different keys, got {feature!r}, {label!r}"
        )
    if len(shape) != 3 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape must be (height, width, channels) of positive ints, got {shape}")
    for split, limit in limits.items():
        if split not in SPLITS or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_examples maps {SPLITS} to ints >= 1, got {limits}")
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")


# --- image folders ---------------------------------------------------------------------


def class_names(source: str) -> tuple[str, ...]:
    """The classes of an image source, sorted, without reading any image.

    Args:
      source: `fashion-mnist` or a folder of class folders (under `train/` or not).

    Raises:
      DataError: the folder does not exist or holds no class folder.
    """
    if source == FASHION_MNIST:
        return tuple(sorted(FASHION_MNIST_CLASSES))
    if not Path(source).is_dir():
        raise DataError(f"{source}: no such directory; {_LAYOUT}")
    root, _ = _roots(Path(source))
    names = sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DataError(f"{source}: no class folders; {_LAYOUT}")
    return tuple(names)


def _list_folders(source: Path, eval_fraction: float, shape: tuple[int, ...]) -> _Listing:
    """The images of a folder of class folders, split into train and eval."""
    if not source.exists():
        raise DataError(f"{source}: no such directory; {_LAYOUT}")
    if not source.is_dir():
        raise DataError(f"{source}: is a file, not a directory; {_LAYOUT}")
    train_root, test_root = _roots(source)
    skipped: list[str] = []
    train = _class_files(train_root, source, skipped)
    _check_classes(train, train_root, source)
    if test_root is None:
        prefix = "" if train_root == source else "train/"
        splits = _hash_split(train, train_root, prefix, eval_fraction)
    else:
        test = _class_files(test_root, source, skipped)
        _check_classes(test, test_root, source, known=train)
        splits = {"train": _images(train), "eval": _images(test)}
    inputs = tuple(
        f"{image.name}\t{stat.st_size}\t{stat.st_mtime_ns}"
        for image in splits["train"] + splits["eval"]
        for stat in [(source / image.name).stat()]
    )
    return _Listing(
        splits,
        tuple(sorted(train)),
        inputs,
        lambda images: (_checked_image(source / image.name, shape) for image in images),
        tuple(skipped),
    )


def _roots(source: Path) -> tuple[Path, Path | None]:
    """The folders of the training classes and of the test classes (None without test/)."""
    train_root, test_root = source / "train", source / "test"
    if not train_root.is_dir():
        return source, None
    return train_root, test_root if test_root.is_dir() else None


def _class_files(root: Path, source: Path, skipped: list[str]) -> dict[str, list[str]]:
    """Class name -> its image files (paths relative to `source`, sorted) under `root`.

    A class folder is searched through its sub-folders, as Keras's
    image_dataset_from_directory does. Other files, and hidden folders, go to `skipped`.
    """
    classes: dict[str, list[str]] = {}
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            skipped.append(entry.relative_to(source).as_posix())
            continue
        files = classes.setdefault(entry.name, [])
        for folder, subfolders, names in os.walk(entry, followlinks=True):
            subfolders.sort()
            for name in sorted(names):
                relative = (Path(folder) / name).relative_to(source).as_posix()
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(relative)
                else:
                    skipped.append(relative)
    return classes


def _check_classes(
    classes: dict[str, list[str]],
    root: Path,
    source: Path,
    known: dict[str, list[str]] | None = None,
) -> None:
    if not any(classes.values()):
        loose = [p.name for p in root.iterdir() if p.name.lower().endswith(IMAGE_EXTENSIONS)]
        hint = (
            f" ({_count(len(loose))} directly in {root}, outside any class folder)" if loose else ""
        )
        raise DataError(f"{root}: no images found{hint}; {_LAYOUT}")
    for name, files in classes.items():
        if not files:
            raise DataError(
                f"{root / name}: the class folder {name!r} holds no"
                f" {'/'.join(IMAGE_EXTENSIONS)} images; add its images or remove the folder"
            )
        if known is not None and name not in known:
            raise DataError(
                f"{root / name}: class {name!r} is in {root.name}/ but not in"
                f" {source / 'train'}; add its training images there or remove the folder"
            )
    if known is None and len(classes) < 2:
        raise DataError(
            f"{root}: only one class folder ({next(iter(classes))!r}); classification needs"
            " at least two classes, one folder of images each"
        )


def _images(classes: dict[str, list[str]]) -> list[_Image]:
    return [_Image(name, label) for label, names in sorted(classes.items()) for name in names]


def _hash_split(
    classes: dict[str, list[str]], root: Path, prefix: str, eval_fraction: float
) -> dict[str, list[_Image]]:
    """Puts `eval_fraction` of the images in eval by a hash of their path under `root`
    (their name without `prefix`), so a file keeps its split as images are added."""
    splits: dict[str, list[_Image]] = {"train": [], "eval": []}
    for image in _images(classes):
        key = image.name.removeprefix(prefix).encode()
        bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
        splits["eval" if bucket < eval_fraction else "train"].append(image)
    untrained = sorted(set(classes) - {image.label for image in splits["train"]})
    if untrained:
        label = untrained[0]
        raise DataError(
            f"{root / label}: every image of class {label!r}"
            f" ({_count(len(classes[label]))}) falls in the eval split ({eval_fraction:.0%} of the images, by a hash of their path); add"
            " images to it, or a test/ folder with the eval images"
        )
    if not splits["eval"]:
        raise DataError(
            f"{root}: none of the {_count(len(splits['train']))} falls in the eval split"
            f" ({eval_fraction:.0%} of the images, by a hash of their path); add images,"
            " or a test/ folder with the eval images"
        )
    return splits


def _checked_image(path: Path, shape: tuple[int, ...]) -> bytes:
    """The file's bytes, once it decodes as a PNG or JPEG image of `shape`."""
    import tensorflow as tf

    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    if not data.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
        what = "the file is empty" if not data else f"it starts with {data[:8]!r}"
        raise DataError(
            f"{path}: not a PNG or JPEG image ({what}); convert it to PNG or JPEG, or remove it"
        )
    try:
        image = tf.io.decode_image(data, channels=0, expand_animations=False)
    except tf.errors.OpError as err:
        # TensorFlow wraps the decoder's own words in "{{function_node ...}}" and "[Op:...]".
        reason = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", err.message).strip().split("\n")[0]
        raise DataError(
            f"{path}: the image does not decode ({reason}): the file is truncated or"
            " corrupt; export it again or remove it"
        ) from None
    if tuple(image.shape) != shape:
        raise DataError(
            f"{path}: the image is {_size(image.shape)}, expected {_size(shape)}"
            " (height x width x channels); all images must have that one size (they are not"
            " resized): resize or convert this file, or change the configured image shape"
        )
    return data


def _count(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


# --- Fashion-MNIST ---------------------------------------------------------------------


def _list_fashion_mnist(root: Path, shape: tuple[int, ...]) -> _Listing:
    """The IDX files of Debian's dataset-fashion-mnist package: train, and t10k as eval."""
    if tuple(shape) != FASHION_MNIST_SHAPE:
        raise DataError(
            f"{FASHION_MNIST}: its images are {_size(FASHION_MNIST_SHAPE)}, the configured"
            f" image shape is {_size(shape)}; set the image shape to {list(FASHION_MNIST_SHAPE)}"
        )
    paths = [root / name for split in SPLITS for name in _FASHION_MNIST_FILES[split]]
    for path in [root, *paths]:
        if not path.exists():
            raise DataError(
                f"{path}: not found; the {FASHION_MNIST!r} source reads Debian's"
                " dataset-fashion-mnist package: sudo apt-get install dataset-fashion-mnist"
                " (scripts/in-env installs it when run as root)"
            )
    splits = {}
    for split in SPLITS:
        images, labels = (root / name for name in _FASHION_MNIST_FILES[split])
        splits[split] = [
            _Image(images.name, FASHION_MNIST_CLASSES[value], index)
            for index, value in enumerate(_idx_labels(labels, _idx_count(images)))
        ]
    inputs = tuple(
        f"{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}"
        for path in paths
        for stat in [path.stat()]
    )
    return _Listing(
        splits, tuple(sorted(FASHION_MNIST_CLASSES)), inputs, lambda images: _idx_pngs(root, images)
    )


def _idx_header(path: Path, magic: int, stream) -> list[int]:
    """The dimensions of an IDX file whose stream is at its start."""
    ndim = {_IDX_IMAGES: 3, _IDX_LABELS: 1}[magic]
    header = stream.read(4 * (1 + ndim))
    if len(header) < 4 * (1 + ndim) or int.from_bytes(header[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX file of {ndim}-D bytes; {_REINSTALL}")
    return [int.from_bytes(header[i : i + 4], "big") for i in range(4, len(header), 4)]


def _idx_count(path: Path) -> int:
    try:
        with gzip.open(path) as stream:
            count, height, width = _idx_header(path, _IDX_IMAGES, stream)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read: {err}; {_REINSTALL}") from err
    if (height, width) != FASHION_MNIST_SHAPE[:2]:
        raise DataError(f"{path}: images are {height}x{width}, expected 28x28; {_REINSTALL}")
    return count


def _idx_labels(path: Path, count: int) -> bytes:
    """The class indices of an IDX label file, checked against the image file's count."""
    try:
        with gzip.open(path) as stream:
            (n,) = _idx_header(path, _IDX_LABELS, stream)
            labels = stream.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read: {err}; {_REINSTALL}") from err
    if n != count or len(labels) != n:
        raise DataError(
            f"{path}: holds {len(labels)} labels (header: {n}) for {count} images; {_REINSTALL}"
        )
    if max(labels) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{path}: a label is {max(labels)}, classes go 0-9; {_REINSTALL}")
    return labels


def _idx_pngs(root: Path, images: Sequence[_Image]) -> Iterator[bytes]:
    """Each image, from its IDX file, encoded as a 28x28x1 PNG."""
    import numpy as np
    import tensorflow as tf

    arrays: dict[str, np.ndarray] = {}
    for image in images:
        if image.name not in arrays:
            arrays[image.name] = _idx_images(root / image.name)
        yield tf.io.encode_png(arrays[image.name][image.index]).numpy()


def _idx_images(path: Path):
    import numpy as np

    try:
        with gzip.open(path) as stream:
            count, height, width = _idx_header(path, _IDX_IMAGES, stream)
            data = stream.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read: {err}; {_REINSTALL}") from err
    if len(data) != count * height * width:
        raise DataError(
            f"{path}: holds {len(data)} bytes of pixels, its header says"
            f" {count}x{height}x{width}; {_REINSTALL}"
        )
    return np.frombuffer(data, np.uint8).reshape(count, height, width, 1)


def fashion_mnist_arrays(split: str, root: str | os.PathLike = FASHION_MNIST_DIR):
    """One split of Fashion-MNIST as arrays, for experiments outside the pipeline.

    Args:
      split: "train" (60,000 images) or "eval" (the official 10,000 test images).
      root: the directory of the IDX files.

    Returns:
      (images uint8 [n, 28, 28, 1], class indices uint8 [n] into FASHION_MNIST_CLASSES).

    Raises:
      DataError: a file is missing or malformed.
    """
    import numpy as np

    images, labels = (Path(root) / name for name in _FASHION_MNIST_FILES[split])
    pixels = _idx_images(images)
    return pixels, np.frombuffer(_idx_labels(labels, len(pixels)), np.uint8)


def _example(feature: str, data: bytes, label: str, value: str) -> bytes:
    import tensorflow as tf

    def as_bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {feature: as_bytes(data), label: as_bytes(value.encode())}
    example = tf.train.Example(features=tf.train.Features(feature=features))
    # Map entries are written in a per-process order unless asked otherwise: the same
    # inputs must give the same bytes.
    return example.SerializeToString(deterministic=True)
