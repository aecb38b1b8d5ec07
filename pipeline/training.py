"""Training shared by the TFX Tuner and Trainer: `tuner_fn` and `run_fn` are thin adapters.

Keras versions: TF Transform and TFMA work with Keras 2 (`tf_keras`, selected by
TF_USE_LEGACY_KERAS=1), so our models are tf_keras models. keras-tuner 1.4.8 builds
models with Keras 3 and rejects anything else (FatalTypeError), so the tuner below
keeps keras_tuner's Bayesian optimisation (oracle, trials, search space) and runs
each trial itself with tf_keras.

Transfer learning (custom_config `fine_tune`): the backbone is loaded once per Tuner or
Trainer, every model reuses its image encoder (models/transfer.py), and `train` fits in
two phases: the encoder frozen for `frozen_epochs`, then unfrozen and recompiled at
`learning_rate_factor` x the learning rate for the remaining epochs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
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

from models import registry, transfer, warm_start
from models.export import class_names_of, export_serving_model, vocab_sizes_of
from models.features import FeatureSpec
from models.heads import compile_model
from models.search_space import hyperparameters
from pipeline import distribution

KERAS_MODEL_DIR = "Format-Keras"
# In the Trainer's model_run artifact: epochs, wall time and examples/s of the fit.
TRAINING_RECORD = "training.json"
# The config key that names the backbone, for errors found only when it is loaded.
BASE_MODEL_KEY = "model.base_model"
_SHUFFLE_BUFFER = 10_000
# Examples per read from the Transform's files; batches for training are made after.
_READ_BATCH = 1024
# Bytes tf.data's in-memory cache spends per tensor of an example beyond its data
# (order of magnitude): small tabular examples are mostly this overhead.
_TENSOR_OVERHEAD_BYTES = 128


@dataclasses.dataclass(frozen=True)
class Objective:
    """What trials are ranked by and early stopping watches: a metric of the eval split
    (Keras' `val_` name) and whether lower or higher is better."""

    name: str = "val_loss"
    direction: str = "min"

    def best_epoch(self, history: keras.callbacks.History) -> int | None:
        """The index of the best epoch in `history`, or None before any."""
        values = history.history.get(self.name, [])
        if not values:
            return None
        pick = max if self.direction == "max" else min
        return pick(range(len(values)), key=values.__getitem__)


def check_keras_2() -> None:
    """Raises if `tf.keras` is Keras 3: the TFT layer and TFMA would then break."""
    if not tf.keras.__name__.startswith("tf_keras"):
        raise RuntimeError(
            "tf.keras is Keras 3 but this pipeline needs Keras 2: set TF_USE_LEGACY_KERAS=1 "
            "before TensorFlow is imported (scripts/in-env and the Docker image do this)."
        )


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """Transfer learning: the backbone's path, epochs with its encoder frozen, and the
    fraction of the learning rate it is then fine-tuned at."""

    base_model: str
    frozen_epochs: int
    learning_rate_factor: float


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What `custom_config` carries for Tuner and Trainer."""

    spec: FeatureSpec
    family: str
    search_space: Mapping[str, Any]
    epochs: int
    tuner_epochs: int
    tuner_examples: int | None
    # None: chosen from the training examples (`auto_batch_size`).
    batch_size: int | None
    patience: int
    seed: int
    fine_tuning: FineTuning | None = None
    objective: Objective = Objective()
    # Transformed data estimated larger than this in memory streams from disk instead.
    cache_max_mb: float = float("inf")
    warm_start: bool = False

    @classmethod
    def from_custom_config(cls, config: Mapping[str, Any]) -> TrainingSettings:
        fine_tune = config.get("fine_tune")
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
            fine_tuning=FineTuning(**fine_tune) if fine_tune else None,
            objective=Objective(
                f"val_{config['tuner']['objective']}", config["tuner"]["objective_direction"]
            ),
            cache_max_mb=config["training"]["cache_max_mb"],
            # Only the Trainer's custom_config has it: the Tuner never warm-starts.
            warm_start=config.get("warm_start", False),
        )


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Transformed train/eval datasets, batched, and what the model needs to know."""

    train: tf.data.Dataset
    eval: tf.data.Dataset
    vocab_sizes: Mapping[str, int]
    class_names: list[str]
    transform_output: tft.TFTransformOutput
    # Batches and examples in an epoch of `train`; None: not counted yet (see `steps_per_epoch`).
    train_steps: int | None = None
    train_examples: int | None = None
    # The batch size of `train` (trial samples are batched alike); None: unknown.
    batch_size: int | None = None


def auto_batch_size(examples: int) -> int:
    """The batch size when the config names none: 32 up to ~16k training examples, then
    the power of two nearest sqrt(examples) / 4 (64 at 100k, 256 at 1M), at most 1024.

    Small data keeps small batches (more optimizer steps per epoch); large data gets
    fewer, larger steps, so an epoch's per-step overhead stops dominating its time.
    """
    size = 2 ** round(math.log2(max(1.0, math.sqrt(examples) / 4)))
    return int(min(1024, max(32, size)))


def _files(patterns) -> list[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return sorted(path for pattern in patterns for path in tf.io.gfile.glob(pattern))


def count_records(patterns) -> int:
    """Records in the (gzipped) TFRecord files matching `patterns`, read without parsing.

    Raises:
      ValueError: no file matches.
    """
    files = _files(patterns)
    if not files:
        raise ValueError(f"no transformed examples match {patterns}")
    compression = "GZIP" if all(f.endswith(".gz") for f in files) else ""
    records = tf.data.TFRecordDataset(files, compression_type=compression, num_parallel_reads=2)
    zero = tf.constant(0, tf.int64)
    batches = records.batch(_READ_BATCH)
    return int(batches.reduce(zero, lambda n, b: n + tf.size(b, out_type=tf.int64)))


def _reader(files, data_accessor, transform_output, label_key: str) -> tf.data.Dataset:
    """The transformed examples in file order, in reading batches of `_READ_BATCH`."""
    options = tfxio.TensorFlowDatasetOptions(
        batch_size=_READ_BATCH, label_key=label_key, num_epochs=1, shuffle=False
    )
    return data_accessor.tf_dataset_factory(
        files, options, transform_output.transformed_metadata.schema
    )


def estimated_cache_mb(reader: tf.data.Dataset, examples: int) -> float:
    """What caching `examples` examples like the first batch of `reader` would take in memory."""
    first = next(iter(reader.take(1)))
    tensors = tf.nest.flatten(first, expand_composites=True)
    rows = max(1, int(tf.shape(first[1])[0]))
    data = sum(t.numpy().nbytes for t in tensors) / rows
    return (data + _TENSOR_OVERHEAD_BYTES * len(tensors)) * examples / 2**20


def _dataset(reader: tf.data.Dataset, batch_size: int, shuffle_seed, cache: bool):
    """Batches of `reader`'s examples: cached in memory if `cache` (else read from disk
    every epoch), shuffled every epoch if a seed is given."""
    dataset = reader.unbatch()
    if cache:
        dataset = dataset.cache()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    # Shard by example, not by file: there may be fewer files than workers under
    # MultiWorkerMirroredStrategy (the default FILE policy then fails).
    sharding = tf.data.Options()
    sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(sharding)


def load_training_data(fn_args, settings: TrainingSettings) -> TrainingData:
    """Reads the transformed examples named by TFX's fn_args.

    The training examples are counted first (a read without parsing): the count sets the
    batch size when the config names none, the steps per epoch, and whether the data is
    small enough (`settings.cache_max_mb`) to cache in memory or streams from disk.
    """
    transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    label = settings.spec.label_xf
    examples = count_records(fn_args.train_files)
    batch_size = settings.batch_size or auto_batch_size(examples)
    readers = [
        _reader(files, fn_args.data_accessor, transform_output, label)
        for files in (fn_args.train_files, fn_args.eval_files)
    ]
    eval_examples = count_records(fn_args.eval_files)
    cache = estimated_cache_mb(readers[0], examples + eval_examples) <= settings.cache_max_mb
    steps = math.ceil(examples / batch_size)
    where = "cached in memory" if cache else "streamed from disk each epoch"
    print(
        f"      {examples} training examples, batch {batch_size}: {steps} steps per epoch; {where}",
        flush=True,
    )
    return TrainingData(
        train=_dataset(readers[0], batch_size, settings.seed, cache),
        eval=_dataset(readers[1], batch_size, None, cache),
        vocab_sizes=vocab_sizes_of(transform_output, settings.spec),
        class_names=class_names_of(transform_output, settings.spec),
        transform_output=transform_output,
        train_steps=steps,
        train_examples=examples,
        batch_size=batch_size,
    )


def counted(data: TrainingData) -> TrainingData:
    """The data with the batches and examples of one training epoch counted (a pass over
    it, unless already known)."""
    if data.train_steps is not None and data.train_examples is not None:
        return data

    def add(counts, batch):
        _, label = batch
        return counts[0] + 1, counts[1] + tf.shape(label, out_type=tf.int64)[0]

    zero = tf.constant(0, tf.int64)
    steps, examples = data.train.reduce((zero, zero), add)
    return dataclasses.replace(data, train_steps=int(steps), train_examples=int(examples))


def steps_per_epoch(data: TrainingData) -> int:
    """Batches in an epoch of the training data (what a decaying learning rate counts)."""
    return counted(data).train_steps


def trial_data(
    data: TrainingData, examples: int | None, batch_size: int, seed: int = 0
) -> TrainingData:
    """The training data of the tuner's trials: a random sample of about `examples` of the
    training examples, drawn once and cached in memory, reshuffled every epoch.

    Drawing the sample reads the training data once; every trial epoch then costs the
    sample's size, not the data's. The eval split stays whole, so trials compare fairly.
    """
    whole = counted(data)
    if examples is None or whole.train_examples <= examples:
        return whole
    share = examples / whole.train_examples

    def keep(index, _):
        draw_seed = tf.stack([tf.constant(seed, tf.int64), index])
        return tf.random.stateless_uniform([], seed=draw_seed) < share

    sample = data.train.unbatch().enumerate().filter(keep).map(lambda _, example: example)
    sample = (
        sample.cache()
        .shuffle(min(examples, _SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    # Counting reads the whole training data once and fills the sample's cache.
    drawn = counted(dataclasses.replace(whole, train=sample, train_steps=None, train_examples=None))
    print(
        f"      trials train on a sample of {drawn.train_examples} of "
        f"{whole.train_examples} training examples",
        flush=True,
    )
    return drawn


def load_base_model(path: str) -> keras.Model:
    """The backbone of transfer learning, as `model.base_model` names it (resolved).

    Raises:
      ValueError: the path does not hold a tf_keras model; the message names the key.
    """
    advice = (
        "name a model a cnn pipeline trained: its .keras file, its SavedModel or its serving "
        "directory"
    )
    try:
        model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(
            f"{BASE_MODEL_KEY} {path}: cannot be loaded as a tf_keras model ({err}); {advice}"
        ) from err
    # A SavedModel without Keras metadata (a lean export) loads as a bare trackable.
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"{BASE_MODEL_KEY} {path}: cannot be loaded as a tf_keras model (a SavedModel "
            f"without Keras metadata, such as a quantized export, loads as a "
            f"{type(model).__name__}); {advice}"
        )
    return model


def build(
    settings: TrainingSettings,
    data: TrainingData,
    hparams: Mapping[str, Any],
    epochs: int | None = None,
    backbone: keras.Model | None = None,
) -> keras.Model:
    """Builds the configured model family for these hyperparameters.

    Args:
      settings: the family and features.
      data: the vocabularies, classes and batches per epoch.
      hparams: the model's hyperparameters.
      epochs: the epochs a decaying learning rate decays over (default: the Trainer's).
      backbone: a model whose image encoder is reused, frozen (transfer learning).

    Raises:
      ValueError: the model cannot be built; with a backbone that has no encoder for the
        images, the message names the config key.
    """
    build_model = registry.builder(settings.family)
    num_classes = len(data.class_names) or None
    keywords = {"backbone": backbone} if backbone is not None else {}
    try:
        return build_model(
            hparams,
            settings.spec,
            data.vocab_sizes,
            num_classes,
            steps_per_epoch=steps_per_epoch(data),
            epochs=settings.epochs if epochs is None else epochs,
            **keywords,
        )
    except ValueError as err:
        if backbone is None:
            raise
        path = settings.fine_tuning.base_model if settings.fine_tuning else backbone.name
        raise ValueError(f"{BASE_MODEL_KEY} {path}: {err}") from err


def train(
    settings: TrainingSettings,
    data: TrainingData,
    hparams: Mapping[str, Any],
    epochs: int,
    callbacks=(),
    backbone: keras.Model | None = None,
    initialize: Callable[[keras.Model], None] | None = None,
) -> tuple[keras.Model, keras.callbacks.History]:
    """Builds a model and fits it for `epochs`, fine-tuning a backbone's encoder if given.

    With a backbone (and `settings.fine_tuning`): `frozen_epochs` with the reused encoder
    frozen, then the rest unfrozen, recompiled at `learning_rate_factor` x the learning
    rate with a fresh schedule over those epochs. Early stopping spans both phases: the
    weights kept are those of the best epoch of either, by `settings.objective`.

    `initialize`, if given, is applied to the built model before it is fitted (the
    Trainer's warm start).

    Returns:
      The model with its best epoch's weights, and the history of every epoch.
    """
    if backbone is None:
        model = _initialized(build(settings, data, hparams, epochs), initialize)
        return model, fit(
            model, data, epochs, settings.patience, callbacks, objective=settings.objective
        )
    tuning = settings.fine_tuning
    if tuning is None:
        raise ValueError("a backbone needs settings.fine_tuning (frozen epochs, rate factor)")
    frozen = min(tuning.frozen_epochs, epochs)
    # With no frozen epochs this first compilation is never trained; its schedule is moot.
    model = _initialized(build(settings, data, hparams, max(frozen, 1), backbone), initialize)
    if frozen == 0:
        history = None
    else:
        history = fit(
            model,
            data,
            frozen,
            settings.patience,
            callbacks,
            total_epochs=epochs,
            objective=settings.objective,
        )
        if frozen == epochs:
            return model, history
    transfer.unfreeze(model, settings.spec)
    compile_model(
        model,
        hparams,
        settings.spec,
        steps_per_epoch=steps_per_epoch(data),
        epochs=epochs - frozen,
        learning_rate_factor=tuning.learning_rate_factor,
    )
    objective = settings.objective
    best = history.history[objective.name][objective.best_epoch(history)] if history else None
    tuned = fit(
        model,
        data,
        epochs,
        settings.patience,
        callbacks,
        initial_epoch=frozen,
        best=best,
        objective=objective,
    )
    if history is None:
        return model, tuned
    for key, values in tuned.history.items():
        history.history.setdefault(key, []).extend(values)
    history.epoch += tuned.epoch
    return model, history


def _initialized(model: keras.Model, initialize: Callable[[keras.Model], None] | None):
    if initialize is not None:
        initialize(model)
    return model


def _warm_starter(warm_from: keras.Model | None, record: dict[str, Any]):
    """The `initialize` of `train` that copies `warm_from`'s matching weights and notes
    which layers it loaded and skipped in `record`; None without a model to start from."""
    if warm_from is None:
        return None

    def initialize(model: keras.Model) -> None:
        copied = warm_start.copy_matching_weights(model, warm_from)
        record.update(layers_loaded=copied.loaded, layers_skipped=copied.skipped)

    return initialize


def warm_start_model(base_model: str | None, enabled: bool) -> tuple[keras.Model | None, dict]:
    """The model the Trainer warm-starts from, and the summary's `warm_start` record.

    Args:
      base_model: the Trainer's `base_model` (fn_args): the serving directory of the last
        blessed model, from the warm-start resolver; None on a first run.
      enabled: `training.warm_start`.

    Returns:
      (the blessed model's plain Keras model or None, {"from": its uri or None, "reason"}).
      A blessed model without a Keras model beside its serving one (pushed before the
      Trainer and Quantization kept one) gives a from-scratch run, with that reason.
    """
    if not enabled:
        return None, {"from": None, "reason": "training.warm_start is false: from scratch"}
    if not base_model:
        reason = (
            "no base model (nothing blessed yet, or these examples were trained on from "
            "scratch before): from scratch"
        )
        return None, {"from": None, "reason": reason}
    uri = os.path.dirname(base_model.rstrip("/"))
    path = os.path.join(uri, KERAS_MODEL_DIR, "model.keras")
    if not tf.io.gfile.exists(path):
        reason = f"the last blessed model has no Keras model ({path}): from scratch"
        logging.getLogger(__name__).warning("warm start: %s", reason)
        return None, {"from": None, "reason": reason}
    model = keras.models.load_model(path, compile=False)
    return model, {"from": uri, "reason": "the last blessed model"}


class EpochProgress(keras.callbacks.Callback):
    """Progress lines once training takes long enough to make a silent terminal look hung.

    Fast epochs (tabular data) print nothing, so a 60-epoch MLP stays quiet; slow ones
    (images) print at most one line every `every_s` seconds, and the last epoch always
    does once anything was printed. Within an epoch longer than `step_every_s` (large
    data), a line with the step reached out of `steps` and the running loss.
    """

    def __init__(
        self,
        epochs: int,
        prefix: str = "epoch",
        every_s: float = 5.0,
        steps: int | None = None,
        step_every_s: float = 30.0,
    ):
        super().__init__()
        # Batch logs stay tensors: converting them every step would sync the device.
        self._supports_tf_logs = True
        self._epochs = epochs
        self._prefix = prefix
        self._every_s = every_s
        self._steps = steps
        self._step_every_s = step_every_s
        self._epoch = 0
        self._last = time.monotonic()
        self._printed = False

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        # The clock is read every 64 steps only: a step of a small MLP takes ~1 ms.
        if (batch + 1) % 64:
            return
        now = time.monotonic()
        if now - self._last < self._step_every_s:
            return
        of = f"/{self._steps}" if self._steps else ""
        loss = (logs or {}).get("loss")
        shown = f", loss {float(loss):.4f}" if loss is not None else ""
        print(
            f"      {self._prefix} {self._epoch + 1}/{self._epochs}: step {batch + 1}{of}{shown}",
            flush=True,
        )
        self._last, self._printed = now, True

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        now = time.monotonic()
        last = epoch + 1 == self._epochs or self.model.stop_training
        if now - self._last < self._every_s and not (last and self._printed):
            return
        shown = ", ".join(f"{k} {float(v):.4f}" for k, v in sorted((logs or {}).items()))
        print(f"      {self._prefix} {epoch + 1}/{self._epochs}: {shown}", flush=True)
        self._last, self._printed = now, True


class FitClock(keras.callbacks.Callback):
    """The wall time and epochs of one or more `fit` calls (both phases of fine-tuning).

    The time is the fits' own: from the start of the first epoch's first batch read to the
    end of the last epoch's validation, as a user timing `model.fit` would see it.
    """

    def __init__(self):
        super().__init__()
        self.seconds = 0.0
        self.epochs = 0
        self._started = 0.0

    def on_train_begin(self, logs=None) -> None:
        self._started = time.perf_counter()

    def on_train_end(self, logs=None) -> None:
        self.seconds += time.perf_counter() - self._started

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.epochs += 1


def fit_record(
    clock: FitClock,
    data: TrainingData,
    history: keras.callbacks.History,
    objective: Objective = Objective(),
) -> dict[str, Any]:
    """What the Trainer's fit did, for `training.json` and the run summary: epochs, best
    epoch, examples, seconds, examples/s, and `history` (each logged value per epoch).

    `examples_per_second` counts training examples over the fits' wall time, the eval
    split's pass each epoch included (as `model.fit` with validation data does).
    """
    examples = (data.train_examples or 0) * clock.epochs
    best = objective.best_epoch(history)
    return {
        "epochs": clock.epochs,
        "best_epoch": None if best is None else 1 + best,
        "train_examples": data.train_examples,
        "batch_size": data.batch_size,
        "seconds": round(clock.seconds, 2),
        "examples_per_second": round(examples / clock.seconds, 1) if clock.seconds else None,
        "history": _history(history),
    }


def _history(history: keras.callbacks.History) -> dict[str, list[float]]:
    """Every logged value per epoch (loss, val_loss, metrics; both phases of fine-tuning),
    as plain floats, for the report's training curves."""
    return {key: [round(float(v), 6) for v in values] for key, values in history.history.items()}


class _EarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on the objective that keeps the best epoch's weights, and can
    continue an earlier fit: given that fit's best value, the weights the model starts
    with count as that epoch's, and are kept unless an epoch of this fit beats them."""

    def __init__(self, patience: int, best: float | None = None, objective=Objective()):
        super().__init__(
            monitor=objective.name,
            mode=objective.direction,
            patience=patience,
            restore_best_weights=True,
        )
        self._best_before = best

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        if self._best_before is not None:
            self.best = self._best_before
            self.best_weights = self.model.get_weights()


def fit(
    model: keras.Model,
    data: TrainingData,
    epochs: int,
    patience: int,
    callbacks=(),
    *,
    initial_epoch: int = 0,
    total_epochs: int | None = None,
    best: float | None = None,
    objective: Objective = Objective(),
) -> keras.callbacks.History:
    """Fits with early stopping on the eval split, keeping the best epoch's weights.

    Args:
      model: a compiled model.
      data: the train and eval splits.
      epochs: the epoch to stop at (as Keras' `fit` counts, from `initial_epoch`).
      patience: epochs without a better objective before stopping.
      callbacks: more Keras callbacks.
      initial_epoch: the epoch to start at, when this fit continues another.
      total_epochs: epochs of the whole run, for the progress lines (default `epochs`).
      best: the objective of the weights the model starts with, when this fit continues
        another; they are kept unless an epoch beats them.
      objective: the eval metric early stopping watches and the best epoch is chosen by.
    """
    stop = _EarlyStopping(patience, best, objective)
    progress = EpochProgress(total_epochs or epochs, steps=data.train_steps)
    return model.fit(
        data.train,
        validation_data=data.eval,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[stop, *callbacks, progress],
        verbose=0,
    )


def best_epoch_metrics(
    history: keras.callbacks.History, objective: Objective = Objective()
) -> dict[str, float]:
    """The validation metrics of the epoch best by `objective`."""
    logs = history.history
    best = objective.best_epoch(history)
    return {k: float(v[best]) for k, v in logs.items() if k.startswith("val_")}


class TfKerasBayesianTuner(keras_tuner.BayesianOptimization):
    """keras_tuner Bayesian optimisation whose trials train tf_keras models."""

    def __init__(
        self,
        train_fn: Callable[[dict], tuple[keras.Model, keras.callbacks.History]],
        **kwargs,
    ):
        """Args:
        train_fn: builds and fits a model for a trial's hyperparameters (`train`).
        **kwargs: keras_tuner.BayesianOptimization's (objective, max_trials, ...).
        """
        super().__init__(hypermodel=None, **kwargs)
        self._train_fn = train_fn

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        keras.utils.set_random_seed(self.oracle.seed or 0)
        _, history = self._train_fn(trial.hyperparameters.values)
        ranked_by = self.oracle.objective
        metrics = best_epoch_metrics(history, Objective(ranked_by.name, ranked_by.direction))
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


def search_hyperparameters(settings: TrainingSettings) -> keras_tuner.HyperParameters:
    """The configured search space, with the family's conditional keys (registry.CONDITIONS)
    left out or scoped to the values of their parent that read them."""
    return hyperparameters(settings.search_space, registry.CONDITIONS[settings.family])


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    """TFX Tuner entry point: Bayesian search over the configured space."""
    check_keras_2()
    settings = TrainingSettings.from_custom_config(fn_args.custom_config)
    whole = load_training_data(fn_args, settings)
    data = trial_data(whole, settings.tuner_examples, whole.batch_size, settings.seed)
    backbone = _backbone(settings)
    tuner = TfKerasBayesianTuner(
        train_fn=lambda hp: train(settings, data, hp, settings.tuner_epochs, (), backbone),
        objective=keras_tuner.Objective(settings.objective.name, settings.objective.direction),
        max_trials=fn_args.custom_config["tuner"]["max_trials"],
        hyperparameters=search_hyperparameters(settings),
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
    return search_hyperparameters(settings).values


def _backbone(settings: TrainingSettings) -> keras.Model | None:
    if settings.fine_tuning is None:
        return None
    return load_base_model(settings.fine_tuning.base_model)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point: trains with the best hyperparameters and exports."""
    check_keras_2()
    # The strategy first: MultiWorkerMirroredStrategy must exist before any TF op runs.
    devices = distribution.current_devices()
    strategy = distribution.strategy(devices)
    settings = TrainingSettings.from_custom_config(fn_args.custom_config)
    keras.utils.set_random_seed(settings.seed)
    data = load_training_data(fn_args, settings)
    log_dir = distribution.output_dir(fn_args.model_run_dir, devices)
    board = keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch")
    # In scope: the model's variables, and the optimizer's of a fine-tuning recompile.
    with strategy.scope():
        backbone = _backbone(settings)
        warm_from, warm_record = warm_start_model(fn_args.base_model, settings.warm_start)
        hparams = _hparams(fn_args, settings)
        clock = FitClock()
        initialize = _warm_starter(warm_from, warm_record)
        model, history = train(
            settings, data, hparams, settings.epochs, [board, clock], backbone, initialize
        )
    record = {**fit_record(clock, data, history, settings.objective), "warm_start": warm_record}
    tf.io.gfile.makedirs(log_dir)
    with tf.io.gfile.GFile(os.path.join(log_dir, TRAINING_RECORD), "w") as f:
        f.write(json.dumps(record, indent=2))
    # The plain Keras model (no TFT layer) is kept for the quantization step.
    model_root = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    keras_dir = distribution.output_dir(os.path.join(model_root, KERAS_MODEL_DIR), devices)
    tf.io.gfile.makedirs(keras_dir)
    model.save(os.path.join(keras_dir, "model.keras"))
    serving_dir = distribution.output_dir(fn_args.serving_model_dir, devices)
    export_serving_model(model, data.transform_output, settings.spec, serving_dir, data.class_names)
