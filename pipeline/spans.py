"""Data that arrives as numbered spans, as TFX's ExampleGen reads it (`data.spans`).

The user's data is `<data.source>/span-<N>/...` or a path with `{SPAN}` in `data.source`.
Each span is staged by its format into `<staged>/span-<N>/` (a CSV as `data.csv`; the
TFRecord formats as `train/` and `eval/`), so every ExampleGen reads the same layout:
its input config's patterns under `span-{SPAN}/` (`span_input`), one span per run
(`range_config`: TFX 1.21's ExampleGen processes one span, a static range start == end).

A run ingests each span of the window (and the one before the newest, which drift is
measured against) that ML Metadata does not hold with the same input fingerprint
(`pending`); Transform, Tuner and Trainer train on the latest `data.spans.window` spans
(`SpanWindowStrategy`, a Resolver over every ExampleGen output of the pipeline);
StatisticsGen, ExampleValidator, Evaluator and InfraValidation see the newest span, whose
eval split decides blessing. The newest span's statistics are compared with the previous
span's by the monitor's comparators (`span_drift`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.common import resolver

from components.csv_example_gen import reading
from pipeline import data
from pipeline.config import SPAN_PLACEHOLDER, PipelineConfig

# A folder of spans holds one folder per span (TFX's own examples name them so).
SPAN_FOLDER = "span-" + SPAN_PLACEHOLDER
_GLOB_CHARS = re.compile(r"[*?\[]")


class SpanError(data.DataError):
    """The spans on disk cannot be used: none matched, a gap, a span unlike the others."""


@dataclasses.dataclass(frozen=True)
class Span:
    """One span on disk: its number and what the format's staging reads for it (CSV
    files; a folder of images or texts; a UCR table)."""

    number: int
    paths: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class StagedSpans:
    """The spans found, the ones staged (the window and the one before it) and where."""

    spans: tuple[Span, ...]
    staged: tuple[int, ...]
    window: tuple[int, ...]
    data: data.StagedData

    @property
    def newest(self) -> int:
        return self.window[-1]

    @property
    def previous(self) -> int | None:
        """The span the newest one is compared with: the one before it on disk."""
        numbers = [s.number for s in self.spans]
        index = numbers.index(self.newest)
        return numbers[index - 1] if index else None


def source_pattern(source: str) -> str:
    """`data.source` as a pattern with {SPAN}: a folder of spans is `<folder>/span-{SPAN}`."""
    return source if SPAN_PLACEHOLDER in source else os.path.join(source, SPAN_FOLDER)


def _matcher(pattern: str) -> re.Pattern[str]:
    """The pattern as a regular expression: {SPAN} captures digits, * and ? one path part."""
    parts = re.split(r"(\{SPAN\}|\*|\?)", pattern)
    translated = {SPAN_PLACEHOLDER: r"(\d+)", "*": r"[^/]*", "?": r"[^/]"}
    return re.compile("".join(translated.get(p, re.escape(p)) for p in parts))


def discover(source: str, data_format: str) -> tuple[Span, ...]:
    """The spans on disk under `data.source`, in order.

    Args:
      source: `data.source` (a path with {SPAN} or a folder of span-<N> folders).
      data_format: `data.format`: a CSV span is CSV files (a folder's `*.csv`), an
        image_folder or text_folder span a folder, a ucr span a `_TRAIN` table.

    Returns:
      The spans, by number.

    Raises:
      SpanError: no span matches, a span is numbered twice (span-1 and span-01), the
        numbers have a gap, or a span holds no data of the format.
    """
    pattern = source_pattern(source)
    matcher = _matcher(pattern)
    found: dict[int, list[str]] = {}
    spelled: dict[int, set[str]] = {}
    for path in sorted(glob.glob(pattern.replace(SPAN_PLACEHOLDER, "*"))):
        match = matcher.fullmatch(path)
        if match:
            found.setdefault(int(match.group(1)), []).append(path)
            spelled.setdefault(int(match.group(1)), set()).add(match.group(1))
    if not found:
        raise SpanError(
            f"{pattern}: no span matches; data.spans expects numbered spans, e.g."
            f" {pattern.replace(SPAN_PLACEHOLDER, '1')}"
        )
    twice = next((n for n, texts in sorted(spelled.items()) if len(texts) > 1), None)
    if twice is not None:
        raise SpanError(
            f"{pattern}: span {twice} is numbered twice ({sorted(spelled[twice])}); keep one"
        )
    spans = tuple(Span(n, _span_paths(n, found[n], data_format)) for n in sorted(found))
    _check_gaps([s.number for s in spans], pattern)
    return spans


def _span_paths(number: int, paths: list[str], data_format: str) -> tuple[str, ...]:
    folders = [p for p in paths if os.path.isdir(p)]
    if data_format == "csv":
        files = [p for p in paths if os.path.isfile(p)]
        for folder in folders:
            files += sorted(glob.glob(os.path.join(folder, "*.csv*")))
        if not files:
            raise SpanError(f"span {number} ({paths[0]}): holds no CSV file")
        return tuple(files)
    if len(paths) > 1:
        raise SpanError(f"span {number} is numbered twice: {paths}; keep one")
    kind_ok = bool(folders) if data_format in ("image_folder", "text_folder") else not folders
    if not kind_ok:
        expected = "a folder" if data_format != "ucr" else "a UCR _TRAIN table"
        raise SpanError(f"span {number} ({paths[0]}): expected {expected} for {data_format}")
    return tuple(paths)


def _check_gaps(numbers: list[int], pattern: str) -> None:
    # A missing span in the middle is data that did not arrive: training on the spans
    # around it would silently leave it out. Older spans may be deleted, newer not yet here.
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        raise SpanError(
            f"{pattern}: span {missing[0]} is missing between spans {numbers[0]} and"
            f" {numbers[-1]} (found {numbers}); spans are numbered without gaps"
        )


def window(spans: Sequence[Span], size: int) -> tuple[int, ...]:
    """The numbers of the latest `size` spans (all of them when there are fewer)."""
    return tuple(s.number for s in spans[-size:])


def span_input(input_config: tfx.proto.Input) -> tfx.proto.Input:
    """An ExampleGen input config read span by span: each split's pattern under
    `span-{SPAN}/`, the layout staging writes."""
    spanned = tfx.proto.Input()
    spanned.CopyFrom(input_config)
    for split in spanned.splits:
        split.pattern = f"{SPAN_FOLDER}/{split.pattern}"
    return spanned


def range_config(span: int) -> tfx.proto.RangeConfig:
    """The ExampleGen range that reads exactly `span`."""
    return tfx.proto.RangeConfig(
        static_range=tfx.proto.StaticRange(start_span_number=span, end_span_number=span)
    )


EXAMPLES_KEY = "examples"


class SpanWindowStrategy(resolver.ResolverStrategy):
    """The latest `window` spans of the Examples given (every run's ExampleGen output),
    oldest first; of a span ingested more than once, the latest version, then the latest
    ingest (TFX's span-version rule). Fewer while fewer spans exist.

    TFX's canned `rolling_range` does the same on the `span` artifact property, but TFX
    1.21's ExampleGen records the span as a custom property: `rolling_range` sees span 0
    on every ExampleGen output and keeps one artifact.
    """

    def __init__(self, window: int):
        self._window = window

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]):
        latest: dict[int, types.Artifact] = {}
        for artifact in input_dict.get(EXAMPLES_KEY, []):
            number = span_of(artifact.mlmd_artifact)
            if number is None:
                continue
            if number not in latest or _recency(artifact) > _recency(latest[number]):
                latest[number] = artifact
        return {EXAMPLES_KEY: [latest[n] for n in sorted(latest)[-self._window :]]}


def _recency(artifact: types.Artifact) -> tuple[int, int]:
    version = artifact.mlmd_artifact.custom_properties.get("version")
    return (version.int_value if version is not None else 0, artifact.id)


def window_resolver(example_gen, size: int) -> tfx.dsl.Resolver:
    """A Resolver node that gives Transform the latest `size` spans any run ingested.

    Its channel names the ExampleGen as producer: `example_gen.outputs` would be narrowed
    to the current run. It runs after this run's ExampleGen, so the newest span is in.
    """
    every_span = tfx.dsl.Channel(
        type=tfx.types.standard_artifacts.Examples,
        producer_component_id=example_gen.id,
        output_key="examples",
    )
    node = tfx.dsl.Resolver(
        strategy_class=SpanWindowStrategy, config={"window": size}, examples=every_span
    ).with_id("span_window_resolver")
    node.add_upstream_node(example_gen)
    return node


def to_stage(spans: Sequence[Span], size: int) -> tuple[int, ...]:
    """The window, and the span before it that the newest one's drift is measured against."""
    numbers = [s.number for s in spans]
    return tuple(numbers[-(size + 1) :] if size == 1 else numbers[-size:])


def csv_pattern(source: str) -> str:
    """`data.source` as the pattern of a CSV span's files, with {SPAN}: a span that is a
    folder holds `*.csv*` files (plain and compressed), as a folder source does.

    Raises:
      SpanError: a span is numbered with leading zeros (TFX's ExampleGen reads span 1 as
        `1`, so `span-01` would match no file).
    """
    pattern = source_pattern(source)
    matcher = _matcher(pattern)
    matched = [p for p in glob.glob(pattern.replace(SPAN_PLACEHOLDER, "*")) if matcher.fullmatch(p)]
    padded = sorted(p for p in matched if matcher.fullmatch(p).group(1).startswith("0"))
    if padded and any(matcher.fullmatch(p).group(1) != "0" for p in padded):
        raise SpanError(
            f"{padded[0]}: span numbers of CSV spans are written without leading zeros"
            " (span-1, not span-01): ExampleGen reads span N as N"
        )
    return os.path.join(pattern, "*.csv*") if any(os.path.isdir(p) for p in matched) else pattern


def check_headers(found: Sequence[Span], numbers: Iterable[int], encoding: str) -> None:
    """Every CSV span in `numbers` has the first one's columns, in its order (each span's
    own files were checked against its first file's header by pipeline/data.py).

    Raises:
      SpanError: names the span, its files, and the columns added or missing.
    """
    wanted = set(numbers)
    headers = {
        span.number: (span.paths, reading.header_of(span.paths[0], encoding))
        for span in found
        if span.number in wanted
    }
    first, (_, expected) = next(iter(headers.items()))
    for number, (paths, names) in headers.items():
        if names != expected:
            where = ", ".join(paths)
            raise SpanError(_header_difference(number, where, names, expected, f"span {first}'s"))


def _header_difference(
    number: int, path: str, names: list[str], header: list[str], other: str
) -> str:
    added = [n for n in names if n not in header]
    missing = [n for n in header if n not in names]
    what = (
        f"columns added {added}, missing {missing}"
        if added or missing
        else "the same columns in another order"
    )
    return (
        f"span {number} ({path}): its header {names} differs from {other} {header}"
        f" ({what}); every span must have the same columns"
    )


def merge_staged(directory: str, parts: Iterable[data.StagedData]) -> data.StagedData:
    """The staged spans as one StagedData: their root, sizes and rows added up, labels joined."""
    parts = list(parts)
    return data.StagedData(
        directory=directory,
        path=directory,
        size_bytes=sum(p.size_bytes for p in parts),
        rows=sum(p.rows for p in parts),
        label_values=tuple(sorted({v for p in parts for v in p.label_values})),
        notes=tuple(n for p in parts for n in p.notes),
        sequential_files=sum(p.sequential_files for p in parts),
        many_valued=tuple(sorted({f for p in parts for f in p.many_valued})),
    )


def stage_dir(directory: str, span: int) -> str:
    """Where staging writes span `span` under the staged data's root."""
    return os.path.join(directory, SPAN_FOLDER.replace(SPAN_PLACEHOLDER, str(span)))


def examples_by_span(store, pipeline_name: str, node_id: str) -> dict[int, list]:
    """The live Examples artifacts an ExampleGen node wrote, by span, oldest first."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    if context is None:
        return {}
    from ml_metadata.proto import metadata_store_pb2

    found: dict[int, list] = {}
    for artifact in sorted(store.get_artifacts_by_context(context.id), key=lambda a: a.id):
        number = span_of(artifact)
        if artifact.state == metadata_store_pb2.Artifact.LIVE and number is not None:
            found.setdefault(number, []).append(artifact)
    return found


def span_of(artifact) -> int | None:
    """An Examples artifact's span (ExampleGen records it as a custom property)."""
    for values in (artifact.custom_properties, artifact.properties):
        if "span" in values:
            return values["span"].int_value
    return None


def fingerprint(artifact) -> str:
    value = artifact.custom_properties.get("input_fingerprint")
    return value.string_value if value is not None else ""


def pending(
    store, pipeline_name: str, node_id: str, fingerprints: Mapping[int, str]
) -> tuple[int, ...]:
    """The spans whose data ML Metadata does not hold with this fingerprint: new spans, and
    spans whose files changed since they were ingested."""
    known = examples_by_span(store, pipeline_name, node_id)
    return tuple(
        span
        for span, current in sorted(fingerprints.items())
        if current not in {fingerprint(a) for a in known.get(span, [])}
    )


def statistics_of(store, examples) -> Any | None:
    """The latest StatisticsGen statistics of an Examples artifact (None: none yet)."""
    from ml_metadata.proto import metadata_store_pb2

    events = store.get_events_by_artifact_ids([examples.id])
    readers = [e.execution_id for e in events if e.type == metadata_store_pb2.Event.INPUT]
    if not readers:
        return None
    outputs = store.get_events_by_execution_ids(readers)
    ids = [
        e.artifact_id
        for e in outputs
        if e.type == metadata_store_pb2.Event.OUTPUT
        and any(s.key == "statistics" for s in e.path.steps if s.HasField("key"))
    ]
    artifacts = store.get_artifacts_by_id(ids) if ids else []
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def _split_statistics(statistics_uri: str, split: str):
    import tensorflow_data_validation as tfdv

    path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
    return tfdv.load_stats_binary(path) if os.path.isfile(path) else None


def span_rows(store, examples) -> dict[str, int]:
    """Rows per split of an Examples artifact, from its statistics ({} without any)."""
    statistics = statistics_of(store, examples)
    if statistics is None:
        return {}
    rows = {}
    for split in ("train", "eval"):
        stats = _split_statistics(statistics.uri, split)
        if stats is not None and stats.datasets:
            rows[split] = int(stats.datasets[0].num_examples)
    return rows


def describe(store, examples) -> dict[str, Any]:
    """A span's line in the summary: its number, rows per split and where ExampleGen wrote it."""
    return {
        "span": span_of(examples),
        "rows": span_rows(store, examples),
        "uri": examples.uri,
    }


class SpanDriftError(data.DataError):
    """The newest span drifted from the previous one and data.spans.drift is `stop`."""


def span_drift(
    config: PipelineConfig,
    current,
    previous,
    schema,
    spans: tuple[int, int],
) -> dict[str, Any]:
    """Drift of the newest span's train split from the previous span's: the monitor's
    comparators and thresholds (L-infinity for categorical features and the label,
    Jensen-Shannon divergence for numeric ones).

    Args:
      config: the pipeline config (features, monitoring thresholds).
      current: the newest span's train statistics (DatasetFeatureStatisticsList).
      previous: the previous span's.
      schema: the pipeline's schema (curated, or inferred from the previous span).
      spans: (newest, previous) span numbers.

    Returns:
      The drift record: the spans, per feature statistic, value, threshold, drifted, and
      the drifted features.
    """
    import tensorflow_data_validation as tfdv

    from pipeline import monitor

    monitored = {*config.numeric_features, *config.categorical_features, config.label}
    comparing = monitor.comparing_schema(schema, config, monitored)
    anomalies = tfdv.validate_statistics(current, comparing, previous_statistics=previous)
    features = monitor.drift_features(
        anomalies, lambda name: "label" if name == config.label else "feature"
    )
    return {
        "span": spans[0],
        "previous_span": spans[1],
        "action": config.data.spans.drift,
        "features": features,
        "drifted_features": sorted(n for n, f in features.items() if f["drifted"]),
    }


def enforce(drift: Mapping[str, Any]) -> str | None:
    """Acts on a span drift record: raises for `stop`, returns the line to print for a drift
    under `warn` (None: no drift).

    Raises:
      SpanDriftError: drift under data.spans.drift `stop`; the message names the span,
        the features and their values.
    """
    drifted = drift["drifted_features"]
    if not drifted:
        return None
    shown = ", ".join(
        f"{name} {f['statistic']} {f['value']:.3f} > {f['threshold']}"
        for name, f in ((n, drift["features"][n]) for n in drifted)
    )
    line = f"span {drift['span']} drifted from span {drift['previous_span']}: {shown}"
    if drift["action"] == "stop":
        raise SpanDriftError(
            f"{line}; data.spans.drift is stop, so nothing was trained (check the span's"
            " data, or raise monitoring thresholds, or set data.spans.drift: warn)"
        )
    return line


def input_fingerprint(example_gen, span: int) -> str:
    """TFX's fingerprint of the files `example_gen` would read for `span` (what it records
    as the Examples' `input_fingerprint`)."""
    from google.protobuf import json_format
    from tfx.components.example_gen import utils as example_gen_utils
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_component_specs as keys

    properties = example_gen.exec_properties
    input_config = properties[keys.INPUT_CONFIG_KEY]
    if isinstance(input_config, str):
        input_config = json_format.Parse(input_config, example_gen_pb2.Input())
    found, _, _ = example_gen_utils.calculate_splits_fingerprint_span_and_version(
        properties[keys.INPUT_BASE_KEY], input_config.splits, range_config(span)
    )
    return found


def newest_drift(
    store, config: PipelineConfig, node_id: str, staged: StagedSpans, schema_file: str | None
) -> dict[str, Any] | None:
    """The drift of the newest span's train split from the previous span's, both as ingested
    (their StatisticsGen statistics in ML Metadata); None with data.spans.drift `off` or
    a single span.

    The schema is the curated one, else TFDV's inference from the previous span.
    """
    import tensorflow_data_validation as tfdv

    if config.data.spans.drift == "off" or staged.previous is None:
        return None
    by_span = examples_by_span(store, config.pipeline_name, node_id)
    statistics = {}
    for number in (staged.newest, staged.previous):
        artifact = statistics_of(store, by_span[number][-1])
        train = _split_statistics(artifact.uri, "train") if artifact is not None else None
        if train is None:
            raise SpanError(f"span {number}: no statistics of its train split in ML Metadata")
        statistics[number] = train
    previous = statistics[staged.previous]
    schema = tfdv.load_schema_text(schema_file) if schema_file else tfdv.infer_schema(previous)
    return span_drift(
        config, statistics[staged.newest], previous, schema, (staged.newest, staged.previous)
    )


def summary_section(
    store, config: PipelineConfig, inputs: Mapping[str, Mapping[str, list]], state: Mapping
) -> dict[str, Any]:
    """The summary's `spans`: the spans ingested by this run, those Transform trained on (the
    window) and the one the Evaluator evaluated, each with rows per split; the span drift.

    Args:
      store: the pipeline's ML Metadata.
      config: the pipeline config.
      inputs: this run's input artifacts by node and key (summary.RunRecord.inputs; {}
        when the pipeline never started).
      state: what the run's span step did: `ingested` (span numbers), `drift` (record).
    """
    node = state["node"]
    by_span = examples_by_span(store, config.pipeline_name, node)

    def of(key_node: str) -> list[dict[str, Any]]:
        artifacts = inputs.get(key_node, {}).get("examples", [])
        return sorted((describe(store, a) for a in artifacts), key=lambda d: d["span"])

    evaluated = of("Evaluator")
    return {
        "on_disk": list(state["on_disk"]),
        "window": config.data.spans.window,
        "ingested": [describe(store, by_span[n][-1]) for n in state["ingested"] if n in by_span],
        "trained": of("Transform") or None,
        "evaluated": evaluated[-1] if evaluated else None,
        "drift": state.get("drift"),
    }


def format_line(section: Mapping[str, Any]) -> str:
    """The summary's line on spans."""

    def numbers(entries) -> str:
        return ", ".join(str(e["span"]) for e in entries or []) or "none"

    line = (
        f"  spans: ingested {numbers(section['ingested'])}; trained on {numbers(section['trained'])}"
        f" (window {section['window']}); evaluated on "
        + (str(section["evaluated"]["span"]) if section["evaluated"] else "none")
    )
    drift = section.get("drift")
    if drift:
        drifted = ", ".join(drift["drifted_features"]) or "no drift"
        line += f"; span {drift['span']} vs {drift['previous_span']}: {drifted}"
    return line
