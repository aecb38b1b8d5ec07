"""Warm start: which layers of a new model take a trained model's weights."""

import numpy as np
import tf_keras as keras

from models.features import FeatureSpec
from models.mlp import build_model
from models.warm_start import copy_matching_weights

SPEC = FeatureSpec(("a", "b"), ("island",), "species", "classification")
HPARAMS = {
    "units": 4,
    "layers": 2,
    "dropout": 0.0,
    "l2": 1e-6,
    "learning_rate": 0.01,
    "optimizer": "adam",
    "lr_schedule": "constant",
    "lr_decay_rate": 0.9,
}


def _weights(layer):
    return [w.numpy() for w in layer.weights]


def _trained(vocab: int, hparams=HPARAMS) -> keras.Model:
    model = build_model(hparams, SPEC, {"island": vocab}, num_classes=3)
    # Weights no fresh initialisation would give, to tell copied ones apart.
    for layer in model.layers:
        layer.set_weights([np.full(w.shape, 0.5, w.dtype.as_numpy_dtype) for w in layer.weights])
    return model


def test_same_vocabularies_copy_every_layer_with_weights():
    old = _trained(vocab=4)
    new = build_model(HPARAMS, SPEC, {"island": 4}, num_classes=3)
    copied = copy_matching_weights(new, old)
    assert copied.loaded == ["dense_0", "dense_1", "scores"]
    assert copied.skipped == {}
    # Auto-named layers (reshape_2, ...) differ between the two builds: pairs by position.
    assert [layer.name for layer in new.layers] != [layer.name for layer in old.layers]
    for layer, partner in zip(new.layers, old.layers, strict=True):
        for got, want in zip(_weights(layer), _weights(partner), strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_grown_vocabulary_starts_the_layer_reading_its_one_hot_fresh():
    # A new island: the one-hot widens from 4 to 5, so the first Dense kernel's input does.
    old = _trained(vocab=4)
    new = build_model(HPARAMS, SPEC, {"island": 5}, num_classes=3)
    fresh = _weights(new.get_layer("dense_0"))
    copied = copy_matching_weights(new, old)
    assert copied.loaded == ["dense_1", "scores"]
    assert copied.skipped == {"dense_0": "shapes changed: [(6, 4), (4,)] -> [(7, 4), (4,)]"}
    for got, want in zip(_weights(new.get_layer("dense_0")), fresh, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_weights(new.get_layer("scores"))[0], np.full((4, 3), 0.5))


def test_other_hyperparameters_pair_layers_by_name():
    # One hidden layer fewer: dense_0 and the head still pair by name; widths decide.
    old = _trained(vocab=4)
    new = build_model(HPARAMS | {"layers": 1}, SPEC, {"island": 4}, num_classes=3)
    copied = copy_matching_weights(new, old)
    assert copied.loaded == ["dense_0", "scores"]
    assert copied.skipped == {}
    wider = build_model(HPARAMS | {"units": 8}, SPEC, {"island": 4}, num_classes=3)
    copied = copy_matching_weights(wider, old)
    assert copied.loaded == []
    assert set(copied.skipped) == {"dense_0", "dense_1", "scores"}
