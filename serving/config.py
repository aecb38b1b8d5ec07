"""What the server serves: model configs (TF Serving's models.config), batching parameters, and
the limits on what one request may cost.

They are read once at the entry point into frozen dataclasses; errors name the file and key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


class ServingConfigError(ValueError):
    """A models.config or batching parameters file is invalid."""

    def __init__(self, source: str, key: str, problem: str):
        super().__init__(f"{source}: {key}: {problem}")


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are served: the latest N, all, or specific ones."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: list[int]) -> set[int]:
        """Returns the versions to serve out of the versions found on disk."""
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return set(on_disk) & set(self.versions)
        return set(sorted(on_disk)[-self.num_versions :])


@dataclasses.dataclass(frozen=True)
class RequestLogConfig:
    """Request logging, as TF Serving's `logging_config`: a `sampling_rate` share of the
    successful requests is written as `tensorflow.serving.PredictionLog` records to TFRecord
    files named `<filename_prefix>-<start time>-<pid>-<n>.tfrecord`.

    max_file_bytes: a file is closed and the next one opened once it holds this much (TF
      Serving's proto has no such field: the server's --request-log-max-bytes sets it).
    max_queued: records waiting for the writer thread; beyond it a record is dropped and
      counted, so a slow disk never slows or fails a request.
    """

    filename_prefix: str
    sampling_rate: float = 1.0
    max_file_bytes: int = 64 * 1024 * 1024
    max_queued: int = 10_000


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model: its name, base path, version policy, version labels and request
    logging (None: off)."""

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)
    request_log: RequestLogConfig | None = None


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """Server-side batching, with the meaning and defaults of TF Serving's batching_parameters."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = 4
    max_enqueued_batches: int = 100


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may make the server hold; over a limit, it is refused before the
    server allocates anything for it.

    max_bytes: the request on the wire (gRPC message, REST body). TF Serving's gRPC limit is
      2 GiB; 64 MiB keeps one bad client from exhausting memory.
    max_elements: the tensor elements (REST: JSON values; Classify/Regress: examples) one
      request may expand to. 64 MiB holds up to 64 million one-byte elements (bools, small
      ints, `0,` in JSON), and the tests' two-feature model peaked 1.2 GB above idle on 10
      million (5 million rows), so max_bytes alone lets one request cost several GB. 10
      million is a 40 MB float32 batch: 1.6 million rows of penguins' 6 raw features, or 66
      RGB 224x224 images, more than one online request carries.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_elements: int = 10_000_000


def parse_models_config(text: str, source: str = "models.config") -> tuple[ModelConfig, ...]:
    """Parses a TF Serving models.config (ModelServerConfig text proto).

    Args:
      text: the file's content.
      source: the file name, for error messages.

    Returns:
      The configured models.

    Raises:
      ServingConfigError: the text is not a valid model_config_list.
    """
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ServingConfigError(source, "model_config_list", str(err)) from err
    if proto.WhichOneof("config") != "model_config_list":
        raise ServingConfigError(source, "model_config_list", "expected a model_config_list")
    configs = tuple(_model_config(c, source) for c in proto.model_config_list.config)
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ServingConfigError(source, "config.name", f"model names repeat: {names}")
    return configs


def _model_config(proto, source: str) -> ModelConfig:
    if not proto.name:
        raise ServingConfigError(source, "config.name", "every model needs a name")
    if not proto.base_path:
        raise ServingConfigError(source, f"config[{proto.name}].base_path", "missing")
    policy = VersionPolicy()
    which = proto.model_version_policy.WhichOneof("policy_choice")
    if which == "all":
        policy = VersionPolicy(kind="all")
    elif which == "specific":
        versions = tuple(proto.model_version_policy.specific.versions)
        if not versions:
            raise ServingConfigError(
                source, f"config[{proto.name}].model_version_policy.specific", "lists no versions"
            )
        policy = VersionPolicy(kind="specific", versions=versions)
    elif which == "latest":
        policy = VersionPolicy(num_versions=max(1, proto.model_version_policy.latest.num_versions))
    return ModelConfig(
        name=proto.name,
        base_path=proto.base_path,
        version_policy=policy,
        version_labels=dict(proto.version_labels),
        request_log=_request_log(proto, source),
    )


# LogCollectorConfig.type values this server writes: TFRecord files of PredictionLog.
REQUEST_LOG_TYPES = ("", "tfrecord")


def _request_log(proto, source: str) -> RequestLogConfig | None:
    """The model's `logging_config`, or None when it has none."""
    if not proto.HasField("logging_config"):
        return None
    key = f"config[{proto.name}].logging_config"
    logging_config = proto.logging_config
    collector = logging_config.log_collector_config
    if collector.type not in REQUEST_LOG_TYPES:
        raise ServingConfigError(
            source,
            f"{key}.log_collector_config.type",
            f"expected one of {list(REQUEST_LOG_TYPES)} (TFRecord files), got {collector.type!r}",
        )
    if not collector.filename_prefix:
        raise ServingConfigError(
            source, f"{key}.log_collector_config.filename_prefix", "missing: where to write logs"
        )
    rate = logging_config.sampling_config.sampling_rate
    return request_log_config(collector.filename_prefix, rate, source, f"{key}.sampling_config")


