"""Training shared by the TFX Tuner and Trainer: `tuner_fn` and `run_fn` are thin adapters.

Keras versions: TF Transform and TFMA work with Keras 2 (`tf_keras`, selected by
TF_USE_LEGACY_KERAS=1), so our models are tf_keras models. keras-tuner 1.4.8 builds
models with Keras 3 and rejects anything else (FatalTypeError), so the tuner below
keeps keras_tuner's Bayesian optimisation (oracle, trials, search space) and runs
each trial itself with tf_keras.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import registry
from models.export import class_names_of, export_serving_model, vocab_sizes_of
from models.features import FeatureSpec
from models.search_space import hyperparameters
from pipeline import distribution

KERAS_MODEL_DIR = "Format-Keras"
_SHUFFLE_BUFFER = 10_000


def check_keras_2() -> None:
    """Raises if `tf.keras` is Keras 3: the TFT layer and TFMA would then break."""
    if not tf.keras.__name__.startswith("tf_keras"):
        raise RuntimeError(
            "tf.keras is Keras 3 but this pipeline needs Keras 2: set TF_USE_LEGACY_KERAS=1 "
            "before TensorFlow is imported (scripts/in-env and the Docker image do this)."
        )


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What `custom_config` carries for Tuner and Trainer."""

    spec: FeatureSpec
    family: str
    search_space: Mapping[str, Any]
    epochs: int
    tuner_epochs: int
    tuner_examples: int | None
    batch_size: int
    patience: int
    seed: int

    @classmethod
    def from_custom_config(cls, config: Mapping[str, Any]) -> TrainingSettings:
        return cls(
            spec=FeatureSpec.from_dict(config["features"]),
            family=config["model_family"],
            search_space=config["search_space"],
            epochs=config["training"]["epochs"],
            tuner_epochs=config["tuner"]["epochs"],
            tuner_examples=config["tuner"].get("max_train_examples"),
            batch_size=config["training"]["batch_size"],
            patience=config["training"]["early_stopping_patience"],
            seed=config["tuner"]["seed"],
        )


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Transformed train/eval datasets, cached in memory, and what the model needs to know."""

    train: tf.data.Dataset
    eval: tf.data.Dataset
    vocab_sizes: Mapping[str, int]
    class_names: list[str]
    transform_output: tft.TFTransformOutput


def _dataset(files, data_accessor, transform_output, label_key: str, batch_size: int, shuffle_seed):
    options = tfxio.TensorFlowDatasetOptions(
        batch_size=batch_size, label_key=label_key, num_epochs=1, shuffle=False
    )
    dataset = data_accessor.tf_dataset_factory(
        files, options, transform_output.transformed_metadata.schema
    )
    dataset = dataset.unbatch().cache()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    # Shard by example, not by file: there may be fewer files than workers under
    # MultiWorkerMirroredStrategy (the default FILE policy then fails).
    sharding = tf.data.Options()
    sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(sharding)


def load_training_data(fn_args, settings: TrainingSettings) -> TrainingData:
    """Reads the transformed examples named by TFX's fn_args."""
    transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    label = settings.spec.label_xf
    train = _dataset(
        fn_args.train_files,
        fn_args.data_accessor,
        transform_output,
        label,
        settings.batch_size,
        settings.seed,
    )
    evaluation = _dataset(
        fn_args.eval_files,
        fn_args.data_accessor,
        transform_output,
        label,
        settings.batch_size,
        None,
    )
    return TrainingData(
        train=train,
        eval=evaluation,
        vocab_sizes=vocab_sizes_of(transform_output, settings.spec),
        class_names=class_names_of(transform_output, settings.spec),
        transform_output=transform_output,
    )


