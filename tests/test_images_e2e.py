"""Images end to end: Fashion-MNIST (a stratified subset) to a pushed CNN served over gRPC."""

import collections
import glob
import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
import yaml
from serving_testlib import start_server

from pipeline import local_runner
from pipeline.config import load_config
from pipeline.images import FASHION_MNIST_CLASSES
from serving.client import ServingClient
from serving.config import RequestLimits

pytestmark = pytest.mark.e2e

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _test_image(index: int) -> tuple[bytes, int]:
    """One image of the official test set as PNG bytes, and its class id."""
    with gzip.open(f"{FASHION_MNIST}/t10k-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(f"{FASHION_MNIST}/t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return tf.io.encode_png(pixels[index]).numpy(), int(labels[index])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def summary(root, repo_root):
    raw = yaml.safe_load((repo_root / "configs" / "fashion_mnist.yaml").read_text())
    raw["data"]["max_examples"] = {"train": 2000, "eval": 500}
    raw["tuner"].update(max_trials=1, epochs=2)
    raw["training"].update(epochs=6)
    raw["evaluation"]["lower_bound"] = 0.6
    # Integrated gradients of a CNN cost ~0.1 s per example here: 60 are enough for heatmaps.
    raw["explanations"] = {"examples": 60}
    path = root / "fashion.yaml"
    path.write_text(yaml.safe_dump(raw))
    return local_runner.run(load_config(path, output_root=str(root / "out")))


def test_a_cnn_is_trained_blessed_and_pushed(summary):
    assert summary["status"] == "succeeded", summary["error"]
    assert summary["components"]["ImportExampleGen"]["status"] == "succeeded"
    assert summary["tuner"]["trials"] == 1
    assert {"conv_blocks", "filters", "kernel_size"} <= set(
        summary["tuner"]["best_hyperparameters"]
    )
    assert summary["evaluation"]["metrics"]["example_count"] == 500
    assert summary["evaluation"]["metrics"]["sparse_categorical_accuracy"] >= 0.6
    assert {f"f1_score/classId:{i}" for i in range(10)} <= set(summary["evaluation"]["metrics"])
    assert 0.0 < summary["evaluation"]["metrics"]["f1_score"] <= 1.0
    assert summary["evaluation"]["blessed"] is True
    assert summary["infra_validation"]["blessed"] is True
    assert summary["pushed"] is not None


def test_explanations_draw_integrated_gradient_heatmaps_per_predicted_class(summary):
    explanations = summary["explanations"]
    assert [g["feature"] for g in explanations["global"]] == ["image"]
    heatmaps = explanations["heatmaps"]
    classes = collections.Counter(Path(p).name.rsplit("-", 1)[0] for p in heatmaps)
    assert len(classes) >= 3 and max(classes.values()) <= 2  # heatmaps_per_class: 2
    assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in heatmaps)


