"""Tiny SavedModels with the Trainer's serving contract, for the serving tests."""

from __future__ import annotations

import os

import tensorflow as tf

from models.export import CLASSIFICATION_SIGNATURE, REGRESSION_SIGNATURE, mark_serving_methods

CLASS_NAMES = ["adelie", "chinstrap", "gentoo"]
_FEATURES = {
    "x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    "color": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


class _Model(tf.Module):
    """scores = softmax([x * scale, color == 'red', -x]); or outputs = x * scale."""

    def __init__(self, scale: float, regression: bool):
        super().__init__()
        self.scale = tf.Variable(scale, dtype=tf.float32)
        self.regression = regression

    def _outputs(self, x, color):
        if self.regression:
            return {"outputs": tf.expand_dims(x * self.scale, 1)}
        red = tf.cast(tf.equal(color, "red"), tf.float32)
        scores = tf.nn.softmax(tf.stack([x * self.scale, red, -x], axis=1))
        classes = tf.tile(tf.constant([CLASS_NAMES]), [tf.shape(x)[0], 1])
        return {"scores": scores, "classes": classes}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_examples(self, examples):
        parsed = tf.io.parse_example(examples, _FEATURES)
        return self._outputs(parsed["x"], parsed["color"])

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.string)]
    )
    def serve_raw(self, x, color):
        return self._outputs(x, color)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_inputs(self, inputs):
        parsed = tf.io.parse_example(inputs, _FEATURES)
        return self._outputs(parsed["x"], parsed["color"])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def transform_features(self, examples):
        parsed = tf.io.parse_example(examples, _FEATURES)
        return {"x_scaled": parsed["x"] * self.scale}


def save_model(directory: str, scale: float = 1.0, regression: bool = False) -> str:
    """Saves a tiny model with the pushed model's four signatures; returns the dir."""
    model = _Model(scale, regression)
    method = REGRESSION_SIGNATURE if regression else CLASSIFICATION_SIGNATURE
    tf.saved_model.save(
        model,
        directory,
        signatures={
            "serving_default": model.serve_examples,
            "serving_raw": model.serve_raw,
            "transform_features": model.transform_features,
            method: model.serve_inputs,
        },
    )
    mark_serving_methods(directory)
    return directory


def save_version(base_path: str, version: int, scale: float = 1.0, regression: bool = False) -> str:
    """Saves a tiny model as `<base_path>/<version>/`, writing to a temp dir first like a push."""
    final = os.path.join(base_path, str(version))
    staging = os.path.join(base_path, f".staging-{version}")
    save_model(staging, scale, regression)
    os.replace(staging, final)
    return final


def example(x: float, color: str) -> bytes:
    """Returns a serialized tf.Example with the tiny model's raw features."""
    features = {
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
        "color": tf.train.Feature(bytes_list=tf.train.BytesList(value=[color.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def start_server(root, limits, names=("m", "r")):
    """A ModelServer on free loopback ports serving the models `names` (base paths under
    `root`), all available; the caller stops it."""
    import portpicker

    from serving.client import ServingClient
    from serving.config import ModelConfig
    from serving.server import ModelServer, ServerOptions

    options = ServerOptions(
        grpc_port=portpicker.pick_unused_port(),
        rest_port=portpicker.pick_unused_port(),
        limits=limits,
        poll_interval_s=0.2,
    )
    running = ModelServer([ModelConfig(n, str(root / n)) for n in names], options).start()
    with ServingClient(f"127.0.0.1:{running.grpc_port}") as client:
        for name in names:
            client.wait_until_available(name, timeout_s=30)
    return running
