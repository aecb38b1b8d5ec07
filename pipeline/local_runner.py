"""Runs the pipeline locally: Beam's DirectRunner, ML Metadata on SQLite, caching on.

One run at a time per output root (a lock file), each under its own run id, and
each run's summary says what happened to that run: succeeded, failed (with the
one-line reason) or interrupted, including runs killed outright, which the next
run finds and clears up after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.compiler import constants
from tfx.orchestration.portable import runtime_parameter_utils, tfx_runner

from pipeline import evaluation, report, spans
from pipeline import progress as progress_lib
from pipeline import summary as summary_lib
from pipeline.config import PipelineConfig
from pipeline.data import StagedData, stage_schema, staging_directory
from pipeline.pipeline import create_pipeline, data_components
from pipeline.progress import ProgressHandler, capture_progress
from pipeline.sources import stage, stage_spans


def code_version() -> str:
    """A fingerprint of the code TFX runs by import path: models/, components/, training.

    TFX's cache keys on function and class names, not their source; this value goes
    into the components' custom_config so that a code change re-runs Transform and
    everything after it.
    """
    digest = hashlib.sha256()
    files = [
        p for package in ("models", "components") for p in _python_files(resources.files(package))
    ]
    for path in [*sorted(files, key=str), resources.files("pipeline").joinpath("training.py")]:
        digest.update("/".join(path.parts[-2:]).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _python_files(directory):
    for path in directory.iterdir():
        if path.is_dir():
            yield from _python_files(path)
        elif path.name.endswith(".py"):
            yield path


def beam_args(config: PipelineConfig, data_bytes: int, rows: int = 0) -> list[str]:
    """DirectRunner options.

    in_memory runs everything in this process and is fastest for small inputs;
    multi_processing pays a few seconds to start one worker per core but scales
    with the data. `auto` picks by the input's bytes or rows, whichever is large
    (beam.multi_processing_min_mb, beam.multi_processing_min_rows): rows are the
    work, bytes only count for inputs with few, large rows (a compressed CSV of
    1M rows is a few MB). A local run counts the rows in its label pass
    (pipeline/data.py), a cluster compile estimates them (data.estimate_rows).
    """
    mode = config.beam.mode
    if mode == "auto":
        big = (
            data_bytes >= config.beam.multi_processing_min_mb * 1024 * 1024
            or rows >= config.beam.multi_processing_min_rows
        )
        mode = "multi_processing" if big else "in_memory"
    workers = config.beam.num_workers or (os.cpu_count() or 1)
    args = [f"--direct_running_mode={mode}"]
    if mode == "multi_processing":
        args.append(f"--direct_num_workers={workers}")
    return args


def _paths(config: PipelineConfig) -> dict[str, str]:
    root = Path(config.output_root)
    results = root / config.pipeline_name
    return {
        "pipeline_root": str(root / "pipelines" / config.pipeline_name),
        "metadata": str(root / "metadata" / config.pipeline_name / "metadata.sqlite"),
        "serving_dir": str(Path(config.serving_root) / config.model_name),
        "summary": str(results / "summary.json"),
        "runs": str(results / "runs"),
        "report": str(results / "report.html"),
        "latest_summary": str(root / "summary.json"),
        "latest_report": str(root / "report.html"),
    }


def metadata_path(config: PipelineConfig) -> str:
    """The pipeline's ML Metadata (SQLite), which the monitor follows from the served model."""
    return _paths(config)["metadata"]


def serving_dir(config: PipelineConfig) -> str:
    """Where Pusher writes the model's versions and the server reads them."""
    return _paths(config)["serving_dir"]


def summary_path(config: PipelineConfig) -> str:
    """`<output_root>/<pipeline>/summary.json`: the latest run of this pipeline.

    `<output_root>/summary.json` is a copy of the latest run of any pipeline.
    """
    return _paths(config)["summary"]


def build_local_pipeline(
    config: PipelineConfig, staged: StagedData, span: int | None = None
) -> tfx.dsl.Pipeline:
    """The pipeline with local paths, SQLite metadata and DirectRunner args; with data.spans
    its ExampleGen reads `span`, the newest."""
    paths = _paths(config)
    Path(paths["metadata"]).parent.mkdir(parents=True, exist_ok=True)
    config = _with_staged_schema(config)
    args = beam_args(config, staged.size_bytes, staged.rows)
    pipeline = create_pipeline(
        config,
        data_root=staged.directory,
        pipeline_root=paths["pipeline_root"],
        serving_dir=paths["serving_dir"],
        label_classes=config.label_classes or staged.label_values,
        code_version=code_version(),
        metadata_connection_config=connection(paths["metadata"]),
        beam_pipeline_args=args,
        span=span,
    )
    [example_gen] = [c for c in pipeline.components if c.id.endswith("ExampleGen")]
    example_gen.with_beam_pipeline_args(example_gen_beam_args(config, staged, args))
    return pipeline


