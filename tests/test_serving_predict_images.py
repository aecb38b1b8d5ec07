"""`python -m serving predict --image-feature`: image files to a served image model's classes.

A tiny cnn, exported with the Trainer's signatures, served by the embedded server on loopback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from serving_testlib import start_server

from models import cnn
from models.export import class_names_of, export_serving_model, vocab_sizes_of
from models.features import FeatureSpec
from pipeline.images import IMAGE_EXTENSIONS
from serving.cli import IMAGE_SUFFIXES, main
from serving.config import RequestLimits
from tests.tftlib import TINY_CNN_HPARAMS, analyze_and_transform, image_rows, png

SHAPE = (8, 8, 1)
CLASSES = ("bag", "coat", "shirt")
SPEC = FeatureSpec((), (), "label", "classification", image=("image",), image_shape=SHAPE)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(the server, the exported SavedModel's directory) for model "m"."""
    rows, _ = image_rows(6, SHAPE, tuple(c.encode() for c in CLASSES))
    raw_spec = {"image": tf.io.VarLenFeature(tf.string), "label": tf.io.VarLenFeature(tf.string)}
    _, output = analyze_and_transform(tmp_path_factory.mktemp("tft"), rows, SPEC, raw_spec)
    model = cnn.build_model(TINY_CNN_HPARAMS, SPEC, vocab_sizes_of(output, SPEC), num_classes=3)
    root = tmp_path_factory.mktemp("models")
    export_dir = export_serving_model(
        model, output, SPEC, str(root / "m" / "1"), class_names_of(output, SPEC)
    )
    running = start_server(root, RequestLimits(), names=("m",))
    yield running, export_dir
    running.stop()


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)


def _predict(server, path, *extra) -> list[str]:
    address = f"127.0.0.1:{server.grpc_port}"
    argv = ["predict", "--model-name", "m", "--address", address, "--input", str(path)]
    return [*argv, *extra]


def _expected(export_dir: str, files) -> tuple[list[str], np.ndarray]:
    """The class names and scores the SavedModel itself gives for the files' bytes."""
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f.read_bytes()]))
                }
            )
        ).SerializeToString()
        for f in files
    ]
    loaded = tf.saved_model.load(export_dir)
    outputs = loaded.signatures["serving_default"](examples=tf.constant(examples))
    return [c.decode() for c in outputs["classes"].numpy()[0]], outputs["scores"].numpy()


def test_a_folder_of_images_gives_one_line_per_file_in_sorted_order(
    served, tmp_path, capsys, monkeypatch
):
    server, export_dir = served
    # Two Predict calls for the three files: the batches' outputs are joined in file order.
    monkeypatch.setattr("serving.cli.IMAGE_BATCH", 2)
    folder = tmp_path / "images"
    (folder / "b").mkdir(parents=True)
    (folder / "a").mkdir()
    (folder / "b" / "2.png").write_bytes(png(_pixels(2)))
    (folder / "a" / "1.PNG").write_bytes(png(_pixels(1)))
    (folder / "a" / "0.Jpeg").write_bytes(tf.io.encode_jpeg(_pixels(0)).numpy())
    (folder / "notes.txt").write_text("not an image")
    files = [folder / "a" / "0.Jpeg", folder / "a" / "1.PNG", folder / "b" / "2.png"]

    assert main(_predict(server, folder, "--image-feature", "image")) == 0

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(f) for f in files]
    names, expected = _expected(export_dir, files)
    assert sorted(names) == list(CLASSES)
    for line, scores in zip(lines, expected, strict=True):
        assert list(line) == ["file", "class", "score", "scores"]
        assert list(line["scores"]) == names
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert line["class"] == names[int(np.argmax(scores))]
        assert line["score"] == line["scores"][line["class"]]
        np.testing.assert_allclose(list(line["scores"].values()), scores, atol=1e-5)


def test_one_image_file_gives_one_line(served, tmp_path, capsys):
    server, _ = served
    image = tmp_path / "shirt.png"
    image.write_bytes(png(_pixels(3)))
    assert main(_predict(server, image, "--image-feature", "image")) == 0
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["file"] == str(image) and result["class"] in CLASSES


def _failure(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    message = exit_.value.code
    # A string code: Python prints it as one line on stderr and exits with status 1.
    assert isinstance(message, str) and "\n" not in message
    assert message.startswith("predict: ")
    assert capsys.readouterr().out == ""
    return message


def test_a_folder_without_images_names_the_extensions(served, tmp_path, capsys):
    server, _ = served
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "photo.gif").write_bytes(b"GIF89a")
    message = _failure(_predict(server, tmp_path / "empty", "--image-feature", "image"), capsys)
    assert f"{tmp_path / 'empty'}: no image files (.png, .jpg, .jpeg)" in message


def test_an_unreadable_image_is_named(served, tmp_path, capsys):
    server, _ = served
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(_pixels(0)))
    # Unreadable even as root: a link to a file that is gone.
    (folder / "b.png").symlink_to(tmp_path / "gone.png")
    message = _failure(_predict(server, folder, "--image-feature", "image"), capsys)
    assert f"{folder / 'b.png'}: cannot read it: No such file or directory" in message


def test_an_image_without_an_image_feature_is_refused(served, tmp_path, capsys):
    server, _ = served
    image = tmp_path / "shirt.JPG"
    image.write_bytes(tf.io.encode_jpeg(_pixels(0)).numpy())
    message = _failure(_predict(server, image), capsys)
    assert f"{image} is an image, but no --image-feature was given" in message
    assert "the config has no (single) image feature" in message


def test_predict_reads_the_image_files_that_staging_reads():
    assert IMAGE_SUFFIXES == IMAGE_EXTENSIONS