def test_the_served_model_answers_grpc_predict_with_png_bytes(summary, tmp_path):
    model_dir = summary["pushed"]["model_dir"]
    base = tmp_path / "m"
    base.mkdir()
    (base / "1").symlink_to(model_dir)
    png, _ = _test_image(0)
    example = tf.train.Example(
        features=tf.train.Features(
            feature={"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}
        )
    ).SerializeToString()
    server = start_server(tmp_path, RequestLimits(), names=("m",))
    try:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            from_examples = client.predict("m", {"examples": np.array([example])})
            raw = client.predict(
                "m", {"image": np.array([png], dtype=object)}, signature_name="serving_raw"
            )
    finally:
        server.stop()
    assert from_examples["scores"].shape == (1, 10)
    np.testing.assert_allclose(from_examples["scores"], raw["scores"], rtol=1e-5)
    assert from_examples["scores"].sum() == pytest.approx(1.0, abs=1e-4)
    assert set(from_examples["classes"][0].astype(str)) >= {"Trouser", "Bag", "Ankle boot"}


def _artifact_files(root, component, pattern):
    return glob.glob(str(root / "out" / "pipelines" / "fashion-mnist" / component / pattern))


def test_the_summary_has_the_confusion_matrix_and_metrics_by_class_name(summary, root):
    evaluation = summary["evaluation"]
    confusion, per_class = evaluation["confusion_matrix"], evaluation["per_class"]
    labels = confusion["labels"]
    served = tf.saved_model.load(summary["pushed"]["model_dir"])
    png, _ = _test_image(0)
    classes = served.signatures["serving_raw"](image=tf.constant([png]))["classes"][0]
    assert labels == [c.decode() for c in classes.numpy()]  # class-id order
    assert sorted(labels) == sorted(FASHION_MNIST_CLASSES)
    matrix = np.array(confusion["matrix"])
    assert matrix.shape == (10, 10)
    eval_files = _artifact_files(root, "ImportExampleGen", "examples/*/Split-eval/*")
    truth = collections.Counter(
        tf.train.Example.FromString(r.numpy()).features.feature["label"].bytes_list.value[0]
        for r in tf.data.TFRecordDataset(eval_files, compression_type="GZIP")
    )
    assert matrix.sum(axis=1).tolist() == [truth[name.encode()] for name in labels]
    assert matrix.sum() == evaluation["metrics"]["example_count"] == 500
    accuracy = np.trace(matrix) / matrix.sum()
    assert accuracy == pytest.approx(evaluation["metrics"]["sparse_categorical_accuracy"])
    assert set(per_class) == set(FASHION_MNIST_CLASSES)
    for i, name in enumerate(labels):
        assert per_class[name]["support"] == truth[name.encode()]
        for metric in ("precision", "recall", "f1_score", "auc"):
            assert per_class[name][metric] == evaluation["metrics"][f"{metric}/classId:{i}"]
    assert '<img alt="confusion matrix"' in Path(summary["report"]).read_text()


def test_the_inferred_schema_gives_the_image_an_image_domain(root):
    [schema_file] = _artifact_files(root, "SchemaGen", "schema/*/schema.pbtxt")
    schema = tfdv.load_schema_text(schema_file)
    assert tfdv.get_feature(schema, "image").WhichOneof("domain_info") == "image_domain"


def _image_examples(path: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(pixels, labels, strict=True):
            feature = {
                "image": tf.io.encode_png(image).numpy(),
                "label": FASHION_MNIST_CLASSES[label].encode(),
            }
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
                        for k, v in feature.items()
                    }
                )
            )
            writer.write(example.SerializeToString())


def test_the_monitor_finds_brighter_images_through_the_pushed_models_lineage(
    summary, root, tmp_path
):
    from pipeline import monitor
    from pipeline.images import fashion_mnist_arrays

    config = load_config(root / "fashion.yaml", output_root=str(root / "out"))
    pixels, labels = fashion_mnist_arrays("eval")
    _image_examples(tmp_path / "calm.tfrecord", pixels[:300], labels[:300])
    calm = monitor.monitor(config, examples=str(tmp_path / "calm.tfrecord"))
    assert calm.drift["drifted_features"] == [], calm.drift["features"]
    brighter = np.clip(pixels[300:600].astype(np.int32) + 51, 0, 255).astype(np.uint8)
    _image_examples(tmp_path / "bright.tfrecord", brighter, labels[300:600])
    shifted = monitor.monitor(config, examples=str(tmp_path / "bright.tfrecord"))
    features = shifted.drift["features"]
    assert "image.brightness" in shifted.drift["drifted_features"]
    assert features["image.brightness"]["role"] == "image statistic"
    assert features["image.brightness"]["statistic"] == "jensen_shannon_divergence"
    assert features["label"] == {**features["label"], "role": "label", "drifted": False}
    report = (Path(shifted.directory) / monitor.REPORT_FILE).read_text()
    assert "<h2 class='drifted'>image.brightness (image statistic): drifted</h2>" in report