def _with_staged_schema(config: PipelineConfig) -> PipelineConfig:
    """The config with its curated schema copied under a content-addressed name (data.py
    stage_schema) in the run's staging folder, never beside the user's data."""
    if not config.schema_file:
        return config
    return dataclasses.replace(
        config, schema_file=stage_schema(config.schema_file, staging_directory(config))
    )


def _ingest_pipeline(config: PipelineConfig, staged: StagedData, span: int) -> tfx.dsl.Pipeline:
    """ExampleGen and StatisticsGen of the pipeline, alone, on one span: the same node ids,
    properties and store as the full pipeline's, so its run of the newest span is cached."""
    paths = _paths(config)
    Path(paths["metadata"]).parent.mkdir(parents=True, exist_ok=True)
    example_gen, statistics_gen = data_components(config, staged.directory, span)
    args = beam_args(config, staged.size_bytes, staged.rows)
    example_gen.with_beam_pipeline_args(example_gen_beam_args(config, staged, args))
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=paths["pipeline_root"],
        components=[example_gen, statistics_gen],
        enable_cache=True,
        metadata_connection_config=connection(paths["metadata"]),
        beam_pipeline_args=args,
    )


def example_gen_beam_args(
    config: PipelineConfig, staged: StagedData, pipeline_args: list[str]
) -> list[str]:
    """ExampleGen's own DirectRunner options, after the pipeline's (the last one counts).

    The CSV ExampleGen reads each file from start to end in one worker; with fewer files
    than workers, multi_processing adds only the cost of passing every row between
    processes: at 1M rows in one file it took 186 s and 3.5 GB of memory for the process
    tree, in_memory 128 s and 1.7 GB. StatisticsGen and Transform keep the pipeline's mode.
    """
    workers = config.beam.num_workers or (os.cpu_count() or 1)
    parallel = "--direct_running_mode=multi_processing" in pipeline_args
    if parallel and 0 < staged.sequential_files < workers:
        return ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    return []


def ingest_spans(
    config: PipelineConfig, run_id: str, state: dict[str, Any], progress: ProgressHandler
) -> StagedData:
    """Stages the spans, ingests those ML Metadata lacks (one ExampleGen run each, oldest
    first) and measures the newest span's drift from the one before.

    Args:
      config: a config with data.spans.
      run_id: the run's id; span N's ingest runs as `<run_id>.span-<N>`.
      state: filled as it goes, for the summary's `spans` (also when a step fails).
      progress: the run's progress lines, told each ingest run's components.

    Returns:
      The staged spans, for the full pipeline.

    Raises:
      SpanDriftError: the newest span drifted and data.spans.drift is `stop`.
    """
    staged = stage_spans(config)
    example_gen, _ = data_components(config, staged.data.directory)
    state.update(node=example_gen.id, on_disk=[s.number for s in staged.spans], ingested=[])
    store = metadata_store.MetadataStore(connection(_paths(config)["metadata"]))
    fingerprints = {n: spans.input_fingerprint(example_gen, n) for n in staged.staged}
    for number in spans.pending(store, config.pipeline_name, example_gen.id, fingerprints):
        print(f"Ingesting span {number} (ExampleGen, StatisticsGen)", flush=True)
        ingest = _ingest_pipeline(config, staged.data, number)
        progress.expect([c.id for c in ingest.components])
        _run_dag(ingest, f"{run_id}.span-{number}")
        state["ingested"].append(number)
    # The ingest runs are not this run's components (the summary reads those by run id).
    progress.expect([])
    schema = _with_staged_schema(config).schema_file
    state["drift"] = spans.newest_drift(store, config, example_gen.id, staged, schema)
    warning = spans.enforce(state["drift"]) if state["drift"] else None
    if warning:
        print(f"warning: {warning} (data.spans.drift: warn)", flush=True)
    state["newest"] = staged.newest
    return staged.data


