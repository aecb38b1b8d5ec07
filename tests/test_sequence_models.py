"""The text and sequence encoders and the sequence family: shapes, masks, training, saving."""

import keras_tuner
import numpy as np
import pytest
import tf_keras as keras

from models import registry
from models.features import FeatureSpec
from models.search_space import hyperparameters
from models.sequence_encoders import ENCODER_HPARAMS, ENCODERS, build_encoder

TINY = {
    "encoder": "transformer",
    "embedding_dim": 8,
    "num_heads": 2,
    "attention_blocks": 1,
    "ff_dim": 8,
    "rnn_units": 4,
    "rnn_layers": 1,
    "bidirectional": False,
    "conv_blocks": 2,
    "filters": 4,
    "kernel_size": 5,
    "residual": False,
    "pooling": "global_average",
    "units": 8,
    "layers": 1,
    "dropout": 0.0,
    "l2": 1e-6,
    "learning_rate": 0.01,
    "optimizer": "adam",
    "lr_schedule": "constant",
    "lr_decay_rate": 0.9,
}
# Every encoder, and the variants that take another path through the code.
VARIANTS = {
    "transformer": {"encoder": "transformer", "attention_blocks": 2},
    "lstm": {"encoder": "lstm", "rnn_layers": 2},
    "gru-bidirectional": {"encoder": "gru", "bidirectional": True},
    "conv1d": {"encoder": "conv1d"},
    "conv1d-residual": {"encoder": "conv1d", "residual": True},
    "conv1d-max": {"encoder": "conv1d", "pooling": "global_max"},
    "transformer-max": {"encoder": "transformer", "pooling": "global_max"},
    "bag-of-embeddings": {"encoder": "conv1d", "conv_blocks": 0},
}
VOCAB = 20


def _padded(rows, length):
    return np.array([r + [0] * (length - len(r)) for r in rows], np.int64)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoders_give_a_vector_per_text_and_per_sequence(encoder):
    hparams = TINY | {"encoder": encoder}
    text = build_encoder(hparams, max_length=10, vocab_size=VOCAB, name="text")
    series = build_encoder(hparams, max_length=10, name="series")
    ids = np.random.randint(0, VOCAB, (3, 10)).astype(np.int64)
    values = np.random.randn(3, 10).astype(np.float32)
    for encoded in (text(ids, training=False), series(values, training=False)):
        assert encoded.shape[0] == 3 and len(encoded.shape) == 2
        assert encoded.dtype == "float32"
        assert np.isfinite(encoded.numpy()).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_does_not_change_a_text_encoding(variant):
    encoder = build_encoder(TINY | VARIANTS[variant], max_length=16, vocab_size=VOCAB, name="e")
    # Dropout and batch normalisation as in serving; random weights are enough.
    rows = [[5, 3, 7, 2, 9, 11], [4, 8], [13, 1, 1, 6, 2]]
    unpadded = encoder(_padded(rows, 6), training=False).numpy()
    for length in (8, 16):
        padded = encoder(_padded(rows, length), training=False).numpy()
        np.testing.assert_allclose(padded, unpadded, atol=1e-5, rtol=0)
    # Not a constant: a different token changes the encoding.
    other = encoder(_padded([[5, 3, 7, 2, 9, 12], *rows[1:]], 6), training=False).numpy()
    assert np.abs(other[0] - unpadded[0]).max() > 1e-4


@pytest.mark.parametrize("variant", ["transformer", "conv1d", "conv1d-max", "transformer-max"])
def test_an_empty_text_encodes_as_zeros(variant):
    encoder = build_encoder(TINY | VARIANTS[variant], max_length=8, vocab_size=VOCAB, name="e")
    encoded = encoder(np.zeros((2, 8), np.int64), training=False).numpy()
    np.testing.assert_array_equal(encoded, 0.0)


