"""The Keras traps of this stack stay solved: tf_keras everywhere, keras_tuner on tf_keras, TensorBoard."""

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.export import class_names_of, vocab_sizes_of
from models.search_space import hyperparameters
from pipeline.training import (
    EpochProgress,
    TfKerasBayesianTuner,
    TrainingData,
    TrainingSettings,
    best_epoch_metrics,
    build,
    check_keras_2,
    fit,
    trial_data,
)
from tests.tftlib import SPEC, analyze_and_transform

SPACE = {
    "units": {"min": 4, "max": 8, "step": 4},
    "layers": {"min": 1, "max": 2, "step": 1},
    "learning_rate": {"min": 0.005, "max": 0.05, "sampling": "log"},
    "dropout": {"min": 0.0, "max": 0.2, "sampling": "linear"},
    "l2": {"min": 1e-6, "max": 1e-4, "sampling": "log"},
    "optimizer": ["adam", "rmsprop"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows, output = analyze_and_transform(tmp_path_factory.mktemp("tft"))
    features = {
        name: np.array([r[name] for r in rows], np.int64 if name == "island_xf" else np.float32)
        for name in ("bill_length_mm_xf", "flipper_length_mm_xf", "island_xf")
    }
    labels = np.array([r["species_xf"] for r in rows], np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4).cache()
    return TrainingData(
        dataset, dataset, vocab_sizes_of(output, SPEC), class_names_of(output, SPEC), output
    )


@pytest.fixture
def settings():
    return TrainingSettings(
        spec=SPEC,
        family="mlp",
        search_space=SPACE,
        epochs=5,
        tuner_epochs=3,
        tuner_examples=None,
        batch_size=4,
        patience=2,
        seed=1,
    )


def test_tf_keras_is_the_keras_of_tensorflow():
    check_keras_2()
    assert tf.keras.__name__.startswith("tf_keras")


def test_stock_keras_tuner_rejects_tf_keras_models(tmp_path, data, settings):
    """Why TfKerasBayesianTuner exists: keras-tuner 1.4 only accepts Keras 3 models."""
    tuner = keras_tuner.BayesianOptimization(
        hypermodel=lambda hp: build(settings, data, hyperparameters(SPACE).values),
        objective="val_loss",
        max_trials=1,
        directory=str(tmp_path),
    )
    with pytest.raises(keras_tuner.errors.FatalTypeError):
        tuner.search(data.train, validation_data=data.eval, epochs=1, verbose=0)


def test_bayesian_tuner_searches_tf_keras_models(tmp_path, data, settings):
    tuner = TfKerasBayesianTuner(
        build_fn=lambda hp: build(settings, data, hp),
        data=data,
        epochs=settings.tuner_epochs,
        patience=settings.patience,
        objective=keras_tuner.Objective("val_loss", "min"),
        max_trials=3,
        hyperparameters=hyperparameters(SPACE),
        tune_new_entries=False,
        seed=1,
        directory=str(tmp_path),
        project_name="t",
    )
    tuner.search(verbose=0)
    assert isinstance(tuner.oracle, keras_tuner.oracles.BayesianOptimizationOracle)
    trials = tuner.oracle.get_best_trials(3)
    assert len(trials) == 3
    assert all(np.isfinite(t.score) for t in trials)
    best = tuner.get_best_hyperparameters()[0].values
    assert set(best) == set(SPACE)
    assert 4 <= best["units"] <= 8


def test_fit_writes_tensorboard_logs_and_reports_best_epoch(tmp_path, data, settings):
    model = build(settings, data, hyperparameters(SPACE).values)
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "logs"))
    history = fit(model, data, epochs=3, patience=5, callbacks=[board])
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard wrote no event files (is the tensorboard package installed?)"
    metrics = best_epoch_metrics(history)
    assert metrics["val_loss"] == min(history.history["val_loss"])
    assert 0.0 <= metrics["val_accuracy"] <= 1.0


def test_a_trial_trains_on_a_subset_and_is_evaluated_on_everything(data):
    batches = sum(1 for _ in data.train)
    assert batches >= 2
    subset = trial_data(data, 4, batch_size=4)
    assert sum(1 for _ in subset.train) == 1 < batches
    assert subset.eval is data.eval
    assert trial_data(data, None, batch_size=4) is data


def test_slow_epochs_print_a_progress_line_and_fast_ones_do_not(capsys):
    progress = EpochProgress(epochs=3, every_s=3600.0)
    progress.set_model(keras.Sequential())
    progress.on_epoch_end(0, {"loss": 1.0})
    assert capsys.readouterr().out == ""
    progress = EpochProgress(epochs=3, every_s=0.0)
    progress.set_model(keras.Sequential())
    progress.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    progress.on_epoch_end(2, {"loss": 0.5})
    assert capsys.readouterr().out.splitlines() == [
        "      epoch 1/3: loss 1.0000, val_loss 2.0000",
        "      epoch 3/3: loss 0.5000",
    ]
