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
    FitClock,
    Objective,
    TfKerasBayesianTuner,
    TrainingData,
    TrainingSettings,
    auto_batch_size,
    best_epoch_metrics,
    build,
    check_keras_2,
    count_records,
    counted,
    estimated_cache_mb,
    fit,
    fit_record,
    steps_per_epoch,
    train,
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
    "lr_schedule": ["constant", "cosine", "exponential"],
    "lr_decay_rate": {"min": 0.5, "max": 0.9, "sampling": "linear"},
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
        train_fn=lambda hp: train(settings, data, hp, settings.tuner_epochs),
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


def _numbered(examples: int, batch_size: int = 4) -> TrainingData:
    """Examples whose only feature is their index, shuffled every epoch like real data."""
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"i": np.arange(examples, dtype=np.float32)}, np.zeros(examples, np.int64))
    )
    dataset = dataset.shuffle(examples, seed=0, reshuffle_each_iteration=True).batch(batch_size)
    return TrainingData(dataset, dataset, {}, ["a", "b"], None, batch_size=batch_size)


def _indices(dataset: tf.data.Dataset) -> list[int]:
    return sorted(int(i) for features, _ in dataset for i in features["i"].numpy())


def test_trials_train_on_one_random_sample_and_are_evaluated_on_everything():
    data = _numbered(2000)
    subset = trial_data(data, 200, batch_size=8, seed=3)
    first, second = _indices(subset.train), _indices(subset.train)
    # One sample for the whole Tuner run: every epoch sees the same examples, reshuffled.
    assert first == second
    assert 140 <= len(first) <= 260 and len(set(first)) == len(first)
    # Drawn at random, not the first examples read.
    assert max(first) > 1000
    assert subset.train_examples == len(first)
    assert steps_per_epoch(subset) == -(-len(first) // 8)
    assert subset.eval is data.eval
    assert trial_data(data, None, batch_size=4).train_examples == 2000
    assert trial_data(data, 5000, batch_size=4).train is data.train


def test_the_batch_size_grows_with_the_training_examples():
    assert [auto_batch_size(n) for n in (344, 16_000, 100_000, 1_000_000, 10**9)] == [
        32,
        32,
        64,
        256,
        1024,
    ]


def test_records_are_counted_in_gzipped_files_and_the_cache_estimated(tmp_path):
    for shard, rows in enumerate((700, 1500)):
        path = str(tmp_path / f"part-{shard}.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for _ in range(rows):
                writer.write(b"x")
    assert count_records([str(tmp_path / "part-*")]) == 2200
    with pytest.raises(ValueError, match="no transformed examples match"):
        count_records([str(tmp_path / "none-*")])
    features = {"a": np.zeros(100, np.float32), "b": np.zeros(100, np.int64)}
    batches = tf.data.Dataset.from_tensors((features, np.zeros(100, np.int64)))
    # Three tensors an example: 4 + 8 + 8 bytes of data, plus the cache's overhead each.
    per_example = 20 + 3 * 128
    assert estimated_cache_mb(batches, 2**20) == pytest.approx(per_example)


def test_early_stopping_and_the_best_epoch_follow_the_objective(data, settings):
    history = keras.callbacks.History()
    history.history = {"val_loss": [0.5, 0.4, 0.6], "val_accuracy": [0.6, 0.7, 0.9]}
    assert best_epoch_metrics(history)["val_accuracy"] == 0.7
    accuracy = Objective("val_accuracy", "max")
    assert best_epoch_metrics(history, accuracy) == {"val_loss": 0.6, "val_accuracy": 0.9}
    model = build(settings, data, hyperparameters(SPACE).values)
    # No epoch can beat an accuracy above 1: the starting weights are kept.
    before = [w.copy() for w in model.get_weights()]
    fit(model, data, epochs=2, patience=5, best=1.5, objective=accuracy)
    for restored, start in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(restored, start)


def test_the_fit_record_counts_epochs_examples_and_time(data, settings):
    examples = sum(int(label.shape[0]) for _, label in data.train)
    counted_data = counted(data)
    clock = FitClock()
    model, history = train(settings, data, hyperparameters(SPACE).values, 3, [clock])
    record = fit_record(clock, counted_data, history)
    assert counted_data.train_examples == examples
    assert record["epochs"] == 3 == len(history.epoch)
    assert record["best_epoch"] == 1 + int(np.argmin(history.history["val_loss"]))
    assert record["seconds"] > 0
    assert record["batch_size"] is None
    assert record["examples_per_second"] == pytest.approx(3 * examples / clock.seconds, rel=0.01)
    assert set(record["history"]) >= {"loss", "val_loss"}
    assert record["history"]["val_loss"] == pytest.approx(history.history["val_loss"], abs=1e-5)
    assert len(record["history"]["loss"]) == 3


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
    progress = EpochProgress(epochs=2, steps=640, step_every_s=0.0)
    progress.set_model(keras.Sequential())
    progress.on_epoch_begin(1)
    progress.on_train_batch_end(62, {"loss": tf.constant(0.25)})
    progress.on_train_batch_end(63, {"loss": tf.constant(0.25)})
    assert capsys.readouterr().out == "      epoch 2/2: step 64/640, loss 0.2500\n"


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # 5 epochs of 2 steps: the last step (9) is 9/10 of the way down the cosine.
        ("cosine", 0.01 * 0.5 * (1 + np.cos(np.pi * 9 / 10))),
        # Halved every epoch: 0.01 * 0.5 ** (9 / 2) at the last step.
        ("exponential", 0.01 * 0.5 ** (9 / 2)),
        ("constant", 0.01),
    ],
)
def test_training_decays_the_learning_rate_over_the_run(data, settings, schedule, expected):
    hparams = {
        **hyperparameters(SPACE).values,
        "learning_rate": 0.01,
        "lr_schedule": schedule,
        "lr_decay_rate": 0.5,
    }
    assert steps_per_epoch(data) == 2
    model, history = train(settings, data, hparams, epochs=5)
    assert len(history.epoch) == 5
    assert int(model.optimizer.iterations) == 10
    # The rate the optimizer applied at its last step.
    np.testing.assert_allclose(float(model.optimizer.learning_rate), expected, rtol=1e-5)


def test_a_fit_that_continues_another_keeps_the_earlier_weights_unless_it_beats_them(
    data, settings
):
    model = build(settings, data, hyperparameters(SPACE).values)
    before = [w.copy() for w in model.get_weights()]
    # No epoch can beat a val_loss of 0: the weights the fit started with are restored.
    history = fit(model, data, epochs=2, patience=5, best=0.0)
    assert len(history.epoch) == 2
    for restored, start in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(restored, start)
    fit(model, data, epochs=2, patience=5, best=float("inf"))
    assert any(
        not np.array_equal(w, start) for w, start in zip(model.get_weights(), before, strict=True)
    )
