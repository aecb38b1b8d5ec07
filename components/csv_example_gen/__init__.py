"""CsvExampleGen: reads the user's CSV files (a file, a folder, a glob; compressed or not)
into tf.Examples, streaming, typed by the config, naming file and line on bad input."""

from components.csv_example_gen.component import CsvExampleGen

__all__ = ["CsvExampleGen"]
