"""Encoder variants on BBC News, outside the pipeline but on its split, tokens and training.

    scripts/in-env python -m bench.bbc_encoders [--variants bag_mean,bag_max] [--epochs 10]
        [--tflite]

Stages the corpus as configs/bbc_news.yaml does (pipeline/texts.py: the 20% hash split),
tokenizes with models/preprocessing.py's `tokenize` and a top-k vocabulary of the training
split (as TFT's compute_and_apply_vocabulary: ids + 1, 0 pads, cut to max_tokens), and
trains each variant with pipeline/training.py's `train` (early stopping on the eval split,
best epoch's weights, cosine schedule): the Trainer's fit without Transform and TFMA around
it. Prints each variant's eval accuracy and seconds next to TF-IDF + logistic regression
on the same split. What the config's defaults were chosen from. With --tflite, each trained
variant is also converted as the Quantization component converts it (float and int8
TFLite, calibrated on 200 training articles) and both files are scored on the eval split.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
import zlib
from pathlib import Path

from bench.text_series import staged_texts, tfidf_accuracy

CONFIG = "configs/bbc_news.yaml"
BASE = {
    "embedding_dim": 64,
    "num_heads": 2,
    "attention_blocks": 1,
    "ff_dim": 128,
    "rnn_units": 32,
    "rnn_layers": 1,
    "bidirectional": True,
    "conv_blocks": 0,
    "filters": 64,
    "kernel_size": 5,
    "residual": False,
    "pooling": "global_average",
    "units": 64,
    "layers": 0,
    "dropout": 0.3,
    "l2": 1e-6,
    "learning_rate": 0.001,
    "optimizer": "adam",
    "lr_schedule": "cosine",
    "lr_decay_rate": 0.9,
}
# name -> (hyperparameters over BASE, max_tokens, vocabulary_size)
VARIANTS = {
    "transformer": ({"encoder": "transformer"}, 512, 20000),
    "transformer_max": ({"encoder": "transformer", "pooling": "global_max"}, 512, 20000),
    "transformer_small": (
        {"encoder": "transformer", "embedding_dim": 32, "ff_dim": 64, "dropout": 0.5},
        256,
        10000,
    ),
    "bag_mean": ({"encoder": "conv1d", "learning_rate": 0.01}, 512, 20000),
    "bag_max": ({"encoder": "conv1d", "pooling": "global_max", "learning_rate": 0.01}, 512, 20000),
    "bag_mean_small": (
        {"encoder": "conv1d", "embedding_dim": 32, "learning_rate": 0.01},
        512,
        10000,
    ),
    "bag_mean_256": ({"encoder": "conv1d", "learning_rate": 0.01}, 256, 20000),
    "bag_mean_dropout": ({"encoder": "conv1d", "dropout": 0.5, "learning_rate": 0.01}, 512, 20000),
    "bag_mean_lr3": ({"encoder": "conv1d", "learning_rate": 0.003}, 512, 20000),
    "bag_mean_lr2": ({"encoder": "conv1d", "learning_rate": 0.02}, 512, 20000),
    "bag_mean_long": ({"encoder": "conv1d", "learning_rate": 0.01}, 1024, 20000),
    "conv1d_max": (
        {"encoder": "conv1d", "conv_blocks": 1, "pooling": "global_max", "dropout": 0.5},
        512,
        20000,
    ),
    "bigru": ({"encoder": "gru", "embedding_dim": 32}, 256, 20000),
}


def _ids(texts, vocabulary: dict[str, int], max_tokens: int):
    import numpy as np

    from models.features import OOV_BUCKETS
    from models.preprocessing import tokenize

    tokens = tokenize(texts).to_list()
    ids = np.zeros((len(texts), max_tokens), np.int64)
    for row, words in enumerate(tokens):
        for col, word in enumerate(words[:max_tokens]):
            word = word.decode()
            # OOV words share the buckets after the vocabulary (hash bucket as TFT's).
            oov = len(vocabulary) + zlib.crc32(word.encode()) % OOV_BUCKETS
            ids[row, col] = vocabulary.get(word, oov) + 1
    return ids


def _vocabulary(texts, size: int) -> dict[str, int]:
    from models.preprocessing import tokenize

    counts = collections.Counter(w.decode() for words in tokenize(texts).to_list() for w in words)
    return {word: i for i, (word, _) in enumerate(counts.most_common(size))}


def _data(splits, classes, max_tokens: int, vocabulary_size: int, batch_size: int):
    import numpy as np
    import tensorflow as tf

    from models.features import OOV_BUCKETS
    from pipeline.training import TrainingData, counted

    vocabulary = _vocabulary(splits["train"][0], vocabulary_size)

    def dataset(split, shuffle):
        texts, labels = splits[split]
        features = {"text_xf": _ids(texts, vocabulary, max_tokens)}
        y = np.array([classes.index(label) for label in labels], np.int64)
        data = tf.data.Dataset.from_tensor_slices((features, y))
        if shuffle:
            data = data.shuffle(10_000, seed=42, reshuffle_each_iteration=True)
        return data.batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)

    sizes = {"text": len(vocabulary) + OOV_BUCKETS + 1}
    data = TrainingData(dataset("train", True), dataset("eval", False), sizes, classes, None)
    return counted(data)


def _tflite_line(model, data, calibration_count: int = 200) -> str:
    """Float and int8 TFLite of a trained variant: eval accuracy and size of each."""
    import numpy as np

    from components.quantization import measure
    from models import quantization

    def arrays(dataset):
        batches = list(dataset.as_numpy_iterator())
        features = {k: np.concatenate([f[k] for f, _ in batches]) for k in batches[0][0]}
        return features, np.concatenate([y for _, y in batches])

    train_features, _ = arrays(data.train)
    eval_features, labels = arrays(data.eval)
    inputs = quantization.tflite_inputs(model)
    calibration = quantization.representative_dataset(train_features, inputs, calibration_count)
    parts = []
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="bbc-tflite-") as directory:
        for kind, representative in (("float", None), ("int8", calibration)):
            path = Path(directory) / f"{kind}.tflite"
            path.write_bytes(quantization.to_tflite(model, representative))
            scores = measure.TFLiteRunner(str(path), inputs).predict(eval_features)
            accuracy = float((scores.argmax(axis=1) == labels).mean())
            sizes[kind] = path.stat().st_size
            parts.append(f"{kind} TFLite {accuracy:.4f} ({sizes[kind]:,} B)")
    return "  ".join(parts) + f"  int8/float size {sizes['int8'] / sizes['float']:.3f}x"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--tflite", action="store_true", help="also score each variant's float and int8 TFLite"
    )
    args = parser.parse_args()

    import tf_keras as keras

    from models.features import FeatureSpec
    from pipeline import sources
    from pipeline.config import load_config
    from pipeline.training import TrainingSettings, train

    with tempfile.TemporaryDirectory(prefix="bbc-encoders-") as root:
        config = load_config(CONFIG, output_root=root)
        sources.stage(config)
        splits = staged_texts(
            Path(root) / "data" / config.pipeline_name, config.text_features[0], config.label
        )
    classes = sorted(set(splits["train"][1]))
    print(
        f"split: {len(splits['train'][0])} train / {len(splits['eval'][0])} eval; "
        f"TF-IDF + logistic regression {tfidf_accuracy(splits):.4f}",
        flush=True,
    )
    for name in args.variants.split(","):
        overrides, max_tokens, vocabulary_size = VARIANTS[name]
        spec = FeatureSpec((), (), "label", "classification", text=("text",), max_tokens=max_tokens)
        settings = TrainingSettings(spec, "sequence", {}, args.epochs, 0, None, 32, 3, 42)
        data = _data(splits, classes, max_tokens, vocabulary_size, 32)
        keras.utils.set_random_seed(42)
        started = time.monotonic()
        model, history = train(settings, data, BASE | overrides, args.epochs)
        seconds = time.monotonic() - started
        accuracy = model.evaluate(data.eval, verbose=0)[1]
        train_accuracy = max(history.history["accuracy"]) if "accuracy" in history.history else 0
        print(
            f"{name:<20} eval accuracy {accuracy:.4f}  epochs {len(history.epoch)}  "
            f"max train accuracy {train_accuracy:.3f}  {seconds:.0f} s",
            flush=True,
        )
        if args.tflite:
            print(f"{'':<20} {_tflite_line(model, data)}", flush=True)


if __name__ == "__main__":
    main()
