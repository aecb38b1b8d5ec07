"""Transfer learning: a backbone's image encoder reused, frozen, then fine-tuned; and that it helps."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import cnn, mlp, registry
from models.export import export_lean_serving_model, export_serving_model
from models.features import FeatureSpec
from pipeline import training
from pipeline.config import load_config
from pipeline.images import FASHION_MNIST_DIR, fashion_mnist_arrays
from pipeline.pipeline import custom_config, search_space
from tests.tftlib import TINY_CNN_HPARAMS, analyze_and_transform, image_rows

SHAPE = (8, 8, 1)
SPEC = FeatureSpec((), (), "label", "classification", image=("image",), image_shape=SHAPE)
TINY = TINY_CNN_HPARAMS | {"augment_flip": False, "augment_translate": 0.0, "augment_zoom": 0.0}


def _data(images, labels, classes, batch_size=8) -> training.TrainingData:
    train = tf.data.Dataset.from_tensor_slices(({"image_xf": images}, labels))
    train = train.shuffle(len(labels), seed=0).batch(batch_size)
    evaluation = tf.data.Dataset.from_tensor_slices(({"image_xf": images}, labels)).batch(256)
    return training.TrainingData(train, evaluation, {}, [str(c) for c in range(classes)], None)


def _settings(spec=SPEC, frozen_epochs=1, factor=0.1, epochs=3) -> training.TrainingSettings:
    return training.TrainingSettings(
        spec=spec,
        family="cnn",
        search_space={},
        epochs=epochs,
        tuner_epochs=epochs,
        tuner_examples=None,
        batch_size=8,
        patience=100,
        seed=0,
        fine_tuning=training.FineTuning("backbone.keras", frozen_epochs, factor),
    )


@pytest.fixture
def backbone(tmp_path) -> keras.Model:
    """A trained cnn with 3 classes, saved and loaded as the Trainer's model.keras."""
    model = cnn.build_model(TINY | {"conv_blocks": 2}, SPEC, {}, num_classes=3)
    images = np.random.default_rng(0).random((16, *SHAPE)).astype(np.float32)
    model.fit({"image_xf": images}, np.arange(16) % 3, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    return training.load_base_model(str(tmp_path / "model.keras"))


def _conv_weights(model: keras.Model) -> list[np.ndarray]:
    encoder = model.get_layer("image_encoder")
    convs = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    return [w.numpy() for layer in convs for w in layer.weights]


def test_the_new_model_reuses_the_encoder_frozen_with_a_new_head(backbone):
    # The backbone's conv hyperparameters are not read: 1 block here, 2 in the backbone.
    model = cnn.build_model(TINY | {"conv_blocks": 1}, SPEC, {}, num_classes=5, backbone=backbone)
    assert model.output_shape == (None, 5)
    encoder = model.get_layer("image_encoder")
    assert encoder.output_shape == backbone.get_layer("image_encoder").output_shape == (None, 8)
    for new, old in zip(_conv_weights(model), _conv_weights(backbone), strict=True):
        np.testing.assert_array_equal(new, old)
    assert not encoder.trainable
    trained = {w.ref() for w in model.trainable_weights}
    assert trained and trained.isdisjoint(w.ref() for w in encoder.weights)
    assert model.get_layer("scores").trainable
    # Frozen batch normalisation runs in inference mode: training=True changes nothing.
    images = np.random.default_rng(1).random((4, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(encoder(images, training=True), encoder(images, training=False))


def test_fine_tuning_unfreezes_after_the_frozen_epochs_and_recompiles_at_the_lower_rate(
    backbone, tmp_path
):
    # Four classes of brightness: learnable, so fine-tuning beats the frozen epoch.
    labels = np.arange(32) % 4
    noise = np.random.default_rng(2).random((32, *SHAPE))
    images = (0.4 * noise + 0.2 * labels[:, None, None, None]).astype(np.float32)
    data = _data(images, labels, classes=4)
    hparams = TINY | {"learning_rate": 0.02}
    frozen, _ = training.train(_settings(frozen_epochs=1, epochs=1), data, hparams, 1, (), backbone)
    for new, old in zip(_conv_weights(frozen), _conv_weights(backbone), strict=True):
        np.testing.assert_array_equal(new, old)
    model, history = training.train(_settings(frozen_epochs=1), data, hparams, 3, (), backbone)
    assert history.epoch == [0, 1, 2] and len(history.history["val_loss"]) == 3
    encoder = model.get_layer("image_encoder")
    convs = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [
        layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert convs and all(layer.trainable for layer in convs)
    assert norms and not any(layer.trainable for layer in norms)
    # A fresh optimizer for the 2 fine-tuning epochs of 4 batches, at 0.1 x the rate.
    assert int(model.optimizer.iterations) == 8
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.002, rtol=1e-6)
    changed = [
        not np.array_equal(new, old)
        for new, old in zip(_conv_weights(model), _conv_weights(backbone), strict=True)
    ]
    assert any(changed)
    # The fine-tuned model saves as the Trainer saves it, and is a backbone in its turn.
    model.save(Path(tmp_path) / "tuned.keras")
    reloaded = training.load_base_model(str(Path(tmp_path) / "tuned.keras"))
    np.testing.assert_allclose(
        reloaded({"image_xf": images}, training=False), model({"image_xf": images}, training=False)
    )
    again = cnn.build_model(TINY, SPEC, {}, num_classes=2, backbone=reloaded)
    for new, old in zip(_conv_weights(again), _conv_weights(model), strict=True):
        np.testing.assert_array_equal(new, old)


def test_a_backbone_loads_from_a_saved_model_directory(backbone, tmp_path):
    backbone.save(tmp_path / "saved", save_format="tf")
    loaded = training.load_base_model(str(tmp_path / "saved"))
    model = cnn.build_model(TINY, SPEC, {}, num_classes=2, backbone=loaded)
    for new, old in zip(_conv_weights(model), _conv_weights(backbone), strict=True):
        np.testing.assert_array_equal(new, old)


def test_a_pushed_serving_model_is_a_backbone_and_a_lean_one_is_refused(backbone, tmp_path):
    """What Pusher copies: the Keras SavedModel with the TFT layer and signatures inside."""
    rows, _ = image_rows(6, SHAPE)
    raw_spec = {"image": tf.io.VarLenFeature(tf.string), "label": tf.io.VarLenFeature(tf.string)}
    _, output = analyze_and_transform(tmp_path, rows, SPEC, raw_spec)
    pushed = export_serving_model(backbone, output, SPEC, str(tmp_path / "1700000000"), ["a", "b"])
    model = cnn.build_model(
        TINY, SPEC, {}, num_classes=4, backbone=training.load_base_model(pushed)
    )
    for new, old in zip(_conv_weights(model), _conv_weights(backbone), strict=True):
        np.testing.assert_array_equal(new, old)
    lean = export_lean_serving_model(backbone, output, SPEC, str(tmp_path / "lean"), ["a", "b"])
    with pytest.raises(ValueError, match="model.base_model .*lean: cannot be loaded"):
        training.load_base_model(lean)


def test_a_backbone_without_a_fitting_image_encoder_is_refused_naming_the_key(backbone, tmp_path):
    data = _data(np.zeros((4, *SHAPE), np.float32), np.arange(4) % 2, classes=2)
    tabular = mlp.build_model(TINY, FeatureSpec(("a",), (), "y", "regression"), {})
    with pytest.raises(ValueError, match="model.base_model backbone.keras: .* no convolutional"):
        training.build(_settings(), data, TINY, backbone=tabular)
    rgb = FeatureSpec((), (), "label", "classification", image=("image",), image_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="model.base_model .* takes 3-channel images like 'image'"):
        training.build(_settings(spec=rgb), data, TINY, backbone=backbone)
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(ValueError, match="model.base_model .*not_a_model: cannot be loaded"):
        training.load_base_model(str(tmp_path / "not_a_model"))


def test_with_a_base_model_the_tuner_searches_only_what_the_backbone_leaves_open(
    repo_root, tmp_path
):
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"")
    text = (repo_root / "configs" / "fashion_mnist.yaml").read_text()
    text = text.replace("  family: cnn\n", f"  family: cnn\n  base_model: {keras_file}\n")
    (tmp_path / "config.yaml").write_text(text)
    config = load_config(tmp_path / "config.yaml")
    space = search_space(config)
    assert set(space) == set(registry.SEARCH_KEYS["cnn"]) - set(cnn.ENCODER_HPARAMS)
    assert {"units", "learning_rate", "optimizer", "lr_schedule", "augment_flip"} <= set(space)
    settings = training.TrainingSettings.from_custom_config(custom_config(config, "test"))
    assert settings.fine_tuning == training.FineTuning(str(keras_file), 3, 0.1)
    plain = load_config(repo_root / "configs" / "fashion_mnist.yaml")
    assert (
        training.TrainingSettings.from_custom_config(custom_config(plain, "t")).fine_tuning is None
    )


# --- transfer helps: Fashion-MNIST clothes to shoes and bags ------------------------------

# A cnn like the Fashion-MNIST config's (flatten pooling), small enough for a test.
FASHION_HPARAMS = {
    "conv_blocks": 2,
    "convs_per_block": 2,
    "filters": 8,
    "kernel_size": 3,
    "batch_norm": True,
    "pooling": "flatten",
    "units": 32,
    "layers": 1,
    "dropout": 0.1,
    "l2": 1e-6,
    "learning_rate": 0.003,
    "optimizer": "adam",
    "augment_flip": False,
    "augment_translate": 0.0,
    "augment_zoom": 0.0,
}
FASHION_SPEC = FeatureSpec(
    (), (), "label", "classification", image=("image",), image_shape=(28, 28, 1)
)
TARGET_ACCURACY = 0.8
EPOCHS = 4


def _fashion(images, labels, classes, count, rng):
    """`count` images of these classes, scaled to [0, 1], labels renumbered 0..n-1."""
    chosen = rng.choice(np.flatnonzero(np.isin(labels, classes)), count, replace=False)
    return images[chosen].astype(np.float32) / 255.0, np.searchsorted(classes, labels[chosen])


def _fashion_data(train, evaluation) -> training.TrainingData:
    (images, labels), (eval_images, eval_labels) = train, evaluation
    batches = tf.data.Dataset.from_tensor_slices(({"image_xf": images}, labels))
    eval_batches = tf.data.Dataset.from_tensor_slices(({"image_xf": eval_images}, eval_labels))
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    return training.TrainingData(
        batches.shuffle(len(labels), seed=0).batch(16), eval_batches.batch(256), {}, classes, None
    )


def _epochs_to(history, accuracy: float) -> int | None:
    reached = [i + 1 for i, a in enumerate(history.history["val_accuracy"]) if a >= accuracy]
    return reached[0] if reached else None


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR).is_dir(), reason="needs dataset-fashion-mnist (scripts/in-env)"
)
def test_a_backbone_trained_on_clothes_learns_shoes_and_bags_in_fewer_epochs(tmp_path):
    """Backbone: 4,000 images of tops, trousers, dresses and coats (classes 0-4). New task:
    300 images of sandals, shirts, sneakers, bags and ankle boots (classes 5-9), evaluated on
    500 of the official test images. Same seed, same hyperparameters, with and without it."""
    rng = np.random.default_rng(0)
    images, labels = fashion_mnist_arrays("train")
    test_images, test_labels = fashion_mnist_arrays("eval")
    old, new = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
    keras.utils.set_random_seed(0)
    settings = _settings(spec=FASHION_SPEC, frozen_epochs=2, factor=0.3, epochs=EPOCHS)
    scratch_settings = dataclasses.replace(settings, fine_tuning=None)
    backbone, _ = training.train(
        scratch_settings,
        _fashion_data(
            _fashion(images, labels, old, 4000, rng),
            _fashion(test_images, test_labels, old, 500, rng),
        ),
        FASHION_HPARAMS,
        epochs=3,
    )
    backbone.save(tmp_path / "model.keras")
    data = _fashion_data(
        _fashion(images, labels, new, 300, rng), _fashion(test_images, test_labels, new, 500, rng)
    )
    keras.utils.set_random_seed(1)
    _, scratch = training.train(scratch_settings, data, FASHION_HPARAMS, EPOCHS)
    keras.utils.set_random_seed(1)
    loaded = training.load_base_model(str(tmp_path / "model.keras"))
    _, transferred = training.train(settings, data, FASHION_HPARAMS, EPOCHS, (), loaded)
    shown = {
        "scratch": np.round(scratch.history["val_accuracy"], 3).tolist(),
        "transferred": np.round(transferred.history["val_accuracy"], 3).tolist(),
    }
    with_backbone = _epochs_to(transferred, TARGET_ACCURACY)
    without = _epochs_to(scratch, TARGET_ACCURACY)
    assert with_backbone is not None, shown
    assert without is None or with_backbone < without, shown
