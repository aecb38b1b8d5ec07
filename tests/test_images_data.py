"""Staging image folders and Fashion-MNIST as tf.Example TFRecords (pipeline/images.py)."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline import images
from pipeline.data import DataError

SHAPE = (8, 8, 1)


def _image(shape=SHAPE, fmt="png") -> bytes:
    pixels = np.random.randint(0, 256, size=shape, dtype=np.uint8)
    encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
    return encode(pixels).numpy()


def _make(root: Path, counts: dict[str, int], fmt: str = "png") -> dict[str, bytes]:
    """Writes counts[folder] images into each `root/folder`; returns path relative to root -> bytes."""
    written = {}
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"{folder}/{i:03d}.{fmt}"
            written[name] = _image(fmt=fmt)
            (root / name).write_bytes(written[name])
    return written


def _stage(source: Path, out: Path, **kwargs) -> images.ImageStaging:
    kwargs.setdefault("shape", SHAPE)
    return images.stage_images(str(source), str(out), feature="image", label="label", **kwargs)


def _examples(out: Path, split: str) -> list[tuple[bytes, str]]:
    """(image bytes, label) of every tf.Example of a split, in file order."""
    files = sorted(str(p) for p in (out / split).iterdir())
    found = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        # Written with the map's keys in order, so the same inputs give the same bytes in
        # every process (protobuf's default order varies from one process to the next).
        assert record.numpy() == example.SerializeToString(deterministic=True)
        feature = example.features.feature
        assert set(feature) == {"image", "label"}
        (data,) = feature["image"].bytes_list.value
        (label,) = feature["label"].bytes_list.value
        found.append((data, label.decode()))
    return found


def test_train_and_test_folders_become_train_and_eval(tmp_path):
    written = _make(
        tmp_path / "src", {"train/cat": 4, "train/dog": 3, "test/cat": 2, "test/dog": 1}
    )
    out = tmp_path / "out"
    staged = _stage(tmp_path / "src", out)

    assert staged.directory == str(out)
    assert staged.rows == {"train": 7, "eval": 3}
    assert staged.label_values == ("cat", "dog")
    assert [p.name for p in (out / "train").iterdir()] == ["images-00000-of-00001.tfrecord.gz"]
    assert [p.name for p in (out / "eval").iterdir()] == ["images-00000-of-00001.tfrecord.gz"]
    files = [*(out / "train").iterdir(), *(out / "eval").iterdir()]
    assert staged.size_bytes == sum(p.stat().st_size for p in files)
    for split, folder in [("train", "train/"), ("eval", "test/")]:
        expected = {
            (data, name.split("/")[1]) for name, data in written.items() if name.startswith(folder)
        }
        found = _examples(out, split)
        assert len(found) == len(expected)
        assert set(found) == expected  # the file's bytes as they are, label = its folder


def test_jpeg_files_are_kept_encoded_as_jpeg(tmp_path):
    written = _make(tmp_path / "src", {"train/a": 2, "train/b": 2, "test/a": 1}, fmt="jpg")
    _stage(tmp_path / "src", tmp_path / "out")

    found = _examples(tmp_path / "out", "train")
    assert {data for data, _ in found} == {
        written[f"train/{c}/{i:03d}.jpg"] for c in "ab" for i in (0, 1)
    }
    assert all(data.startswith(b"\xff\xd8\xff") for data, _ in found)


def test_class_folders_at_the_root_are_split_by_a_hash_of_their_path(tmp_path):
    _make(tmp_path / "src", {"shirt": 60, "shoe": 40})
    first = _stage(tmp_path / "src", tmp_path / "a")
    again = _stage(tmp_path / "src", tmp_path / "b")

    assert first.label_values == ("shirt", "shoe")
    assert first.rows["train"] + first.rows["eval"] == 100
    assert 10 <= first.rows["eval"] <= 30  # eval_fraction 0.2
    eval_a = {data for data, _ in _examples(tmp_path / "a", "eval")}
    assert eval_a == {data for data, _ in _examples(tmp_path / "b", "eval")}
    assert first.rows == again.rows
    # More images never move an image from one split to the other.
    _make(tmp_path / "more", {"shirt": 30})
    for path in (tmp_path / "more" / "shirt").iterdir():
        path.rename(tmp_path / "src" / "shirt" / f"new-{path.name}")
    _stage(tmp_path / "src", tmp_path / "c")
    eval_c = {data for data, _ in _examples(tmp_path / "c", "eval")}
    train_c = {data for data, _ in _examples(tmp_path / "c", "train")}
    assert eval_a <= eval_c
    assert not eval_a & train_c


def test_train_folder_without_test_is_hash_split(tmp_path):
    _make(tmp_path / "src", {"train/x": 20, "train/y": 20})
    staged = _stage(tmp_path / "src", tmp_path / "out", eval_fraction=0.5)

    assert staged.rows["train"] + staged.rows["eval"] == 40
    assert 10 <= staged.rows["eval"] <= 30
    train = {data for data, _ in _examples(tmp_path / "out", "train")}
    assert not train & {data for data, _ in _examples(tmp_path / "out", "eval")}


def test_max_examples_is_a_seeded_sample_stratified_by_class(tmp_path):
    _make(
        tmp_path / "src",
        {"train/a": 30, "train/b": 10, "train/c": 1, "test/a": 10, "test/b": 10, "test/c": 2},
    )
    limits = {"train": 20, "eval": 6}
    staged = _stage(tmp_path / "src", tmp_path / "one", max_examples=limits, seed=1)
    same = _stage(tmp_path / "src", tmp_path / "two", max_examples=limits, seed=1)
    other = _stage(tmp_path / "src", tmp_path / "three", max_examples=limits, seed=2)

    assert staged.rows == {"train": 20, "eval": 6}
    assert staged.label_values == ("a", "b", "c")
    train = _examples(tmp_path / "one", "train")
    # 30:10:1 of 20 is 14.6:4.9:0.5; the tiny class keeps one image, taken from the largest.
    assert collections.Counter(label for _, label in train) == {"a": 14, "b": 5, "c": 1}
    evals = collections.Counter(label for _, label in _examples(tmp_path / "one", "eval"))
    assert evals == {"a": 2, "b": 3, "c": 1}
    assert train == _examples(tmp_path / "two", "train")  # the same order too
    assert same.size_bytes == staged.size_bytes
    assert other.rows == staged.rows
    assert set(train) != set(_examples(tmp_path / "three", "train"))


def test_unchanged_inputs_are_not_rewritten(tmp_path):
    _make(tmp_path / "src", {"train/a": 3, "train/b": 3, "test/a": 1, "test/b": 1})
    out = tmp_path / "out"
    first = _stage(tmp_path / "src", out)
    shard = out / "train" / "images-00000-of-00001.tfrecord.gz"
    os.utime(shard, ns=(1, 1))  # an old mtime, which only a rewrite changes

    assert _stage(tmp_path / "src", out) == first
    assert shard.stat().st_mtime_ns == 1
    # Changed arguments, a changed input and a deleted output all rewrite.
    assert _stage(tmp_path / "src", out, max_examples={"train": 4}).rows == {"train": 4, "eval": 2}
    assert shard.stat().st_mtime_ns != 1
    for change in (
        lambda: (tmp_path / "src" / "train" / "a" / "003.png").write_bytes(_image()),
        lambda: shard.unlink(),
    ):
        _stage(tmp_path / "src", out)
        os.utime(shard, ns=(1, 1))
        change()
        again = _stage(tmp_path / "src", out)
        assert shard.stat().st_mtime_ns != 1
    assert again.rows == {"train": 7, "eval": 2}


def test_a_failed_staging_leaves_the_previous_one(tmp_path):
    _make(tmp_path / "src", {"train/a": 3, "train/b": 3, "test/a": 1})
    out = tmp_path / "out"
    _stage(tmp_path / "src", out)
    before = _examples(out, "train")
    (tmp_path / "src" / "train" / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    with pytest.raises(DataError, match="bad.png"):
        _stage(tmp_path / "src", out)
    assert _examples(out, "train") == before
    assert sorted(p.name for p in out.iterdir()) == [
        ".fingerprint",
        ".staging.json",
        "eval",
        "train",
    ]


def test_other_files_are_skipped_and_reported(tmp_path):
    _make(tmp_path / "src", {"train/a": 2, "train/b": 2, "test/a": 1})
    for name in ("train/a/.DS_Store", "train/b/notes.txt", "train/README.md"):
        (tmp_path / "src" / name).write_text("not an image")
    (tmp_path / "src" / "train" / "a" / "UPPER.PNG").write_bytes(_image())

    staged = _stage(tmp_path / "src", tmp_path / "out")

    assert staged.rows == {"train": 5, "eval": 1}
    assert staged.skipped == ("train/README.md", "train/a/.DS_Store", "train/b/notes.txt")
    assert staged.skipped_count == 3
    assert staged.note("src") == (
        "src: skipped 3 files that are not .png/.jpg/.jpeg images in a class folder"
        " (train/README.md, train/a/.DS_Store, train/b/notes.txt)"
    )


def _with(path: Path, data: bytes) -> None:
    """A good train/test layout under `path`'s source, plus `data` at `path`."""
    source = Path(path.parts[0])
    _make(source, {"train/a": 2, "train/b": 2, "test/a": 1, "test/b": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


BAD_INPUTS = {
    "missing source": (lambda src: None, "src: no such directory; expected <source>/train/<class>"),
    "source is a file": (
        lambda src: src.write_text("a,b\n"),
        "src: is a file, not a directory; expected",
    ),
    "no images": (
        lambda src: ((src / "a").mkdir(parents=True), (src / "a" / "x.txt").write_text("")),
        "src: no images found; expected",
    ),
    "images outside class folders": (
        lambda src: (src.mkdir(), (src / "x.png").write_bytes(_image())),
        "src: no images found (1 image directly in",
    ),
    "empty class folder": (
        lambda src: (_make(src, {"train/a": 2, "train/b": 2}), (src / "train" / "c").mkdir()),
        "src/train/c: the class folder 'c' holds no .png/.jpg/.jpeg images; add",
    ),
    "class only in test": (
        lambda src: _make(src, {"train/a": 2, "train/b": 2, "test/a": 1, "test/z": 1}),
        "src/test/z: class 'z' is in test/ but not in",
    ),
    "one class": (
        lambda src: _make(src, {"train/a": 3, "test/a": 1}),
        "src/train: only one class folder ('a'); classification needs at least two classes",
    ),
    "not an image": (
        lambda src: _with(src / "train/b/x.jpg", b"hello"),
        "src/train/b/x.jpg: not a PNG or JPEG image (it starts with b'hello'); convert it",
    ),
    "empty file": (
        lambda src: _with(src / "test/b/x.png", b""),
        "src/test/b/x.png: not a PNG or JPEG image (the file is empty)",
    ),
    "truncated png": (
        lambda src: _with(src / "train/a/t.png", _image()[:-4]),
        "src/train/a/t.png: the image does not decode (Invalid PNG data",
    ),
    "truncated jpeg": (
        lambda src: _with(src / "train/a/t.jpeg", _image(fmt="jpeg")[:-4]),
        "src/train/a/t.jpeg: the image does not decode (jpeg::Uncompress failed",
    ),
    "another size": (
        lambda src: _with(src / "train/b/big.png", _image((9, 8, 1))),
        "src/train/b/big.png: the image is 9x8x1, expected 8x8x1 (height x width x channels);"
        " all images must have that one size",
    ),
    "another number of channels": (
        lambda src: _with(src / "test/a/rgb.png", _image((8, 8, 3))),
        "src/test/a/rgb.png: the image is 8x8x3, expected 8x8x1",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_with_one_line_naming_the_file(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    make, expected = BAD_INPUTS[case]
    make(Path("src"))

    with pytest.raises(DataError) as raised:
        images.stage_images("src", "out", feature="image", label="label", shape=SHAPE)
    message = str(raised.value)
    assert "\n" not in message
    assert expected in message
    assert not Path("out/train").exists()


def test_a_split_the_hash_leaves_without_a_class_or_empty_is_refused(tmp_path):
    _make(tmp_path / "src", {"a": 1, "b": 1})
    with pytest.raises(
        DataError, match=r"src/[ab]: every image of class '[ab]' \(1 image\) falls in the eval"
    ):
        _stage(tmp_path / "src", tmp_path / "out", eval_fraction=0.99)
    with pytest.raises(DataError, match=r"src: none of the 2 images falls in the eval split"):
        _stage(tmp_path / "src", tmp_path / "out", eval_fraction=0.01)


def test_bad_arguments_are_value_errors(tmp_path):
    _make(tmp_path / "src", {"a": 2, "b": 2})
    for kwargs in (
        {"shape": (8, 8)},
        {"max_examples": {"test": 3}},
        {"max_examples": {"train": 0}},
        {"eval_fraction": 1.0},
    ):
        with pytest.raises(ValueError):
            _stage(tmp_path / "src", tmp_path / "out", **kwargs)


needs_fashion_mnist = pytest.mark.skipif(
    not Path(images.FASHION_MNIST_DIR).is_dir(),
    reason=f"{images.FASHION_MNIST_DIR} missing: sudo apt-get install dataset-fashion-mnist",
)


@needs_fashion_mnist
def test_fashion_mnist_from_the_debian_package(tmp_path):
    staged = images.stage_images(
        images.FASHION_MNIST,
        str(tmp_path),
        feature="image",
        label="label",
        shape=(28, 28, 1),
        max_examples={"train": 200, "eval": 100},
    )

    assert staged.rows == {"train": 200, "eval": 100}
    assert staged.label_values == tuple(sorted(images.FASHION_MNIST_CLASSES))
    assert len(staged.label_values) == 10
    for split, per_class in (("train", 20), ("eval", 10)):
        found = _examples(tmp_path, split)
        assert collections.Counter(label for _, label in found) == dict.fromkeys(
            images.FASHION_MNIST_CLASSES, per_class
        )
        pixels = tf.stack([tf.io.decode_png(data) for data, _ in found])
        assert pixels.shape == (len(found), 28, 28, 1) and pixels.dtype == tf.uint8
        assert 0 < float(tf.reduce_mean(tf.cast(pixels, tf.float32))) < 255


@needs_fashion_mnist
def test_fashion_mnist_needs_its_own_shape(tmp_path):
    with pytest.raises(DataError, match=r"fashion-mnist: its images are 28x28x1, .* 32x32x3"):
        images.stage_images(
            images.FASHION_MNIST, str(tmp_path), feature="image", label="label", shape=(32, 32, 3)
        )


def test_fashion_mnist_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", str(tmp_path / "none"))
    with pytest.raises(DataError, match="sudo apt-get install dataset-fashion-mnist"):
        images.stage_images(
            images.FASHION_MNIST, str(tmp_path), feature="image", label="label", shape=(28, 28, 1)
        )


def test_class_names_are_read_without_staging(tmp_path):
    _make(tmp_path / "a" / "train", {"shirt": 1, "bag": 1})
    _make(tmp_path / "b", {"coat": 1, "boot": 1})
    (tmp_path / "b" / "notes.txt").write_text("not a class")
    assert images.class_names(str(tmp_path / "a")) == ("bag", "shirt")
    assert images.class_names(str(tmp_path / "b")) == ("boot", "coat")
    assert images.class_names(images.FASHION_MNIST)[:2] == ("Ankle boot", "Bag")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        images.class_names(str(tmp_path / "empty"))