def test_max_pooling_takes_the_largest_unpadded_value_per_channel():
    encoder = build_encoder(
        TINY | {"encoder": "conv1d", "conv_blocks": 0, "pooling": "global_max"},
        max_length=6,
        vocab_size=VOCAB,
        name="bag",
    )
    (embedding,) = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Embedding)]
    embeddings = embedding.get_weights()[0]
    ids = _padded([[3, 5], [4]], 6)
    expected = np.stack([embeddings[[3, 5]].max(axis=0), embeddings[4]])
    # The padding's embedding (id 0) takes no part, even where it is the largest.
    np.testing.assert_allclose(encoder(ids, training=False).numpy(), expected, atol=1e-6)
    mean = build_encoder(
        TINY | {"encoder": "conv1d", "conv_blocks": 0}, max_length=6, vocab_size=VOCAB, name="m"
    )
    mean.set_weights(encoder.get_weights())
    averaged = np.stack([embeddings[[3, 5]].mean(axis=0), embeddings[4]])
    np.testing.assert_allclose(mean(ids, training=False).numpy(), averaged, atol=1e-6)
    with pytest.raises(ValueError, match="unknown pooling 'flatten' for encoder 'conv1d'"):
        build_encoder(TINY | {"encoder": "conv1d", "pooling": "flatten"}, max_length=6, name="e")


def test_unknown_encoder_and_missing_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="unknown encoder 'cnn'"):
        build_encoder(TINY | {"encoder": "cnn"}, max_length=4, name="e")
    hparams = {k: v for k, v in TINY.items() if k != "rnn_units"} | {"encoder": "gru"}
    with pytest.raises(ValueError, match="'gru' needs the hyperparameters \\['rnn_units'\\]"):
        build_encoder(hparams, max_length=4, vocab_size=VOCAB, name="e")


MIXED = FeatureSpec(("rating",), (), "label", "classification", text=("review",), max_tokens=12)


def _mixed_batch(n=8):
    lengths = np.random.randint(1, 13, n)
    ids = np.array([list(np.random.randint(1, VOCAB, k)) + [0] * (12 - k) for k in lengths])
    features = {"rating_xf": np.random.randn(n).astype(np.float32), "review_xf": ids}
    return features, np.random.randint(0, 3, n)