def connection(metadata_path: str) -> metadata_store_pb2.ConnectionConfig:
    """The ML Metadata connection of a local pipeline (SQLite at `metadata_path`)."""
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived during a run.

    A BaseException, like KeyboardInterrupt: TFX's launcher catches Exception to
    mark an execution FAILED, and an interrupted execution did not fail.
    """

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise RunInterrupted (only the main thread can handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise RunInterrupted(signum)

    saved = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def output_root_lock(output_root: str, pipeline_name: str, run_id: str) -> Iterator[None]:
    """Holds `<output_root>/.lock` for a run; while another run holds it, says whose and waits.

    Runs on one output root share the serving directory and the latest summary:
    two at once would push twice from one decision and describe each other. The
    lock is an fcntl lock, so it goes with its process, SIGKILL included.
    """
    path = Path(output_root) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {_lock_holder(fd)} to finish ({path})", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        holder = {
            "pipeline": pipeline_name,
            "run_id": run_id,
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)


def _lock_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
    except ValueError:  # the holder has the lock but has not written its name yet
        return "another run on this output root"
    return f"the run of {holder['pipeline']} started by pid {holder['pid']} at {holder['started']}"


def recover_interrupted_runs(config: PipelineConfig) -> list[str]:
    """Reports the runs of this pipeline that stopped before finishing, and clears what they left.

    Called with the output root locked, so no run is going on: a summary that
    still says "running", or an execution still RUNNING in ML Metadata, belongs to
    a run that was killed (SIGKILL, a crash) or stopped by a signal. Those
    executions are marked CANCELED, and the output directories of every execution
    that never completed (FAILED or CANCELED) are deleted, so they do not pile up.

    Returns:
      The ids of the interrupted runs found.
    """
    paths = _paths(config)
    previous = _read_json(paths["summary"])
    interrupted = [previous["run_id"]] if previous.get("status") == "running" else []
    removed: list[str] = []
    if os.path.isfile(paths["metadata"]):
        store = metadata_store.MetadataStore(connection(paths["metadata"]))
        interrupted += [r for r in _cancel_running(store) if r not in interrupted]
        removed = _remove_unfinished_outputs(store, paths["pipeline_root"], config.pipeline_name)
    for run_id in interrupted:
        _mark_interrupted(paths, run_id)
        message = (
            f"previous run {run_id} of {config.pipeline_name} was interrupted before it finished"
        )
        print(message, flush=True)
        logging.getLogger("absl").warning(message)
    if removed:
        print(
            f"removed {len(removed)} output directories of executions that never completed",
            flush=True,
        )
    return interrupted


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as err:  # written atomically, so only by hand: say so, then overwrite it
        print(f"ignoring {path}: not JSON ({err}); this run replaces it", flush=True)
        return {}


def _cancel_running(store: metadata_store.MetadataStore) -> list[str]:
    """Marks every RUNNING execution CANCELED; returns the ids of their runs."""
    running = [
        e
        for e in store.get_executions()
        if e.last_known_state == metadata_store_pb2.Execution.RUNNING
    ]
    if not running:
        return []
    run_type = store.get_context_type("pipeline_run").id
    runs: list[str] = []
    for execution in running:
        execution.last_known_state = metadata_store_pb2.Execution.CANCELED
        for context in store.get_contexts_by_execution(execution.id):
            if context.type_id == run_type and context.name not in runs:
                runs.append(context.name)
    store.put_executions(running)
    return runs


_UNFINISHED = (metadata_store_pb2.Execution.FAILED, metadata_store_pb2.Execution.CANCELED)


def _remove_unfinished_outputs(
    store: metadata_store.MetadataStore, pipeline_root: str, pipeline_name: str
) -> list[str]:
    """Deletes the directories of executions that never completed; returns their paths."""
    unfinished = [e for e in store.get_executions() if e.last_known_state in _UNFINISHED]
    if not unfinished:
        return []
    node_type = store.get_context_type("node").id
    removed = []
    for execution in unfinished:
        nodes = [
            c.name.removeprefix(f"{pipeline_name}.")
            for c in store.get_contexts_by_execution(execution.id)
            if c.type_id == node_type
        ]
        for node in nodes:
            for path in _execution_dirs(Path(pipeline_root) / node, execution):
                if path.exists() and not _is_live(store, path):
                    logging.getLogger("absl").info("removing %s", path)
                    shutil.rmtree(path)
                    removed.append(str(path))
    return removed


def _execution_dirs(node_dir: Path, execution: metadata_store_pb2.Execution) -> list[Path]:
    """Where TFX's launcher writes for one execution (tfx.orchestration.portable.outputs_utils).

    `<node>/<output key>/<execution id>` for each output, its executor's files under
    `<node>/.system/executor_execution/<execution id>`, and its stateful working dir.
    """
    if not node_dir.is_dir():
        return []
    execution_id = str(execution.id)
    dirs = [d / execution_id for d in node_dir.iterdir() if d.is_dir() and d.name != ".system"]
    dirs.append(node_dir / ".system" / "executor_execution" / execution_id)
    index = execution.custom_properties.get("__stateful_working_dir_index__")
    if index is not None and index.string_value:
        dirs.append(node_dir / ".system" / "stateful_working_dir" / index.string_value)
    return dirs


def _is_live(store: metadata_store.MetadataStore, path: Path) -> bool:
    return any(
        a.state == metadata_store_pb2.Artifact.LIVE for a in store.get_artifacts_by_uri(str(path))
    )


def run(
    config: PipelineConfig, run_id: str | None = None, monitoring: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Runs the pipeline once, after any other run on the same output root, and reports it.

    The summary is `<output_root>/<pipeline>/summary.json` (with `report.html`
    beside it), copied to `<output_root>/summary.json` and `report.html`. It says
    "running" from the start, so a run killed outright is found by the next one
    (see recover_interrupted_runs), and it always describes this run: its
    `run_id` names this run's context in ML Metadata and its log file.

    Args:
      config: the pipeline configuration.
      run_id: the run's id; a new one when not given (the CLI names the run before
        importing TensorFlow, to send TensorFlow's start-up lines to its log).
      monitoring: why a monitor started this run (pipeline/retrain.py), for the
        summary's `monitoring`; None for a run started by hand.

    Returns:
      The summary (also printed). `status` is "succeeded", or "failed" with a
      one-line `error` when staging the data, building the pipeline or a
      component failed; nothing is pushed then.

    Raises:
      RunInterrupted: on SIGINT or SIGTERM, after writing the summary with status
        "interrupted" (unless it came while waiting for another run).
    """
    run_id = run_id or progress_lib.new_run_id()
    paths = _paths(config)
    log_path = progress_lib.log_path(config, run_id)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with _signals_interrupt(), output_root_lock(config.output_root, config.pipeline_name, run_id):
        started = time.time()
        with capture_progress([], log_path) as progress:
            files = {
                "monitoring": monitoring,
                "log_file": log_path,
                "report": paths["report"],
                "previous_interrupted_runs": recover_interrupted_runs(config),
            }
            _publish({**summarise(config, run_id, [], {}, 0.0, "running", None), **files}, paths)
            span_state: dict[str, Any] = {}
            status, error, interruption = _run_pipeline(
                config, run_id, log_path, progress, span_state
            )
            # Inside the capture: reading the evaluation back warns through TF's logger.
            elapsed = time.time() - started
            result = {
                **summarise(
                    config,
                    run_id,
                    progress.order,
                    progress.seconds,
                    elapsed,
                    status,
                    error,
                    span_state,
                ),
                **files,
            }
        _publish(result, paths)
    print(summary_lib.format_summary(result), flush=True)
    print(f"  report: {result['report']}", flush=True)
    if interruption is not None:
        raise interruption
    return result


