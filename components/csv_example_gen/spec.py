"""CsvExampleGen's spec: TFX's FileBasedExampleGen parameters plus the files' layout."""

from tfx.types import component_spec, standard_component_specs

LAYOUT_KEY = "layout"


class CsvExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    """FileBasedExampleGen's inputs, outputs and parameters, and `layout`: the JSON of a
    `reading.Layout` (columns and their kinds, label, missing-value markers, encoding)."""

    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        LAYOUT_KEY: component_spec.ExecutionParameter(type=str),
    }