def test_text_and_numeric_model_trains_a_step():
    model = registry.builder("sequence")(TINY, MIXED, {"review": VOCAB}, num_classes=3)
    assert {i.name for i in model.inputs} == {"rating_xf", "review_xf"}
    features, labels = _mixed_batch()
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(features, labels)[0]
    assert np.isfinite(loss)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights(), strict=True))
    scores = model.predict(features, verbose=0)
    assert scores.shape == (8, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_the_family_refuses_features_it_cannot_encode():
    build = registry.builder("sequence")
    with pytest.raises(ValueError, match="needs a text or sequence feature"):
        build(TINY, FeatureSpec(("a",), (), "y", "classification"), {}, num_classes=2)
    with pytest.raises(ValueError, match=r"text features \['review'\] have no vocabulary size"):
        build(TINY, MIXED, {}, num_classes=2)


@pytest.mark.parametrize(
    ("variant", "formats"),
    [("transformer", ("keras", "tf")), ("conv1d-residual", ("keras",))],
)
def test_saved_models_reload_with_the_same_predictions(variant, formats, tmp_path):
    """The Trainer's model.keras and the export's SavedModel reload as the same model."""
    spec = FeatureSpec(
        ("rating",), (), "y", "regression", text=("review",), max_tokens=12,
        sequence=("trace",), sequence_length=10,
    )  # fmt: skip
    model = registry.builder("sequence")(TINY | VARIANTS[variant], spec, {"review": VOCAB})
    features, labels = _mixed_batch()
    features["trace_xf"] = np.random.randn(8, 10).astype(np.float32)
    # A step of training, so that batch normalisation's moving statistics are not the initial ones.
    model.train_on_batch(features, labels.astype(np.float32))
    expected = model.predict(features, verbose=0)
    # As the Trainer saves model.keras and models/export.py the SavedModel.
    saves = {
        "keras": (tmp_path / "model.keras", {}),
        "tf": (tmp_path / "saved_model", {"save_format": "tf", "include_optimizer": False}),
    }
    for save_format in formats:
        path, options = saves[save_format]
        model.save(path, **options)
        reloaded = keras.models.load_model(path)
        np.testing.assert_allclose(reloaded.predict(features, verbose=0), expected, atol=1e-6)


def _token_presence(n, length=12):
    """Texts of tokens 2..9, half of them with a 1 somewhere: the label is whether it is there."""
    rows, labels = [], np.arange(n) % 2
    for label in labels:
        row = list(np.random.randint(2, 10, np.random.randint(3, length + 1)))
        if label:
            row[np.random.randint(len(row))] = 1
        rows.append(row)
    return {"text_xf": _padded(rows, length)}, labels


def _waves(n, length=32):
    """Sines and square waves of random frequency and phase, with noise: the label is which."""
    labels = np.arange(n) % 2
    t = np.arange(length)[None, :]
    phase = np.random.uniform(0, 2 * np.pi, (n, 1))
    sine = np.sin(2 * np.pi * np.random.uniform(0.05, 0.2, (n, 1)) * t + phase)
    waves = np.where(labels[:, None] == 1, np.sign(sine), sine)
    noisy = waves + 0.1 * np.random.randn(n, length)
    return {"wave_xf": noisy.astype(np.float32)}, labels


LEARN = {"learning_rate": 0.01, "embedding_dim": 16, "ff_dim": 16, "rnn_units": 16, "filters": 8}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_each_encoder_learns_a_text_and_a_series_task(encoder):
    tasks = (
        (FeatureSpec((), (), "y", "classification", text=("text",), max_tokens=12), {"text": 10},
         _token_presence),
        (FeatureSpec((), (), "y", "classification", sequence=("wave",), sequence_length=32), {},
         _waves),
    )  # fmt: skip
    for spec, vocab_sizes, task in tasks:
        train, test = task(512), task(128)
        model = registry.builder("sequence")(
            TINY | LEARN | {"encoder": encoder}, spec, vocab_sizes, num_classes=2
        )
        model.fit(*train, epochs=8, batch_size=32, verbose=0)
        accuracy = model.evaluate(*test, verbose=0)[1]
        assert accuracy >= 0.9, f"{encoder} on {task.__name__}: accuracy {accuracy:.3f}"


# The sequence family's search space as pipeline.pipeline.search_space hands it on.
SEQUENCE_SPACE = {
    "encoder": ["transformer", "gru", "conv1d"],
    "embedding_dim": {"min": 8, "max": 16, "step": 8},
    "num_heads": [1, 2],
    "attention_blocks": {"min": 1, "max": 2, "step": 1},
    "ff_dim": {"min": 8, "max": 16, "step": 8},
    "rnn_units": {"min": 4, "max": 8, "step": 4},
    "rnn_layers": {"min": 1, "max": 2, "step": 1},
    "bidirectional": [True, False],
    "conv_blocks": {"min": 1, "max": 2, "step": 1},
    "filters": {"min": 4, "max": 8, "step": 4},
    "kernel_size": [3, 5],
    "residual": [True, False],
    "pooling": ["global_average", "global_max"],
    "units": {"min": 8, "max": 8, "step": 8},
    "layers": {"min": 0, "max": 1, "step": 1},
    "dropout": {"min": 0.0, "max": 0.2, "sampling": "linear"},
    "l2": {"min": 1e-6, "max": 1e-6, "sampling": "log"},
    "learning_rate": {"min": 0.01, "max": 0.01, "sampling": "log"},
    "optimizer": ["adam"],
    "lr_schedule": ["constant"],
    "lr_decay_rate": {"min": 0.9, "max": 0.9, "sampling": "linear"},
}
SHARED = {"encoder", "embedding_dim", "units", "layers", "dropout", "l2"} | {
    "learning_rate", "optimizer", "lr_schedule", "lr_decay_rate"
}  # fmt: skip


def test_each_encoders_keys_are_conditioned_on_the_encoder():
    assert list(SEQUENCE_SPACE) == list(registry.SEARCH_KEYS["sequence"])
    conditions = registry.CONDITIONS["sequence"]
    assert conditions["num_heads"] == ("encoder", ("transformer",))
    assert conditions["rnn_units"] == ("encoder", ("lstm", "gru"))
    assert conditions["residual"] == ("encoder", ("conv1d",))
    # Read by every encoder (or by the combiner and the optimizer): never conditioned.
    assert not SHARED & set(conditions)
    hp = hyperparameters(SEQUENCE_SPACE, conditions)
    scopes = {p.name: [c.values for c in p.conditions] for p in hp.space}
    assert scopes["ff_dim"] == [["transformer"]]
    assert scopes["bidirectional"] == [["gru"]]
    assert scopes["kernel_size"] == [["conv1d"]]
    assert scopes["pooling"] == [["transformer", "conv1d"]]
    assert all(scopes[key] == [] for key in SHARED)


@pytest.mark.parametrize(
    ("encoders", "kept"),
    [
        (["conv1d"], {"conv_blocks", "filters", "kernel_size", "residual", "pooling"}),
        (["lstm"], {"rnn_units", "rnn_layers", "bidirectional"}),
        (["transformer"], {"num_heads", "attention_blocks", "ff_dim", "pooling"}),
    ],
)
def test_keys_of_encoders_not_listed_drop_out_and_the_model_builds_without_them(encoders, kept):
    space = SEQUENCE_SPACE | {"encoder": encoders}
    hp = hyperparameters(space, registry.CONDITIONS["sequence"])
    assert set(hp.values) == SHARED | kept
    assert all(not p.conditions for p in hp.space)
    spec = FeatureSpec((), (), "y", "classification", text=("text",), max_tokens=6,
                       sequence=("wave",), sequence_length=6)  # fmt: skip
    model = registry.builder("sequence")(hp.values, spec, {"text": VOCAB}, num_classes=2)
    features = {"text_xf": _padded([[3, 4], [5]], 6), "wave_xf": np.ones((2, 6), np.float32)}
    assert model.predict(features, verbose=0).shape == (2, 2)


def test_the_bayesian_tuner_gives_each_trial_only_its_encoders_keys(tmp_path):
    from pipeline.training import TfKerasBayesianTuner

    spec = FeatureSpec((), (), "y", "classification", text=("text",), max_tokens=12)
    features, labels = _token_presence(16)
    seen = []

    def train_fn(values):
        seen.append(dict(values))
        # Builds from exactly the trial's values: an inactive key is not there to read.
        model = registry.builder("sequence")(values, spec, {"text": 10}, num_classes=2)
        loss = model.evaluate(features, labels, verbose=0)[0]
        history = keras.callbacks.History()
        history.history = {"val_loss": [loss]}
        return model, history

    tuner = TfKerasBayesianTuner(
        train_fn=train_fn,
        objective=keras_tuner.Objective("val_loss", "min"),
        max_trials=8,
        # After 3 random trials the Gaussian process proposes the rest.
        num_initial_points=3,
        # Sorted keys, as custom_config reaches the Tuner (JSON).
        hyperparameters=hyperparameters(
            dict(sorted(SEQUENCE_SPACE.items())), registry.CONDITIONS["sequence"]
        ),
        tune_new_entries=False,
        seed=3,
        directory=str(tmp_path),
        project_name="conditional",
    )
    tuner.search(verbose=0)
    assert len(seen) == 8
    own = {kind: set(ENCODER_HPARAMS[kind]) for kind in ("transformer", "gru", "conv1d")}
    for values in seen:
        assert set(values) == SHARED | own[values["encoder"]], values
    assert len({values["encoder"] for values in seen}) >= 2