def trial_data(data: TrainingData, examples: int | None, batch_size: int) -> TrainingData:
    """The training data of one tuner trial: about `examples` of the training examples.

    The training split is shuffled again every epoch, so each epoch of a trial sees a
    different random subset; the eval split stays whole, so trials compare fairly.
    """
    if examples is None:
        return data
    return dataclasses.replace(data, train=data.train.take(max(1, examples // batch_size)))


def build(
    settings: TrainingSettings, data: TrainingData, hparams: Mapping[str, Any]
) -> keras.Model:
    """Builds the configured model family for these hyperparameters."""
    build_model = registry.builder(settings.family)
    num_classes = len(data.class_names) or None
    return build_model(hparams, settings.spec, data.vocab_sizes, num_classes)


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch once epochs take long enough to make a silent terminal look hung.

    Fast epochs (tabular data) print nothing, so a 60-epoch MLP stays quiet; slow ones
    (images) print at most one line every `every_s` seconds, and the last epoch always
    does once anything was printed.
    """

    def __init__(self, epochs: int, prefix: str = "epoch", every_s: float = 5.0):
        super().__init__()
        self._epochs = epochs
        self._prefix = prefix
        self._every_s = every_s
        self._last = time.monotonic()
        self._printed = False

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        now = time.monotonic()
        last = epoch + 1 == self._epochs or self.model.stop_training
        if now - self._last < self._every_s and not (last and self._printed):
            return
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))
        print(f"      {self._prefix} {epoch + 1}/{self._epochs}: {shown}", flush=True)
        self._last, self._printed = now, True


def fit(
    model: keras.Model, data: TrainingData, epochs: int, patience: int, callbacks=()
) -> keras.callbacks.History:
    """Fits with early stopping on the eval split, keeping the best epoch's weights."""
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    return model.fit(
        data.train,
        validation_data=data.eval,
        epochs=epochs,
        callbacks=[stop, *callbacks, EpochProgress(epochs)],
        verbose=0,
    )


def best_epoch_metrics(history: keras.callbacks.History) -> dict[str, float]:
    """The validation metrics of the epoch with the lowest val_loss."""
    logs = history.history
    best = min(range(len(logs["val_loss"])), key=lambda i: logs["val_loss"][i])
    return {k: float(v[best]) for k, v in logs.items() if k.startswith("val_")}


class TfKerasBayesianTuner(keras_tuner.BayesianOptimization):
    """keras_tuner Bayesian optimisation whose trials train tf_keras models."""

    def __init__(
        self,
        build_fn: Callable[[dict], keras.Model],
        data: TrainingData,
        epochs: int,
        patience: int,
        **kwargs,
    ):
        super().__init__(hypermodel=None, **kwargs)
        self._build_fn = build_fn
        self._data = data
        self._epochs = epochs
        self._patience = patience

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        keras.utils.set_random_seed(self.oracle.seed or 0)
        model = self._build_fn(trial.hyperparameters.values)
        history = fit(model, self._data, self._epochs, self._patience)
        metrics = best_epoch_metrics(history)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        print(
            f"      trial {int(trial.trial_id) + 1}/{self.oracle.max_trials}: {shown}", flush=True
        )
        return metrics

    # TFX's Tuner executor prints keras_tuner's full summaries (dozens of lines per
    # trial); the pipeline's progress shows one line per trial instead.
    def search_space_summary(self, extended: bool = False) -> None:
        names = ", ".join(self.oracle.get_space().values)
        print(f"      Bayesian search over {names}", flush=True)

    def results_summary(self, num_trials: int = 1) -> None:
        best = self.oracle.get_best_trials(1)
        if best:
            print(
                f"      best trial score {best[0].score:.4f}: {best[0].hyperparameters.values}",
                flush=True,
            )


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    """TFX Tuner entry point: Bayesian search over the configured space."""
    check_keras_2()
    settings = TrainingSettings.from_custom_config(fn_args.custom_config)
    data = load_training_data(fn_args, settings)
    tuner = TfKerasBayesianTuner(
        build_fn=lambda hp: build(settings, data, hp),
        data=trial_data(data, settings.tuner_examples, settings.batch_size),
        epochs=settings.tuner_epochs,
        patience=settings.patience,
        objective=keras_tuner.Objective("val_loss", direction="min"),
        max_trials=fn_args.custom_config["tuner"]["max_trials"],
        hyperparameters=hyperparameters(settings.search_space),
        tune_new_entries=False,
        seed=settings.seed,
        directory=fn_args.working_dir,
        project_name="bayesian",
        overwrite=True,
    )
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={"verbose": 0})


def _hparams(fn_args, settings: TrainingSettings) -> dict[str, Any]:
    if fn_args.hyperparameters:
        return keras_tuner.HyperParameters.from_config(fn_args.hyperparameters).values
    return hyperparameters(settings.search_space).values


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point: trains with the best hyperparameters and exports."""
    check_keras_2()
    # The strategy first: MultiWorkerMirroredStrategy must exist before any TF op runs.
    devices = distribution.current_devices()
    strategy = distribution.strategy(devices)
    settings = TrainingSettings.from_custom_config(fn_args.custom_config)
    keras.utils.set_random_seed(settings.seed)
    data = load_training_data(fn_args, settings)
    with strategy.scope():
        model = build(settings, data, _hparams(fn_args, settings))
    log_dir = distribution.output_dir(fn_args.model_run_dir, devices)
    board = keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch")
    fit(model, data, settings.epochs, settings.patience, [board])
    # The plain Keras model (no TFT layer) is kept for the quantization step.
    model_root = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    keras_dir = distribution.output_dir(os.path.join(model_root, KERAS_MODEL_DIR), devices)
    tf.io.gfile.makedirs(keras_dir)
    model.save(os.path.join(keras_dir, "model.keras"))
    serving_dir = distribution.output_dir(fn_args.serving_model_dir, devices)
    export_serving_model(model, data.transform_output, settings.spec, serving_dir, data.class_names)
