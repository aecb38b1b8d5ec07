"""Trainer images/second against the floor: a plain `model.fit` of the same model on arrays.

    scripts/in-env python -m bench.trainer_throughput [--train-images 12000] [--epochs 4]

One process, one run: first the real pipeline (`python -m pipeline.cli run`) on a
Fashion-MNIST sample, whose Trainer records its fit in `summary.json` (`training`:
epochs, seconds, examples/s; tf.Examples read through TFX's data accessor, cached,
shuffled, batched); then the same CNN (the tuner's best hyperparameters) built by
`models.cnn.build_model` and fitted with `model.fit` on uint8 arrays scaled to [0, 1]
(what Transform makes of the PNGs), same image counts, batch size, epochs and eval split.
Both times are the fits' wall time, validation included. Target: ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.8


def _config(root: Path, train_images: int, eval_images: int, epochs: int) -> tuple[Path, dict]:
    """The Fashion-MNIST config on a sample, with a short tuner and a fixed-length fit."""
    raw = yaml.safe_load((REPO / "configs" / "fashion_mnist.yaml").read_text())
    raw["data"]["max_examples"] = {"train": train_images, "eval": eval_images}
    raw["tuner"].update(max_trials=1, epochs=1, max_train_examples=1000)
    # One point of the config's space, so the floor knows the model before the run.
    space = raw["tuner"]["search_space"]
    for key, value in space.items():
        if isinstance(value, dict):
            space[key] = {**value, "max": value["min"]}
        elif isinstance(value, list):
            space[key] = value[:1]
    # Every epoch runs: early stopping must not make the two fits differ in length.
    raw["training"].update(epochs=epochs, early_stopping_patience=epochs)
    raw["evaluation"]["lower_bound"] = 0.0
    raw["quantization"] = {"enabled": False}
    path = root / "fashion_throughput.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def _point(config: Path) -> dict:
    """The hyperparameters the one-point search space gives, as the Trainer gets them."""
    from models.search_space import hyperparameters
    from pipeline.config import load_config
    from pipeline.pipeline import search_space

    return hyperparameters(search_space(load_config(config))).values


def pipeline_fit(config: Path, output_root: Path) -> dict:
    """Runs the pipeline; returns its summary."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)]
        + ["--output-root", str(output_root)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    summary = output_root / "summary.json"
    if proc.returncode != 0 or not summary.exists():
        raise SystemExit(f"pipeline run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(summary.read_text())


def plain_fit(hparams: dict, train_images: int, eval_images: int, epochs: int, batch: int):
    """`model.fit` of the same CNN on arrays; returns (seconds, examples/s, val accuracy)."""
    import numpy as np
    import tf_keras as keras

    from models.cnn import build_model
    from models.features import FeatureSpec, transformed_name
    from pipeline.images import FASHION_MNIST_CLASSES, fashion_mnist_arrays

    spec = FeatureSpec(
        numeric=(), categorical=(), label="label", task="classification",
        image=("image",), image_shape=(28, 28, 1),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", train_images), ("eval", eval_images)):
        pixels, labels = fashion_mnist_arrays(split)
        pick = rng.choice(len(pixels), count, replace=False)
        arrays[split] = (
            {transformed_name("image"): pixels[pick].astype("float32") / 255.0},
            labels[pick].astype("int64"),
        )
    keras.utils.set_random_seed(0)
    steps = -(-train_images // batch)
    model = build_model(
        hparams, spec, {}, len(FASHION_MNIST_CLASSES), steps_per_epoch=steps, epochs=epochs
    )
    started = time.perf_counter()
    history = model.fit(
        *arrays["train"], batch_size=batch, epochs=epochs,
        validation_data=arrays["eval"], shuffle=True, verbose=0,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    accuracy = history.history.get("val_sparse_categorical_accuracy") or history.history.get(
        "val_accuracy"
    )
    return seconds, train_images * epochs / seconds, max(accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--keep", help="a directory to keep the run in (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        config, raw = _config(root, args.train_images, args.eval_images, args.epochs)
        hparams = _point(config)
        batch = raw["training"]["batch_size"]
        # The floor before and after the run: the machine's load may drift in between.
        floors = [plain_fit(hparams, args.train_images, args.eval_images, args.epochs, batch)]
        summary = pipeline_fit(config, root / "out")
        floors.append(plain_fit(hparams, args.train_images, args.eval_images, args.epochs, batch))
    training = summary["training"]
    if summary["tuner"]["best_hyperparameters"] != hparams:
        raise SystemExit("the pipeline trained other hyperparameters than the floor")
    seconds, rate, accuracy = (sum(values) / len(floors) for values in zip(*floors, strict=True))
    metrics = summary["evaluation"]["metrics"]
    print(f"{'':<34}{'seconds':>9}{'images/s':>10}{'eval acc':>10}")
    print(
        f"{'pipeline Trainer (fit)':<34}{training['seconds']:>9.1f}"
        f"{training['examples_per_second']:>10.0f}"
        f"{metrics.get('sparse_categorical_accuracy', float('nan')):>10.4f}"
    )
    for when, (s_, r_, a_) in zip(("before", "after"), floors, strict=True):
        print(f"{'plain model.fit, ' + when + ' the run':<34}{s_:>9.1f}{r_:>10.0f}{a_:>10.4f}")
    print(f"{'floor (mean)':<34}{seconds:>9.1f}{rate:>10.0f}{accuracy:>10.4f}")
    trainer = summary["components"]["Trainer"]["seconds"]
    print(
        f"{training['train_examples']:,} training images x {training['epochs']} epochs, "
        f"batch {batch}, hyperparameters {json.dumps(hparams)}"
    )
    ratio = training["examples_per_second"] / rate
    print(
        f"ratio Trainer/floor: {ratio:.2f} (target >= {TARGET_RATIO}); the Trainer component "
        f"took {trainer:.1f} s in all (reading, counting, fit, Keras file and SavedModel export)"
    )


if __name__ == "__main__":
    main()
