"""The task head on the combiner's output, the optimizer and its learning-rate schedule,
and the compiled model around them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras as keras

from models.features import FeatureSpec


@keras.saving.register_keras_serializable(package="models")
class LazyAdam(keras.optimizers.Adam):
    """Adam that moves only the embedding rows a batch looks up (`optimizer: lazy_adam`).

    Keras' Adam applies a sparse gradient (an embedding table's `IndexedSlices`) by decaying
    both moments and updating the variable over the whole table, every step: with a 100k x 50
    name embedding that is most of a training step's time. Here a sparse gradient updates the
    looked-up rows only, the moments of the others waiting until their rows come up again
    (TensorFlow Addons' LazyAdam, PyTorch's SparseAdam). A rare id then moves less per
    occurrence than under Keras' Adam, whose momentum keeps moving its row for the next ~30
    steps: on small data, where most ids come up once or twice, Keras' Adam (`adam`) learns
    them better; on large data this one is as accurate and many times faster. Dense gradients are
    Keras' Adam's, unchanged (XLA-compiled, as Keras compiles them); a sparse update runs
    without XLA, which has no kernel for the `tf.unique` of the looked-up rows. With
    `amsgrad`, sparse gradients too are Keras' (dense) Adam's.
    """

    def _update_step_xla(self, gradient, variable, key):
        if isinstance(gradient, tf.IndexedSlices) and not self.amsgrad:
            return self._update_step(gradient, variable)
        return super()._update_step_xla(gradient, variable, key)

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = (
            tf.cast(self.learning_rate, dtype)
            * tf.sqrt(1 - tf.pow(beta_2, step))
            / (1 - tf.pow(beta_1, step))
        )
        epsilon = self.epsilon * (
            tf.sqrt(1 - tf.pow(beta_2, step)) if getattr(self, "adaptive_epsilon", False) else 1
        )
        # A row looked up several times in the batch gets the sum of its gradients once.
        rows, position = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))


_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "lazy_adam": LazyAdam,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}
LR_SCHEDULES = ("constant", "cosine", "exponential")


def learning_rate(
    hparams: Mapping[str, Any],
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    factor: float = 1.0,
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's learning rate: `learning_rate` × `factor`, decayed per `lr_schedule`.

    - constant (also when hparams name no schedule): the rate itself;
    - cosine: `CosineDecay` from the rate to 0 over `epochs` × `steps_per_epoch` steps;
    - exponential: `ExponentialDecay`, multiplied by `lr_decay_rate` every epoch
      (continuously, step by step).

    Args:
      hparams: `learning_rate`, optionally `lr_schedule`, and `lr_decay_rate` for exponential.
      steps_per_epoch: optimizer steps (batches) per epoch; decaying schedules need it.
      epochs: the epochs the schedule runs for; cosine needs it.
      factor: scales the initial rate (fine-tuning runs at a fraction of it).

    Raises:
      ValueError: an unknown schedule, or a decaying one without the steps it needs.
    """
    initial = float(hparams["learning_rate"]) * factor
    # Hyperparameters from before schedules existed name none: they trained at a constant rate.
    schedule = hparams.get("lr_schedule", "constant")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; use one of {list(LR_SCHEDULES)}")
    if schedule == "constant":
        return initial
    if not steps_per_epoch or (schedule == "cosine" and not epochs):
        raise ValueError(
            f"lr_schedule {schedule!r} decays over the training run: build the model with "
            f"steps_per_epoch and epochs (got {steps_per_epoch} and {epochs})"
        )
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(initial, decay_steps=steps_per_epoch * epochs)
    return keras.optimizers.schedules.ExponentialDecay(
        initial, decay_steps=steps_per_epoch, decay_rate=float(hparams["lr_decay_rate"])
    )


def optimizer(
    name: str, rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    """The named optimizer at a learning rate or schedule.

    Raises:
      ValueError: an unknown name.
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(_OPTIMIZERS)}")
    return _OPTIMIZERS[name](learning_rate=rate)


def compile_model(
    model: keras.Model,
    hparams: Mapping[str, Any],
    spec: FeatureSpec,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    learning_rate_factor: float = 1.0,
) -> None:
    """Compiles (or recompiles, after layers were frozen or unfrozen) a model of the task.

    Classification: sparse categorical cross-entropy, accuracy. Regression: mean squared
    error, mean absolute error. A fresh optimizer, whose schedule starts at step 0.

    Args:
      model: the model, its output the task head's.
      hparams: `optimizer`, `learning_rate`, `lr_schedule`, `lr_decay_rate`.
      spec: the task.
      steps_per_epoch: optimizer steps per epoch, for a decaying schedule.
      epochs: how many epochs this compilation trains for, for a decaying schedule.
      learning_rate_factor: scales the learning rate (fine-tuning).

    Raises:
      ValueError: an unknown optimizer or schedule, or a decaying one without the steps.
    """
    if spec.is_classification:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
    rate = learning_rate(hparams, steps_per_epoch, epochs, learning_rate_factor)
    model.compile(optimizer=optimizer(hparams["optimizer"], rate), loss=loss, metrics=metrics)


def compiled_model(
    inputs: Mapping[str, tf.Tensor],
    combined: tf.Tensor,
    hparams: Mapping[str, Any],
    spec: FeatureSpec,
    num_classes: int | None,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
) -> keras.Model:
    """Puts the task head on `combined` and compiles the model (`compile_model`).

    Classification: a softmax layer "scores" [batch, num_classes]. Regression: a linear
    layer "outputs" [batch, 1].

    Args:
      inputs: the model's keras.Inputs by transformed feature name.
      combined: the combiner's output.
      hparams: `optimizer`, `learning_rate`, `lr_schedule`, `lr_decay_rate`.
      spec: the task.
      num_classes: number of classes, for classification.
      steps_per_epoch: optimizer steps per epoch, for a decaying schedule.
      epochs: epochs of training, for a decaying schedule.

    Raises:
      ValueError: classification with fewer than two classes, an unknown optimizer or
        schedule, or a decaying schedule without the steps.
    """
    if spec.is_classification:
        if not num_classes or num_classes < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(combined)
    else:
        outputs = keras.layers.Dense(1, name="outputs")(combined)
    model = keras.Model(inputs=dict(inputs), outputs=outputs)
    compile_model(model, hparams, spec, steps_per_epoch=steps_per_epoch, epochs=epochs)
    return model
