"""The local runner tells the truth about each run: its own run id, one run at a time per
output root, a summary per pipeline, and runs that were stopped (SIGTERM) or killed (SIGKILL)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import yaml
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline import local_runner
from pipeline.config import load_config
from pipeline.summary import RunRecord


def write_config(tmp_path: Path, repo_root: Path, name: str = "penguins", source=None) -> Path:
    """penguins.yaml with tiny tuning, under another pipeline name or data source."""
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    raw["schema_file"] = str(repo_root / "configs" / raw["schema_file"])
    raw["pipeline_name"] = raw["model_name"] = name
    raw["tuner"].update(max_trials=1, epochs=2)
    raw["training"].update(epochs=2)
    if source is not None:
        raw["data"]["source"] = str(source)
    path = tmp_path / f"{name}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def malformed_csv(tmp_path: Path) -> Path:
    """The penguins CSV, cut after 6 rows, with line 5 short of fields."""
    text = resources.files("palmerpenguins").joinpath("data", "penguins.csv").read_text()
    lines = text.splitlines()[:7]
    lines[4] = ",".join(lines[4].split(",")[:3])
    path = tmp_path / "malformed.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_cli(config: Path, root: Path, repo_root: Path, out: Path) -> subprocess.Popen:
    """`python -m pipeline.cli run` in a child process, stdout and stderr to files under `out`."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)]
        + ["--output-root", str(root)],
        cwd=repo_root,
        stdout=(out / "stdout").open("w"),
        stderr=(out / "stderr").open("w"),
    )


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} after {timeout:.0f}s")
        time.sleep(0.05)


def example_gen_outputs(root: Path) -> list[str]:
    return glob.glob(str(root / "pipelines" / "penguins" / "CsvExampleGen" / "examples" / "*"))


def _connection(path: Path) -> metadata_store_pb2.ConnectionConfig:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    return config


def _store(path: Path) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(_connection(path))


def _context(store, type_name: str, name: str) -> metadata_store_pb2.Context:
    type_id = store.put_context_type(metadata_store_pb2.ContextType(name=type_name))
    [context_id] = store.put_contexts([metadata_store_pb2.Context(type_id=type_id, name=name)])
    return store.get_contexts_by_id([context_id])[0]


def test_run_record_reads_the_run_it_is_given_not_the_newest(tmp_path):
    store = _store(tmp_path / "metadata.sqlite")
    execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name="Trainer"))
    node = _context(store, "node", "p.Trainer")
    states = {
        "mine": metadata_store_pb2.Execution.COMPLETE,
        "started-after-mine": metadata_store_pb2.Execution.RUNNING,
    }
    for run_id, state in states.items():
        execution = metadata_store_pb2.Execution(type_id=execution_type, last_known_state=state)
        store.put_execution(execution, [], [_context(store, "pipeline_run", run_id), node])

    sqlite = _connection(tmp_path / "metadata.sqlite")
    mine = RunRecord(sqlite, "p", "mine")
    assert mine.run.name == "mine"
    assert mine.status("Trainer") == "succeeded"
    # An execution left RUNNING once its run stopped was interrupted, not failed.
    assert RunRecord(sqlite, "p", "started-after-mine").status("Trainer") == "interrupted"
    assert RunRecord(sqlite, "p", "never-ran").status("Trainer") == "not_run"


