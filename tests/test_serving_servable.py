"""A loaded servable's signatures: the flat call path answers like TensorFlow's public call."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from serving_testlib import example, save_model

from serving.servable import Servable, Signature, _flat_call, run_signature


@pytest.fixture(scope="module")
def servable(tmp_path_factory):
    path = save_model(str(tmp_path_factory.mktemp("model") / "1"), scale=2.0)
    return Servable("tiny", 1, path)


def _assert_same(flat, public):
    assert flat.keys() == public.keys()
    for key in public:
        np.testing.assert_array_equal(np.asarray(flat[key]), public[key].numpy())


def test_flat_call_feeds_inputs_in_graph_order(servable):
    # serving_raw declares (x float, color string); sorted they are (color, x), so a call
    # that fed them in the wrong order would fail on dtypes or answer differently.
    raw = servable.signature("serving_raw")
    assert _flat_call(raw.function, raw.inputs) is not None
    tensors = {"x": tf.constant([1.5, -2.0]), "color": tf.constant([b"red", b"blue"])}
    _assert_same(raw.call(tensors), raw.function(**tensors))


def test_flat_call_answers_like_the_public_call_on_examples(servable):
    signature = servable.signature("")
    examples = tf.constant([example(0.5, "red"), example(-1.0, "green")])
    _assert_same(signature.call({"examples": examples}), signature.function(examples=examples))
    outputs = run_signature(signature, {"examples": examples.numpy()})
    assert outputs["scores"].shape == (2, 3)


def test_plain_function_falls_back_to_the_public_call():
    signature = Signature(
        "s", {"x": tf.TensorSpec([None], tf.float32)}, {"y": None}, lambda x: {"y": x * 2}
    )
    assert _flat_call(signature.function, signature.inputs) is None
    np.testing.assert_array_equal(
        run_signature(signature, {"x": np.array([1.0, 2.0], np.float32)})["y"], [2.0, 4.0]
    )
