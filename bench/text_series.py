"""The text and time-series acceptance runs: one cold `python -m pipeline.cli run` per config.

    scripts/in-env python -m bench.text_series [--only bbc_news|forda]

For each of configs/bbc_news.yaml and configs/forda.yaml, a fresh pipeline run into an
empty output root (staging included), then the figures issue 11 asks for, next to their
targets: the time per component, wall time (target <= 20 min cold on 2 cores) and the
Evaluator's accuracy on the eval split (BBC News >= 0.96 on the 20% hash split; FordA >= 0.92
on the official 1,320 test series), and the Quantization component's figures: the int8
SavedModel's and the int8 TFLite's accuracy drop (target <= 0.01) and the int8 TFLite file's
size over the float TFLite's (target <= 0.30).

For BBC News the same process also trains the baseline the issue names, TF-IDF +
logistic regression (scikit-learn's defaults: TfidfVectorizer(), LogisticRegression with
more iterations), on exactly the pipeline's split: the train/ and eval/ tf.Examples the run
staged under `<output_root>/data/<pipeline_name>/` (pipeline/texts.py). Ours must be within
0.01 of it or better.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from bench.pipeline_time import WHY, run_once

TARGET_SECONDS = 20 * 60
BASELINE_MARGIN = 0.01
# Issue 11's quantization targets: accuracy drop of the int8 models, int8 / float TFLite size.
MAX_INT8_DROP = 0.01
MAX_TFLITE_RATIO = 0.30


@dataclasses.dataclass(frozen=True)
class Target:
    """A config and the accuracy its default run must reach."""

    config: str
    accuracy: float
    examples: str
    tfidf_baseline: bool = False


TARGETS = {
    "bbc_news": Target("configs/bbc_news.yaml", 0.96, "articles", tfidf_baseline=True),
    "forda": Target("configs/forda.yaml", 0.92, "series"),
}
WHY_STAGED = {
    "ImportExampleGen": "reads the staged tf.Examples, splits as staged",
    "StatisticsGen": "Beam job: TFDV statistics on both splits",
    "Transform": "TFT: tokenizes / normalises, vocabulary pass, transform pass",
}


def staged_texts(data_dir: Path, feature: str, label: str) -> dict[str, tuple[list, list]]:
    """The texts and labels of each split as a run staged them (train/ and eval/ TFRecords).

    Args:
      data_dir: `<output_root>/data/<pipeline_name>`.
      feature: the text feature's name.
      label: the label's name.

    Returns:
      split -> (texts, labels), as str.

    Raises:
      FileNotFoundError: a split has no staged files.
    """
    import tensorflow as tf

    splits = {}
    for split in ("train", "eval"):
        files = sorted(str(p) for p in (data_dir / split).glob("*.tfrecord.gz"))
        if not files:
            raise FileNotFoundError(f"{data_dir / split}: no staged *.tfrecord.gz")
        texts, labels = [], []
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            texts.append(example.features.feature[feature].bytes_list.value[0].decode())
            labels.append(example.features.feature[label].bytes_list.value[0].decode())
        splits[split] = (texts, labels)
    return splits


def tfidf_accuracy(splits: dict[str, tuple[list, list]]) -> float:
    """Eval accuracy of TF-IDF + logistic regression trained on the train split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    (train_texts, train_labels), (eval_texts, eval_labels) = splits["train"], splits["eval"]
    vectorizer = TfidfVectorizer()
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(vectorizer.fit_transform(train_texts), train_labels)
    return float(classifier.score(vectorizer.transform(eval_texts), eval_labels))


def _report(name: str, target: Target, wall: float, summary: dict, root: Path) -> None:
    print(f"\n== {name} ({target.config})")
    print(f"{'component':<32}{'cold s':>8}  what takes the time")
    for component, c in summary["components"].items():
        why = WHY_STAGED.get(component, WHY.get(component, ""))
        print(f"{component:<32}{c['seconds']:>8.1f}  {why}")
    components = sum(c["seconds"] for c in summary["components"].values())
    print(f"{'process start, imports, staging':<32}{wall - components:>8.1f}")
    met = "met" if wall <= TARGET_SECONDS else "NOT met"
    print(
        f"{'wall (python -m pipeline.cli run)':<32}{wall:>8.1f}  target <= {TARGET_SECONDS} s: {met}"
    )
    training = summary.get("training") or {}
    if training:
        print(
            f"Trainer fit: {training['epochs']} epochs (best {training['best_epoch']}) on "
            f"{training['train_examples']:,} {target.examples}, "
            f"{training['examples_per_second']:,.0f} {target.examples}/s"
        )
    tuner = summary.get("tuner") or {}
    if tuner:
        print(f"tuner: {tuner['trials']} trials, best {tuner['best_hyperparameters']}")
    metrics = summary["evaluation"]["metrics"]
    accuracy = metrics["sparse_categorical_accuracy"]
    met = "met" if accuracy >= target.accuracy else "NOT met"
    print(
        f"eval accuracy {accuracy:.4f} on {metrics['example_count']:.0f} {target.examples}; "
        f"target >= {target.accuracy}: {met}"
    )
    _report_quantization(summary.get("quantization"))
    if target.tfidf_baseline:
        from pipeline.config import load_config

        config = load_config(target.config, output_root=str(root))
        data_dir = root / "data" / config.pipeline_name
        baseline = tfidf_accuracy(staged_texts(data_dir, config.text_features[0], config.label))
        gap = accuracy - baseline
        met = "met" if gap >= -BASELINE_MARGIN else "NOT met"
        print(
            f"TF-IDF + logistic regression on the same split: {baseline:.4f}; ours - baseline "
            f"{gap:+.4f}; target >= -{BASELINE_MARGIN}: {met}"
        )


def _report_quantization(quantization: dict | None) -> None:
    """The int8 models' accuracy drops and the TFLite size ratio, against the targets."""
    if not quantization:
        print("quantization: off in this config (no int8 figures)")
        return
    metric = quantization["metric"]
    for name in ("int8", "int8_tflite"):
        entry = quantization[name]
        drop = entry["metric_drop"]
        met = "met" if drop <= MAX_INT8_DROP else "NOT met"
        print(
            f"{name:<12} {metric} {entry['metrics'][metric]:.4f}, drop vs float "
            f"{drop:+.4f}; target <= {MAX_INT8_DROP}: {met}"
        )
    ratios = quantization["size_ratios"]
    ratio = ratios["int8_tflite_vs_float_tflite"]
    met = "met" if ratio <= MAX_TFLITE_RATIO else "NOT met"
    print(
        f"int8 TFLite {quantization['int8_tflite']['size_bytes']:,} B = {ratio:.3f}x the float "
        f"TFLite's {quantization['float_tflite']['size_bytes']:,} B; target <= "
        f"{MAX_TFLITE_RATIO}: {met}; served: {quantization['served']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=sorted(TARGETS), help="run one config only")
    args = parser.parse_args()
    for name, target in TARGETS.items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as root:
            wall, summary = run_once(target.config, root)
            _report(name, target, wall, summary, Path(root))


if __name__ == "__main__":
    main()
