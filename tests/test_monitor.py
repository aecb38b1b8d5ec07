"""The monitor's inputs and lineage on bad input; the drift run itself is asserted on the
end-to-end penguins run (tests/test_pipeline_e2e.py), whose pushed model it follows."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from tensorflow_serving.apis import classification_pb2, predict_pb2

from pipeline.config import load_config
from pipeline.data import DataError
from pipeline.monitor_inputs import read_examples, read_request_logs
from pipeline.monitor_lineage import served_version, training_lineage
from serving.config import RequestLogConfig
from serving.logging_requests import RequestLogger, log_files


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(
        REPO_ROOT / "configs" / "penguins.yaml", output_root=str(tmp_path_factory.mktemp("out"))
    )


def _raw_request(model="penguins", **columns):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_raw"
    for key, values in columns.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    response.model_spec.version.value = 1
    n = len(next(iter(columns.values())))
    response.outputs["scores"].CopyFrom(tf.make_tensor_proto(np.eye(3, dtype=np.float32)[:n]))
    classes = np.array([[b"Adelie", b"Chinstrap", b"Gentoo"]] * n)
    response.outputs["classes"].CopyFrom(tf.make_tensor_proto(classes))
    return request, response


def _penguin_columns(n=2):
    return {
        "bill_length_mm": np.array([39.1, 46.5][:n], np.float32),
        "bill_depth_mm": np.array([18.7, 17.9][:n], np.float32),
        "flipper_length_mm": np.array([181, np.nan][:n], np.float32),
        "body_mass_g": np.array([3750, 3500][:n], np.float32),
        "island": np.array([b"Torgersen", b"Dream"][:n]),
        "sex": np.array([b"male", b"female"][:n]),
    }


def _write_logs(prefix, *pairs, method="Predict"):
    logger = RequestLogger(RequestLogConfig(str(prefix))).start()
    for request, response in pairs:
        logger.log(method, request, response)
    logger.stop()


def test_logged_raw_requests_become_rows_with_their_predictions(tmp_path, config):
    _write_logs(tmp_path / "requests", _raw_request(**_penguin_columns()))
    data = read_request_logs(str(tmp_path), config)
    assert data.label_kind == "predictions" and data.files == 1
    assert data.versions == {1: 1}
    frame = data.frame
    assert frame["species"].tolist() == ["Adelie", "Chinstrap"]
    assert frame["island"].tolist() == ["Torgersen", "Dream"]
    assert frame["body_mass_g"].tolist() == [3750.0, 3500.0]
    assert np.isnan(frame["flipper_length_mm"][1])


def test_logged_classify_requests_are_read_from_their_examples(tmp_path, config):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "penguins"
    example = request.input.example_list.examples.add()
    example.features.feature["island"].bytes_list.value.append(b"Biscoe")
    example.features.feature["sex"].bytes_list.value.append(b"female")
    for key in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        example.features.feature[key].float_list.value.append(1.0)
    response = classification_pb2.ClassificationResponse()
    response.model_spec.name = "penguins"
    classes = response.result.classifications.add()
    for label, score in (("Adelie", 0.1), ("Gentoo", 0.8), ("Chinstrap", 0.1)):
        classes.classes.add(label=label, score=score)
    _write_logs(tmp_path / "requests", (request, response), method="Classify")
    frame = read_request_logs(str(tmp_path), config).frame
    assert frame.to_dict("records")[0]["species"] == "Gentoo"
    assert frame["island"].tolist() == ["Biscoe"]


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [
        ([_raw_request(model="digits", **_penguin_columns())], "a request to model 'digits'"),
        ([_raw_request(x=np.array([1.0], np.float32))], "not the model's features"),
    ],
)
def test_logs_of_another_model_or_signature_are_refused(tmp_path, config, pairs, problem):
    _write_logs(tmp_path / "requests", *pairs)
    with pytest.raises(DataError, match=problem) as caught:
        read_request_logs(str(tmp_path), config)
    assert log_files(str(tmp_path))[0] + ": record 0" in str(caught.value)


def test_empty_and_truncated_logs_are_named(tmp_path, config):
    with pytest.raises(DataError, match="no request log files"):
        read_request_logs(str(tmp_path), config)
    _write_logs(tmp_path / "requests", _raw_request(**_penguin_columns()))
    (path,) = log_files(str(tmp_path))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-7])
    with pytest.raises(DataError, match=f"{path}: truncated or corrupt after 0 records"):
        read_request_logs(str(tmp_path), config)


def test_folders_of_csv_and_examples(tmp_path, config):
    (tmp_path / "csv").mkdir()
    header = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex\n"
    (tmp_path / "csv" / "a.csv").write_text(header + "Gentoo,Biscoe,46.1,13.2,211,4500,NA\n")
    data = read_examples(str(tmp_path / "csv"), config)
    assert data.label_kind == "labels"
    assert data.frame.to_dict("records")[0]["species"] == "Gentoo"
    assert data.frame["sex"].tolist() == [None]

    example = tf.train.Example()
    for key in config.numeric_features:
        example.features.feature[key].float_list.value.append(2.0)
    for key in config.categorical_features:
        example.features.feature[key].bytes_list.value.append(b"Dream")
    (tmp_path / "tf").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "tf" / "x.tfrecord.gz"), "GZIP") as writer:
        writer.write(example.SerializeToString())
    data = read_examples(str(tmp_path / "tf"), config)
    assert data.label_kind is None and data.frame["island"].tolist() == ["Dream"]

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data files"):
        read_examples(str(tmp_path / "empty"), config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.csv").write_text("island,beak\nDream,3\n")
    with pytest.raises(DataError, match=r"b\.csv: has no column/feature \['bill_depth_mm'"):
        read_examples(str(tmp_path / "other"), config)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "c.tfrecord.gz").write_bytes(gzip.compress(b"\x05not a record"))
    with pytest.raises(DataError, match=r"c\.tfrecord\.gz: truncated or corrupt"):
        read_examples(str(tmp_path / "bad"), config)


def test_lineage_needs_a_pushed_model_and_its_metadata(tmp_path):
    with pytest.raises(DataError, match="no pushed model version; run the pipeline first"):
        served_version(str(tmp_path / "serving" / "penguins"))
    os.makedirs(tmp_path / "serving" / "penguins" / "7")
    assert served_version(str(tmp_path / "serving" / "penguins")) == "7"
    with pytest.raises(DataError, match="no ML Metadata"):
        training_lineage(str(tmp_path / "m.sqlite"), str(tmp_path / "serving" / "penguins"), "7")


@pytest.mark.parametrize("name", ["fashion_mnist", "forda", "bbc_news"])
def test_logged_images_texts_and_series_keep_their_raw_values(tmp_path, name):
    config = load_config(REPO_ROOT / "configs" / f"{name}.yaml", output_root=str(tmp_path))
    png = tf.io.encode_png(np.zeros([28, 28, 1], np.uint8)).numpy()
    inputs, expected = {
        "fashion_mnist": ({"image": np.array([png, png], dtype=object)}, [png, png]),
        "forda": (
            {"signal": np.arange(6, dtype=np.float32).reshape(2, 3)},
            [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
        ),
        "bbc_news": ({"text": np.array(["Café prices", "x"], dtype=object)}, ["Café prices", "x"]),
    }[name]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = config.model_name
    request.model_spec.signature_name = "serving_raw"
    for key, values in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    response.outputs["scores"].CopyFrom(tf.make_tensor_proto(np.eye(2, dtype=np.float32)))
    response.outputs["classes"].CopyFrom(tf.make_tensor_proto(np.array([[b"a", b"b"]] * 2)))
    _write_logs(tmp_path / "requests", (request, response))
    data = read_request_logs(str(tmp_path), config)
    (feature,) = config.image_features + config.text_features + config.sequence_features
    assert data.raw[feature] == expected
    assert data.frame[config.label].tolist() == ["a", "b"]