def _run_pipeline(
    config: PipelineConfig,
    run_id: str,
    log_path: str,
    progress: ProgressHandler,
    span_state: dict[str, Any],
) -> tuple[str, str | None, RunInterrupted | None]:
    """Stages the data (with data.spans, ingests the new spans and checks their drift),
    builds the pipeline and runs it: (status, one-line error, interruption)."""
    try:
        staged = (
            ingest_spans(config, run_id, span_state, progress)
            if config.data.spans
            else stage(config)
        )
        config, slices_note = evaluation.without_many_valued_slices(config, staged.many_valued)
        for note in (*staged.notes, *([slices_note] if slices_note else [])):
            print(note, flush=True)
        pipeline = build_local_pipeline(config, staged, span_state.get("newest"))
        progress.expect([c.id for c in pipeline.components])
        print(
            f"Running pipeline {config.pipeline_name} ({len(progress.order)} components),"
            f" run {run_id}; TFX logs: {log_path}",
            flush=True,
        )
        _run_dag(pipeline, run_id)
        return "succeeded", None, None
    except RunInterrupted as stop:
        running = progress.running
        progress.stop_current()
        where = f"while {running} was running" if running else "between components"
        logging.getLogger("absl").warning("run %s %s %s", run_id, stop, where)
        return "interrupted", f"{stop} {where}", stop
    except Exception as err:  # noqa: BLE001 - reported in the summary; the CLI prints the one line
        running = progress.running
        progress.stop_current()
        logging.getLogger("absl").exception("pipeline run failed")
        where = f"{running} failed: " if running else ""
        return "failed", f"{where}{type(err).__name__}: {err}", None


