"""CsvExampleGen's executor: Beam reads each matched file as a stream of tf.Examples."""

from __future__ import annotations

import re
from typing import Any

import apache_beam as beam
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.types import standard_component_specs

from components.csv_example_gen.reading import Layout, matching_files, read_examples
from components.csv_example_gen.spec import LAYOUT_KEY
from pipeline.errors import DataError


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def CsvToExamples(pipeline: beam.Pipeline, layout: Layout, files: list[str]) -> beam.PCollection:
    """Serialized tf.Examples of the labelled rows of `files`.

    Each file is one element, read lazily by one worker from start to end: a quoted field
    may span lines, so a file cannot be cut at an arbitrary line break, and reading in
    order is what keeps line numbers for the errors. Inputs as many files are read in
    parallel.
    """
    return (
        pipeline
        | "Files" >> beam.Create(files)
        | "Rows" >> beam.FlatMap(read_examples, layout)
        | "Labelled" >> beam.FlatMap(lambda row: [row[2]] if row[2] is not None else [])
    )


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _ImportCsv(
    pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str
) -> beam.PCollection:
    layout = Layout.from_json(exec_properties[LAYOUT_KEY])
    pattern = (
        f"{exec_properties[standard_component_specs.INPUT_BASE_KEY].rstrip('/')}/{split_pattern}"
    )
    return pipeline | "CsvToExamples" >> CsvToExamples(layout, matching_files(pattern))


# A DataError raised in a Beam worker reaches Do() as Beam's error: the same type with
# the step appended in one process, a RuntimeError holding the worker's traceback in several.
_IN_TRACEBACK = re.compile(r"DataError: (.+)$", re.MULTILINE)
_STEP = " [while running "


def data_error_of(err: BaseException) -> DataError | None:
    """The one-line DataError inside a Beam failure, if that is what it is."""
    if isinstance(err, DataError):
        line = str(err).splitlines()[0]
    else:
        found = _IN_TRACEBACK.search(str(err))
        if not found:
            return None
        line = found.group(1)
    return DataError(line.split(_STEP)[0])


class Executor(BaseExampleGenExecutor):
    """Generates tf.Examples from CSV files; bad input stops it with one DataError line."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ImportCsv

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        try:
            super().Do(input_dict, output_dict, exec_properties)
        except Exception as err:
            data_error = data_error_of(err)
            if data_error is None:
                raise
            raise data_error from None
