"""Errors that the pipeline reports to users."""


class ConfigError(ValueError):
    """A configuration file is invalid. The message names the file and the key."""

    def __init__(self, source: str, key: str, problem: str):
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class PipelineFailed(RuntimeError):
    """A pipeline run stopped; the message says which component and why."""


class DataError(ValueError):
    """The input data cannot be used as configured. The message is one line: the file,
    the line or config key, what is wrong and what to do."""