def _run_dag(pipeline: tfx.dsl.Pipeline, run_id: str) -> None:
    """LocalDagRunner.run(pipeline), under this process's run id.

    TFX names the run's `pipeline_run` context in ML Metadata after the runtime
    parameter `pipeline-run-id`, which LocalDagRunner otherwise sets to the time
    it starts; setting it here lets the summary read back exactly this run.
    """
    ir = tfx_runner._make_pipeline_proto(pipeline)  # what LocalDagRunner.run() compiles
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id}
    )
    tfx.orchestration.LocalDagRunner().run_with_ir(ir)


def summarise(
    config: PipelineConfig,
    run_id: str,
    node_ids: list[str],
    seconds: dict[str, float],
    elapsed: float,
    status: str,
    error: str | None,
    span_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary of run `run_id`, read back from ML Metadata.

    `node_ids` is empty until the pipeline is built; nothing is read then. `span_state`
    is what the span step did (see ingest_spans), for `spans`.
    """
    record = None
    if node_ids:
        record = summary_lib.RunRecord(
            connection(_paths(config)["metadata"]), config.pipeline_name, run_id
        )

    def section(read):
        return read(record) if record is not None else None

    return {
        "pipeline": config.pipeline_name,
        "run_id": run_id,
        "status": status,
        "error": error,
        "seconds": round(elapsed, 2),
        "components": summary_lib.components_section(record, node_ids, seconds) if record else {},
        "tuner": section(
            lambda r: summary_lib.tuner_section(
                r, config.tuner.objective, config.tuner.objective_direction
            )
        ),
        "training": section(summary_lib.training_section),
        "text": section(
            lambda r: summary_lib.text_section(r, config.text_features, config.max_tokens)
        ),
        "warm_start": section(summary_lib.warm_start_section),
        "evaluation": section(summary_lib.evaluation_section),
        "quantization": section(summary_lib.quantization_section),
        "infra_validation": section(summary_lib.infra_validation_section),
        "pushed": section(summary_lib.pushed_section),
        "explanations": section(summary_lib.explanations_section),
        "model_card": section(summary_lib.model_card_section),
        "statistics": section(summary_lib.statistics_section),
        "spans": _spans_section(config, record, span_state),
    }


def _spans_section(
    config: PipelineConfig, record: summary_lib.RunRecord | None, state: dict[str, Any] | None
) -> dict[str, Any] | None:
    if not state:
        return None
    store = metadata_store.MetadataStore(connection(_paths(config)["metadata"]))
    return spans.summary_section(store, config, record.inputs if record else {}, state)


def _publish(summary: dict[str, Any], paths: dict[str, str]) -> None:
    """Writes the pipeline's summary and report, the same as the output root's latest, and
    the summary as this run's own record (`<pipeline>/runs/<run id>.json`)."""
    Path(paths["runs"]).mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2, sort_keys=False)
    page = report.render(summary)
    for path, content in (
        (paths["report"], page),
        (paths["summary"], text),
        (paths["latest_report"], page),
        (paths["latest_summary"], text),
        (_run_record(paths, summary["run_id"]), text),
    ):
        _write_atomically(path, content)


def _run_record(paths: dict[str, str], run_id: str) -> str:
    return os.path.join(paths["runs"], f"{run_id}.json")


def _mark_interrupted(paths: dict[str, str], run_id: str) -> None:
    """Rewrites a killed run's own record, which still says "running", as interrupted."""
    path = _run_record(paths, run_id)
    record = _read_json(path)
    if record.get("status") == "running":
        record.update(
            status="interrupted",
            error="stopped before it finished (killed, or the machine went down)",
        )
        _write_atomically(path, json.dumps(record, indent=2, sort_keys=False))


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
