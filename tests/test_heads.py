"""models/heads.py LazyAdam: embedding rows a batch looks up move as Adam moves them, the
others stay put; dense variables move exactly as Keras' Adam moves them."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import heads

RATE, BETA_1, BETA_2, EPSILON = 0.01, 0.9, 0.999, 1e-7


def _adam_rows(value, gradient, m, v, step):
    """Adam's update of rows with these gradients at `step` (1-based), as its paper writes it."""
    m = BETA_1 * m + (1 - BETA_1) * gradient
    v = BETA_2 * v + (1 - BETA_2) * gradient**2
    alpha = RATE * np.sqrt(1 - BETA_2**step) / (1 - BETA_1**step)
    return value - alpha * m / (np.sqrt(v) + EPSILON), m, v


def test_a_sparse_gradient_moves_only_its_rows_and_sums_repeated_ones():
    table = tf.Variable(np.arange(12, dtype=np.float32).reshape(6, 2))
    optimizer = heads.LazyAdam(learning_rate=RATE)
    start = table.numpy()
    # Row 1 is looked up twice: its gradient is the sum, applied once.
    grads = tf.IndexedSlices(
        tf.constant([[1.0, -2.0], [0.5, 0.5], [3.0, 1.0]]), tf.constant([1, 4, 1]), [6, 2]
    )
    optimizer.apply_gradients([(grads, table)])
    second = tf.IndexedSlices(tf.constant([[2.0, 2.0]]), tf.constant([4]), [6, 2])
    optimizer.apply_gradients([(second, table)])

    expected = start.copy()
    m, v = np.zeros_like(start), np.zeros_like(start)
    g1 = np.zeros_like(start)
    g1[1], g1[4] = [4.0, -1.0], [0.5, 0.5]
    for row in (1, 4):
        expected[row], m[row], v[row] = _adam_rows(start[row], g1[row], m[row], v[row], 1)
    expected[4], m[4], v[4] = _adam_rows(expected[4], np.array([2.0, 2.0]), m[4], v[4], 2)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-6)
    # Rows never looked up, and row 1 at step 2, did not move.
    np.testing.assert_array_equal(table.numpy()[[0, 2, 3, 5]], start[[0, 2, 3, 5]])


def test_dense_variables_move_as_keras_adam_moves_them():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3)).astype(np.float32)
    ours, theirs = tf.Variable(start), tf.Variable(start)
    sparse, keras_adam = heads.LazyAdam(RATE), keras.optimizers.Adam(RATE)
    for _ in range(3):
        gradient = tf.constant(rng.normal(size=(4, 3)).astype(np.float32))
        sparse.apply_gradients([(gradient, ours)])
        keras_adam.apply_gradients([(gradient, theirs)])
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("jit", [True, False])
def test_an_embedding_model_trains_and_its_optimizer_round_trips(tmp_path, jit):
    ids = keras.Input(shape=(), dtype="int64", name="c_xf")
    embedded = keras.layers.Embedding(50, 4)(ids)
    model = keras.Model({"c_xf": ids}, keras.layers.Dense(2, activation="softmax")(embedded))
    model.compile(
        optimizer=heads.optimizer("lazy_adam", 0.05)
        if jit
        else heads.LazyAdam(0.05, jit_compile=False),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x = np.arange(200) % 50
    history = model.fit({"c_xf": x}, x % 2, epochs=20, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] == 1.0
    path = str(tmp_path / "model")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, heads.LazyAdam), type(loaded.optimizer)
