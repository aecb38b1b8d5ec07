"""The CsvExampleGen component."""

from __future__ import annotations

from tfx import types
from tfx.components.example_gen import driver
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_artifacts

from components.csv_example_gen import executor
from components.csv_example_gen.reading import Layout
from components.csv_example_gen.spec import CsvExampleGenSpec


class CsvExampleGen(FileBasedExampleGen):
    """Reads CSV files into tf.Examples with the types the config gives each column.

    A FileBasedExampleGen (TFX's driver: input fingerprint, spans, hash split by
    `output_config`) whose executor reads each file as a stream, one row at a time:
    compressed files by extension (.gz, .bz2), quoted fields across line breaks,
    missing-value markers as empty features, rows without a label left out. A row
    that does not fit stops the run with one line naming the file and line.

    Args:
      input_base: the folder the input config's patterns are relative to.
      input_config: one split whose pattern matches the CSV files.
      output_config: the hash split into train and eval.
      layout: the files' columns and how each becomes a feature.
      range_config: which spans to read (None: the latest, as TFX's ExampleGens).
    """

    # A FileBasedExampleGen, so that Kubeflow V2 runs TFX's driver (fingerprint, spans)
    # before it; constructed with its own spec, which adds `layout`.
    SPEC_CLASS = CsvExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.FileBasedDriver

    def __init__(
        self,
        input_base: str,
        input_config: example_gen_pb2.Input,
        output_config: example_gen_pb2.Output,
        layout: Layout,
        range_config: range_config_pb2.RangeConfig | None = None,
    ):
        base_beam_component.BaseBeamComponent.__init__(
            self,
            spec=CsvExampleGenSpec(
                input_base=input_base,
                input_config=input_config,
                output_config=output_config,
                range_config=range_config,
                output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
                output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
                layout=layout.to_json(),
                examples=types.Channel(type=standard_artifacts.Examples),
            ),
        )