def request_log_config(
    filename_prefix: str,
    sampling_rate: float,
    source: str,
    key: str,
    max_file_bytes: int = RequestLogConfig.max_file_bytes,
) -> RequestLogConfig:
    """A checked RequestLogConfig.

    Raises:
      ServingConfigError: the rate is outside (0, 1] or the file size is not positive.
    """
    if not 0.0 < sampling_rate <= 1.0:
        raise ServingConfigError(
            source, f"{key}.sampling_rate", f"expected a rate in (0, 1], got {sampling_rate}"
        )
    if max_file_bytes < 1:
        raise ServingConfigError(
            source, "max_file_bytes", f"expected a positive size, got {max_file_bytes}"
        )
    return RequestLogConfig(
        filename_prefix=filename_prefix,
        sampling_rate=sampling_rate,
        max_file_bytes=max_file_bytes,
    )


def load_models_config(path: str | Path) -> tuple[ModelConfig, ...]:
    """Reads and parses the models.config at `path` (see parse_models_config)."""
    return parse_models_config(Path(path).read_text(), source=str(path))


_BATCHING_LINE = re.compile(r"^\s*(\w+)\s*\{\s*value\s*:\s*(\w+)\s*\}\s*$")


def parse_batching_parameters(text: str, source: str = "batching_parameters") -> BatchingConfig:
    """Parses TF Serving's batching_parameters.txt (lines like `max_batch_size { value: 32 }`).

    Raises:
      ServingConfigError: a line is malformed or names an unknown parameter.
    """
    known = {f.name for f in dataclasses.fields(BatchingConfig)}
    # TF Serving accepts these; the embedded batcher does not need them.
    accepted = {"pad_variable_length_inputs", "allowed_batch_sizes", "enable_large_batch_splitting"}
    values: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        match = _BATCHING_LINE.match(line)
        if not match:
            raise ServingConfigError(
                source, f"line {number}", f"expected `name {{ value: N }}`: {line!r}"
            )
        name, value = match.groups()
        if name in accepted:
            continue
        if name not in known:
            raise ServingConfigError(
                source, name, f"unknown parameter; expected one of {sorted(known)}"
            )
        if not value.isdigit() or int(value) < (0 if name == "batch_timeout_micros" else 1):
            raise ServingConfigError(source, name, f"expected a positive integer, got {value!r}")
        values[name] = int(value)
    return BatchingConfig(**values)


def load_batching_parameters(path: str | Path) -> BatchingConfig:
    """Reads and parses a batching parameters file (see parse_batching_parameters)."""
    return parse_batching_parameters(Path(path).read_text(), source=str(path))