def test_each_pipeline_keeps_its_summary_and_a_failure_before_the_run_is_reported(
    tmp_path, repo_root, capsys
):
    root = tmp_path / "out"
    bad = malformed_csv(tmp_path)
    summaries = [
        local_runner.run(load_config(write_config(tmp_path, repo_root, name, bad), str(root)))
        for name in ("first", "second", "first")
    ]
    for summary in summaries:
        assert summary["status"] == "failed"
        assert summary["error"].startswith("DataError: ") and "line 5" in summary["error"]
        assert "\n" not in summary["error"]
        assert summary["run_id"] in summary["log_file"] and os.path.isfile(summary["log_file"])
    assert len({s["run_id"] for s in summaries}) == len({s["log_file"] for s in summaries}) == 3

    first, second = (
        json.loads((root / n / "summary.json").read_text()) for n in ("first", "second")
    )
    assert first == summaries[2] and second == summaries[1]
    assert json.loads((root / "summary.json").read_text()) == summaries[2]
    assert (root / "report.html").read_text() == (root / "first" / "report.html").read_text()
    assert "<h1>Pipeline second</h1>" in (root / "second" / "report.html").read_text()
    assert summaries[2]["report"] == str(root / "first" / "report.html")
    assert capsys.readouterr().out.count("error: DataError: ") == 3


@contextlib.contextmanager
def _held(root: Path):
    with local_runner.output_root_lock(str(root), "holder", "held-run"):
        yield


def test_a_run_waits_while_another_run_holds_the_output_root(tmp_path, repo_root):
    root = tmp_path / "out"
    config = write_config(tmp_path, repo_root, source=malformed_csv(tmp_path))
    with _held(root):
        proc = start_cli(config, root, repo_root, tmp_path)
        waiting = f"waiting for the run of holder started by pid {os.getpid()} at "
        wait_for(lambda: waiting in (tmp_path / "stdout").read_text(), proc, "the waiting line")
        time.sleep(1.0)
        assert proc.poll() is None
        assert not (root / "penguins" / "summary.json").exists()
    assert proc.wait(timeout=120) == 1
    summary = json.loads((root / "penguins" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["log_file"].endswith(f"penguins-{summary['run_id']}.log")
    assert summary["run_id"].endswith(f"-{proc.pid}")


def test_sigterm_leaves_a_summary_that_says_interrupted(tmp_path, repo_root):
    root = tmp_path / "out"
    proc = start_cli(write_config(tmp_path, repo_root), root, repo_root, tmp_path)
    wait_for(lambda: example_gen_outputs(root), proc, "CsvExampleGen output")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    summary = json.loads((root / "penguins" / "summary.json").read_text())
    assert json.loads((root / "summary.json").read_text()) == summary
    assert summary["status"] == "interrupted"
    assert summary["error"].startswith("interrupted by SIGTERM while ")
    component = summary["error"].split(" while ")[1].removesuffix(" was running")
    assert summary["components"][component]["status"] == "interrupted"
    assert summary["pushed"] is None
    stderr = (tmp_path / "stderr").read_text()
    assert f"run {summary['run_id']} of penguins interrupted by SIGTERM" in stderr
    assert "Traceback" not in stderr


def test_the_run_after_a_killed_run_reports_it_and_removes_its_partial_outputs(
    tmp_path, repo_root, capsys
):
    root = tmp_path / "out"
    proc = start_cli(write_config(tmp_path, repo_root), root, repo_root, tmp_path)
    wait_for(lambda: example_gen_outputs(root), proc, "CsvExampleGen output")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed = json.loads((root / "penguins" / "summary.json").read_text())
    assert killed["status"] == "running"
    partial = example_gen_outputs(root)
    assert partial

    bad = write_config(tmp_path, repo_root, source=malformed_csv(tmp_path))
    summary = local_runner.run(load_config(bad, str(root)))

    out = capsys.readouterr().out
    assert f"previous run {killed['run_id']} of penguins was interrupted" in out
    assert summary["previous_interrupted_runs"] == [killed["run_id"]]
    assert summary["run_id"] != killed["run_id"] and summary["status"] == "failed"
    runs = root / "penguins" / "runs"
    assert json.loads((runs / f"{killed['run_id']}.json").read_text())["status"] == "interrupted"
    assert json.loads((runs / f"{summary['run_id']}.json").read_text())["status"] == "failed"
    assert not any(os.path.exists(p) for p in partial)
    store = _store(root / "metadata" / "penguins" / "metadata.sqlite")
    assert {e.last_known_state for e in store.get_executions()} == {
        metadata_store_pb2.Execution.CANCELED
    }
